"""What request bodies and headers accept: free text without control or invisible-only values, e-mail addresses
as email-validator reads them, integers as JSON Schema reads them, well-formed If-Match and Idempotency-Key.

The API side runs over HTTP; the rules themselves (the patterns the document states, the Unicode sets spelled
out in chalicelib.shapes) are checked against the libraries they stand for.
"""

from __future__ import annotations

import re
import sys
import unicodedata
import uuid
from dataclasses import dataclass
from typing import Annotated, Any

import email_validator
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import StringConstraints, TypeAdapter, ValidationError

from chalicelib import shapes
from conftest import Account, Stack, cluster_body, cluster_path, clusters_path

CONTROL_AND_INVISIBLE = [
    "a\x00b", "\x01name", "name\x1f", "two\nlines", "tab\there", "del\x7f", "c1\x85", "c1\x9f",
    "\u200b", "\ufeff", "\u2060", " \u200b\u200d ", "\u00ad", "\U000e0041", "   ",
]


def _unique_email() -> str:
    return f"v-{uuid.uuid4().hex[:12]}@example.com"


def _register(stack: Stack, **fields: Any) -> Any:
    body = {"email": _unique_email(), "password": "correct horse battery", "name": "Valid Name",
            "organization_name": "Valid Org", **fields}
    return stack.call("POST", "/v1/auth/register", json=body)


def _invalid_fields(response: Any) -> set[str]:
    assert response.status_code == 400, response.text
    body = response.json()["error"]
    assert body["code"] == "validation_error"
    return {detail["field"] for detail in body["details"]}


# --- names -------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("value", CONTROL_AND_INVISIBLE, ids=repr)
def test_user_and_organization_names_refuse_control_and_invisible_only_values(stack: Stack, value: str) -> None:
    assert _invalid_fields(_register(stack, name=value)) == {"name"}
    assert _invalid_fields(_register(stack, organization_name=value)) == {"organization_name"}


@pytest.mark.parametrize("value", CONTROL_AND_INVISIBLE, ids=repr)
def test_organization_rename_refuses_control_and_invisible_only_values(stack: Stack, owner: Account, value: str) -> None:
    response = stack.call("PATCH", f"/v1/orgs/{owner.org_id}", token=owner.access_token, json={"name": value})
    assert _invalid_fields(response) == {"name"}


def test_names_are_stored_nfc_and_trimmed(stack: Stack) -> None:
    response = _register(stack, name="  Cafe\u0301 Noir \u00a0", organization_name="\u3000Zo\u0308e Ltd  ")
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["user"]["name"] == "Caf\u00e9 Noir"
    assert body["organization"]["name"] == "Z\u00f6e Ltd"
    me = stack.call("GET", "/v1/auth/me", token=body["access_token"]).json()
    assert me["name"] == "Caf\u00e9 Noir"


def test_a_name_with_invisible_characters_around_visible_ones_is_accepted(stack: Stack) -> None:
    response = _register(stack, name="\u200bA\u200d")
    assert response.status_code == 201, response.text


@pytest.mark.parametrize("name", ["a\x00b", "pg\n", "pg-\u200b", "\ufeffpg"], ids=repr)
def test_cluster_names_refuse_control_and_invisible_characters(stack: Stack, owner: Account, name: str) -> None:
    assert _invalid_fields(stack.post_cluster(owner, cluster_body(name=name))) == {"name"}


# --- e-mail addresses --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("email", [
    "a\x00b@example.com", "a\nb@example.com", "a@exam\x00ple.com", "\u200ba@example.com", "a b@example.com",
    "\ta@example.com", "a@example", "a@localhost", "a@host.local", "a@b.test", "a@b.invalid", "a..b@example.com",
    ".a@example.com", "a@-example.com", "a@ab--cd.com", "a@xn--p1ai.com", "j\u00f6rg@example.com", "a@b.c0m",
    f"{'a' * 33}@example.com",
], ids=repr)
def test_malformed_emails_are_refused_naming_the_field(stack: Stack, owner: Account, email: str) -> None:
    assert _invalid_fields(_register(stack, email=email)) == {"email"}
    login = stack.call("POST", "/v1/auth/login", json={"email": email, "password": "correct horse battery"})
    assert _invalid_fields(login) == {"email"}
    invite = stack.call("POST", f"/v1/orgs/{owner.org_id}/invitations", token=owner.access_token,
                        json={"email": email, "role": "member"})
    assert _invalid_fields(invite) == {"email"}


