"""Passwords: how they are stored, which ones are accepted, and how guessing them is limited."""

from __future__ import annotations

import json
import re
import uuid

import pytest

from chalicelib.store import keys
from conftest import send_together

PHC = re.compile(r"^\$argon2id\$v=19\$m=(\d+),t=(\d+),p=(\d+)\$[A-Za-z0-9+/]+\$[A-Za-z0-9+/]+$")


def stored_hash(stack, user_id: str) -> str:
    item = stack.raw_item(keys.user(user_id))
    assert item is not None, user_id
    return item["password_hash"]["S"]


def hash_parameters(encoded: str) -> tuple[int, int, int]:
    match = PHC.match(encoded)
    assert match, encoded
    memory, iterations, lanes = (int(g) for g in match.groups())
    return memory, iterations, lanes


def login(stack, email: str, password: str, headers: dict[str, str] | None = None):
    return stack.call("POST", "/v1/auth/login", json={"email": email, "password": password}, headers=headers)


def register(stack, password: str):
    return stack.call("POST", "/v1/auth/register", json={
        "email": f"pw-{uuid.uuid4().hex[:12]}@example.com", "password": password, "name": "P", "organization_name": "P",
    })


@pytest.fixture(scope="module")
def guarded(stack_factory):
    """An API that locks an account after 3 failed logins within the default window of 15 minutes."""
    return stack_factory(LOGIN_MAX_FAILURES="3")


# --- storage --------------------------------------------------------------------------------------------------


def test_password_is_stored_as_argon2id_phc_with_owasp_parameters(stack):
    password = f"plaintext-{uuid.uuid4().hex}"
    account = stack.register(password=password)
    encoded = stored_hash(stack, account.user_id)
    memory, iterations, lanes = hash_parameters(encoded)
    assert memory >= 19 * 1024 and iterations >= 2 and lanes >= 1
    assert (memory, iterations, lanes) == (19 * 1024, 2, 1)  # the defaults

    items = stack.table_items()
    assert items and password not in json.dumps(items)


def test_same_password_hashes_differently_for_two_users(stack):
    first, second = stack.register(password="shared password"), stack.register(password="shared password")
    assert stored_hash(stack, first.user_id) != stored_hash(stack, second.user_id)


def test_login_rehashes_password_when_parameters_are_raised(stack, stack_factory):
    account = stack.register()
    assert hash_parameters(stored_hash(stack, account.user_id))[1] == 2
    stronger = stack_factory(TABLE_NAME=stack.env["TABLE_NAME"], PASSWORD_HASH_ITERATIONS="3")

    assert login(stronger, account.email, account.password).status_code == 200
    assert hash_parameters(stored_hash(stack, account.user_id)) == (19 * 1024, 3, 1)
    assert login(stronger, account.email, account.password).status_code == 200
    assert login(stronger, account.email, "wrong password").status_code == 401


def test_login_on_an_instance_with_older_parameters_keeps_the_stronger_hash(stack, stack_factory):
    account = stack.register()
    stronger = stack_factory(TABLE_NAME=stack.env["TABLE_NAME"], PASSWORD_HASH_ITERATIONS="3")
    assert login(stronger, account.email, account.password).status_code == 200
    upgraded = stored_hash(stack, account.user_id)

    assert login(stack, account.email, account.password).status_code == 200  # e.g. during a rolling deploy
    assert stored_hash(stack, account.user_id) == upgraded


# --- policy ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("password", ["a" * 7, "x" * 129, "", "é" * 129])
def test_password_outside_8_to_128_characters_is_refused(stack, password):
    response = register(stack, password)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "validation_error"
    assert [d["field"] for d in error["details"]] == ["password"]


@pytest.mark.parametrize("password", ["aaaaaaaa", "Z" * 128, "pässwörd", "é" * 128, "        "])
def test_any_password_of_8_to_128_characters_is_accepted(stack, password):
    response = register(stack, password)
    assert response.status_code == 201, response.text
    email = response.json()["user"]["email"]
    assert login(stack, email, password).status_code == 200


