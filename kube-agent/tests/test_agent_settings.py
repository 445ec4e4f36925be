"""The agent's settings: read once from the environment, every bad value refused with the variable named."""

from __future__ import annotations

import subprocess
import sys

import pytest
from orochi_agent.settings import Settings, SettingsError

REQUIRED = {
    "OROCHI_API_URL": "https://api.orochi.example", "OROCHI_AGENT_TOKEN": "agt_x.secret", "OROCHI_REGION": "nyc1",
    "OROCHI_QUEUE_URL": "https://sqs.us-east-1.amazonaws.com/1/orochi-jobs-nyc1.fifo", "OROCHI_DRIVER": "local",
}


@pytest.mark.parametrize("name", sorted(REQUIRED))
def test_a_missing_required_variable_is_named(name: str) -> None:
    with pytest.raises(SettingsError, match=name):
        Settings.from_env({k: v for k, v in REQUIRED.items() if k != name})


@pytest.mark.parametrize(("name", "value"), [
    ("OROCHI_API_URL", "ftp://api"), ("OROCHI_QUEUE_URL", "https://sqs/queue-not-fifo"), ("OROCHI_DRIVER", "docker"),
    ("OROCHI_HEALTH_PORT", "70000"), ("OROCHI_CONCURRENCY", "0"), ("OROCHI_POLL_WAIT_SECONDS", "21"),
    ("OROCHI_RETRY_BASE_SECONDS", "soon"), ("OROCHI_LOCAL_STOP_SERVERS_ON_EXIT", "maybe"),
    ("OROCHI_LOG_LEVEL", "LOUD"), ("OROCHI_KUBE_INTERNAL_CIDRS", "10.0.0.0/33"),
    ("OROCHI_KUBE_SCRAPE_NAMESPACES", "Not_A_Name"), ("OROCHI_LEASE_DURATION_SECONDS", "1"),
])
def test_a_malformed_value_is_refused_naming_the_variable(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=name):
        Settings.from_env({**REQUIRED, name: value})


def test_defaults_fit_a_production_agent_and_the_token_stays_out_of_the_repr() -> None:
    settings = Settings.from_env(REQUIRED)
    assert (settings.health_port, settings.visibility_timeout, settings.metrics_interval) == (8081, 120, 30.0)
    assert settings.local.data_dir.name == "nyc1"  # one folder per region: agents on one machine never share
    assert settings.kube.storage_class == "do-block-storage"
    assert "secret" not in repr(settings)


def test_the_command_fails_fast_with_the_variable_named_and_exit_2() -> None:
    done = subprocess.run([sys.executable, "-m", "orochi_agent"], env={"PATH": "/usr/bin:/bin"},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr == "orochi-agent: OROCHI_REGION is required\n"
