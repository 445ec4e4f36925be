"""CORS: only the listed origins (ALLOWED_ORIGINS) may call the API from a browser.

Checked at the HTTP level (preflights, answers, error answers) and in a real headless Chromium, where
a page served from a listed origin signs up and reads its profile with a bearer token through fetch(),
and the same page from an unlisted origin is refused by the browser. Answers to listed origins allow
credentials, for the browser session's refresh cookie: in Chromium a listed page signs in with
`X-Orochi-Session: cookie`, cannot read the cookie, and refreshes with it alone; an unlisted page cannot.
"""

from __future__ import annotations

import functools
import shutil
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests

from conftest import Account, Stack, until

LISTED = ("http://localhost:3000", "http://localhost:5173")  # conftest's ALLOWED_ORIGINS
UNLISTED = "http://evil.example"
PAGES = Path(__file__).parent / "pages"
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
COOKIE_PATH = "/v1/auth"  # the refresh cookie's Path


def preflight(
    stack: Stack, path: str, origin: str, method: str, headers: str = "authorization, content-type",
) -> requests.Response:
    return stack.call("OPTIONS", path, headers={
        "Origin": origin, "Access-Control-Request-Method": method, "Access-Control-Request-Headers": headers,
    })


def _listed(header: str) -> set[str]:
    return {item.strip().lower() for item in header.split(",")}


def assert_allowed(response: requests.Response, origin: str) -> None:
    assert response.headers.get("Access-Control-Allow-Origin") == origin, dict(response.headers)
    assert "origin" in _listed(response.headers.get("Vary", ""))
    assert {"x-request-id", "etag", "retry-after"} <= _listed(response.headers.get("Access-Control-Expose-Headers", ""))
    assert response.headers.get("Access-Control-Allow-Credentials") == "true"


def assert_not_allowed(response: requests.Response) -> None:
    for name in ("Access-Control-Allow-Origin", "Access-Control-Allow-Methods", "Access-Control-Allow-Headers",
                 "Access-Control-Expose-Headers", "Access-Control-Allow-Credentials"):
        assert name not in response.headers, dict(response.headers)
    assert "origin" in _listed(response.headers.get("Vary", ""))


# --- HTTP level --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("origin", LISTED)
def test_preflight_from_listed_origin_allows_bearer_json_requests(stack: Stack, origin: str) -> None:
    response = preflight(stack, "/v1/auth/me", origin, "GET")
    assert response.status_code == 204
    assert_allowed(response, origin)
    assert {"get", "options"} <= _listed(response.headers["Access-Control-Allow-Methods"])
    assert {"authorization", "content-type", "idempotency-key", "if-match", "x-orochi-session", "x-request-id"} <= _listed(
        response.headers["Access-Control-Allow-Headers"])
    assert int(response.headers["Access-Control-Max-Age"]) > 0


def test_preflight_lists_the_methods_of_a_parametrized_path(stack: Stack, owner: Account) -> None:
    response = preflight(stack, f"/v1/orgs/{owner.org_id}/members/{owner.user_id}", LISTED[0], "PATCH")
    assert response.status_code == 204
    assert_allowed(response, LISTED[0])
    assert {"patch", "delete", "options"} <= _listed(response.headers["Access-Control-Allow-Methods"])


@pytest.mark.parametrize("origin", [
    UNLISTED, "null", "https://localhost:3000", "http://localhost:30000", "http://localhost:3000.evil.example",
    "http://sub.localhost:3000", "http://localhost",
])
def test_preflight_from_unlisted_origin_gets_no_allow_headers(stack: Stack, origin: str) -> None:
    response = preflight(stack, "/v1/auth/me", origin, "GET")
    assert response.status_code == 204
    assert_not_allowed(response)


@pytest.mark.parametrize("origin", LISTED)
def test_answers_echo_a_listed_origin(stack: Stack, owner: Account, origin: str) -> None:
    for method, path, body in [("GET", "/health", None), ("GET", "/v1/auth/me", None),
                               ("PATCH", f"/v1/orgs/{owner.org_id}", {"name": "Renamed Org"})]:
        response = stack.call(method, path, token=owner.access_token, json=body, headers={"Origin": origin})
        assert response.status_code == 200, response.text
        assert_allowed(response, origin)
        assert "Access-Control-Allow-Methods" not in response.headers  # preflight-only headers stay on preflights


