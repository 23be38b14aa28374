"""Per-object exponential backoff, like controller-runtime's rate-limited work queue: an object whose reconcile
failed for a temporary reason (apiserver unavailable, a write conflict) is skipped until its delay has passed;
success forgets it. Jitter keeps a thousand objects that failed together from retrying together."""
import random
import threading
import time


class Backoff:
    def __init__(self, base=1.0, maximum=300.0, clock=time.monotonic, jitter=0.1, rng=None):
        self.base, self.maximum, self.clock, self.jitter = base, maximum, clock, jitter
        self._rng = rng or random.Random()
        self._entries = {}          # key -> (failures, not before)
        self._lock = threading.Lock()

    def delay(self, failures):
        return min(self.maximum, self.base * (2 ** (failures - 1)))

    def failed(self, key):
        """Record a failure; returns the delay before the next attempt."""
        with self._lock:
            failures = self._entries.get(key, (0, 0.0))[0] + 1
            delay = self.delay(failures) * (1 + self._rng.uniform(-self.jitter, self.jitter))
            self._entries[key] = (failures, self.clock() + delay)
            return delay

    def succeeded(self, key):
        with self._lock:
            self._entries.pop(key, None)

    def ready(self, key):
        """Whether `key` may be attempted now."""
        with self._lock:
            entry = self._entries.get(key)
            return entry is None or self.clock() >= entry[1]

    def failures(self, key):
        with self._lock:
            return self._entries.get(key, (0, 0.0))[0]

    def forget_except(self, keys):
        """Drop entries of objects that no longer exist."""
        with self._lock:
            for key in list(self._entries):
                if key not in keys:
                    del self._entries[key]
