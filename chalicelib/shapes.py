"""Shared request/response building blocks."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Annotated, Any, Generic, TypeVar

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, GetJsonSchemaHandler, StringConstraints
from pydantic_core import CoreSchema

T = TypeVar("T")

# Patterns are checked by pydantic's Rust regex and, from the OpenAPI document, by ECMA-262 clients (and by
# Python's `re` where hypothesis generates from them). Their `\s`, `\w` and `\d` differ (Unicode to Rust and
# Python, ASCII or another Unicode set to ECMA), so patterns spell out every class they mean. Characters outside
# the BMP are written as themselves: ECMA reads them right with the `u` flag, as JSON Schema validators use it.
CONTROL = r"\x00-\x1f\x7f-\x9f"  # Unicode category Cc: C0, DEL and C1
# Whitespace that is not a control character (Unicode White_Space minus Cc; what str.strip() removes besides Cc).
SPACE = r" \u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
# Unicode category Cf (format characters: zero-width space, joiners, BOM, bidi controls, tags), Unicode 14.
FORMAT = (
    r"\u00ad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064"
    r"\u2066-\u206f\ufeff\ufff9-\ufffb"
    "\U000110bd\U000110cd\U00013430-\U00013438\U0001bca0-\U0001bca3\U0001d173-\U0001d17a\U000e0001\U000e0020-\U000e007f"
)
# Free text: no control character anywhere, and at least one character that is neither whitespace nor format.
TEXT_PATTERN = f"^[^{CONTROL}]*[^{CONTROL}{SPACE}{FORMAT}][^{CONTROL}]*$"


_CONTROL = re.compile(f"[{CONTROL}]")
_VISIBLE = re.compile(f"[^{CONTROL}{SPACE}{FORMAT}]")


@dataclass(frozen=True)
class Documented:
    """JSON Schema keywords for the document that a validator (rather than a pydantic constraint) enforces."""

    keywords: dict[str, Any]

    def __hash__(self) -> int:
        return id(self)

    def __get_pydantic_json_schema__(self, core_schema: CoreSchema, handler: GetJsonSchemaHandler) -> dict[str, Any]:
        return {**handler(core_schema), **self.keywords}


def _text(value: str) -> str:
    """TEXT_PATTERN's rule, then NFC without the surrounding whitespace; `max_length` counts the characters as sent."""
    if _CONTROL.search(value):
        raise ValueError("must not contain control characters")
    if not _VISIBLE.search(value):
        raise ValueError("must contain a visible character, not only spaces or invisible ones")
    return unicodedata.normalize("NFC", value).strip()


DisplayName = Annotated[str, StringConstraints(max_length=100), AfterValidator(_text), Documented({"pattern": TEXT_PATTERN})]

# A message of several lines: TEXT_PATTERN's rule with tab and newline allowed (and nothing required).
MESSAGE_CONTROL = r"\x00-\x08\x0b-\x1f\x7f-\x9f"
MESSAGE_PATTERN = f"^[^{MESSAGE_CONTROL}]*$"
_MESSAGE_CONTROL = re.compile(f"[{MESSAGE_CONTROL}]")


def _message(value: str) -> str:
    if _MESSAGE_CONTROL.search(value):
        raise ValueError("must not contain control characters other than tab and newline")
    return unicodedata.normalize("NFC", value).strip()


MultilineText = Annotated[str, StringConstraints(max_length=1000), AfterValidator(_message),
                          Documented({"pattern": MESSAGE_PATTERN})]

# E-mail addresses (spaces around them are dropped): ASCII, a dot-atom local part and a host name under a
# top-level domain of letters (no punycode). The local part holds at most 32 characters besides its dots, so it
# stays within the 64 the RFC allows (the pattern itself states that: a length rule beside it, `allOf`, slows
# generation from the document fourfold). The domain fits in maxLength. Whatever the pattern lets through, bar special-use
# domains, email-validator accepts too (tests/test_validation.py checks that); it has the last word and
# normalizes the domain to lower case.
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]"
_LABEL = (r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,2}[A-Za-z0-9])?"
          r"|[A-Za-z0-9][A-Za-z0-9-](?:[A-Za-z0-9][A-Za-z0-9-]|-[A-Za-z0-9])[A-Za-z0-9-]{0,58}[A-Za-z0-9])")
EMAIL_PATTERN = rf"^ *{_ATEXT}(?:{_ATEXT}|\.{_ATEXT}){{0,31}}@(?:{_LABEL}\.)+[A-Za-z]{{2,63}} *$"
# email-validator's SPECIAL_USE_DOMAIN_NAMES, in any case.
EMAIL_SPECIAL_USE = (r"\.(?:[Aa][Rr][Pp][Aa]|[Ii][Nn][Vv][Aa][Ll][Ii][Dd]|[Ll][Oo][Cc][Aa][Ll](?:[Hh][Oo][Ss][Tt])?"
                     r"|[Oo][Nn][Ii][Oo][Nn]|[Tt][Ee][Ss][Tt]) *$")


def _email(value: str) -> str:
    if not re.fullmatch(EMAIL_PATTERN, value):
        raise ValueError("is not an e-mail address such as name@example.com")
    if re.search(EMAIL_SPECIAL_USE, value):
        raise ValueError("the domain is a special-use name that cannot receive e-mail")
    import email_validator  # on first use: starting the API does not need it

    try:
        return str(email_validator.validate_email(value.strip(), check_deliverability=False).normalized)
    except email_validator.EmailNotValidError as e:
        raise ValueError(str(e)) from None