def test_answers_to_unlisted_or_absent_origin_carry_no_allow_origin(stack: Stack, owner: Account) -> None:
    unlisted = stack.call("GET", "/v1/auth/me", token=owner.access_token, headers={"Origin": UNLISTED})
    absent = stack.call("GET", "/v1/auth/me", token=owner.access_token)
    for response in (unlisted, absent):
        assert response.status_code == 200  # CORS is the browser's to enforce; the answer just lacks the grant
        assert_not_allowed(response)


def test_error_answers_carry_cors_headers_for_a_listed_origin(stack: Stack, owner: Account) -> None:
    origin = {"Origin": LISTED[1]}
    json_from_origin = {**origin, "Content-Type": "application/json"}
    answers = {
        401: stack.call("GET", "/v1/auth/me", headers=origin),
        400: stack.call("POST", "/v1/auth/login", data="{not json", headers=json_from_origin),
        404: stack.call("GET", "/v1/orgs/org_doesnotexist", token=owner.access_token, headers=origin),
        405: stack.call("PUT", "/v1/auth/me", token=owner.access_token, headers=origin),
        413: stack.call("POST", "/v1/auth/login", data=b"x" * (1024 * 1024 + 1), headers=json_from_origin),
    }
    for status, response in answers.items():
        assert response.status_code == status, response.text
        assert_allowed(response, LISTED[1])
        assert response.json()["error"]["request_id"] == response.headers["X-Request-ID"]


def test_error_answers_to_an_unlisted_origin_carry_no_allow_origin(stack: Stack) -> None:
    response = stack.call("GET", "/v1/auth/me", headers={"Origin": UNLISTED})
    assert response.status_code == 401
    assert_not_allowed(response)


# --- A real browser --------------------------------------------------------------------------------------


class _PageHandler(SimpleHTTPRequestHandler):
    """tests/pages at / and under /v1/auth/ too: a page there is on the refresh cookie's path, so its
    document.cookie would show that cookie if scripts could read it (cookies are shared across ports)."""

    def translate_path(self, path: str) -> str:
        return super().translate_path(path.removeprefix(COOKIE_PATH))

    def log_message(self, format: str, *args: Any) -> None:
        pass


class PageServer:
    """tests/pages over HTTP on a free port; the page's origin is http://localhost:<port>."""

    def __init__(self) -> None:
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_PageHandler, directory=str(PAGES)))
        self.port = int(self.server.server_address[1])
        self.origin = f"http://localhost:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class Pages:
    """Two servers of the same page: `browser_stack` allows the listed one's origin and not the other's."""

    listed: PageServer
    unlisted: PageServer


@pytest.fixture(scope="module")
def pages() -> Iterator[Pages]:
    served = Pages(listed=PageServer(), unlisted=PageServer())
    yield served
    served.listed.close()
    served.unlisted.close()


@pytest.fixture(scope="module")
def browser_stack(stack_factory: Any, pages: Pages) -> Stack:
    stack: Stack = stack_factory(ALLOWED_ORIGINS=pages.listed.origin)
    return stack


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    if not (shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)):
        pytest.skip("Debian's chromium and chromium-driver are needed for the browser CORS tests")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                     "--disable-background-networking", "--disable-component-update", "--disable-sync",
                     "--disable-dev-shm-usage", f"--user-data-dir={tmp_path_factory.mktemp('chromium')}"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.set_script_timeout(30)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def run_in_page(browser: Any, page: PageServer, script: str, *args: Any, path: str = "/cors.html") -> Any:
    """Open the probe page on `page`'s origin (at `path`) and run `script` (an expression yielding a promise) there."""
    browser.get(f"{page.origin}{path}")
    done = "const done = arguments[arguments.length - 1];"
    return browser.execute_async_script(f"{done} ({script}).then(done, e => done({{failed: String(e)}}));", *args)


