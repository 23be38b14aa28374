"""A read cache over a KubernetesStore fed by list+watch (an informer), for the control plane's single-object GETs.

Why: a GET through the control plane would otherwise pay the apiserver round trip on top of its own HTTP hop; served
from memory it costs only the hop (docs/benchmarks.md). What it guarantees:
- Read-your-writes: an object written through this store (create, replace, patch, delete) is read from the apiserver
  until the watch has delivered that very write (same resourceVersion, or the DELETED event), so a client never reads
  back an older version of its own change.
- Changes made by others (the operator's status updates, kubectl) appear as fast as the watch delivers them,
  typically within milliseconds; an object the cache has not seen is read from the apiserver (a miss is never a 404).
- A broken or forbidden watch turns the cache off for that kind and scope until a fresh list succeeds; reads then go
  to the apiserver, so staleness is bounded by the watch, never by an outage.
Lists and every write go to the apiserver unchanged (continue tokens stay the apiserver's own).
"""
import copy
import logging
import threading
import time
from dataclasses import dataclass

from foundry_inference import logs

from . import errors
from .base import ResourceStore

log = logging.getLogger("foundry_inference.store.watchcache")

WATCH_TIMEOUT_S = 60        # the apiserver ends each watch after this; it is reopened from the last resourceVersion
WRITE_MARK_S = 30.0         # a write not seen on the watch by then is no longer waited for (the watch was replaced)
BACKOFF_S = (0.5, 1, 2, 5, 10, 30)


@dataclass
class _WriteMark:
    """Read `key` from the apiserver until the watch delivers `resource_version` (None: the DELETED event)."""
    resource_version: str | None
    at: float
    any_event: bool = False   # the write's outcome is unknown (it failed): any event for the key ends the mark


class _Informer(threading.Thread):
    """List then watch one kind in one namespace (None: all namespaces), feeding the cache; relist on any break."""

    def __init__(self, cache, kind, namespace):
        super().__init__(name=f"watch-{kind}-{namespace or 'all'}", daemon=True)
        self.cache, self.kind, self.namespace = cache, kind, namespace
        self.stream = None

    def run(self):
        failures = 0
        while not self.cache.stopping.is_set():
            try:
                version = self.cache.relist(self.kind, self.namespace)
                failures = 0
                while not self.cache.stopping.is_set():
                    version = self._watch(version)
            except errors.StoreError as exc:
                self.cache.unsync(self.kind, self.namespace)
                if self.cache.stopping.is_set():
                    return
                if isinstance(exc, errors.Gone):
                    continue                                  # history compacted: list again at once
                delay = BACKOFF_S[min(failures, len(BACKOFF_S) - 1)]
                failures += 1
                logs.event(log, "watch interrupted; reads go to the apiserver until it is back",
                           level=logging.WARNING if failures > 1 else logging.INFO, kind=self.kind,
                           namespace=self.namespace or "*", error=exc.message, retry_in_s=delay)
                self.cache.stopping.wait(delay)

    def _watch(self, version):
        self.stream = self.cache.store.watch(self.kind, self.namespace, version, timeout_s=WATCH_TIMEOUT_S)
        if self.cache.stopping.is_set():
            self.stream.close()
        self.cache.synced(self.kind, self.namespace)
        for kind_of_event, obj in self.stream:
            meta = obj.get("metadata") or {}
            version = meta.get("resourceVersion") or version
            if kind_of_event in ("ADDED", "MODIFIED", "DELETED"):
                self.cache.apply(self.kind, kind_of_event, obj)
        return version


