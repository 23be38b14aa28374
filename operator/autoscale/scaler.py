"""The embedded node's autoscaler: its own loop (every `periodSeconds`, not the operator's poll) reads each ready
replica's gauges, asks the policy, and writes a decision as the child Deployment's replicas plus the annotation
`foundry.azure.com/last-scaling` ({replicas, reason, time}; the operator shows it as status.lastScaling). The
activator calls wake() for a request that arrives while no replica runs: the decision is written and the node agent
is told to act at once. One lock orders wake() and the loop, so a wake-up never loses to a scale to zero."""
import json
import logging
import threading
import time

from foundry_inference import logs
from foundry_inference.store import errors

from .. import names
from ..status import now_utc, rfc3339
from . import gauges
from .policy import Policy

log = logging.getLogger("foundry_inference.operator.autoscale")


class Scaler:
    def __init__(self, store, workloads, kick, held=lambda uid: 0, clock=time.monotonic):
        self.store = store
        self.workloads = workloads       # () -> the agent's current workloads
        self.kick = kick                 # () -> None: run the node agent's next tick now
        self.held = held                 # uid -> requests the activator holds for it
        self.clock = clock
        self.policies = {}               # uid -> Policy
        self.answered = {}               # uid -> sum of the replicas' answered-request counters at the last read
        self._lock = threading.Lock()

    def _policy(self, workload, now):
        policy = self.policies.get(workload.uid)
        if policy is None:
            policy = self.policies[workload.uid] = Policy(workload.scaling, now)
        policy.params = workload.scaling
        return policy

    def write(self, workload, replicas, reason):
        decision = {"replicas": replicas, "reason": reason, "time": rfc3339(now_utc())}
        try:
            self.store.patch("Deployment", workload.namespace, workload.name, {
                "metadata": {"annotations": {names.LAST_SCALING: json.dumps(decision)}},
                "spec": {"replicas": replicas}})
        except errors.NotFound:
            return False
        workload.replicas = replicas     # what the agent will realise at its next tick
        logs.event(log, "scaled", namespace=workload.namespace, name=workload.name, replicas=replicas, reason=reason)
        return True

    def wake(self, workload):
        """A request waits for `workload`: one replica now if it has none (blocking; the activator calls it off its
        loop)."""
        with self._lock:
            now = self.clock()
            if workload.scaling is not None:
                self._policy(workload, now).touch(now)
            try:
                current = int((self.store.get("Deployment", workload.namespace, workload.name).get("spec") or {})
                              .get("replicas") or 0)
            except errors.StoreError:
                current = workload.replicas
            if current == 0:
                self.write(workload, 1, "a request arrived while scaled to zero")
        self.kick()

    def _load(self, workload):
        """(concurrency summed over the ready replicas or None when any is unreadable, answered changed?)"""
        urls = workload.metrics_urls()
        if not urls or None in urls:
            return None, False
        concurrency, answered = 0.0, 0.0
        for url in urls:
            value, count = gauges.read(url)
            if value is None:
                return None, False
            concurrency += value
            answered += count or 0.0
        changed = self.answered.get(workload.uid) != answered
        self.answered[workload.uid] = answered
        return concurrency, changed

    def step(self):
        workloads = [w for w in self.workloads() if w.scaling is not None]
        for workload in workloads:
            if workload.replicas == 0:
                # a woken replica's first sample is activity whatever its counter says: it is where the requests
                # held while it started go (without this, a new replica that had answered exactly as many as the
                # last one was idle at once, and went to zero before they were forwarded)
                self.answered.pop(workload.uid, None)
        # the replicas are read outside the lock: a wake-up never waits for a slow metrics endpoint
        loads = {w.uid: self._load(w) for w in workloads if w.replicas > 0}
        with self._lock:
            now = self.clock()
            seen = set()
            for workload in workloads:
                seen.add(workload.uid)
                policy = self._policy(workload, now)
                if self.held(workload.uid):
                    policy.touch(now)
                if workload.replicas == 0 or workload.uid not in loads:
                    continue             # only a request (the activator) brings a deployment back from zero
                concurrency, answered = loads[workload.uid]
                policy.observe(now, concurrency, answered)
                decision = policy.decide(now, workload.replicas)
                if decision is not None and decision[0] == 0 and not workload.activator_port:
                    # nothing would answer the endpoint at zero (no sidecar, or no activator yet): one replica
                    if workload.replicas <= 1:
                        continue
                    decision = (1, f"{decision[1]}; one replica kept: nothing answers the endpoint at zero")
                if decision is not None:
                    self.write(workload, *decision)
            for uid in [u for u in self.policies if u not in seen]:
                self.policies.pop(uid, None)
                self.answered.pop(uid, None)

    def run(self, stop_event, period_s):
        while not stop_event.is_set():
            try:
                self.step()
            except errors.StoreError as exc:
                logs.event(log, "autoscaler step failed", level=logging.WARNING, error=exc.message)
            except Exception:  # noqa: BLE001 - the loop must outlive one bad step
                log.exception("autoscaler step failed")
            stop_event.wait(period_s)