def new_account() -> dict[str, str]:
    return {"email": f"browser-{uuid.uuid4().hex[:12]}@example.com", "password": "correct horse battery",
            "name": "Browser User", "organization_name": "Browser Org"}


SIGN_UP = "signUpAndReadProfile(arguments[0], arguments[1])"
READ_PROFILE = "call(arguments[0], 'GET', '/v1/auth/me', {token: arguments[1]})"


def test_browser_on_listed_origin_signs_up_and_reads_profile_with_bearer_token(
    browser: Any, pages: Pages, browser_stack: Stack,
) -> None:
    account = new_account()
    result = run_in_page(browser, pages.listed, SIGN_UP, browser_stack.url, account)
    assert result["registered"]["status"] == 201, result
    assert result["me"]["status"] == 200, result
    assert result["me"]["body"]["email"] == account["email"]
    assert result["me"]["requestId"]  # an exposed header the page can read


def test_browser_on_listed_origin_reads_error_answers(browser: Any, pages: Pages, browser_stack: Stack) -> None:
    result = run_in_page(browser, pages.listed, READ_PROFILE, browser_stack.url, "not-a-jwt")
    assert result["status"] == 401, result
    assert result["body"]["error"]["code"] == "unauthorized"
    assert result["requestId"] == result["body"]["error"]["request_id"]


def test_browser_on_unlisted_origin_is_refused(browser: Any, pages: Pages, browser_stack: Stack) -> None:
    account = new_account()
    refused = run_in_page(browser, pages.unlisted, SIGN_UP, browser_stack.url, account)
    assert refused["registered"]["error"] == "TypeError", refused
    assert "me" not in refused
    # The refused preflight kept the POST from ever reaching the API.
    login = browser_stack.call("POST", "/v1/auth/login", json={k: account[k] for k in ("email", "password")})
    assert login.status_code == 401

    # A valid token does not help: the answer is withheld from the page.
    token = browser_stack.register().access_token
    withheld = run_in_page(browser, pages.unlisted, READ_PROFILE, browser_stack.url, token)
    assert withheld["error"] == "TypeError", withheld
    console = " ".join(entry["message"] for entry in browser.get_log("browser"))
    assert "CORS policy" in console and pages.unlisted.origin in console


def test_page_origins_at_http_level(pages: Pages, browser_stack: Stack) -> None:
    listed, unlisted = pages.listed, pages.unlisted
    assert_allowed(preflight(browser_stack, "/v1/auth/register", listed.origin, "POST", "content-type"), listed.origin)
    assert_not_allowed(preflight(browser_stack, "/v1/auth/register", unlisted.origin, "POST", "content-type"))
    assert_not_allowed(browser_stack.call("GET", "/health", headers={"Origin": unlisted.origin}))
    # The default stack's listed origins mean nothing to this one.
    assert_not_allowed(browser_stack.call("GET", "/health", headers={"Origin": LISTED[0]}))


# --- A browser session: the refresh token in an httpOnly cookie ------------------------------------------


def same_site_api(stack: Stack) -> str:
    """The API as the dashboard calls it: http://localhost:<port>, the same site as the pages (ports do not make
    sites), so that SameSite=Strict cookies flow; 127.0.0.1 would be another site."""
    return f"http://localhost:{stack.port}"


def refresh_cookie(browser: Any, api: str) -> dict[str, Any] | None:
    """The `orochi_refresh` cookie as Chromium stores it for the API's refresh route (through the DevTools protocol,
    which sees httpOnly cookies); None when it has none."""
    cookies = browser.execute_cdp_cmd("Network.getCookies", {"urls": [f"{api}{COOKIE_PATH}/refresh"]})["cookies"]
    found = [cookie for cookie in cookies if cookie["name"] == "orochi_refresh"]
    assert len(found) <= 1, found
    return found[0] if found else None


def with_cookie_session(path: str, **options: str) -> str:
    """A script calling `path` as the dashboard does: `X-Orochi-Session: cookie`, `credentials: 'include'`."""
    fields = ", ".join(f"{name}: {value}" for name, value in options.items())
    return f"withCookieSession(arguments[0], 'POST', '{path}', {{{fields}}})"