class WatchCache:
    def __init__(self, store, kinds, namespaces=None, clock=time.monotonic):
        """`store` is a KubernetesStore; `namespaces` None watches each kind across all namespaces (one watch per
        kind), otherwise one watch per kind and namespace (what namespaced RBAC allows)."""
        self.kinds, self.clock = tuple(kinds), clock
        self.scopes = tuple(namespaces) if namespaces else (None,)
        # the watches hold their connections for a minute at a time and then hand them back all at once: a pool of
        # their own, sized for them, keeps that churn (and urllib3's "pool is full" warnings) off the request pool
        self.store = store.dedicated(len(self.kinds) * len(self.scopes) + 1)
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._objects = {}          # (kind, namespace, name) -> object
        self._synced = set()        # (kind, scope) whose list+watch is current
        self._marks = {}            # (kind, namespace, name) -> _WriteMark
        self._informers = [_Informer(self, kind, scope) for kind in self.kinds for scope in self.scopes]

    def start(self):
        for informer in self._informers:
            informer.start()
        return self

    def stop(self):
        self.stopping.set()
        for informer in self._informers:
            if informer.stream is not None:
                informer.stream.close()
        self.store.close()

    def wait_synced(self, timeout=10.0):
        """True once every kind and scope has listed (for tests and benchmarks)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if len(self._synced) == len(self._informers):
                    return True
            time.sleep(0.02)
        return False

    def _scope(self, namespace):
        return None if self.scopes == (None,) else namespace

    # --- fed by the informers ----------------------------------------------------------------------------------
    def relist(self, kind, scope):
        started = self.clock()
        result = self.store.list(kind, scope, limit=None)
        fresh = {(kind, o["metadata"].get("namespace"), o["metadata"]["name"]): o for o in result.items}
        with self._lock:
            for key in [k for k in self._objects if k[0] == kind and (scope is None or k[1] == scope)]:
                if key not in fresh:
                    del self._objects[key]
            self._objects.update(fresh)
            for key in [k for k, m in self._marks.items() if k[0] == kind and m.at <= started
                        and (scope is None or k[1] == scope)]:
                del self._marks[key]                          # the list is newer than these writes
        return result.resource_version

    def synced(self, kind, scope):
        """The list is loaded and a watch from it is open: from now on the cache answers."""
        with self._lock:
            self._synced.add((kind, scope))

    def unsync(self, kind, scope):
        with self._lock:
            self._synced.discard((kind, scope))

    def apply(self, kind, event, obj):
        meta = obj["metadata"]
        key = (kind, meta.get("namespace"), meta["name"])
        with self._lock:
            if event == "DELETED":
                self._objects.pop(key, None)
            else:
                self._objects[key] = obj
            mark = self._marks.get(key)
            if mark is not None and (mark.any_event or (event == "DELETED" if mark.resource_version is None
                                                        else meta.get("resourceVersion") == mark.resource_version)):
                del self._marks[key]

    # --- used by CachedStore -----------------------------------------------------------------------------------
    def lookup(self, kind, namespace, name):
        """A copy of the cached object, or None when the apiserver must answer (not cached, not synced, or a write
        through this store not yet seen on the watch)."""
        key = (kind, namespace, name)
        with self._lock:
            if (kind, self._scope(namespace)) not in self._synced:
                return None
            mark = self._marks.get(key)
            if mark is not None:
                if self.clock() - mark.at < WRITE_MARK_S:
                    return None
                del self._marks[key]
            obj = self._objects.get(key)
        return copy.deepcopy(obj) if obj is not None else None

    def mark_write(self, kind, namespace, name, resource_version=None, deleted=False, unknown=False):
        if kind not in self.kinds:
            return
        key, now = (kind, namespace, name), self.clock()
        with self._lock:
            seen = self._objects.get(key)
            if (not deleted and not unknown and seen is not None
                    and seen["metadata"].get("resourceVersion") == resource_version):
                self._marks.pop(key, None)                    # the watch was faster than the caller: the write,
                return                                        # and everything before it, is already here
            if len(self._marks) > 1000:
                self._marks = {k: m for k, m in self._marks.items() if now - m.at < WRITE_MARK_S}
            self._marks[key] = _WriteMark(None if deleted else resource_version, now, any_event=unknown)


class CachedStore(ResourceStore):
    """The wrapped store with `lookup()` answered from a WatchCache; every other call goes to the wrapped store, and
    writes of cached kinds are noted so that reads stay read-your-writes."""

    def __init__(self, store, kinds, namespaces=None):
        self.store = store
        self.cache = WatchCache(store, kinds, namespaces).start()

    def lookup(self, kind, namespace, name):
        return self.cache.lookup(kind, namespace, name)

    def _written(self, kind, namespace, name, call, deleted=False):
        try:
            result = call()
        except errors.StoreError as exc:
            if not isinstance(exc, (errors.NotFound, errors.Invalid, errors.Forbidden)):
                self.cache.mark_write(kind, namespace, name, unknown=True)   # it may have happened
            raise
        version = ((result or {}).get("metadata") or {}).get("resourceVersion")
        self.cache.mark_write(kind, namespace, name, version, deleted=deleted)
        return result

    @staticmethod
    def _key(obj):
        meta = obj.get("metadata") or {}
        return obj.get("kind"), meta.get("namespace"), meta.get("name")

    def get(self, kind, namespace, name):
        return self.store.get(kind, namespace, name)

    def list(self, kind, namespace=None, label_selector=None, limit=None, continue_token=None):
        return self.store.list(kind, namespace, label_selector=label_selector, limit=limit,
                               continue_token=continue_token)

    def create(self, obj):
        return self._written(*self._key(obj), lambda: self.store.create(obj))

    def replace(self, obj):
        return self._written(*self._key(obj), lambda: self.store.replace(obj))

    def patch(self, kind, namespace, name, patch):
        return self._written(kind, namespace, name, lambda: self.store.patch(kind, namespace, name, patch))

    def patch_status(self, kind, namespace, name, status_patch):
        return self._written(kind, namespace, name,
                             lambda: self.store.patch_status(kind, namespace, name, status_patch))

    def delete(self, kind, namespace, name):
        return self._written(kind, namespace, name, lambda: self.store.delete(kind, namespace, name), deleted=True)

    def ping(self):
        return self.store.ping()

    def stop_background(self):
        self.cache.stop()

    def close(self):
        self.cache.stop()
        self.store.close()
