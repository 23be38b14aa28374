"""A real OpenID Connect issuer on loopback, shaped like Entra ID v2.0, for tests.

It serves `/{tenant}/v2.0/.well-known/openid-configuration` and `/{tenant}/discovery/v2.0/keys` over HTTP from a
Tornado server in its own thread, holds RSA keys made with `cryptography`, and mints tokens with PyJWT. Point the
validator's authority at `issuer.authority`. Knobs for attack and outage tests: `rotate()`, `remove_key()`,
`available = False` (discovery/JWKS answer 503), `delay_s` (slow answers), `stop()` (connection refused), request
counters. `LoopbackServer` runs any Tornado application the same way and is reused by the auth tests.
"""
import asyncio
import base64
import hashlib
import hmac
import json
import threading
import time
import uuid

import jwt
import tornado.httpserver
import tornado.netutil
import tornado.web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

DEFAULT_TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
DEFAULT_CLIENT = "6e5a1b2c-3d4e-4f50-8a9b-0c1d2e3f4a5b"


class LoopbackServer:
    """Run a tornado.web.Application on 127.0.0.1:<free port> in a background thread with its own event loop."""

    def __init__(self, app, *, port=0):
        self.app = app
        self.port = port
        self.loop = None
        self._server = None
        self._thread = None
        self._ready = threading.Event()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def start(self):
        sockets = tornado.netutil.bind_sockets(self.port, "127.0.0.1")
        self.port = sockets[0].getsockname()[1]

        def run():
            self.loop = asyncio.new_event_loop()
            asyncio.set_event_loop(self.loop)
            self._server = tornado.httpserver.HTTPServer(self.app)
            self._server.add_sockets(sockets)
            self.loop.call_soon(self._ready.set)
            self.loop.run_forever()
            self._server.stop()
            self.loop.run_until_complete(asyncio.sleep(0))
            self.loop.close()

        self._thread = threading.Thread(target=run, name=f"loopback-{self.port}", daemon=True)
        self._thread.start()
        self._ready.wait(10)
        return self

    def call(self, coro_fn, *args, timeout=30):
        """Run `coro_fn(*args)` on the server's loop and return its result (for code that must share that loop)."""
        return asyncio.run_coroutine_threadsafe(coro_fn(*args), self.loop).result(timeout)

    def stop(self):
        if self._thread and self._thread.is_alive():
            self.loop.call_soon_threadsafe(self._server.stop)
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


class _IssuerHandler(tornado.web.RequestHandler):
    def initialize(self, issuer, what):
        self.issuer = issuer
        self.what = what

    async def get(self, tenant):
        issuer = self.issuer
        issuer.hits[self.what] += 1
        if issuer.delay_s:
            await asyncio.sleep(issuer.delay_s)
        if not issuer.available or tenant != issuer.tenant_id:
            self.set_status(503 if not issuer.available else 400)
            self.finish({"error": "temporarily_unavailable" if not issuer.available else "invalid_tenant"})
            return
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(issuer.discovery() if self.what == "discovery" else issuer.jwks()))