# No `format: email` in the document: its checkers read the spaces around an address as part of it.
Email = Annotated[str, StringConstraints(max_length=254), AfterValidator(_email), Documented({
    "pattern": EMAIL_PATTERN, "not": {"pattern": EMAIL_SPECIAL_USE},
})]
# Passwords (NIST SP 800-63B 5.1.1.2): any printable character, spaces and any script included, but no control
# character (a pasted newline or NUL is a mistake, not entropy), and NFKC-normalized before hashing, so that the same
# password typed on another keyboard or system (composed or decomposed accents, full-width forms) is the same.
PASSWORD_CONTROL = r"\x00-\x1f\x7f-\x9f"
_PASSWORD_CONTROL = re.compile(f"[{PASSWORD_CONTROL}]")


def _password(value: str) -> str:
    if _PASSWORD_CONTROL.search(value):
        raise ValueError("must not contain control characters")
    return unicodedata.normalize("NFKC", value)


Password = Annotated[str, StringConstraints(min_length=8, max_length=128), AfterValidator(_password),
                     Documented({"pattern": f"^[^{PASSWORD_CONTROL}]*$"})]
Token = Annotated[str, StringConstraints(min_length=1, max_length=512, pattern=r"^[!-~]+$")]


def _integral(value: object) -> object:
    """JSON Schema's integer includes 2.0: accept a float without a fraction as the integer it is."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


# Every integer of a request body is `Annotated[int, Field(<bounds>), JSON_INTEGER]`: strict (no strings, no
# booleans), but 2.0 is the integer 2 as JSON Schema says. The bounds come first, so the document states them.
JSON_INTEGER = BeforeValidator(_integral)

# The largest integer a body may hold: what JavaScript numbers hold exactly, and well inside DynamoDB's 38 digits.
MAX_INTEGER = 2**53 - 1
# The largest measure (a float: gigabytes, seconds, transactions per second) a body may hold: beyond any real
# figure, and inside what DynamoDB stores (below 1e126).
MAX_MEASURE = 1e12
Count = Annotated[int, Field(ge=0, le=MAX_INTEGER), JSON_INTEGER]
Measure = Annotated[float, Field(ge=0, le=MAX_MEASURE)]

# Request headers that routes declare: what the document states and `web` checks.
HEADER_PATTERNS = {
    "Idempotency-Key": r"^[!-~]{1,255}$",
    # One entity tag (RFC 9110 8.8.3), weak or strong, or `*`.
    "If-Match": r'^(?:\*|(?:W/)?"[!#-~]{0,250}"(?: *, *(?:W/)?"[!#-~]{0,250}"){0,9})$',
    # A browser client's opt-in to the cookie session (chalicelib/session_cookie.py).
    "X-Orochi-Session": r"^cookie$",
}
# What the document says of a request header, besides its pattern.
HEADER_DESCRIPTIONS = {
    "X-Orochi-Session": (
        "`cookie`: a browser session. Register, login and refresh then answer without `refresh_token` in the body "
        "and set it in the httpOnly cookie `orochi_refresh` (`Path=/v1/auth; HttpOnly; Secure; SameSite=Strict`, "
        "`Max-Age` the seconds until the session's absolute expiry); refresh reads it from that cookie only, "
        "and only from an `Origin` the API allows (else 403 `origin_not_allowed`, nothing rotated). Without "
        "this header no route reads the cookie. Send it with `credentials: 'include'`."
    ),
}

CATALOG_KEY = "x-catalog"


@dataclass(frozen=True)
class CatalogBound:
    """Marks a field whose allowed values come from the catalog the API runs with (`region`, `postgres_version`,
    `size`, `storage_gb`); the OpenAPI document fills in that catalog's enum or bounds."""

    kind: str

    def __get_pydantic_json_schema__(self, core_schema: CoreSchema, handler: GetJsonSchemaHandler) -> dict[str, Any]:
        schema = dict(handler(core_schema))
        schema[CATALOG_KEY] = self.kind
        return schema


# Every model defers building its validator and serializer to its first use (`defer_build`): a cold start
# pays only for the models its first request touches, not for all of them (see docs/benchmarks.md).


class Body(BaseModel):
    """A request body: unknown fields and loose types are errors."""

    model_config = ConfigDict(extra="forbid", strict=True, defer_build=True)


class Out(BaseModel):
    """A response body."""

    model_config = ConfigDict(defer_build=True)


CURSOR_MAX_LENGTH = 2048


class Query(BaseModel):
    """A query string: unknown parameters are errors; values arrive as strings and are coerced."""

    model_config = ConfigDict(extra="forbid", defer_build=True)


class ListQuery(Query):
    limit: int = Field(default=50, ge=1, le=100)
    # Opaque: a `next_cursor` of the same listing and caller (base64url, a dot, base64url). chalicelib.pages checks
    # it, so that anything else, however malformed, is the one answer 400 `invalid_cursor`.
    cursor: Annotated[str, Documented({"maxLength": CURSOR_MAX_LENGTH, "pattern": r"^[A-Za-z0-9_.-]*$"})] | None = None


class Page(Out, Generic[T]):
    items: list[T]
    next_cursor: str | None = None
