"""A real Kubernetes control plane with the real CloudNativePG operator, on loopback, in a temp dir.

    with Testbed(ensure_built()) as bed:
        api = kubernetes.config.new_client_from_config(config_file=str(bed.admin_kubeconfig))

etcd, kube-apiserver (token auth, RBAC, service accounts), kube-controller-manager (namespace finalization,
garbage collection, default ServiceAccounts, EndpointSlices) and the CNPG operator out of cluster, with its
CRDs and its mutating and validating webhooks registered at `https://127.0.0.1:<port>`. There is no kubelet
and no scheduler: Pods are created but never run, so a Cluster never leaves `Setting up primary`; a test that
needs another status writes it itself with the operator stopped (`stop_operator()`). While the operator is
stopped its webhooks fail closed: creating or updating a Cluster is refused, the status subresource is not.

Every wait is on a condition (readyz, the webhook answering, CRDs Established, an admission through the
webhook), never a fixed sleep. Each process logs to `<directory>/logs/<name>.log`; a failed start raises
TestbedError with their tails.
"""

from __future__ import annotations

import base64
import ctypes
import datetime
import ipaddress
import json
import platform
import secrets
import shutil
import signal
import ssl
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from devstack.kube.build import Binaries
from devstack.ports import free_port

OPERATOR_NAMESPACE = "cnpg-system"
FIELD_MANAGER = "orochi-testbed"
SERVICE_CLUSTER_IP_RANGE = "10.96.0.0/16"
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
_GO_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "arm64": "arm64"}


class TestbedError(RuntimeError):
    """The test bed could not start (the message carries the processes' log tails) or a request failed."""

    __test__ = False  # not a pytest test class


class ApiError(TestbedError):
    def __init__(self, status: int, body: str, *, method: str, path: str) -> None:
        super().__init__(f"{method} {path} answered {status}: {body[:2000]}")
        self.status = status
        self.body = body


