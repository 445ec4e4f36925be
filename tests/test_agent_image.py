"""The agent's image and Deployment, as far as these machines can check them (no container engine runs here):
the Dockerfile's stages and user, and the rendered Deployment's probes, resources and security context."""

from __future__ import annotations

import re
import subprocess
from typing import Any

import pytest
import yaml
from conftest import ROOT

AGENT = ROOT / "kube-agent"


def stages() -> list[list[str]]:
    """The Dockerfile's instructions, stage by stage (comments and continuations folded)."""
    text = re.sub(r"\\\n", " ", (AGENT / "Dockerfile").read_text())
    found: list[list[str]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.upper().startswith("FROM "):
            found.append([])
        found[-1].append(line)
    return found


def test_the_image_is_two_pinned_stages_and_the_final_one_only_copies_the_venv_and_runs_unprivileged() -> None:
    build, final = stages()
    for stage in (build, final):
        image = stage[0].split()[1]
        assert re.fullmatch(r"python:\d+\.\d+\.\d+-slim-\w+", image), f"{image} is not pinned to an exact version"
    assert any("--requirement requirements.txt" in line for line in build)
    assert not any(line.upper().startswith(("RUN PIP", "RUN APT")) or "install" in line for line in final[1:])
    assert [line for line in final if line.upper().startswith("COPY")] == ["COPY --from=build /opt/agent /opt/agent"]
    (user,) = [line.split()[1] for line in final if line.upper().startswith("USER ")]
    assert re.fullmatch(r"[1-9]\d*:[1-9]\d*", user), "a numeric, non-root user (runAsNonRoot can verify it)"
    assert final[-1] == 'ENTRYPOINT ["/opt/agent/bin/orochi-agent"]'


@pytest.fixture(scope="module")
def rendered() -> list[dict[str, Any]]:
    from devstack.kube.build import ensure_built

    done = subprocess.run([str(ensure_built().kustomize), "build", str(AGENT / "deploy")], capture_output=True,
                          text=True, check=True, timeout=300)
    return list(yaml.safe_load_all(done.stdout))


def test_the_deployment_runs_two_hardened_replicas_with_probes_on_the_health_port(rendered: list[dict[str, Any]]) -> None:
    (deployment,) = [d for d in rendered if d["kind"] == "Deployment"]
    assert deployment["spec"]["replicas"] == 2
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = pod["containers"]
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]}}
    assert container["ports"] == [{"name": "health", "containerPort": 8081}]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "health"}
    assert {"cpu", "memory"} <= set(container["resources"]["requests"]) and "memory" in container["resources"]["limits"]
    secrets = {e["valueFrom"]["secretKeyRef"]["key"] for e in container["env"] if "secretKeyRef" in e.get("valueFrom", {})}
    assert secrets == {"agent-token", "aws-access-key-id", "aws-secret-access-key"}
    assert not any("value" in e and any(s in e["name"] for s in ("TOKEN", "SECRET")) for e in container["env"])
    # SIGTERM: the agent drains for OROCHI_DRAIN_SECONDS (25) after its long poll (10) ends; the pod waits longer.
    assert pod["terminationGracePeriodSeconds"] > 25 + 10
