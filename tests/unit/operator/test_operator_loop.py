"""The loop on the embedded store: a temporary store failure backs that object off (others go on), is reported in
its status after a few attempts, and heals; a pass that cannot list is retried with backoff."""
import threading
import time

import pytest

from foundry_inference.store import errors

from .factories import converge, mdep, new_operator

pytestmark = pytest.mark.unit


class Flaky:
    """Wraps a store; creates of Services named in `fail` raise Unavailable."""

    def __init__(self, store):
        self.store, self.fail, self.fail_lists = store, set(), False

    def __getattr__(self, name):
        return getattr(self.store, name)

    def create(self, obj):
        if obj["kind"] == "Service" and obj["metadata"]["name"] in self.fail:
            raise errors.Unavailable("failed to allocate a serviceIP: range is full")
        return self.store.create(obj)

    def list(self, *args, **kwargs):
        if self.fail_lists:
            raise errors.Unavailable("apiserver unreachable")
        return self.store.list(*args, **kwargs)

    def list_all(self, kind, namespace=None, label_selector=None, page_size=500):
        items, token = [], None
        while True:
            page = self.list(kind, namespace, label_selector=label_selector, limit=page_size, continue_token=token)
            items += page.items
            token = page.continue_token
            if not token:
                return items


def test_a_failing_object_backs_off_alone_reports_it_and_heals(embedded_store):
    flaky = Flaky(embedded_store)
    flaky.fail.add("bad")
    for name in ("good", "bad"):
        embedded_store.create(mdep(name, "ns"))
    op = new_operator(flaky, "ns", backoffBaseSeconds=0.05, backoffMaxSeconds=0.2)
    first = op.run_pass()
    assert first.failed == 1 and embedded_store.get("ModelDeployment", "ns", "good")["status"]["state"] == "Creating"
    for _ in range(3):
        time.sleep(0.25)
        op.run_pass()
    message = embedded_store.get("ModelDeployment", "ns", "bad").get("status", {}).get("message", "")
    assert "retrying after 3 failed attempts" in message and "range is full" in message
    assert op.backoff.failures(("ModelDeployment", embedded_store.get("ModelDeployment", "ns", "bad")["metadata"]
                                ["uid"])) >= 3
    flaky.fail.clear()
    converge(op)
    st = embedded_store.get("ModelDeployment", "ns", "bad")["status"]
    assert st["state"] == "Creating" and st["serviceReady"] is True


def test_a_pass_that_cannot_list_is_retried_with_backoff(embedded_store):
    flaky = Flaky(embedded_store)
    embedded_store.create(mdep("phi", "ns"))
    op = new_operator(flaky, "ns", backoffBaseSeconds=0.05, backoffMaxSeconds=0.4, pollIntervalSeconds=0.05)
    flaky.fail_lists = True
    stop = threading.Event()
    thread = threading.Thread(target=op.run, args=(stop,), daemon=True)
    thread.start()
    try:
        time.sleep(0.6)
        assert op.passes == 0 and op.pass_backoff.failures("pass") >= 2
        flaky.fail_lists = False
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not (embedded_store.get("ModelDeployment", "ns", "phi")
                                                   .get("status") or {}).get("state"):
            time.sleep(0.05)
        assert embedded_store.get("ModelDeployment", "ns", "phi")["status"]["state"] == "Creating"
        assert op.pass_backoff.failures("pass") == 0
    finally:
        stop.set()
        thread.join(5)
        op.close()
