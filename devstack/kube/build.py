"""The test bed's binaries, built from Go modules only (the Go module proxy) and cached by version.

kube-apiserver and kube-controller-manager (k8s.io/kubernetes), etcd (go.etcd.io/etcd/server/v3) and the
CloudNativePG operator (github.com/cloudnative-pg/cloudnative-pg cmd/manager) plus its CRDs and webhook
configurations. Each is built in a throwaway module that requires the upstream module at exactly one
version; for kubernetes and etcd the throwaway module repeats upstream's replace directives of its own
local submodules, pinned to the matching published versions (a `go install pkg@version` refuses a module
with replace directives). The cache lives outside the work tree, in `$OROCHI_KUBE_CACHE` or
`~/.cache/orochi-kube`, as `<component>-<version>/`; only the first run pays (~10 minutes on 2 cores).

    python -m devstack.kube.build     # builds what is missing, prints the paths
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

KUBERNETES_VERSION = "v1.37.2"
ETCD_VERSION = "v3.6.16"
CNPG_VERSION = "v1.30.0"
KUSTOMIZE_VERSION = "v5.7.1"  # renders kube-agent/deploy as `kubectl kustomize` does

KUBERNETES_MODULE = "k8s.io/kubernetes"
ETCD_MODULE = "go.etcd.io/etcd/server/v3"
CNPG_MODULE = "github.com/cloudnative-pg/cloudnative-pg"

Log = Callable[[str], None]


class BuildError(RuntimeError):
    """A build step failed; the message carries the step's command and output."""


@dataclass(frozen=True)
class Binaries:
    kube_apiserver: Path
    kube_controller_manager: Path
    etcd: Path
    cnpg_manager: Path
    cnpg_crds: tuple[Path, ...]
    """Every CRD of the CNPG operator (`config/crd/bases/*.yaml` of its module)."""
    cnpg_webhooks: Path
    """CNPG's `config/webhook/manifests.yaml`: its Mutating- and ValidatingWebhookConfiguration."""
    kustomize: Path


def cache_root() -> Path:
    return Path(os.environ.get("OROCHI_KUBE_CACHE") or Path.home() / ".cache" / "orochi-kube").expanduser().absolute()


def _stderr(line: str) -> None:
    print(f"[devstack.kube.build] {line}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class _Layout:
    root: Path

    @property
    def kubernetes(self) -> Path:
        return self.root / f"kubernetes-{KUBERNETES_VERSION}"

    @property
    def etcd(self) -> Path:
        return self.root / f"etcd-{ETCD_VERSION}"

    @property
    def cnpg(self) -> Path:
        return self.root / f"cnpg-{CNPG_VERSION}"

    @property
    def kustomize(self) -> Path:
        return self.root / f"kustomize-{KUSTOMIZE_VERSION}"

    def binaries(self) -> Binaries:
        return Binaries(
            kube_apiserver=self.kubernetes / "kube-apiserver",
            kube_controller_manager=self.kubernetes / "kube-controller-manager",
            etcd=self.etcd / "etcd",
            cnpg_manager=self.cnpg / "manager",
            cnpg_crds=tuple(sorted((self.cnpg / "config" / "crd" / "bases").glob("*.yaml"))),
            cnpg_webhooks=self.cnpg / "config" / "webhook" / "manifests.yaml",
            kustomize=self.kustomize / "kustomize",
        )


def ensure_built(*, cache: Path | None = None, log: Log = _stderr) -> Binaries:
    """The cached binaries, building the missing ones first; raises BuildError with the failing step's output.

    Safe to call from several processes at once: one builds under a lock, the others wait and reuse it.
    """
    layout = _Layout(cache or cache_root())
    steps: list[tuple[str, Callable[[], bool], Callable[[_Layout, Log], None]]] = [
        (f"kubernetes {KUBERNETES_VERSION}", lambda: _is_file(layout.binaries().kube_apiserver)
         and _is_file(layout.binaries().kube_controller_manager), _build_kubernetes),
        (f"etcd {ETCD_VERSION}", lambda: _is_file(layout.binaries().etcd), _build_etcd),
        (f"cnpg {CNPG_VERSION}", lambda: _is_file(layout.binaries().cnpg_manager)
         and _is_file(layout.binaries().cnpg_webhooks) and bool(layout.binaries().cnpg_crds), _build_cnpg),
        (f"kustomize {KUSTOMIZE_VERSION}", lambda: _is_file(layout.binaries().kustomize), _build_kustomize),
    ]
    if all(done() for _, done, _ in steps):
        return layout.binaries()
    layout.root.mkdir(parents=True, exist_ok=True)
    with _locked(layout.root / ".build.lock", log=log):
        for name, done, build in steps:
            if done():
                continue
            started = time.monotonic()
            log(f"building {name} (cold: several minutes)")
            build(layout, log)
            log(f"built {name} in {time.monotonic() - started:.0f}s")
    return layout.binaries()


def _is_file(path: Path) -> bool:
    return path.is_file() and path.stat().st_size > 0


@contextmanager
def _locked(path: Path, *, log: Log) -> Iterator[None]:
    with path.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f"another process is building into {path.parent}; waiting for it")
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _build_kubernetes(layout: _Layout, log: Log) -> None:
    minor = KUBERNETES_VERSION.split(".")[1]
    version_pkg = "k8s.io/component-base/version"
    ldflags = (f"-s -w -X {version_pkg}.gitVersion={KUBERNETES_VERSION} -X {version_pkg}.gitMajor=1"
               f" -X {version_pkg}.gitMinor={minor} -X {version_pkg}.gitTreeState=clean")
    staging_version = "v0." + KUBERNETES_VERSION.removeprefix("v1.")  # k8s.io/api etc. are published as v0.x.y
    _build_module(
        module=KUBERNETES_MODULE, version=KUBERNETES_VERSION, replace_version=staging_version,
        packages={"kube-apiserver": f"{KUBERNETES_MODULE}/cmd/kube-apiserver",
                  "kube-controller-manager": f"{KUBERNETES_MODULE}/cmd/kube-controller-manager"},
        ldflags=ldflags, into=layout.kubernetes, log=log,
    )


