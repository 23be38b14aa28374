"""Authorization: the interface, the decision cache, and the rule for API-key principals.

An authorizer is any object with `async authorize(principal, action, resource) -> None` that raises
InsufficientPermissions (403) or RbacCheckUnavailable (503); one that can decide without waiting may also have
`authorize_now(...)`, True or raising, or None where only `authorize` can decide. Remote checks
(SubjectAccessReview, Azure checkAccess) are `Backend`s - `async check(...) -> bool`, raising BackendUnavailable -
wrapped in CachedAuthorizer.
"""
import asyncio
import logging
import time
from collections import OrderedDict

from foundry_inference.auth import actions
from foundry_inference.auth.errors import InsufficientPermissions, RbacCheckUnavailable
from foundry_inference.auth.principal import ADMIN_KEY, ANONYMOUS, DEPLOYMENT_KEY

log = logging.getLogger("foundry_inference.auth")


class BackendUnavailable(Exception):
    """A remote authorizer could not give an answer (unreachable, timed out, throttled, misconfigured)."""


def deny(action):
    return InsufficientPermissions(f"The caller is not allowed to perform '{action}'")


class AllowAll:
    """Authentication switched off (mode none): every request is allowed."""

    async def authorize(self, principal, action, resource):
        return None

    def authorize_now(self, principal, action, resource):
        return True


class KeyGrantAuthorizer:
    """API keys are authorized here, locally, whatever authorizer handles tokens: a deployment key grants every
    data-plane action of its deployment (the server only holds its own deployment's keys) and nothing on the control
    plane; the admin key grants everything. Other principals go to `token_authorizer`."""

    def __init__(self, token_authorizer):
        self.token_authorizer = token_authorizer

    async def authorize(self, principal, action, resource):
        if self.authorize_now(principal, action, resource) is None:
            await self.token_authorizer.authorize(principal, action, resource)

    def authorize_now(self, principal, action, resource):
        """True for a key principal allowed here, InsufficientPermissions raised for one refused, None for a token
        principal (the token authorizer decides, asynchronously)."""
        if principal.kind == ADMIN_KEY or principal.kind == ANONYMOUS:
            return True
        if principal.kind == DEPLOYMENT_KEY:
            if actions.is_data_action(action):
                return True
            raise deny(action)
        return None


class CachedAuthorizer:
    """Caches a backend's decisions per (identity, action, resource).

    Allows live `ttl_s` (default 300 s), denials `deny_ttl_s` (so a new role assignment is seen quickly). When the
    backend is unavailable, an expired decision younger than ttl + `stale_if_error_s` is reused; with nothing usable
    cached the request gets 503 `rbac_check_unavailable`. Identical concurrent checks share one backend call.
    """

    def __init__(self, backend, *, ttl_s=300.0, deny_ttl_s=30.0, stale_if_error_s=300.0, max_entries=10000,
                 clock=time.monotonic):
        self.backend = backend
        self.ttl_s = ttl_s
        self.deny_ttl_s = deny_ttl_s
        self.stale_if_error_s = stale_if_error_s
        self.max_entries = max_entries
        self.clock = clock
        self._cache = OrderedDict()       # key -> (allowed, expires_at)
        self._inflight = {}

    async def authorize(self, principal, action, resource):
        if not await self._allowed(principal, action, resource):
            raise deny(action)

    async def _allowed(self, principal, action, resource):
        key = (principal.identity, action, str(resource))
        now = self.clock()
        entry = self._cache.get(key)
        if entry is not None and now < entry[1]:
            self._cache.move_to_end(key)
            return entry[0]
        try:
            allowed = await self._check_once(key, principal, action, resource)
        except BackendUnavailable as exc:
            if entry is not None and now < entry[1] + self.stale_if_error_s:
                log.warning("authorizer unavailable, reusing an expired decision for %s: %s", principal.identity, exc)
                return entry[0]
            log.error("authorizer unavailable and no cached decision for %s: %s", principal.identity, exc)
            raise RbacCheckUnavailable() from None
        self._store(key, allowed)
        return allowed

    async def _check_once(self, key, principal, action, resource):
        task = self._inflight.get(key)
        if task is None:
            task = asyncio.ensure_future(self.backend.check(principal, action, resource))
            self._inflight[key] = task
            task.add_done_callback(lambda _t: self._inflight.pop(key, None))
        return bool(await asyncio.shield(task))

    def _store(self, key, allowed):
        ttl = self.ttl_s if allowed else self.deny_ttl_s
        self._cache[key] = (allowed, self.clock() + ttl)
        self._cache.move_to_end(key)
        while len(self._cache) > self.max_entries:
            self._cache.popitem(last=False)

    def clear(self):
        self._cache.clear()
