"""The polling loop. Each pass: catalog sync if due, one snapshot (each kind listed once per watched namespace), the
Models, then every ModelDeployment / InferenceService on a small thread pool. A pass that cannot list (apiserver
down) is retried with exponential backoff; an object whose reconcile failed for a temporary reason is skipped until
its own backoff has passed. Level-triggered: nothing is remembered between passes that the store does not hold,
so a restarted operator converges to the same state without duplicating anything.
"""
import concurrent.futures
import logging
import threading
import time
from dataclasses import dataclass, field

from foundry_inference import logs
from foundry_inference.store import errors

from . import keys_watch, reconcile_model, snapshot
from .backoff import Backoff
from .ca import CertificateAuthority
from .catalog_sync import CatalogSync
from .counting import CountingStore
from .metrics import OperatorMetrics
from .reconcile_deployment import DeploymentReconciler, PassContext
from .reconcile_store import StoreReconciler
from .status import now_utc

log = logging.getLogger("foundry_inference.operator")
RETRY_REPORT_AFTER = 3


@dataclass
class PassReport:
    owners: int = 0
    models: int = 0
    reconciled: int = 0
    unchanged: int = 0            # no input moved since the last pass found them in order: not recomputed
    skipped: int = 0              # in backoff
    failed: int = 0
    status_writes: int = 0
    child_writes: int = 0
    calls: dict = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def api_calls(self):
        return sum(self.calls.values())


