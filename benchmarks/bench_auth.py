"""Per-request authentication + authorization overhead of the shared auth module.

Measures AuthService.check() - header parsing, credential validation, authorization - on Tornado HTTPHeaders, the
whole work AuthMixin.prepare() does per request (HTTP parsing and the handler are not included). Targets:
an API key under 50 us, a cached JWT under 150 us ("cached": signing keys cached and the token seen before, so its
validation result is cached). A token's first request (full RS256 verification) is reported too, without a target.

    .venv/bin/python benchmarks/bench_auth.py [--iterations N] [--repeats R] [--json]
"""
import argparse
import asyncio
import json
import os
import platform
import statistics
import tempfile
import time
import uuid

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm
from tornado.httputil import HTTPHeaders

from foundry_inference.auth import actions
from foundry_inference.auth.apikeys import ApiKeyAuthenticator
from foundry_inference.auth.authenticator import Authenticator
from foundry_inference.auth.authz import CachedAuthorizer, KeyGrantAuthorizer
from foundry_inference.auth.authz_roles import RoleTableAuthorizer
from foundry_inference.auth.entra import EntraTokenValidator
from foundry_inference.auth.jwks import JwksCache
from foundry_inference.auth.principal import Resource
from foundry_inference.auth.service import AuthService

TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
CLIENT = "6e5a1b2c-3d4e-4f50-8a9b-0c1d2e3f4a5b"
AUTHORITY = "https://login.example"
ISSUER = f"{AUTHORITY}/{TENANT}/v2.0"


class AlwaysAllow:
    async def check(self, principal, action, resource):
        return True


def build(key_dir, authorizer, token_cache_s=300.0):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(RSAAlgorithm.to_jwk(key.public_key()))
    jwk.update(kid="k1", use="sig", alg="RS256")

    async def fetch(url, timeout):       # the issuer is only asked once: every measured call uses the cached key
        if url.endswith("openid-configuration"):
            return 200, {"issuer": ISSUER, "jwks_uri": f"{AUTHORITY}/keys"}
        return 200, {"keys": [jwk]}

    jwks = JwksCache(f"{ISSUER}/.well-known/openid-configuration", expected_issuer=ISSUER, fetch=fetch)
    entra = EntraTokenValidator(tenant_id=TENANT, client_id=CLIENT, authority=AUTHORITY, jwks=jwks,
                                token_cache_s=token_cache_s)
    keys = ApiKeyAuthenticator.from_paths(keys_dir=key_dir, deployment="bench")
    svc = AuthService(Authenticator(mode="both", api_keys=keys, entra=entra), KeyGrantAuthorizer(authorizer),
                      plane=actions.DATA, default_resource=Resource("default", "bench"))
    now = int(time.time())
    token = jwt.encode({"iss": ISSUER, "aud": CLIENT, "tid": TENANT, "oid": str(uuid.uuid4()), "scp": "foundry_access",
                        "roles": ["Foundry.User"], "iat": now, "nbf": now, "exp": now + 7200, "ver": "2.0"},
                       key, algorithm="RS256", headers={"kid": "k1"})
    return svc, token


def headers(**values):
    h = HTTPHeaders()
    for name, value in values.items():
        h.add(name.replace("_", "-"), value)
    return h


async def measure(svc, hdrs, iterations, repeats):
    await svc.check("POST", hdrs)                     # warm-up: loads keys, fills caches
    per_op = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(iterations):
            await svc.check("POST", hdrs)
        per_op.append((time.perf_counter() - t0) / iterations * 1e6)
    return statistics.median(per_op), min(per_op)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as key_dir:
        for name, value in (("primary-key", "a" * 64), ("secondary-key", "b" * 64)):
            with open(os.path.join(key_dir, name), "w") as fh:
                fh.write(value)
        roles_svc, token = build(key_dir, RoleTableAuthorizer())
        cached_svc, token2 = build(key_dir, CachedAuthorizer(AlwaysAllow()))
        uncached_svc, token3 = build(key_dir, RoleTableAuthorizer(), token_cache_s=0)
        cases = [
            ("API key, api-key header", roles_svc, headers(api_key="b" * 64), 50),
            ("API key, Authorization: Bearer", roles_svc, headers(Authorization="Bearer " + "b" * 64), 50),
            ("JWT, cached (role table)", roles_svc, headers(Authorization=f"Bearer {token}"), 150),
            ("JWT, cached (cached SAR/ARM decision)", cached_svc, headers(Authorization=f"Bearer {token2}"), 150),
            ("JWT, first sight: full RS256 verify*", uncached_svc, headers(Authorization=f"Bearer {token3}"), None),
        ]
        rows = []
        for label, svc, hdrs, target in cases:
            median, best = asyncio.run(measure(svc, hdrs, args.iterations, args.repeats))
            rows.append({"case": label, "median_us": round(median, 1), "best_us": round(best, 1), "target_us": target,
                         "ok": target is None or median < target})
    if args.json:
        print(json.dumps({"python": platform.python_version(), "machine": platform.machine(), "rows": rows}))
        return 0 if all(r["ok"] for r in rows) else 1
    print(f"auth overhead per request (Python {platform.python_version()}, {platform.machine()}, "
          f"{args.iterations} x {args.repeats})")
    print(f"{'case':40} {'median us':>10} {'best us':>8} {'target':>7}  ok")
    for r in rows:
        target = r["target_us"] if r["target_us"] is not None else "-"
        print(f"{r['case']:40} {r['median_us']:>10.1f} {r['best_us']:>8.1f} {target:>7}  "
              f"{'yes' if r['ok'] else 'NO'}")
    print("* validated-token cache off (FOUNDRY_ENTRA_TOKEN_CACHE_S=0): the cost of a token's first request; "
          "signing keys cached")
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