def test_an_email_is_stored_with_its_domain_lowercased_and_is_unique_whatever_its_case(stack: Stack) -> None:
    local = f"Mixed.Case-{uuid.uuid4().hex[:8]}"
    first = _register(stack, email=f"{local}@Example.COM")
    assert first.status_code == 201, first.text
    assert first.json()["user"]["email"] == f"{local}@example.com"
    again = _register(stack, email=f"{local.lower()}@EXAMPLE.com")
    assert again.status_code == 409, again.text
    login = stack.call("POST", "/v1/auth/login", json={"email": f"{local.upper()}@example.com",
                                                      "password": "correct horse battery"})
    assert login.status_code == 200, login.text


def test_an_invitation_email_is_normalized(stack: Stack, owner: Account) -> None:
    local = f"invitee-{uuid.uuid4().hex[:8]}"
    invitation = stack.invite(owner, email=f"{local}@Example.ORG")
    assert invitation["email"] == f"{local}@example.org"


# --- the agent's free strings ------------------------------------------------------------------------------------

@dataclass
class Reported:
    """A cluster of nyc1, its owner, and the bearer token of nyc1's agent."""

    owner: Account
    cluster_id: str
    agent_token: str


@pytest.fixture(scope="module")
def reported(stack: Stack) -> Reported:
    owner = stack.register()
    return Reported(owner, stack.create_cluster(owner)["cluster"]["id"], stack.agent("nyc1"))


@pytest.mark.parametrize(("field", "value"), [
    ("message", "nul\x00"), ("message", "bell\x07"), ("message", "cr\r\nlf"), ("message", "c1\x9b"),
    ("primary", "pod\n"), ("primary", "pod-1\x00"), ("primary", "pod 1"),
], ids=repr)
def test_agent_status_strings_refuse_control_characters(stack: Stack, reported: Reported, field: str, value: str) -> None:
    report = {"observed_generation": 1, "phase": "provisioning", "ready_instances": 0, field: value}
    response = stack.call("POST", f"/v1/agent/clusters/{reported.cluster_id}/status", token=reported.agent_token,
                          json=report)
    assert _invalid_fields(response) == {field}


def test_agent_status_message_keeps_its_lines_and_tabs(stack: Stack, reported: Reported) -> None:
    stack.report(reported.cluster_id, observed_generation=1, phase="provisioning", ready_instances=0,
                 message="  pulling image:\n\tstill waiting  ", primary="pg-abc-1")
    cluster = stack.get_cluster(reported.owner, reported.cluster_id)
    assert cluster["status_message"] == "pulling image:\n\tstill waiting"


@pytest.mark.parametrize(("field", "value"), [
    ("endpoint", "https://s3.example.com/\x00"), ("endpoint", "https://s3.example.com/a\x85b"),
    ("endpoint", "https://s3.example.com:\u0661\u0662"), ("access_key_id", "AKIA\x00"), ("access_key_id", "AKIA\u0085"),
    ("secret_access_key", "secret\n"), ("secret_access_key", "se cret"),
], ids=repr)
def test_storage_tier_strings_refuse_control_and_non_ascii(stack: Stack, owner: Account, field: str, value: str) -> None:
    target = {"endpoint": "https://s3.example.com", "bucket": "backups", "region": "us-east-1",
              "access_key_id": "AKIAEXAMPLE", "secret_access_key": "secret", field: value}
    response = stack.post_cluster(owner, cluster_body(storage_tiers={"cold": target}))
    assert _invalid_fields(response) == {f"storage_tiers.cold.{field}"}


# --- integers, headers -------------------------------------------------------------------------------------------

def test_integers_take_integral_floats_but_not_strings_or_booleans(stack: Stack, reported: Reported) -> None:
    token = reported.agent_token
    ok = stack.call("POST", "/v1/agent/heartbeat", token=token, json={"agent_version": "1.0", "clusters": 3.0})
    assert ok.status_code == 200, ok.text
    for value in ("3", True, 2.5):
        response = stack.call("POST", "/v1/agent/heartbeat", token=token, json={"agent_version": "1.0", "clusters": value})
        assert _invalid_fields(response) == {"clusters"}