class Operator:
    def __init__(self, store, settings, now_fn=now_utc):
        self.store = CountingStore(store)
        self.settings = settings
        self.now_fn = now_fn
        self.reconciler = DeploymentReconciler(self.store, settings)
        self.stores = StoreReconciler(self.store, settings)
        self.catalog = CatalogSync(self.store, settings)
        self.ca = CertificateAuthority(self.store, settings.operatorNamespace, now_fn)
        self.backoff = Backoff(settings.backoffBaseSeconds, settings.backoffMaxSeconds)
        self.pass_backoff = Backoff(settings.backoffBaseSeconds, min(30.0, settings.backoffMaxSeconds))
        self._pool = concurrent.futures.ThreadPoolExecutor(settings.workers, thread_name_prefix="reconcile")
        self.last_report = None
        self.passes = 0
        self.started_at = None        # monotonic; the probes (health.py) read these three
        self.last_attempt_at = None
        self.last_error = None
        self.metrics = OperatorMetrics()   # served at /metrics on the probe port (health.py)
        self.wake = threading.Event()      # set by the keys watch (keys_watch.py): start the next pass now
        self._watches = []

    @property
    def caches_models(self):
        """The model cache on a cluster (storeModel.enabled): StoreModels are listed and reconciled."""
        return self.settings.storeModel.enabled and self.store.runs_pods and not self.settings.embedded

    # --- one pass --------------------------------------------------------------------------------------------------
    def run_pass(self):
        started = time.monotonic()
        self.store.take()
        now = self.now_fn()
        report = PassReport()
        catalog = self.catalog.tick(now)
        ca_cert, ca_key = self.ca.ensure()
        snap = snapshot.take(self.store, self.settings.namespaces, self.settings.pageSize, self._pool,
                             pods=self.store.runs_pods, stores=self.caches_models)
        ctx = PassContext(catalog=catalog, ca_cert=ca_cert, ca_key=ca_key, now=now, catalog_token=self.catalog.token)
        alive = set()
        for models in snap.models.values():
            for model in models.values():
                key = ("Model", model["metadata"]["uid"])
                alive.add(key)
                report.models += 1
                if self._guarded(key, report, lambda m=model: reconcile_model.reconcile(self.store, m, catalog, now)):
                    report.status_writes += 1
        for models in snap.store_models.values():       # before the deployments, which read their status
            for store_model in models.values():
                key = ("StoreModel", store_model["metadata"]["uid"])
                alive.add(key)
                if self.backoff.ready(key):
                    written = self._guarded(key, report, lambda m=store_model: self.stores.reconcile(m, snap, now),
                                            store_model)
                    report.child_writes += len(written or [])
        futures = []
        for obj in snap.owners:
            key = (obj["kind"], obj["metadata"]["uid"])
            alive.add(key)
            report.owners += 1
            if not self.backoff.ready(key):
                report.skipped += 1
                continue
            futures.append(self._pool.submit(self._guarded, key, report,
                                             lambda o=obj: self.reconciler.reconcile(o, snap, ctx), obj))
        for future in futures:
            outcome = future.result()
            if outcome is None or outcome is False or outcome is True:
                continue
            report.reconciled += int(not outcome.skipped)
            report.unchanged += int(outcome.skipped)
            report.status_writes += int(outcome.status_written)
            report.child_writes += len(outcome.actions)
        self.backoff.forget_except(alive)
        self.reconciler.forget_except({uid for _kind, uid in alive})
        report.calls = self.store.take()
        report.seconds = time.monotonic() - started
        self.last_report = report
        self.passes += 1
        return report

    def _guarded(self, key, report, fn, obj=None):
        """Run one object's reconcile; a failure backs that object off instead of failing the pass."""
        try:
            result = fn()
        except errors.StoreError as exc:
            delay = self.backoff.failed(key)
            report.failed += 1
            meta = (obj or {}).get("metadata") or {}
            logs.event(log, "reconcile failed; backing off", level=logging.WARNING, kind=key[0],
                       namespace=meta.get("namespace"), name=meta.get("name"), error=f"{exc.reason}: {exc.message}",
                       retry_in_s=round(delay, 2))
            self._report_retrying(key, obj, exc)
            return None
        except Exception:  # noqa: BLE001 - a bug in one object's reconcile must not stop the others
            delay = self.backoff.failed(key)
            report.failed += 1
            log.exception("reconcile crashed for %s %s; retrying in %.1fs", key[0], key[1], delay)
            return None
        self.backoff.succeeded(key)
        return result

    def _report_retrying(self, key, obj, exc):
        """After a few failed attempts in a row, say so in the owner's status message (best effort: the store
        may be the thing that is failing)."""
        if obj is None or self.backoff.failures(key) != RETRY_REPORT_AFTER:
            return
        meta = obj["metadata"]
        try:
            self.store.patch_status(obj["kind"], meta["namespace"], meta["name"], {
                "message": f"retrying after {RETRY_REPORT_AFTER} failed attempts: {exc.reason}: {exc.message}"[:1000]})
        except errors.StoreError:
            pass

    # --- the loop --------------------------------------------------------------------------------------------------
    def run(self, stop_event, on_pass=None):
        logs.event(log, "operator started", namespaces=list(self.settings.namespaces or ["*"]),
                   poll_interval_s=self.settings.pollIntervalSeconds, embedded=self.settings.embedded)
        self.started_at = time.monotonic()
        if self.store.runs_pods:
            self._watches = keys_watch.start(self.store.store, self.settings.namespaces, self.wake, stop_event)
        while not stop_event.is_set():
            self.wake.clear()
            try:
                report = self.run_pass()
            except errors.StoreError as exc:
                self.last_attempt_at, self.last_error = time.monotonic(), f"{exc.reason}: {exc.message}"
                self.metrics.pass_errors.inc()
                wait = self.pass_backoff.failed("pass")
                logs.event(log, "pass failed; retrying", level=logging.WARNING, error=f"{exc.reason}: {exc.message}",
                           retry_in_s=round(wait, 2))
            else:
                self.last_attempt_at, self.last_error = time.monotonic(), None
                self.metrics.observe_pass(report)
                if self.pass_backoff.failures("pass"):
                    logs.event(log, "store reachable again")
                self.pass_backoff.succeeded("pass")
                wait = self.settings.pollIntervalSeconds
                if report.child_writes or report.status_writes or report.failed:
                    logs.event(log, "pass", owners=report.owners, children_written=report.child_writes,
                               status_written=report.status_writes, failed=report.failed,
                               skipped=report.skipped, api_calls=report.api_calls,
                               seconds=round(report.seconds, 3))
                if on_pass:
                    on_pass(report)
            self._sleep(stop_event, wait)
        logs.event(log, "operator stopped")

    def _sleep(self, stop_event, seconds):
        """Wait `seconds`, less when stopped or woken (a wake during the pass starts the next one at once)."""
        deadline = time.monotonic() + seconds
        while not stop_event.is_set() and not self.wake.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self.wake.wait(min(left, 0.25))

    def close(self):
        for watch in self._watches:
            watch.close()
        self._pool.shutdown(wait=True, cancel_futures=True)


def start_thread(operator, stop_event):
    thread = threading.Thread(target=operator.run, args=(stop_event,), name="operator", daemon=True)
    thread.start()
    return thread
