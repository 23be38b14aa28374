"""Signing keys of an OpenID issuer: discovery document -> jwks_uri -> RSA public keys, cached by `kid`.

Refresh policy:
- keys older than `ttl_s` are refreshed on use; if that fails the cached keys keep working (logged);
- an unknown `kid` triggers at most one refresh per `refresh_min_s` (so a flood of made-up kids cannot hammer the
  issuer); concurrent requests share one in-flight refresh;
- with nothing cached, a failed fetch answers 503 (SigningKeysUnavailable) and the next attempt waits
  `retry_empty_s`.
"""
import asyncio
import json
import logging
import time

from jwt.algorithms import RSAAlgorithm

from foundry_inference.auth.errors import InvalidToken, SigningKeysUnavailable
from foundry_inference.auth.http import UpstreamUnavailable, fetch_json

log = logging.getLogger("foundry_inference.auth")


class JwksCache:
    def __init__(self, discovery_url, *, expected_issuer=None, refresh_min_s=60.0, ttl_s=86400.0, retry_empty_s=2.0,
                 timeout_s=5.0, fetch=fetch_json, clock=time.monotonic):
        self.discovery_url = discovery_url
        self.expected_issuer = expected_issuer
        self.refresh_min_s = refresh_min_s
        self.ttl_s = ttl_s
        self.retry_empty_s = retry_empty_s
        self.timeout_s = timeout_s
        self.fetch = fetch
        self.clock = clock
        self.keys = {}                    # kid -> RSAPublicKey
        self.fetched_at = None            # clock() of the last successful fetch
        self.last_attempt = float("-inf")
        self.fetch_count = 0
        self._inflight = None

    async def get_key(self, kid):
        now = self.clock()
        if kid in self.keys and now - self.fetched_at < self.ttl_s:
            return self.keys[kid]
        if not self.keys:
            if now - self.last_attempt < min(self.retry_empty_s, self.refresh_min_s):
                raise SigningKeysUnavailable()
            await self._refresh(required=True)
        elif kid in self.keys:           # stale but known: refresh, fall back to the cached key on failure
            if now - self.last_attempt >= self.refresh_min_s:
                await self._refresh(required=False)
        elif now - self.last_attempt >= self.refresh_min_s:
            await self._refresh(required=False)
        key = self.keys.get(kid)
        if key is None:
            raise InvalidToken("The token is signed with an unknown key (kid)")
        return key

    async def _refresh(self, *, required):
        if self._inflight is None:
            self._inflight = asyncio.ensure_future(self._fetch())
            self._inflight.add_done_callback(lambda _f: setattr(self, "_inflight", None))
        try:
            await asyncio.shield(self._inflight)
        except UpstreamUnavailable as exc:
            if required or not self.keys:
                log.error("signing keys unavailable: %s", exc)
                raise SigningKeysUnavailable() from None
            log.warning("signing key refresh failed, using %d cached keys: %s", len(self.keys), exc)

    async def _fetch(self):
        self.last_attempt = self.clock()
        self.fetch_count += 1
        status, doc = await self.fetch(self.discovery_url, timeout=self.timeout_s)
        if status != 200 or not isinstance(doc, dict) or not isinstance(doc.get("jwks_uri"), str):
            raise UpstreamUnavailable(f"discovery document {self.discovery_url}: HTTP {status}")
        issuer = doc.get("issuer")
        if self.expected_issuer and issuer != self.expected_issuer:
            # Not the tenant we were configured for: refuse its keys rather than trust them.
            raise UpstreamUnavailable(f"discovery issuer {issuer!r} is not {self.expected_issuer!r}")
        status, jwks = await self.fetch(doc["jwks_uri"], timeout=self.timeout_s)
        if status != 200 or not isinstance(jwks, dict) or not isinstance(jwks.get("keys"), list):
            raise UpstreamUnavailable(f"JWKS {doc['jwks_uri']}: HTTP {status}")
        keys = parse_jwks(jwks)
        if not keys:
            raise UpstreamUnavailable(f"JWKS {doc['jwks_uri']}: no usable RSA signing keys")
        self.keys = keys                  # replace: keys the issuer dropped stop working
        self.fetched_at = self.clock()
        log.info("loaded %d signing keys from %s", len(keys), doc["jwks_uri"])


def parse_jwks(jwks):
    """kid -> RSA public key for every RSA signing key usable with RS256; anything else is skipped."""
    keys = {}
    for jwk in jwks.get("keys", []):
        if not isinstance(jwk, dict) or jwk.get("kty") != "RSA" or not isinstance(jwk.get("kid"), str):
            continue
        if jwk.get("use", "sig") != "sig" or jwk.get("alg", "RS256") != "RS256":
            continue
        try:
            key = RSAAlgorithm.from_jwk(json.dumps(jwk))
            keys[jwk["kid"]] = key.public_key() if hasattr(key, "private_numbers") else key
        except Exception:  # noqa: BLE001 - a malformed key must not take the others down
            log.warning("skipping malformed JWK %s", jwk.get("kid"))
    return keys