def _build_etcd(layout: _Layout, log: Log) -> None:
    _build_module(
        module=ETCD_MODULE, version=ETCD_VERSION, replace_version=ETCD_VERSION,
        packages={"etcd": ETCD_MODULE}, ldflags="-s -w", into=layout.etcd, log=log,
    )


def _build_cnpg(layout: _Layout, log: Log) -> None:
    source = _build_module(
        module=CNPG_MODULE, version=CNPG_VERSION, replace_version=CNPG_VERSION,
        packages={"manager": f"{CNPG_MODULE}/cmd/manager"}, ldflags="-s -w", into=layout.cnpg, log=log,
    )
    config = layout.cnpg / "config"
    if config.exists():
        shutil.rmtree(config)
    staging = Path(tempfile.mkdtemp(prefix=".config-", dir=layout.cnpg))
    crds = sorted((source / "config" / "crd" / "bases").glob("*.yaml"))
    webhooks = source / "config" / "webhook" / "manifests.yaml"
    if not crds or not webhooks.is_file():
        raise BuildError(f"{CNPG_MODULE}@{CNPG_VERSION} in {source} has no config/crd/bases/*.yaml or webhook manifests")
    (staging / "crd" / "bases").mkdir(parents=True)
    (staging / "webhook").mkdir()
    for crd in crds:
        shutil.copyfile(crd, staging / "crd" / "bases" / crd.name)
    shutil.copyfile(webhooks, staging / "webhook" / "manifests.yaml")
    staging.chmod(0o755)  # mkdtemp made it private
    staging.rename(config)
    log(f"copied {len(crds)} CRDs and the webhook configurations into {config}")


def _build_kustomize(layout: _Layout, log: Log) -> None:
    """kustomize is a module of its own with a main package: `go install` it into a temporary folder, then move
    the binary into place (so a half-written one is never taken for a finished one)."""
    target = layout.binaries().kustomize
    with tempfile.TemporaryDirectory(prefix="orochi-kustomize-") as scratch:
        _run(["go", "install", f"sigs.k8s.io/kustomize/kustomize/v5@{KUSTOMIZE_VERSION}"], cwd=Path(scratch),
             env={**_go_env(), "GOBIN": scratch}, log=log)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(Path(scratch) / "kustomize"), str(target.with_suffix(".partial")))
        target.with_suffix(".partial").replace(target)


def _build_module(*, module: str, version: str, replace_version: str, packages: dict[str, str], ldflags: str,
                  into: Path, log: Log) -> Path:
    """Build `packages` (binary name → import path) of `module@version` into `into`; returns the module's source dir."""
    env = _go_env()
    into.mkdir(parents=True, exist_ok=True)
    for stale in into.glob(".*-*"):  # a build killed before it renamed its output; we hold the lock
        shutil.rmtree(stale, ignore_errors=True)
    with tempfile.TemporaryDirectory(prefix="orochi-kube-build-") as work:
        workdir = Path(work)
        log(f"downloading {module}@{version}")
        info = json.loads(_run(["go", "mod", "download", "-json", f"{module}@{version}"], cwd=workdir, env=env, log=log))
        upstream = Path(info["GoMod"]).read_text()
        (workdir / "go.mod").write_text(_throwaway_go_mod(
            module=module, version=version, upstream=upstream, replace_version=replace_version))
        imports = "".join(f'\t_ "{package}"\n' for package in packages.values())
        (workdir / "tools.go").write_text(f"//go:build tools\n\npackage tools\n\nimport (\n{imports})\n")
        log(f"resolving dependencies of {module}@{version} (go mod tidy)")
        _run(["go", "mod", "tidy"], cwd=workdir, env=env, log=log)
        staging = Path(tempfile.mkdtemp(prefix=".build-", dir=into))
        try:
            for name, package in packages.items():
                log(f"compiling {name} ({package})")
                _run(["go", "build", "-trimpath", f"-ldflags={ldflags}", "-o", str(staging / name), package],
                     cwd=workdir, env=env, log=log)
            for name in packages:
                os.replace(staging / name, into / name)
                log(f"wrote {into / name}")
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return Path(info["Dir"])


