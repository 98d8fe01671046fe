"""Bearer keys: read the same way from every variable, checked the same way by every server.

A key pasted from a secrets file often ends in a newline, and HTTP clients differ in how they
write `Authorization` (`bearer`, extra spaces): both are normalised here, once, so that the model
service, the app's REST API and every client agree on what a key is.
"""

from __future__ import annotations

import hmac

from .errors import ConfigurationError

BEARER = "bearer"


def read_api_key(value: str | None, env_var: str) -> str | None:
    """The key without surrounding whitespace, or None when unset or blank.

    Refused if an HTTP header could not carry it: the HTTP library would otherwise fail later
    with an error message that echoes the key.
    """
    key = (value or "").strip()
    if not key:
        return None
    if not (key.isascii() and key.isprintable()) or any(char.isspace() for char in key):
        raise ConfigurationError(
            f"{env_var} contains spaces or control characters, which a header cannot carry: "
            "set it to the key alone"
        )
    return key


def bearer_token(header: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header: the scheme in any case, spaces
    around either part ignored. None when the header is missing or another scheme."""
    scheme, _, token = (header or "").strip().partition(" ")
    token = token.strip()
    if scheme.lower() != BEARER or not token:
        return None
    return token


def authorization_matches(header: str | None, expected: str) -> bool:
    """Whether the header carries `expected`, compared in constant time."""
    token = bearer_token(header)
    if token is None:
        return False
    return hmac.compare_digest(token.encode("utf-8", "replace"), expected.encode())
