"""A store wrapper that counts calls per method, so each pass can report what it cost (logs, benchmark, tests)."""
import collections
import threading

from foundry_inference.store.base import ResourceStore

_METHODS = ("get", "list", "create", "replace", "patch", "patch_status", "delete", "ping")


class CountingStore:
    def __init__(self, store):
        self.store = store
        self._lock = threading.Lock()
        self.counts = collections.Counter()

    def __getattr__(self, name):
        attr = getattr(self.store, name)
        if name not in _METHODS:
            return attr

        def call(*args, **kwargs):
            with self._lock:
                self.counts[name] += 1
            return attr(*args, **kwargs)

        return call

    # the base implementation, so that each page goes through the counted `list`
    list_all = ResourceStore.list_all

    def take(self):
        """The counts since the last take()."""
        with self._lock:
            counts, self.counts = self.counts, collections.Counter()
        return dict(counts)