def _throwaway_go_mod(*, module: str, version: str, upstream: str, replace_version: str) -> str:
    """A go.mod requiring `module@version`, with upstream's `go`/`godebug` lines and its local replaces pinned."""
    go_line = next((line for line in upstream.splitlines() if re.match(r"go\s+\d", line)), "go 1.22")
    godebug = _directive_lines(upstream, "godebug")
    replaces = [
        f"\t{match[1]} => {match[1]} {replace_version}"
        for line in _directive_lines(upstream, "replace")
        if (match := re.match(r"(\S+)(?:\s+\S+)?\s*=>\s*(\.\.?/\S*)\s*$", line))
        and _takes_version(match[1], replace_version)  # not etcd's `go.etcd.io/etcd => ./FORBIDDEN_DEPENDENCY`
    ]
    text = f"module orochi.local/kube-testbed-build\n\n{go_line}\n\nrequire {module} {version}\n"
    if godebug:
        text += "\ngodebug (\n" + "".join(f"\t{line}\n" for line in godebug) + ")\n"
    if replaces:
        text += "\nreplace (\n" + "".join(f"{line}\n" for line in replaces) + ")\n"
    return text


def _takes_version(module: str, version: str) -> bool:
    """Whether `module` can have `version` at all: v2 and up only for paths ending in the same /vN."""
    major = int(version.removeprefix("v").split(".")[0])
    suffix = re.search(r"/v(\d+)$", module)
    return int(suffix[1]) == major if suffix else major < 2


def _directive_lines(go_mod: str, directive: str) -> list[str]:
    """The entries of `directive` in a go.mod, from blocks (`replace (...)`) and single lines alike."""
    entries: list[str] = []
    in_block = False
    for raw in go_mod.splitlines():
        line = raw.split("//", 1)[0].strip()
        if in_block:
            if line == ")":
                in_block = False
            elif line:
                entries.append(line)
        elif re.fullmatch(rf"{directive}\s*\(", line):
            in_block = True
        elif line.startswith(f"{directive} "):
            entries.append(line.removeprefix(f"{directive} ").strip())
    return entries


def _go_env() -> dict[str, str]:
    env = dict(os.environ, CGO_ENABLED="0", GOWORK="off")
    flags = env.get("GOFLAGS", "").split()
    if not any(flag.startswith("-p=") for flag in flags):
        flags.append("-p=2")  # a 2-core machine shared with others
    env["GOFLAGS"] = " ".join(flags)
    return env


def _run(command: list[str], *, cwd: Path, env: dict[str, str], log: Log) -> str:
    """Run `command`, logging a line each minute it takes; returns its stdout, raises BuildError with its output."""
    if shutil.which(command[0], path=env.get("PATH")) is None:
        raise BuildError(f"{command[0]} is not on PATH")
    started = time.monotonic()
    with tempfile.TemporaryFile() as stdout, tempfile.TemporaryFile() as stderr:
        process = subprocess.Popen(command, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr)
        try:
            while True:
                try:
                    process.wait(timeout=60)
                    break
                except subprocess.TimeoutExpired:
                    log(f"  still running `{' '.join(command[:2])}` ({(time.monotonic() - started) / 60:.0f} min)")
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
        stdout.seek(0)
        stderr.seek(0)
        out, err = stdout.read().decode(errors="replace"), stderr.read().decode(errors="replace")
    if process.returncode != 0:
        output = (out + err)[-20000:]
        raise BuildError(f"`{' '.join(command)}` in {cwd} exited with {process.returncode}:\n{output}")
    return out


def main() -> None:
    try:
        binaries = ensure_built()
    except BuildError as e:
        _stderr(str(e))
        raise SystemExit(1) from e
    print(binaries.kube_apiserver)
    print(binaries.kube_controller_manager)
    print(binaries.etcd)
    print(binaries.cnpg_manager)
    for crd in binaries.cnpg_crds:
        print(crd)
    print(binaries.cnpg_webhooks)
    print(binaries.kustomize)


if __name__ == "__main__":
    main()