class Testbed:
    """A control plane in a fresh temp dir; `start()` (or `with`) runs it, `close()` stops it and removes the dir."""

    __test__ = False

    def __init__(self, binaries: Binaries, *, timeout: float = 120) -> None:
        self.binaries = binaries
        self.timeout = timeout
        """Seconds each start-up condition may take (the machine may be busy)."""
        self.directory = Path(tempfile.mkdtemp(prefix="orochi-kube-"))
        self.admin_token = secrets.token_urlsafe(32)
        self._controller_manager_token = secrets.token_urlsafe(32)
        self._operator_token = secrets.token_urlsafe(32)
        self.apiserver_port = free_port()
        self.webhook_port = free_port()
        self._etcd_port, self._etcd_peer_port, self._metrics_port = free_port(), free_port(), free_port()
        self._processes: dict[str, subprocess.Popen[bytes]] = {}
        self._closed = False

    # -- what tests use ---------------------------------------------------------------------------------------

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.apiserver_port}"

    @property
    def ca_file(self) -> Path:
        """The CA of the apiserver's and the webhook's serving certificates (and of `--client-ca-file`)."""
        return self.directory / "pki" / "ca.crt"

    @property
    def admin_kubeconfig(self) -> Path:
        """A kubeconfig with a bearer token of user `admin` in group `system:masters`."""
        return self.directory / "kubeconfigs" / "admin.kubeconfig"

    @property
    def logs(self) -> Path:
        return self.directory / "logs"

    @property
    def operator_running(self) -> bool:
        process = self._processes.get("cnpg-operator")
        return process is not None and process.poll() is None

    def service_account_kubeconfig(self, *, namespace: str, name: str, expiration_seconds: int = 3600) -> Path:
        """A kubeconfig with a fresh token (TokenRequest API) of an existing ServiceAccount, for RBAC tests."""
        answer = self.request(
            "POST", f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token",
            body={"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                  "spec": {"expirationSeconds": expiration_seconds}},
        )
        return self._write_kubeconfig(f"sa-{namespace}-{name}", user=f"system:serviceaccount:{namespace}:{name}",
                                      token=answer["status"]["token"])

    def stop_operator(self) -> None:
        """Stop the CNPG operator; its webhooks then refuse Cluster writes until `start_operator()`."""
        self._stop("cnpg-operator")

    def start_operator(self) -> None:
        """Start the CNPG operator (again) and return once an admission goes through its webhooks."""
        try:
            self._start_operator()
        except TestbedError as e:
            raise TestbedError(f"{e}\n{self.log_tails(only='cnpg-operator')}") from e

    def _start_operator(self) -> None:
        if self.operator_running:
            return
        workdir = self.directory / "operator"
        arch = _GO_ARCH.get(platform.machine(), platform.machine())
        # The operator globs operator/manager_<arch> under its working directory for the instances' architectures.
        link = workdir / "operator" / f"manager_{arch}"
        if not link.exists():
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(self.binaries.cnpg_manager.resolve())
        self._spawn(
            "cnpg-operator",
            [str(self.binaries.cnpg_manager), "controller", "--leader-elect=false",
             f"--webhook-port={self.webhook_port}", f"--metrics-bind-address=127.0.0.1:{self._metrics_port}"],
            cwd=workdir,
            env={"KUBECONFIG": str(self.directory / "kubeconfigs" / "cnpg-operator.kubeconfig"),
                 "OPERATOR_NAMESPACE": OPERATOR_NAMESPACE, "WEBHOOK_CERT_DIR": str(self.directory / "webhook")},
        )
        self._wait("cnpg-operator webhook", self._webhook_ready, process="cnpg-operator")
        self._wait("an admission through the CNPG webhooks", self._admission_goes_through, process="cnpg-operator")

    def request(self, method: str, path: str, *, body: Any = None, content_type: str = "application/json",
                token: str | None = None) -> Any:
        """One request to the apiserver as admin (or `token`); returns the decoded JSON, raises ApiError on >= 400."""
        data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
        request = urllib.request.Request(f"{self.server}{path}", data=data, method=method, headers={
            "Authorization": f"Bearer {token or self.admin_token}", "Content-Type": content_type,
            "Accept": "application/json"})
        try:
            with self._opener().open(request, timeout=30) as response:
                text = response.read().decode()
        except urllib.error.HTTPError as e:
            raise ApiError(e.code, e.read().decode(errors="replace"), method=method, path=path) from e
        return json.loads(text) if text.startswith(("{", "[")) else text

    # -- lifecycle --------------------------------------------------------------------------------------------

    def start(self) -> Testbed:
        try:
            self._write_pki()
            self._start_etcd()
            self._start_apiserver()
            self._start_controller_manager()
            self._install_cnpg()
            self._start_operator()
        except BaseException as e:
            tails = self.log_tails()
            self.close()
            if isinstance(e, TestbedError):
                raise TestbedError(f"{e}\n{tails}") from e
            raise
        return self

    def close(self) -> None:
        """Stop every process (operator first, etcd last) and remove the temp dir. Idempotent."""
        if self._closed:
            return
        self._closed = True
        for name in reversed(list(self._processes)):
            self._stop(name)
        shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> Testbed:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.close()

    def log_tails(self, lines: int = 40, *, only: str | None = None) -> str:
        """The last `lines` of each process's log (or of process `only`'s), for failure messages."""
        parts = []
        for log in sorted(self.logs.glob(f"{only or '*'}.log")) if self.logs.is_dir() else []:
            tail = log.read_text(errors="replace").splitlines()[-lines:]
            parts.append(f"--- {log.name} (last {len(tail)} lines) ---\n" + "\n".join(tail))
        return "\n".join(parts)

    # -- the processes ----------------------------------------------------------------------------------------

    def _start_etcd(self) -> None:
        client, peer = f"http://127.0.0.1:{self._etcd_port}", f"http://127.0.0.1:{self._etcd_peer_port}"
        self._spawn("etcd", [
            str(self.binaries.etcd), "--name=testbed", f"--data-dir={self.directory / 'etcd'}",
            f"--listen-client-urls={client}", f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}", f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=testbed={peer}", "--unsafe-no-fsync", "--log-level=warn",
        ])
        self._wait("etcd health", lambda: _get_plain(f"{client}/health").find('"health":"true"') >= 0, process="etcd")

    def _start_apiserver(self) -> None:
        pki = self.directory / "pki"
        self._spawn("kube-apiserver", [
            str(self.binaries.kube_apiserver),
            f"--etcd-servers=http://127.0.0.1:{self._etcd_port}",
            "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", f"--secure-port={self.apiserver_port}",
            f"--cert-dir={pki}", f"--tls-cert-file={pki / 'apiserver.crt'}",
            f"--tls-private-key-file={pki / 'apiserver.key'}", f"--client-ca-file={self.ca_file}",
            f"--token-auth-file={pki / 'tokens.csv'}", "--authorization-mode=RBAC",
            f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
            f"--service-account-key-file={pki / 'sa.pub'}", f"--service-account-signing-key-file={pki / 'sa.key'}",
            f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
            "--endpoint-reconciler-type=none",  # else it refuses a loopback advertise address and exits
            "--profiling=false",
        ])
        self._wait("kube-apiserver readyz", lambda: self.request("GET", "/readyz") == "ok", process="kube-apiserver")

    def _start_controller_manager(self) -> None:
        pki = self.directory / "pki"
        kubeconfig = self._write_kubeconfig("kube-controller-manager", user="system:kube-controller-manager",
                                            token=self._controller_manager_token)
        self._spawn("kube-controller-manager", [
            str(self.binaries.kube_controller_manager), f"--kubeconfig={kubeconfig}", "--leader-elect=false",
            "--secure-port=0",  # nothing to probe there; the default ServiceAccount below proves it works
            f"--service-account-private-key-file={pki / 'sa.key'}", f"--root-ca-file={self.ca_file}",
            f"--cluster-signing-cert-file={self.ca_file}", f"--cluster-signing-key-file={pki / 'ca.key'}",
        ])
        self._wait("kube-controller-manager (ServiceAccount default/default)",
                   lambda: bool(self.request("GET", "/api/v1/namespaces/default/serviceaccounts/default")),
                   process="kube-controller-manager")

    def _install_cnpg(self) -> None:
        names = []
        for path in self.binaries.cnpg_crds:
            crd = yaml.safe_load(path.read_text())
            names.append(crd["metadata"]["name"])
            self._apply(f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{names[-1]}", crd)

        def established() -> bool:
            listed = self.request("GET", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions")["items"]
            ready = {item["metadata"]["name"] for item in listed if any(
                c["type"] == "Established" and c["status"] == "True" for c in (item.get("status") or {}).get("conditions") or [])}
            return ready >= set(names)

        self._wait(f"{len(names)} CNPG CRDs Established", established, process="kube-apiserver")
        self._apply(f"/api/v1/namespaces/{OPERATOR_NAMESPACE}",
                    {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": OPERATOR_NAMESPACE}})
        ca_bundle = base64.b64encode(self.ca_file.read_bytes()).decode()
        for configuration in yaml.safe_load_all(self.binaries.cnpg_webhooks.read_text()):
            if not configuration:
                continue
            # Named as in CNPG's release manifest (kustomize's namePrefix), reached on loopback instead of a Service.
            configuration["metadata"]["name"] = "cnpg-" + configuration["metadata"]["name"]
            for webhook in configuration["webhooks"]:
                path = webhook["clientConfig"]["service"]["path"]
                webhook["clientConfig"] = {"url": f"https://127.0.0.1:{self.webhook_port}{path}", "caBundle": ca_bundle}
            plural = configuration["kind"].lower() + "s"
            self._apply(f"/apis/admissionregistration.k8s.io/v1/{plural}/{configuration['metadata']['name']}",
                        configuration)

    def _apply(self, path: str, manifest: dict[str, Any]) -> None:
        self.request("PATCH", f"{path}?fieldManager={FIELD_MANAGER}&force=true", body=manifest,
                     content_type="application/apply-patch+yaml")

    def _webhook_ready(self) -> bool:
        context = ssl.create_default_context(cafile=str(self.ca_file))
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context))
        with opener.open(f"https://127.0.0.1:{self.webhook_port}/readyz", timeout=5) as response:
            return response.read().decode().strip() == "OK"

    def _admission_goes_through(self) -> bool:
        """A dry-run Cluster without imageName comes back with one: the mutating webhook answered."""
        probe = {"apiVersion": "postgresql.cnpg.io/v1", "kind": "Cluster",
                 "metadata": {"name": "admission-probe", "namespace": OPERATOR_NAMESPACE},
                 "spec": {"instances": 1, "storage": {"size": "1Gi"}}}
        try:
            answer = self.request("POST", f"/apis/postgresql.cnpg.io/v1/namespaces/{OPERATOR_NAMESPACE}/clusters"
                                          "?dryRun=All", body=probe)
        except ApiError as e:
            if e.status >= 500:  # "failed calling webhook": the apiserver cannot reach the operator yet
                return False
            raise
        return bool(answer["spec"].get("imageName"))

    def _spawn(self, name: str, command: list[str], *, cwd: Path | None = None, env: dict[str, str] | None = None) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        (cwd or self.directory).mkdir(parents=True, exist_ok=True)
        # A clean environment: no proxy variables (webhook calls go to loopback), no stray KUBECONFIG.
        base = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": str(self.directory),
                "LANG": "C.UTF-8"}
        with (self.logs / f"{name}.log").open("ab") as log:
            self._processes[name] = subprocess.Popen(
                command, cwd=cwd or self.directory, env=base | (env or {}), stdin=subprocess.DEVNULL,
                stdout=log, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent_preexec(),
            )

    def _stop(self, name: str) -> None:
        process = self._processes.pop(name, None)
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def _wait(self, what: str, condition: Callable[[], bool], *, process: str) -> None:
        deadline = time.monotonic() + self.timeout
        last_error: Exception | None = None
        delay = 0.02
        while time.monotonic() < deadline:
            running = self._processes.get(process)
            if running is None or running.poll() is not None:
                code = None if running is None else running.returncode
                raise TestbedError(f"{process} exited with {code} while waiting for {what}")
            try:
                if condition():
                    return
            except (OSError, ApiError, KeyError, ValueError) as e:  # not listening yet, 503, half-written objects
                last_error = e
            time.sleep(delay)
            delay = min(delay * 2, 0.25)
        raise TestbedError(f"no {what} after {self.timeout:.0f}s (last error: {last_error!r})")

    # -- files ------------------------------------------------------------------------------------------------

    def _opener(self) -> urllib.request.OpenerDirector:
        context = ssl.create_default_context(cafile=str(self.ca_file))
        return urllib.request.build_opener(urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context))

    def _write_kubeconfig(self, name: str, *, user: str, token: str) -> Path:
        path = self.directory / "kubeconfigs" / f"{name}.kubeconfig"
        path.parent.mkdir(parents=True, exist_ok=True)
        config = {
            "apiVersion": "v1", "kind": "Config", "current-context": "testbed",
            "clusters": [{"name": "testbed", "cluster": {
                "server": self.server,
                "certificate-authority-data": base64.b64encode(self.ca_file.read_bytes()).decode()}}],
            "users": [{"name": user, "user": {"token": token}}],
            "contexts": [{"name": "testbed", "context": {"cluster": "testbed", "user": user}}],
        }
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        path.chmod(0o600)
        return path

    def _write_pki(self) -> None:
        pki = self.directory / "pki"
        pki.mkdir(parents=True)
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "orochi-testbed-ca")])
        now = datetime.datetime.now(datetime.UTC)
        ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
              .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
              .not_valid_after(now + datetime.timedelta(days=7))
              .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
              .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                           content_commitment=False, key_encipherment=False, data_encipherment=False,
                                           key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
              .sign(ca_key, hashes.SHA256()))
        _write_key(pki / "ca.key", ca_key)
        (pki / "ca.crt").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
        service_ip = str(next(ipaddress.ip_network(SERVICE_CLUSTER_IP_RANGE).hosts()))
        _issue(pki, "apiserver", ca=ca, ca_key=ca_key, now=now, dns=[
            "localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local"], ips=["127.0.0.1", service_ip])
        webhook = self.directory / "webhook"  # WEBHOOK_CERT_DIR: the operator serves apiserver.crt/apiserver.key
        webhook.mkdir()
        _issue(webhook, "apiserver", ca=ca, ca_key=ca_key, now=now, dns=["localhost"], ips=["127.0.0.1"])
        sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        _write_key(pki / "sa.key", sa_key)
        (pki / "sa.pub").write_bytes(sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
        (pki / "tokens.csv").write_text(
            f'{self.admin_token},admin,admin,"system:masters"\n'
            f'{self._controller_manager_token},system:kube-controller-manager,kube-controller-manager,"system:masters"\n'
            f'{self._operator_token},cnpg-operator,cnpg-operator,"system:masters"\n')
        self._write_kubeconfig("admin", user="admin", token=self.admin_token)
        self._write_kubeconfig("cnpg-operator", user="cnpg-operator", token=self._operator_token)


def _issue(directory: Path, name: str, *, ca: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey,
           now: datetime.datetime, dns: list[str], ips: list[str]) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    names = [x509.DNSName(d) for d in dns] + [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, dns[0])]))
            .issuer_name(ca.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=7))
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    _write_key(directory / f"{name}.key", key)
    (directory / f"{name}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    path.chmod(0o600)


def _get_plain(url: str) -> str:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=5) as response:
        return response.read().decode()


def _die_with_parent_preexec() -> Callable[[], None] | None:
    """In the main thread, children get SIGKILL when this process dies, so a killed test run leaves nothing behind.

    PR_SET_PDEATHSIG fires when the *thread* that forked exits, so it is only safe from the main thread.
    """
    if threading.current_thread() is not threading.main_thread():
        return None
    libc = ctypes.CDLL(None, use_errno=True)

    def preexec() -> None:
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG

    return preexec