# Numbers beyond what DynamoDB stores (38 digits, magnitude below 1e126) or what JavaScript holds exactly (2^53 - 1)
# are refused as values, not stored half-way or answered with a 500.
@pytest.mark.parametrize(("path", "body", "field"), [
    ("heartbeat", {"agent_version": "1.0", "clusters": 10**40}, "clusters"),
    ("status", {"observed_generation": 2**53, "phase": "provisioning", "ready_instances": 0}, "observed_generation"),
    ("metrics", {"connections": 10**40}, "samples.0.values.connections"),
    ("metrics", {"storage_used_gb": 1e200}, "samples.0.values.storage_used_gb"),
    ("metrics", {"transactions_per_second": 1e130}, "samples.0.values.transactions_per_second"),
    ("metrics", {"replication_lag_seconds": 1e300}, "samples.0.values.replication_lag_seconds"),
    ("sample time", 10**20, "samples.0.at"),
], ids=lambda v: v if isinstance(v, str) else None)
def test_numbers_too_large_to_keep_are_refused(stack: Stack, reported: Reported, path: str, body: Any, field: str) -> None:
    token, cluster_id = reported.agent_token, reported.cluster_id
    if path == "heartbeat":
        response = stack.call("POST", "/v1/agent/heartbeat", token=token, json=body)
    elif path == "status":
        response = stack.call("POST", f"/v1/agent/clusters/{cluster_id}/status", token=token, json=body)
    else:
        at, values = (body, {"connections": 1}) if path == "sample time" else (stack.now(), body)
        response = stack.call("POST", "/v1/agent/metrics", token=token,
                              json={"samples": [{"cluster_id": cluster_id, "at": at, "values": values}]})
    assert _invalid_fields(response) == {field}


@pytest.mark.parametrize("value", ["", "0", "abc", '"unterminated', '"a"b"', "W/abc", '"' + "a" * 251 + '"'], ids=repr)
def test_a_malformed_if_match_is_a_400_naming_it(stack: Stack, owner: Account, value: str) -> None:
    cluster = stack.create_cluster(owner)["cluster"]
    response = stack.call("PATCH", cluster_path(owner.org_id, cluster["id"]), token=owner.access_token,
                          json={"deletion_protection": True}, headers={"If-Match": value})
    assert _invalid_fields(response) == {"If-Match"}
    stale = stack.call("PATCH", cluster_path(owner.org_id, cluster["id"]), token=owner.access_token,
                       json={"deletion_protection": True}, headers={"If-Match": '"999"'})
    assert stale.status_code == 412, stale.text


def test_a_malformed_idempotency_key_is_a_400_naming_it(stack: Stack, owner: Account) -> None:
    response = stack.call("POST", clusters_path(owner.org_id), token=owner.access_token, json=cluster_body(),
                          headers={"Idempotency-Key": "has space"})
    assert _invalid_fields(response) == {"Idempotency-Key"}


# --- the rules against the libraries they stand for --------------------------------------------------------------

def _ranges(pattern_class: str) -> set[str]:
    return {chr(c) for c in range(sys.maxunicode + 1) if re.fullmatch(f"[{pattern_class}]", chr(c))}


def test_the_spelled_out_unicode_sets_are_unicodes() -> None:
    everything = [chr(c) for c in range(sys.maxunicode + 1)]
    assert _ranges(shapes.CONTROL) == {c for c in everything if unicodedata.category(c) == "Cc"}
    assert _ranges(shapes.FORMAT) == {c for c in everything if unicodedata.category(c) == "Cf"}
    assert _ranges(shapes.SPACE) == {c for c in everything if c.isspace() and unicodedata.category(c) != "Cc"}


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=12))
def test_display_names_accept_exactly_what_the_documented_pattern_matches(value: str) -> None:
    """The validator's rule, against the document's pattern as pydantic's Rust regex reads it."""
    assert _valid(shapes.DisplayName, value) == _valid(Annotated[str, StringConstraints(pattern=shapes.TEXT_PATTERN)], value)


@pytest.mark.parametrize("value", ["a", " a ", "\u200ba", "a\x00", "\u200b", "\U000e0041", "\U000e0041x", "\x85", "\u3000"],
                         ids=repr)
def test_display_name_examples_agree_with_the_documented_pattern(value: str) -> None:
    assert _valid(shapes.DisplayName, value) == _valid(Annotated[str, StringConstraints(pattern=shapes.TEXT_PATTERN)], value)


def _valid(kind: Any, value: str) -> bool:
    try:
        TypeAdapter(kind).validate_python(value)
    except ValidationError:
        return False
    return True


@settings(max_examples=300, deadline=None)
@given(st.from_regex(shapes.EMAIL_PATTERN, fullmatch=True))
def test_every_address_the_email_pattern_admits_is_one_email_validator_accepts(address: str) -> None:
    if re.search(shapes.EMAIL_SPECIAL_USE, address) or len(address) > 254:
        return
    email_validator.validate_email(address.strip(), check_deliverability=False)
