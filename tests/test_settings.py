"""Configuration is checked at start: a bad value stops the app with a message that names the variable.

The starts run the real thing (a fresh interpreter importing `app`, as the Lambda runtime does), all at
once in one fixture since each costs an interpreter; the finer cases read the same settings in-process.
"""

from __future__ import annotations

import base64
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

from chalicelib.settings import Settings, SettingsError
from conftest import ROOT


def key(raw: bytes, kid: str = "k1") -> str:
    return f"{kid}:{base64.b64encode(raw).decode()}"


STARTS: dict[str, dict[str, str]] = {
    "valid": {},
    "jwt-secret-of-31-bytes": {"JWT_SECRET": "s" * 31},
    "encryption-key-not-base64": {"ENCRYPTION_KEY": "k1:this is not base64!"},
    "encryption-key-of-31-bytes": {"ENCRYPTION_KEY": key(b"k" * 31)},
    "idle-over-absolute": {"REFRESH_IDLE_TTL_SECONDS": "7200", "REFRESH_ABSOLUTE_TTL_SECONDS": "3600"},
}


def start_app(stack_env: dict[str, str], changes: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Import the app with `changes` to the test environment."""
    return subprocess.run([sys.executable, "-c", "import app"], cwd=ROOT, env={**stack_env, **changes},
                          capture_output=True, text=True, timeout=180)


@pytest.fixture(scope="module")
def started(stack_env) -> dict[str, subprocess.CompletedProcess[str]]:
    with ThreadPoolExecutor(4) as pool:
        return dict(zip(STARTS, pool.map(lambda changes: start_app(stack_env, changes), STARTS.values())))


def assert_refused(result: subprocess.CompletedProcess[str], *names: str) -> str:
    assert result.returncode != 0, result.stderr
    message = result.stderr.strip().splitlines()[-1]
    assert message.startswith("chalicelib.settings.SettingsError: "), result.stderr
    for name in names:
        assert name in message, message
    return message


def test_app_starts_with_valid_settings(started):
    assert started["valid"].returncode == 0, started["valid"].stderr


def test_short_jwt_secret_stops_the_app(started):
    message = assert_refused(started["jwt-secret-of-31-bytes"], "JWT_SECRET", "at least 32 bytes")
    assert "s" * 31 not in message  # the secret itself is never echoed


@pytest.mark.parametrize("case", ["encryption-key-not-base64", "encryption-key-of-31-bytes"])
def test_malformed_encryption_key_stops_the_app(started, case):
    message = assert_refused(started[case], "ENCRYPTION_KEY")
    assert base64.b64encode(b"k" * 31).decode() not in message  # key material is never echoed


def test_idle_refresh_ttl_longer_than_absolute_stops_the_app(started):
    assert_refused(started["idle-over-absolute"], "REFRESH_IDLE_TTL_SECONDS", "REFRESH_ABSOLUTE_TTL_SECONDS")


# --- the same checks in-process, for the finer cases ---------------------------------------------------------


def test_several_encryption_keys_are_accepted_and_the_first_encrypts(stack_env):
    settings = Settings.from_env({**stack_env, "ENCRYPTION_KEY": f"{key(b'n' * 32, 'new')},{key(b'o' * 32, 'old')}"})
    assert [kid for kid, _ in settings.encryption_keys] == ["new", "old"]


def test_jwt_secret_of_32_bytes_is_accepted_and_a_missing_one_refused(stack_env):
    assert Settings.from_env({**stack_env, "JWT_SECRET": "s" * 32}).jwt_secret == b"s" * 32
    with pytest.raises(SettingsError, match="JWT_SECRET"):
        Settings.from_env({k: v for k, v in stack_env.items() if k != "JWT_SECRET"})


def test_jwt_secret_length_counts_bytes_not_characters(stack_env):
    with pytest.raises(SettingsError, match="JWT_SECRET"):
        Settings.from_env({**stack_env, "JWT_SECRET": "é" * 15})  # 15 characters, 30 bytes
    assert Settings.from_env({**stack_env, "JWT_SECRET": "é" * 16}).jwt_secret == ("é" * 16).encode()


@pytest.mark.parametrize("value", [
    "",
    "not-a-key",
    key(b"k" * 33),
    base64.b64encode(b"k" * 32).decode(),  # no key id
    key(b"k" * 32, kid="bad kid!"),
    key(b"k" * 32, kid="k" * 17),
    f"{key(b'a' * 32)},{key(b'b' * 32)}",  # one key id twice
    f"{key(b'a' * 32)},",
])
def test_malformed_encryption_key_is_refused(stack_env, value):
    with pytest.raises(SettingsError, match="ENCRYPTION_KEY"):
        Settings.from_env({**stack_env, "ENCRYPTION_KEY": value})


def test_missing_encryption_key_is_refused(stack_env):
    with pytest.raises(SettingsError, match="ENCRYPTION_KEY is required"):
        Settings.from_env({k: v for k, v in stack_env.items() if k != "ENCRYPTION_KEY"})


@pytest.mark.parametrize("name, value", [
    ("ACCESS_TOKEN_TTL_SECONDS", "0"),
    ("ACCESS_TOKEN_TTL_SECONDS", "fifteen minutes"),
    ("REFRESH_IDLE_TTL_SECONDS", "-1"),
    ("REFRESH_ABSOLUTE_TTL_SECONDS", "0"),
    ("PASSWORD_HASH_MEMORY_KIB", "4096"),
    ("PASSWORD_HASH_ITERATIONS", "1"),
    ("PASSWORD_HASH_LANES", "0"),
    ("LOGIN_MAX_FAILURES", "0"),
    ("LOGIN_FAILURE_WINDOW_SECONDS", "0"),
])
def test_weak_or_malformed_security_setting_is_refused(stack_env, name, value):
    with pytest.raises(SettingsError, match=name):
        Settings.from_env({**stack_env, name: value})


def test_security_defaults_match_the_design(stack_env):
    settings = Settings.from_env({k: v for k, v in stack_env.items() if not k.startswith(("ACCESS_", "REFRESH_", "PASSWORD_", "LOGIN_"))})
    assert settings.access_token_ttl == 15 * 60
    assert settings.refresh_idle_ttl == 7 * 86400
    assert settings.refresh_absolute_ttl == 30 * 86400
    assert (settings.password_memory_kib, settings.password_iterations) == (19 * 1024, 2)
    assert (settings.login_max_failures, settings.login_failure_window) == (10, 15 * 60)
