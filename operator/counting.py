"""A store wrapper that counts calls per method, so each pass can report what it cost (logs, benchmark, tests)."""
import collections
import threading

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

    def list_all(self, kind, namespace=None, label_selector=None, page_size=500):
        items, token = [], None
        while True:
            page = self.list(kind, namespace, label_selector=label_selector, limit=page_size, continue_token=token)
            items.extend(page.items)
            token = page.continue_token
            if not token:
                return items

    def take(self):
        """The counts since the last take()."""
        with self._lock:
            counts, self.counts = self.counts, collections.Counter()
        return dict(counts)