def test_browser_cookie_session_hides_the_refresh_token_and_refreshes_with_the_cookie_alone(
    browser: Any, pages: Pages, browser_stack: Stack,
) -> None:
    api, account, page = same_site_api(browser_stack), new_account(), f"{COOKIE_PATH}/cors.html"
    registered = run_in_page(browser, pages.listed, with_cookie_session("/v1/auth/register", body="arguments[1]"),
                             api, account, path=page)
    assert registered.get("status") == 201, registered
    assert "refresh_token" not in registered["body"] and registered["body"]["access_token"]
    stored = refresh_cookie(browser, api)
    assert stored is not None, "Chromium kept no refresh cookie"
    assert (stored["httpOnly"], stored["secure"], stored["sameSite"], stored["path"]) == (True, True, "Strict", COOKIE_PATH)
    assert stored["value"] not in str(registered)

    # What page scripts see on the cookie's own path: a cookie of the page's own, never the refresh cookie.
    visible = run_in_page(browser, pages.listed, "Promise.resolve((document.cookie = 'probe=1; path=/v1/auth', "
                          "document.cookie))", path=page)
    assert "probe=1" in visible, visible
    assert "orochi_refresh" not in visible and stored["value"] not in visible

    refreshed = run_in_page(browser, pages.listed, with_cookie_session("/v1/auth/refresh"), api, path=page)
    assert refreshed.get("status") == 200, refreshed
    assert "refresh_token" not in refreshed["body"]
    rotated = refresh_cookie(browser, api)
    assert rotated is not None and rotated["value"] != stored["value"]  # the browser holds the rotated token
    me = run_in_page(browser, pages.listed, READ_PROFILE, api, refreshed["body"]["access_token"])
    assert me.get("status") == 200 and me["body"]["email"] == account["email"], me

    logout = with_cookie_session("/v1/auth/logout", token="arguments[1]")
    assert run_in_page(browser, pages.listed, logout, api, refreshed["body"]["access_token"]).get("status") == 204
    assert refresh_cookie(browser, api) is None
    again = run_in_page(browser, pages.listed, with_cookie_session("/v1/auth/refresh"), api)
    assert again.get("status") == 401, again


def test_browser_page_on_unlisted_origin_cannot_refresh_with_the_cookie(
    browser: Any, pages: Pages, browser_stack: Stack,
) -> None:
    api = same_site_api(browser_stack)
    registered = run_in_page(browser, pages.listed, with_cookie_session("/v1/auth/register", body="arguments[1]"),
                             api, new_account())
    assert registered.get("status") == 201, registered
    stored = refresh_cookie(browser, api)
    assert stored is not None
    served = len(browser_stack.requests_served())

    # The custom header needs a preflight, which an unlisted origin fails: the POST is never sent.
    refused = run_in_page(browser, pages.unlisted, with_cookie_session("/v1/auth/refresh"), api)
    assert refused.get("error") == "TypeError", refused
    # A no-cors request needs none and carries the cookie (the page is same-site), but not the custom header: the
    # API reads it as the body flow, which never looks at the cookie, and refuses the body without a token.
    blind = run_in_page(browser, pages.unlisted, "call(arguments[0], 'POST', '/v1/auth/refresh', {body: {}, "
                        "headers: {'X-Orochi-Session': 'cookie'}, credentials: 'include', mode: 'no-cors'})", api)
    assert blind == {"type": "opaque"}, blind

    def refreshes_served() -> list[tuple[str, str]] | None:
        seen = [(method, status) for method, path, status in browser_stack.requests_served()[served:]
                if path == "/v1/auth/refresh"]
        return seen if len(seen) >= 2 else None

    assert until(refreshes_served, timeout=30, what="both refresh attempts in the API's log") == [
        ("OPTIONS", "204"), ("POST", "400")]
    after = refresh_cookie(browser, api)
    assert after is not None and after["value"] == stored["value"]  # nothing was rotated
    # The cookie is still good, from the listed page.
    assert run_in_page(browser, pages.listed, with_cookie_session("/v1/auth/refresh"), api).get("status") == 200