class OidcIssuer:
    def __init__(self, *, tenant_id=DEFAULT_TENANT, client_id=DEFAULT_CLIENT, key_size=2048):
        self.tenant_id = tenant_id
        self.client_id = client_id
        self.key_size = key_size
        self.keys = {}                # kid -> RSA private key (published in the JWKS)
        self.current_kid = None
        self.available = True
        self.delay_s = 0.0
        self.hits = {"discovery": 0, "jwks": 0}
        self.server = None
        self.add_key()
        app = tornado.web.Application([
            (r"/([^/]+)/v2.0/.well-known/openid-configuration", _IssuerHandler, {"issuer": self, "what": "discovery"}),
            (r"/([^/]+)/discovery/v2.0/keys", _IssuerHandler, {"issuer": self, "what": "jwks"}),
        ])
        self.server = LoopbackServer(app)

    # --- lifecycle ---------------------------------------------------------------------------------------------
    def start(self):
        self.server.start()
        return self

    def stop(self):
        self.server.stop()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    @property
    def authority(self):
        return self.server.url

    @property
    def issuer(self):
        return f"{self.authority}/{self.tenant_id}/v2.0"

    @property
    def v1_issuer(self):
        return f"https://sts.windows.net/{self.tenant_id}/"

    # --- documents -----------------------------------------------------------------------------------------------
    def discovery(self):
        return {"issuer": self.issuer, "jwks_uri": f"{self.authority}/{self.tenant_id}/discovery/v2.0/keys",
                "authorization_endpoint": f"{self.authority}/{self.tenant_id}/oauth2/v2.0/authorize",
                "token_endpoint": f"{self.authority}/{self.tenant_id}/oauth2/v2.0/token",
                "id_token_signing_alg_values_supported": ["RS256"]}

    def jwks(self):
        out = []
        for kid, key in self.keys.items():
            jwk = json.loads(RSAAlgorithm.to_jwk(key.public_key()))
            jwk.update(kid=kid, use="sig", alg="RS256")
            out.append(jwk)
        return {"keys": out}

    # --- keys --------------------------------------------------------------------------------------------------
    def add_key(self, kid=None, *, make_current=True):
        kid = kid or uuid.uuid4().hex[:16]
        self.keys[kid] = rsa.generate_private_key(public_exponent=65537, key_size=self.key_size)
        if make_current:
            self.current_kid = kid
        return kid

    def remove_key(self, kid):
        self.keys.pop(kid, None)

    def rotate(self):
        """New signing key; the old one is removed from the JWKS. Returns (old_kid, new_kid)."""
        old = self.current_kid
        new = self.add_key()
        self.remove_key(old)
        return old, new

    def public_pem(self, kid=None):
        return self.keys[kid or self.current_kid].public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)

    # --- tokens ------------------------------------------------------------------------------------------------
    def claims(self, *, app=False, lifetime=3600, **overrides):
        now = int(time.time())
        claims = {"iss": self.issuer, "aud": self.client_id, "tid": self.tenant_id, "oid": str(uuid.uuid4()),
                  "sub": uuid.uuid4().hex, "iat": now - 5, "nbf": now - 5, "exp": now + lifetime, "ver": "2.0",
                  "azp": str(uuid.uuid4())}
        if app:
            claims.update(roles=["Foundry.User"], idtyp="app")
        else:
            claims.update(scp="foundry_access", name="Test User", preferred_username="user@example.com")
        claims.update(overrides)
        return {k: v for k, v in claims.items() if v is not None}   # None removes a claim

    def mint(self, *, kid=None, key=None, headers=None, app=False, lifetime=3600, **claims):
        """A signed RS256 token; claim overrides as keyword arguments (value None drops the claim)."""
        kid = kid or self.current_kid
        key = key or self.keys[kid]
        return jwt.encode(self.claims(app=app, lifetime=lifetime, **claims), key, algorithm="RS256",
                          headers={"kid": kid, "typ": "JWT", **(headers or {})})

    def unsigned(self, **claims):
        """alg=none token."""
        return _b64json({"alg": "none", "typ": "JWT", "kid": self.current_kid}) + "." + \
            _b64json(self.claims(**claims)) + "."

    def hs256_with_public_key(self, **claims):
        """The classic key-confusion attack: HS256 with the issuer's public key (PEM) as the HMAC secret."""
        signing_input = _b64json({"alg": "HS256", "typ": "JWT", "kid": self.current_kid}) + "." + \
            _b64json(self.claims(**claims))
        sig = hmac.new(self.public_pem(), signing_input.encode(), hashlib.sha256).digest()
        return signing_input + "." + _b64(sig)


def tamper(token, **claims):
    """Change claims of a signed token, keeping its header and signature."""
    header, payload, sig = token.split(".")
    body = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    body.update(claims)
    return header + "." + _b64json(body) + "." + sig


def _b64(raw):
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _b64json(obj):
    return _b64(json.dumps(obj, separators=(",", ":")).encode())
