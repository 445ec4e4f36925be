"""A real `orochi-agent` process with the `cnpg` driver, for one region of a test `Stack`, against a `Testbed`.

It reaches Kubernetes with the kubeconfig it is given (the ServiceAccount `orochi-agent/orochi-agent` of
`kube-agent/deploy`, with a TokenRequest token, so RBAC and the admission policy apply to every call), keeps its
Lease in `orochi-agent`, and logs to a file of its own. Its /metrics are read with prometheus_client's parser.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import NamedTuple

import requests
from conftest import ROOT, Stack, until
from prometheus_client.parser import text_string_to_metric_families

from devstack.ports import free_port

AGENT_NAMESPACE = "orochi-agent"
FAST = {
    "OROCHI_POLL_WAIT_SECONDS": "1",
    "OROCHI_OBSERVE_INTERVAL_SECONDS": "0.5",
    "OROCHI_METRICS_INTERVAL_SECONDS": "1",
    "OROCHI_HEARTBEAT_INTERVAL_SECONDS": "1",
    "OROCHI_RESYNC_INTERVAL_SECONDS": "300",
    "OROCHI_RETRY_BASE_SECONDS": "0.2",
    "OROCHI_RETRY_MAX_SECONDS": "2",
    "OROCHI_DRAIN_SECONDS": "10",
}


Series = tuple[str, tuple[tuple[str, str], ...]]


class KubeCall(NamedTuple):
    """A Kubernetes call as RBAC sees it; scope "cluster" for cluster-scoped ones and lists of all namespaces."""

    verb: str
    group: str
    resource: str
    scope: str


class KubeAgent:
    def __init__(self, stack: Stack, *, kubeconfig: Path, pod: str, region: str = "nyc1", **overrides: str) -> None:
        self.stack, self.pod, self.region = stack, pod, region
        self.health_port = free_port()
        self.log = Path(tempfile.mkdtemp(prefix="orochi-kube-agent-")) / f"{pod}.log"
        self.env = {
            **stack.env, **FAST,
            "OROCHI_API_URL": stack.url, "OROCHI_AGENT_TOKEN": stack.agent(region), "OROCHI_REGION": region,
            "OROCHI_QUEUE_URL": stack.queue_url(region), "OROCHI_DRIVER": "cnpg",
            "OROCHI_HEALTH_PORT": str(self.health_port), "KUBECONFIG": str(kubeconfig),
            "OROCHI_KUBE_NAMESPACE": AGENT_NAMESPACE, "OROCHI_POD_NAME": pod, **overrides,
        }
        self.process: subprocess.Popen[bytes] | None = None

    def spawn(self) -> KubeAgent:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen([sys.executable, "-m", "orochi_agent"], cwd=ROOT, env=self.env,
                                            stdout=log, stderr=log)
        return self

    def wait_ready(self, timeout: float = 120) -> KubeAgent:
        """Until /readyz answers 200: the queue and the API answered, and the watch caches listed (as the
        ServiceAccount: a refused list would keep it unready)."""
        until(self._ready, timeout=timeout, what=f"the agent {self.pod}'s /readyz on port {self.health_port}")
        return self

    def start(self) -> KubeAgent:
        return self.spawn().wait_ready()

    def _ready(self) -> bool:
        assert self.running, f"the agent {self.pod} exited:\n{self.log_text()[-4000:]}"
        try:
            return self.health("/readyz").status_code == 200
        except requests.ConnectionError:
            return False

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def health(self, path: str) -> requests.Response:
        return requests.get(f"http://127.0.0.1:{self.health_port}{path}", timeout=5)

    def series(self) -> list[tuple[Series, float]]:
        """Every sample of /metrics, in order, as (name and sorted labels, value)."""
        return [((s.name, tuple(sorted(s.labels.items()))), s.value)
                for family in text_string_to_metric_families(self.health("/metrics").text) for s in family.samples]

    def samples(self) -> Counter[Series]:
        """Every sample of /metrics by name and labels; a series given more than once is added up (the Kubernetes
        call counter repeats one per namespace)."""
        totals: Counter[Series] = Counter()
        for key, value in self.series():
            totals[key] += value
        return totals

    def metric(self, name: str, **labels: str) -> float:
        """One sample of /metrics (0 when absent)."""
        return self.samples().get((name, tuple(sorted(labels.items()))), 0.0)

    def by_label(self, name: str, label: str) -> dict[str, float]:
        """The samples of `name` by the value of its label `label` (e.g. jobs failed by `reason`)."""
        return {dict(labels)[label]: value for (sample, labels), value in self.samples().items()
                if sample == name and label in dict(labels)}

    def kube_calls(self) -> Counter[KubeCall]:
        """`orochi_agent_kube_requests_total`: every Kubernetes call this agent made, by verb, group, resource, scope."""
        calls: Counter[KubeCall] = Counter()
        for (name, labels), value in self.samples().items():
            if name == "orochi_agent_kube_requests_total":
                found = dict(labels)
                calls[KubeCall(found["verb"], found["group"], found["resource"], found["scope"])] += int(value)
        return calls

    def namespaces_created(self) -> int:
        """How many namespaces this agent created: one per new cluster it applied first."""
        return self.kube_calls()[KubeCall("create", "", "namespaces", "cluster")]

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 120) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signum)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for the agent {self.pod} to exit on signal "
                                 f"{signum}:\n{self.log_text()[-4000:]}") from None

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""