@pytest.mark.parametrize("password", ["line\nbreak-password", "nul\x00-password", "tab\tpassword", "del\x7fpassword",
                                      "c1\x85-password"], ids=repr)
def test_a_password_with_a_control_character_is_refused(stack, password):
    response = register(stack, password)
    assert response.status_code == 400, response.text
    assert [d["field"] for d in response.json()["error"]["details"]] == ["password"]


@pytest.mark.parametrize(("registered", "typed"), [
    ("caf\u00e9-au-lait", "cafe\u0301-au-lait"),  # a composed accent, and the same one decomposed
    ("\uff30\uff41\uff53\uff53\uff57\uff4f\uff52\uff44", "Password"),  # full-width forms, as some keyboards type them
], ids=["composed-decomposed", "full-width"])
def test_the_same_password_typed_differently_logs_in(stack, registered, typed):
    """NFKC before hashing: another keyboard or system spelling the same characters otherwise is the same password."""
    response = register(stack, registered)
    assert response.status_code == 201, response.text
    email = response.json()["user"]["email"]
    assert login(stack, email, typed).status_code == 200
    assert login(stack, email, typed + "!").status_code == 401


# --- failed-login limit ---------------------------------------------------------------------------------------


def assert_locked(response, *, window: int) -> None:
    assert response.status_code == 429, response.text
    assert response.json()["error"]["code"] == "rate_limited"
    assert 1 <= int(response.headers["Retry-After"]) <= window


def test_ten_failed_logins_lock_the_account_whatever_the_client_address(stack):
    victim, bystander = stack.register(), stack.register()
    for attempt in range(10):
        email = victim.email.upper() if attempt % 2 else victim.email  # the e-mail's case does not matter either
        response = login(stack, email, f"guess number {attempt}", headers={"X-Forwarded-For": f"203.0.113.{attempt + 1}"})
        assert response.status_code == 401, (attempt, response.text)

    assert_locked(login(stack, victim.email, "guess number 10", headers={"X-Forwarded-For": "198.51.100.7"}), window=900)
    assert_locked(login(stack, victim.email, victim.password, headers={"X-Forwarded-For": "198.51.100.8"}), window=900)
    assert login(stack, bystander.email, bystander.password).status_code == 200
    assert stack.call("GET", "/v1/auth/me", token=victim.access_token).status_code == 200  # sessions are untouched


def test_lock_lifts_when_the_failure_window_ends(own_stack):
    guarded = own_stack(LOGIN_MAX_FAILURES="3")
    account = guarded.register()
    for attempt in range(3):
        assert login(guarded, account.email, f"wrong guess {attempt}").status_code == 401
    locked = login(guarded, account.email, account.password)
    assert_locked(locked, window=900)
    retry_after = int(locked.headers["Retry-After"])
    guarded.advance_clock(retry_after - 10)
    assert_locked(login(guarded, account.email, account.password), window=10)
    guarded.advance_clock(11)
    assert login(guarded, account.email, account.password).status_code == 200


def test_successful_login_resets_the_failure_count(guarded):
    account = guarded.register()
    for attempt in range(2):
        assert login(guarded, account.email, f"wrong guess {attempt}").status_code == 401
    assert login(guarded, account.email, account.password).status_code == 200
    for attempt in range(2):
        assert login(guarded, account.email, f"wrong again {attempt}").status_code == 401
    assert login(guarded, account.email, account.password).status_code == 200


def test_concurrent_wrong_passwords_cannot_exceed_the_failure_limit(guarded):
    account = guarded.register()
    results = send_together(
        guarded, "POST", "/v1/auth/login",
        [{"email": account.email, "password": f"parallel guess {i}"} for i in range(12)],
    )
    statuses = sorted(status for status, _ in results)
    assert statuses == [401] * 3 + [429] * 9, statuses
    assert_locked(login(guarded, account.email, account.password), window=900)


def test_failed_logins_for_unknown_emails_do_not_lock_real_accounts(guarded):
    account = guarded.register()
    for attempt in range(4):
        assert login(guarded, f"nobody-{attempt}-{account.email}", "whatever password").status_code == 401
    assert login(guarded, account.email, account.password).status_code == 200
