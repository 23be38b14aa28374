"""Turn request headers into exactly one credential, or a precise auth error.

Accepted forms: `Authorization: Bearer <key or JWT>`, `api-key: <key>`, legacy `X-API-Key: <key>`. A Bearer value with
three dot-separated parts is a JWT, anything else a key (rotated keys are bare hex, so no prefix can be relied on).
Two credentials in one request (Authorization plus a key header, or both key headers, or a header sent twice) is
ambiguous and rejected: the server never picks one for the caller.
"""
from typing import NamedTuple

from foundry_inference.auth.errors import AmbiguousAuth, InvalidApiKey, InvalidToken, MissingCredentials

API_KEY = "api_key"
JWT = "jwt"

MAX_CREDENTIAL_CHARS = 8192      # an Entra access token is 1-3 KB; anything far bigger is garbage or an attack
_HEADERS = ("Authorization", "Api-Key", "X-Api-Key")


class Credential(NamedTuple):
    """Immutable; a tuple rather than a frozen dataclass because it is built on every request (a third the cost)."""
    kind: str            # API_KEY or JWT
    value: str = ""
    source: str = ""     # the header it came from, for messages

    def __repr__(self):  # never show the secret, even in a traceback
        return f"Credential(kind={self.kind!r}, source={self.source!r}, chars={len(self.value)})"


def looks_like_jwt(value):
    parts = value.split(".")
    return len(parts) == 3 and all(parts)


def header_values(headers):
    """{canonical header name: [values]} for the three auth headers, from a Tornado HTTPHeaders or any mapping."""
    if hasattr(headers, "get_list"):
        return {name: headers.get_list(name) for name in _HEADERS}
    lowered = {}
    for key, value in headers.items():
        lowered.setdefault(key.lower(), []).extend(value if isinstance(value, (list, tuple)) else [value])
    return {name: lowered.get(name.lower(), []) for name in _HEADERS}


def extract(headers):
    """The single credential in `headers` (mapping or HTTPHeaders); raises MissingCredentials, AmbiguousAuth,
    InvalidToken or InvalidApiKey."""
    if hasattr(headers, "get_list"):
        get = headers.get_list
        present = []
        for name in _HEADERS:        # (a loop, not a comprehension: this runs on every request)
            values = get(name)
            if values:
                present.append((name, values))
    else:
        by_name = header_values(headers)
        present = [(name, by_name[name]) for name in _HEADERS if by_name[name]]
    if not present:
        raise MissingCredentials()
    source, values = present[0]
    if len(present) > 1 or len(values) > 1:
        raise AmbiguousAuth()
    raw = values[0].strip()
    if source != "Authorization":
        if not raw:
            raise InvalidApiKey(f"The {source} header is empty")
        if len(raw) > MAX_CREDENTIAL_CHARS:
            raise InvalidApiKey(f"The {source} header is too long")
        return Credential(API_KEY, raw, source)
    scheme, _, value = raw.partition(" ")
    value = value.strip()
    if scheme.lower() != "bearer":
        raise InvalidToken("The Authorization header must use the Bearer scheme")
    if not value:
        raise InvalidToken("The Authorization header has no Bearer value")
    kind = JWT if looks_like_jwt(value) else API_KEY
    if len(value) > MAX_CREDENTIAL_CHARS:
        raise (InvalidToken if kind == JWT else InvalidApiKey)("The bearer credential is too long")
    return Credential(kind, value, source)
