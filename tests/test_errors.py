"""The error contract over HTTP: one JSON shape, the right status, a request id on every answer, never a 500
for bad input."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

MAX_BODY = 1024 * 1024
JSON = {"Content-Type": "application/json"}


def assert_error(response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}
    error = body["error"]
    assert {"code", "message", "request_id"} <= set(error) <= {"code", "message", "request_id", "details"}
    assert error["code"] == code
    assert isinstance(error["message"], str) and error["message"]
    assert error["request_id"] == response.headers["X-Request-ID"]
    return error


def assert_invalid(response, *fields: str) -> list[dict[str, Any]]:
    """A 400 whose details name exactly `fields` (in any order), each with a message."""
    details = assert_error(response, 400, "validation_error")["details"]
    assert isinstance(details, list) and details
    for detail in details:
        assert isinstance(detail["field"], str) and isinstance(detail["message"], str) and detail["message"]
    assert sorted(d["field"] for d in details) == sorted(fields), details
    return details


def register_body(**changes: Any) -> dict[str, Any]:
    body = {"email": f"e-{uuid.uuid4().hex[:12]}@example.com", "password": "correct horse battery", "name": "E",
            "organization_name": "E org"}
    return {**body, **changes}


# --- validation -----------------------------------------------------------------------------------------------


def test_invalid_json_is_a_validation_error(stack):
    response = stack.call("POST", "/v1/auth/login", data='{"email": "a@b.co", "password": ', headers=JSON)
    details = assert_invalid(response, "body")
    assert details[0]["type"] == "json_invalid"


def test_empty_body_is_a_validation_error(stack):
    assert_invalid(stack.call("POST", "/v1/auth/login", data="", headers=JSON), "body")
    assert_invalid(stack.call("POST", "/v1/auth/login", data="  \n ", headers=JSON), "body")


def test_wrong_types_are_validation_errors_without_coercion(stack):
    response = stack.call("POST", "/v1/auth/register", json=register_body(email=42, password=12345678, name=["E"]))
    details = assert_invalid(response, "email", "name", "password")
    assert {d["type"] for d in details} == {"string_type"}
    assert_invalid(stack.call("POST", "/v1/auth/refresh", json={"refresh_token": True}), "refresh_token")


def test_missing_fields_are_each_reported(stack):
    response = stack.call("POST", "/v1/auth/register", json={"name": "E", "organization_name": "E"})
    details = assert_invalid(response, "email", "password")
    assert {d["type"] for d in details} == {"missing"}
    assert_invalid(stack.call("POST", "/v1/auth/refresh", json={}), "refresh_token")


def test_unknown_fields_are_refused(stack):
    response = stack.call("POST", "/v1/auth/login", json={"email": "a@b.co", "password": "long enough", "admin": True})
    details = assert_invalid(response, "admin")
    assert details[0]["type"] == "extra_forbidden"


def test_invalid_values_are_reported_per_field(stack):
    response = stack.call("POST", "/v1/auth/register", json=register_body(email="not-an-email", name="   ", password="short"))
    assert_invalid(response, "email", "name", "password")
    assert_invalid(stack.call("POST", "/v1/auth/register", json=register_body(email=f"{'a' * 250}@b.co")), "email")


def test_invalid_query_parameters_are_validation_errors(stack, owner):
    for query, field in [("limit=0", "limit"), ("limit=101", "limit"), ("limit=ten", "limit"), ("colour=red", "colour")]:
        assert_invalid(stack.call("GET", f"/v1/orgs?{query}", token=owner.access_token), field)


# --- body size ------------------------------------------------------------------------------------------------


def test_body_over_one_mebibyte_is_refused_with_413(stack):
    padding = " " * (MAX_BODY + 1 - len('{"email":"a@b.co","password":"long enough"}'))
    body = '{"email":"a@b.co","password":"long enough"}' + padding
    assert len(body) == MAX_BODY + 1
    error = assert_error(stack.call("POST", "/v1/auth/login", data=body, headers=JSON), 413, "payload_too_large")
    assert "details" not in error or isinstance(error["details"], list)
    assert_error(stack.call("POST", "/v1/auth/register", data=b"x" * (5 * MAX_BODY), headers=JSON), 413, "payload_too_large")


def test_body_of_exactly_one_mebibyte_is_parsed(stack):
    template = '{"refresh_token":"%s"}'
    body = template % ("x" * (MAX_BODY - len(template % "")))
    assert len(body) == MAX_BODY
    assert_invalid(stack.call("POST", "/v1/auth/refresh", data=body, headers=JSON), "refresh_token")  # too long, not too large


def test_413_carries_the_supplied_request_id(stack):
    response = stack.call("POST", "/v1/auth/login", data=b"{" * (MAX_BODY + 10), headers={**JSON, "X-Request-ID": "big-1"})
    assert assert_error(response, 413, "payload_too_large")["request_id"] == "big-1"


# --- nasty input ----------------------------------------------------------------------------------------------

NASTY_BODIES: list[bytes] = [
    b"[]",
    b'[{"email": "a@b.co", "password": "long enough"}]',
    b"null",
    b'"a string"',
    b"42",
    b"true",
    b"{}",
    b"[" * 100_000 + b"]" * 100_000,
    b'{"email": ' * 5000 + b'"a@b.co"' + b"}" * 5000,
    b'{"email": "\xff\xfe@b.co", "password": "long enough"}',
    b"\xff\xfe\xfd\xfc",
    b"\x00\x00\x00\x00",
    b'{"email": "a\\ud800@b.co", "password": "\\udfffenough"}',
    b'{"email": 1e400, "password": 123456789012345678901234567890}',
    b'{"email": {"$gt": ""}, "password": {"$ne": null}}',
    b'{"email": "a@b.co", "email": "c@d.co"}',
    b"\xef\xbb\xbf{}",
    b"email=a@b.co&password=long+enough",
    b"<login><email>a@b.co</email></login>",
    b'{"email": "a@b.co", "password": "long enough"',
]


@pytest.mark.parametrize("path", ["/v1/auth/register", "/v1/auth/login", "/v1/auth/refresh"])
@pytest.mark.parametrize("body", NASTY_BODIES, ids=range(len(NASTY_BODIES)))
def test_nasty_bodies_are_validation_errors(stack, path, body):
    assert_error(stack.call("POST", path, data=body, headers=JSON), 400, "validation_error")


@pytest.mark.parametrize("content_type", [
    "text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "application/xml",
    "application/octet-stream", "image/png", None,
])
def test_body_is_read_as_json_whatever_the_content_type(stack, content_type):
    headers = {"Content-Type": content_type} if content_type else {}
    garbage = stack.call("POST", "/v1/auth/login", data=b"email=a%40b.co&password=long+enough", headers=headers)
    assert_error(garbage, 400, "validation_error")  # not chalice's own 415, not a 500
    response = stack.call("POST", "/v1/auth/refresh", data=json.dumps({"refresh_token": "unknown"}), headers=headers)
    assert_error(response, 401, "unauthorized")  # the JSON body was read: its token was looked up


def test_control_characters_in_an_email_are_a_400_naming_it(stack):
    for email in ["a\u0000@b.co", "\u202e@b.co", "a@b.co\u0000", "a@\u0007.co"]:
        response = stack.call("POST", "/v1/auth/login", json={"email": email, "password": "long enough password"})
        body = assert_error(response, 400, "validation_error")
        assert [detail["field"] for detail in body["details"]] == ["email"]


def test_unsupported_method_is_a_405_in_the_error_shape(stack, owner):
    response = stack.call("DELETE", "/v1/auth/me", token=owner.access_token)
    assert_error(response, 405, "method_not_allowed")
    assert "GET" in response.headers["Allow"]


# --- request ids ----------------------------------------------------------------------------------------------


def test_every_response_carries_a_request_id(stack, owner):
    responses = [
        stack.call("GET", "/health"),
        stack.call("GET", "/v1/auth/me", token=owner.access_token),
        stack.call("POST", "/v1/auth/register", json=register_body()),
        stack.call("POST", "/v1/auth/login", json={"email": owner.email, "password": "wrong password"}),
        stack.call("POST", "/v1/auth/login", json={}),
        stack.call("POST", "/v1/auth/register", json=register_body(email=owner.email)),
        stack.call("DELETE", "/v1/auth/me", token=owner.access_token),
        stack.call("POST", "/v1/auth/login", data=b" " * (MAX_BODY + 1)),
        stack.call("POST", "/v1/auth/logout", token=owner.access_token),
    ]
    assert [r.status_code for r in responses] == [200, 200, 201, 401, 400, 409, 405, 413, 204]
    ids = [r.headers.get("X-Request-ID") for r in responses]
    assert all(ids), ids
    assert len(set(ids)) == len(ids)


def test_supplied_request_id_is_echoed_and_reported_in_errors(stack, owner):
    ok = stack.call("GET", "/v1/auth/me", token=owner.access_token, headers={"X-Request-ID": "req-ok.1:a_b"})
    assert ok.status_code == 200 and ok.headers["X-Request-ID"] == "req-ok.1:a_b"

    request_id = f"trace-{uuid.uuid4().hex}"
    for response in (
        stack.call("POST", "/v1/auth/login", json={"bad": 1}, headers={"X-Request-ID": request_id}),
        stack.call("GET", "/v1/auth/me", headers={"X-Request-ID": request_id}),
        stack.call("POST", "/v1/auth/login", json={"email": owner.email, "password": "wrong password"},
                   headers={"X-Request-ID": request_id}),
    ):
        assert response.headers["X-Request-ID"] == request_id
        assert response.json()["error"]["request_id"] == request_id


@pytest.mark.parametrize("supplied", ["has spaces in it", "x" * 129, "<script>", "semi;colon", "ünïcode"])
def test_unusable_request_id_is_replaced_by_a_generated_one(stack, supplied):
    response = stack.call("POST", "/v1/auth/login", json={}, headers={"X-Request-ID": supplied.encode("utf-8")})
    generated = response.headers["X-Request-ID"]
    assert generated and generated != supplied
    assert response.json()["error"]["request_id"] == generated
