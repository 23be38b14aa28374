"""The ResourceStore interface shared by the control plane and the operator, and its asyncio facade.

Objects are plain dicts shaped exactly like Kubernetes objects (apiVersion, kind, metadata, spec, status). Both
implementations (kube.py, embedded.py) satisfy one contract suite (tests/integration/test_store_contract.py).
"""
import abc
import asyncio
import concurrent.futures
import copy
import functools
from dataclasses import dataclass, field

from . import errors


@dataclass
class ListResult:
    items: list
    continue_token: str | None = None  # opaque; None on the last page
    resource_version: str | None = None
    remaining: int | None = field(default=None)


def merge_patch(target, patch):
    """RFC 7386 JSON merge patch: dicts merge recursively, null deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


class ResourceStore(abc.ABC):
    """Blocking store API. `kind` is a kind name such as "ModelDeployment" (see kinds.KINDS)."""

    @abc.abstractmethod
    def get(self, kind, namespace, name):
        """Return the object or raise NotFound."""

    @abc.abstractmethod
    def list(self, kind, namespace=None, label_selector=None, limit=None, continue_token=None):
        """List one namespace (or all namespaces with namespace=None), oldest key order; returns ListResult."""

    @abc.abstractmethod
    def create(self, obj):
        """Create; returns the stored object (uid, resourceVersion, creationTimestamp, generation set).
        Raises AlreadyExists, Invalid. The status of kinds with a status subresource is dropped, as the apiserver
        does."""

    @abc.abstractmethod
    def replace(self, obj):
        """Full replace; `metadata.resourceVersion` must match the stored one (Conflict otherwise). Status is kept."""

    @abc.abstractmethod
    def patch(self, kind, namespace, name, patch):
        """JSON merge patch of everything but status."""

    @abc.abstractmethod
    def patch_status(self, kind, namespace, name, status_patch):
        """JSON merge patch of `status` only (`status_patch` is the status object's patch, not {"status": ...})."""

    @abc.abstractmethod
    def delete(self, kind, namespace, name):
        """Delete; dependents (ownerReferences) are garbage-collected. Raises NotFound."""

    @abc.abstractmethod
    def ping(self):
        """Raise Unavailable if the backing store cannot be reached; return a short description otherwise."""

    def lookup(self, kind, namespace, name):
        """The object from a local read cache, or None when the store itself must be asked (no cache: always)."""
        return None

    def list_all(self, kind, namespace=None, label_selector=None, page_size=500):
        """Every matching object, following continue tokens."""
        items, token = [], None
        while True:
            page = self.list(kind, namespace, label_selector=label_selector, limit=page_size, continue_token=token)
            items.extend(page.items)
            token = page.continue_token
            if not token:
                return items

    def get_scale(self, kind, namespace, name):
        """The object's scale ({"metadata": {"resourceVersion"}, "spec": {"replicas"}}); the apiserver's `scale`
        subresource on a cluster, spec.replicas here."""
        obj = self.get(kind, namespace, name)
        return {"metadata": {"name": name, "namespace": namespace,
                             "resourceVersion": obj["metadata"].get("resourceVersion")},
                "spec": {"replicas": (obj.get("spec") or {}).get("replicas")}}

    def patch_scale(self, kind, namespace, name, replicas, resource_version=None):
        """Set only the replica count (the `scale` subresource on a cluster: the one write an activator may do);
        with `resource_version`, Conflict when the object moved since."""
        if resource_version is not None and self.get(kind, namespace, name)["metadata"].get(
                "resourceVersion") != resource_version:
            raise errors.Conflict(f"{kind} {namespace}/{name} changed since resourceVersion {resource_version}")
        self.patch(kind, namespace, name, {"spec": {"replicas": int(replicas)}})

    runs_pods = False       # True where the store's objects run as pods (a cluster); the embedded store has none

    def pod_log(self, namespace, name, container, tail_lines=20, limit_bytes=16384):
        """The tail of a pod container's log as text, or None where the store runs no pods (embedded)."""
        return None

    def close(self):  # noqa: B027 - optional hook, nothing to release by default
        """Release connections."""

    def stop_background(self):  # noqa: B027 - optional hook, no background work by default
        """End background work (watch threads) while leaving the store usable for plain calls."""


class AsyncStore:
    """The same API as awaitables, run on a thread pool so a blocking client never stalls a Tornado IOLoop."""

    _METHODS = ("get", "list", "list_all", "create", "replace", "patch", "patch_status", "delete", "ping")

    def __init__(self, store, max_workers=8):
        self.store = store
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="store")

    def __getattr__(self, name):
        if name not in self._METHODS:
            raise AttributeError(name)
        method = getattr(self.store, name)

        async def call(*args, **kwargs):
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._pool, functools.partial(method, *args, **kwargs))

        return call

    async def get_cached(self, kind, namespace, name):
        """`get`, answered from the store's read cache when it has the object (no thread hop), else by `get`."""
        hit = self.store.lookup(kind, namespace, name)
        if hit is not None:
            return hit
        return await self.get(kind, namespace, name)

    def close(self):
        self._pool.shutdown(wait=False)
        self.store.close()
