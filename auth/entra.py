"""Entra ID (v2.0) access-token validation.

Order matters: the header is checked (RS256 only, a `kid`) before any key is fetched, and the signature before any
claim is believed. Messages name the reason and never echo the token.

A token that passed every check is remembered (by its SHA-256) until its `exp`, at most `token_cache_s`, so a client
re-sending the same token costs a hash and a lookup instead of an RSA verification; the entry is dropped as soon as
its signing key leaves the issuer's JWKS.
"""
import base64
import binascii
import hashlib
import json
import re
import time
from collections import OrderedDict

import jwt

from foundry_inference.auth.errors import InvalidToken
from foundry_inference.auth.jwks import JwksCache
from foundry_inference.auth.principal import APP, USER, Principal

V1_ISSUER_PREFIX = "https://sts.windows.net/"
ALGORITHM = "RS256"
_B64URL = re.compile(r"^[A-Za-z0-9_-]+$")


class EntraTokenValidator:
    def __init__(self, *, tenant_id, client_id, authority, jwks=None, required_scope="foundry_access", leeway_s=60.0,
                 token_cache_s=300.0, token_cache_size=10000, wall_clock=time.time, **jwks_options):
        self.tenant_id = tenant_id.lower()
        self.client_id = client_id
        self.authority = authority.rstrip("/")
        self.issuer = f"{self.authority}/{self.tenant_id}/v2.0"
        self.audiences = [client_id, f"api://{client_id}"]
        self.required_scope = required_scope
        self.leeway_s = leeway_s
        self.jwks = jwks or JwksCache(f"{self.issuer}/.well-known/openid-configuration", expected_issuer=self.issuer,
                                      **jwks_options)
        self._options = {"require": ["exp", "iss", "aud", "tid", "oid"], "verify_signature": True}
        self.token_cache_s = token_cache_s
        self.token_cache_size = token_cache_size
        self.wall_clock = wall_clock
        self._validated = OrderedDict()     # sha256(token) -> (principal, kid, valid_until)

    async def validate(self, token):
        """The Principal for a valid token; raises InvalidToken (401) or SigningKeysUnavailable (503)."""
        digest = hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()
        hit = self._validated.get(digest)
        if hit is not None:
            principal, kid, valid_until = hit
            if self.wall_clock() < valid_until and kid in self.jwks.keys:
                return principal
            self._validated.pop(digest, None)
        header = _header(token)
        if header.get("alg") != ALGORITHM:
            raise InvalidToken(f"The token algorithm must be {ALGORITHM}")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise InvalidToken("The token header has no key id (kid)")
        key = await self.jwks.get_key(kid)
        claims = self._decode(token, key)
        principal = self._principal(claims)
        if self.token_cache_s > 0:
            self._remember(digest, principal, kid, claims["exp"])
        return principal

    def _remember(self, digest, principal, kid, exp):
        try:
            valid_until = min(float(exp), self.wall_clock() + self.token_cache_s)
        except (TypeError, ValueError):
            return
        self._validated[digest] = (principal, kid, valid_until)
        while len(self._validated) > self.token_cache_size:
            self._validated.popitem(last=False)

    def _decode(self, token, key):
        try:
            return jwt.decode(token, key, algorithms=[ALGORITHM], audience=self.audiences, issuer=self.issuer,
                              leeway=self.leeway_s, options=self._options)
        except jwt.ExpiredSignatureError:
            raise InvalidToken("The token has expired") from None
        except jwt.ImmatureSignatureError:
            raise InvalidToken("The token is not valid yet (nbf/iat in the future)") from None
        except jwt.InvalidAudienceError:
            raise InvalidToken("The token audience (aud) is not this API") from None
        except jwt.InvalidIssuerError:
            iss = _unverified_claim(token, "iss")
            if isinstance(iss, str) and iss.startswith(V1_ISSUER_PREFIX):
                raise InvalidToken("Entra ID v1.0 tokens are not accepted; request a v2.0 token") from None
            raise InvalidToken("The token issuer (iss) is not this tenant's v2.0 issuer") from None
        except jwt.MissingRequiredClaimError as exc:
            raise InvalidToken(f"The token has no '{exc.claim}' claim") from None
        except jwt.InvalidSignatureError:
            raise InvalidToken("The token signature is not valid") from None
        except jwt.PyJWTError:
            raise InvalidToken("The token is malformed") from None

    def _principal(self, claims):
        tid = claims.get("tid")
        if not isinstance(tid, str) or tid.lower() != self.tenant_id:
            raise InvalidToken("The token was issued for another tenant (tid)")
        oid = claims.get("oid")
        if not isinstance(oid, str) or not oid:
            raise InvalidToken("The token has no 'oid' claim")
        roles = claims.get("roles") or []
        groups = claims.get("groups") or []
        if not isinstance(roles, list) or not isinstance(groups, list):
            raise InvalidToken("The token's roles/groups claims are malformed")
        if "scp" in claims:
            scopes = claims["scp"].split() if isinstance(claims["scp"], str) else []
            if self.required_scope not in scopes:
                raise InvalidToken(f"The token lacks the scope '{self.required_scope}' (scp)")
            kind = USER
        else:
            if claims.get("idtyp") == "user":
                raise InvalidToken(f"The token lacks the scope '{self.required_scope}' (scp)")
            if not roles:
                raise InvalidToken("The application token has no app role (roles)")
            scopes, kind = [], APP
        display = claims.get("preferred_username") or claims.get("upn") or claims.get("azp") or claims.get("appid")
        return Principal(identity=oid, kind=kind, roles=tuple(str(r) for r in roles),
                         groups=tuple(str(g) for g in groups), scopes=tuple(scopes), tenant=tid,
                         display=display if isinstance(display, str) else None, claims=claims)


def _header(token):
    """The JOSE header, parsed strictly (PyJWT re-checks everything when it verifies the token)."""
    segment = token.split(".", 1)[0]
    if len(segment) > 2048 or not _B64URL.match(segment):
        raise InvalidToken("The token is malformed")
    try:
        header = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    except (ValueError, binascii.Error):
        raise InvalidToken("The token is malformed") from None
    if not isinstance(header, dict):
        raise InvalidToken("The token is malformed")
    return header


def _unverified_claim(token, name):
    try:
        return jwt.decode(token, options={"verify_signature": False}).get(name)
    except jwt.PyJWTError:
        return None
