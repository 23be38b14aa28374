"""Wake the polling loop when an API keys Secret changes (a rotation by the control plane), on a cluster.

The loop polls every `pollIntervalSeconds` (5 s by default); a rotated key must be refused within the platform's
propagation bound (FOUNDRY_KEY_PROPAGATION_S, 5 s on a cluster), and the kubelet needs the operator's pod annotation
(pod_status.stale_for_keys) to refresh the pods' Secret volumes promptly. So one watch per watched namespace on the
keys Secrets (by label: the operator's children with component `api-keys`) sets `wake`; the next pass starts at once
and stays level-triggered (the watch only shortens the wait, a lost event costs at most one poll interval).
"""
import logging
import threading

from foundry_inference.store import errors

from . import names

log = logging.getLogger("foundry_inference.operator")
SELECTOR = f"{names.SELECTOR},{names.COMPONENT_LABEL}=api-keys"
WATCH_TIMEOUT_S = 120
BACKOFF_S = (0.5, 1, 2, 5, 10, 30)


class KeysWatch(threading.Thread):
    def __init__(self, store, namespace, wake, stop):
        super().__init__(name=f"keys-watch-{namespace or 'all'}", daemon=True)
        self.store, self.namespace, self.wake, self.stop = store, namespace, wake, stop
        self.stream = None

    def run(self):
        version, failures = None, 0
        while not self.stop.is_set():
            try:
                self.stream = self.store.watch("Secret", self.namespace, resource_version=version,
                                               timeout_s=WATCH_TIMEOUT_S, label_selector=SELECTOR)
                for event, obj in self.stream:
                    failures = 0
                    version = (obj.get("metadata") or {}).get("resourceVersion") or version
                    if event in ("ADDED", "MODIFIED", "DELETED"):
                        self.wake.set()
            except errors.Gone:
                version = None
            except errors.StoreError as exc:
                if self.stop.is_set():
                    return
                delay = BACKOFF_S[min(failures, len(BACKOFF_S) - 1)]
                failures += 1
                log.debug("keys watch failed (%s: %s); again in %ss", exc.reason, exc.message, delay)
                self.stop.wait(delay)

    def close(self):
        stream = self.stream
        if stream is not None:
            stream.close()


def start(store, namespaces, wake, stop):
    """One watch thread per watched namespace (one cluster-wide for every namespace), on its own connections."""
    if not hasattr(store, "watch"):
        return []
    own = store.dedicated(len(namespaces or [None])) if hasattr(store, "dedicated") else store
    watches = [KeysWatch(own, ns, wake, stop) for ns in namespaces or [None]]
    for watch in watches:
        watch.start()
    return watches
