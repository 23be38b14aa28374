"""Zero -> one -> zero on the real cluster, with requests in flight at each wake (docs/autoscaling.md, "On a cluster").

A scale-to-zero iris (scaleToZeroAfterSeconds 1, the shortest the API allows) goes through a few cycles. In each, at
zero (its model pods deleted, its Service's endpoints on the activator pod alone), several keyed requests are sent at
once, then more while the woken pod starts; every one must be answered 200 (they stay inside the hold bounds, so a
429 would be a failure too), none lost (no connection error, no timeout), and after the cycle exactly the expected
objects exist: no model pod, one activator pod, one ReplicaSet each (a second one would mean the operator changed the
pod template, that is a rollout: two pods). A watcher counts the live model pods throughout: never more than one.

The operator is also killed while a woken replica starts with requests held: the held requests are still answered,
and the restarted operator starts no second pod nor a second ReplicaSet.

`benchmarks/bench_autoscale_cluster.py` runs the same cycles 100 times (FOUNDRY_AUTOSCALE_CYCLES, the report written
to FOUNDRY_AUTOSCALE_CYCLES_REPORT) and prints the counts and the latency percentiles beside the ready-replica
baseline."""
import json
import os
import threading
import time

import pytest

from tests.e2e import test_cluster_autoscale as autoscale
from tests.e2e.cluster_support import NS, NUMBERS, RELEASE, deleted_after, expose, live, pods_ready, wait_for
from tests.e2e.test_cluster_autoscale import endpoint_ips, live_pods, model_pods, predict

pytestmark = [pytest.mark.e2e, pytest.mark.cluster, pytest.mark.timeout(1800)]
NAME = "iris-cycles"
AT_ONCE = 4             # keyed requests sent together at zero
WHILE_STARTING = 2      # more sent once the woken pod exists, before it is ready
apps = autoscale.apps       # the AppsV1Api fixture
OPERATOR = f"app.kubernetes.io/instance={RELEASE},app.kubernetes.io/component=operator"


def cycles_wanted():
    return int(os.environ.get("FOUNDRY_AUTOSCALE_CYCLES") or 3)


def replica_sets(apps, owner):
    """The ReplicaSets the Deployment `owner` controls."""
    return [rs.metadata.name for rs in apps.list_namespaced_replica_set(NS).items
            if any(ref.controller and ref.kind == "Deployment" and ref.name == owner
                   for ref in rs.metadata.owner_references or [])]


def pct(values, q):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))] if ordered else None


class PodWatch:
    """Counts the deployment's live model pods every 0.3 s in a thread: the most at once and every name seen."""

    def __init__(self, core, name):
        self.core, self.name = core, name
        self.most, self.seen, self.stop = 0, set(), threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self.stop.is_set():
            try:
                pods = model_pods(self.core, self.name)
            except Exception:  # noqa: BLE001 - an apiserver hiccup: the next poll counts
                pods = None
            if pods is not None:
                self.most = max(self.most, len(pods))
                self.seen.update(p.metadata.name for p in pods)
            self.stop.wait(0.3)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(10)


class Requests:
    """Keyed predictions sent in threads inside the cluster's network; each outcome kept (code or error, seconds)."""

    def __init__(self, net, platform, endpoint, key):
        self.net, self.platform, self.endpoint, self.key = net, platform, endpoint, key
        self.outcomes, self.threads = [], []

    def _one(self, kind):
        started = time.monotonic()
        try:
            resp = self.net.call(predict, self.platform, self.endpoint, self.key)
            code = resp.status_code
            ok = code == 200 and bool(resp.json().get("items"))
            detail = None if ok else f"{code} {resp.headers.get('Retry-After')} {resp.text[:300]}"
        except Exception as exc:  # noqa: BLE001 - a lost request: no answer at all
            code, ok, detail = None, False, repr(exc)
        self.outcomes.append({"kind": kind, "code": code, "ok": ok, "s": time.monotonic() - started,
                              "detail": detail})

    def send(self, kind, count):
        for _ in range(count):
            thread = threading.Thread(target=self._one, args=(kind,), daemon=True)
            thread.start()
            self.threads.append(thread)

    def join(self, timeout=240):
        deadline = time.monotonic() + timeout
        for thread in self.threads:
            thread.join(max(0.1, deadline - time.monotonic()))
        return [t for t in self.threads if t.is_alive()]


def at_zero(node, core, apps, name, timeout=240):
    """Replicas 0, no model pod at all (a removed replica serves for a few seconds after its deletion: a request
    sent then is answered by it, without a wake), the Service's endpoints on the activator pod alone; seconds
    waited."""
    started = time.monotonic()
    wait_for(node, lambda: apps.read_namespaced_deployment(name, NS).spec.replicas == 0, timeout,
             f"{name} scaled to zero")
    wait_for(node, lambda: not core.list_namespaced_pod(NS, label_selector=f"foundry.azure.com/deployment={name},"
                                                            "app.kubernetes.io/component=model-server").items,
             120, f"{name}'s model pods to be gone")
    activator = sorted(p.status.pod_ip for p in live_pods(core, f"foundry.azure.com/activator={name}"))
    wait_for(node, lambda: activator and endpoint_ips(core, name) == activator, 60,
             f"{name}'s endpoints on the activator {activator}")
    return time.monotonic() - started


def expected_objects(core, apps, name):
    """What must exist after a cycle, whatever happened during it: (problems found, as text)."""
    problems = []
    if model_pods(core, name):
        problems.append(f"model pods left at zero: {[p.metadata.name for p in model_pods(core, name)]}")
    activators = live_pods(core, f"foundry.azure.com/activator={name}")
    if len(activators) != 1:
        problems.append(f"{len(activators)} activator pods")
    for owner in (name, f"{name}-activator"):
        found = replica_sets(apps, owner)
        if len(found) != 1:
            problems.append(f"{owner}: ReplicaSets {found}")
    return problems


def phases(core, pod_name, sent_at):
    """Where the woken pod's start went, from its own status (seconds after the first request was sent; the
    apiserver's timestamps have a resolution of one second): created, scheduled, each init container finished,
    the containers started, Ready."""
    try:
        pod = core.read_namespaced_pod(pod_name, NS)
    except Exception:  # noqa: BLE001 - already deleted: no breakdown for this cycle
        return None
    found = {"created": pod.metadata.creation_timestamp}
    conditions = {c.type: c.last_transition_time for c in pod.status.conditions or []}
    found["scheduled"] = conditions.get("PodScheduled")
    for status in pod.status.init_container_statuses or []:
        if status.state.terminated:
            found[f"{status.name} started"] = status.state.terminated.started_at
            found[f"{status.name} done"] = status.state.terminated.finished_at
    started = [c.state.running.started_at for c in pod.status.container_statuses or [] if c.state.running]
    found["containers started"] = max(started) if started else None
    found["ready"] = conditions.get("Ready")
    return {k: round(v.timestamp() - sent_at, 1) for k, v in found.items() if v is not None}


def one_cycle(node, core, apps, net, platform, endpoint, key, during_start=None):
    """One wake with requests in flight. `during_start()` runs once the woken pod exists (before its requests)."""
    zero_s = at_zero(node, core, apps, NAME)
    sent = Requests(net, platform, endpoint, key)
    with PodWatch(core, NAME) as watch:
        sent_at = time.time()
        sent.send("at zero", AT_ONCE)
        pod_seen = wait_for(node, lambda: model_pods(core, NAME), 60, "the woken model pod (requests so far: "
                            f"{sent.outcomes})", interval=0.1)
        ready_already = bool(pods_ready(core, NS, f"foundry.azure.com/deployment={NAME},"
                                                  "app.kubernetes.io/component=model-server"))
        if during_start:
            during_start()
        sent.send("while starting", WHILE_STARTING)
        hung = sent.join()
        answered = round(time.time() - sent_at, 1)
        breakdown = phases(core, pod_seen[0].metadata.name, sent_at)
        warm = Requests(net, platform, endpoint, key)
        warm.send("ready replica", 1)
        warm.join(60)
    live(node)
    return {"zero_s": zero_s, "outcomes": sent.outcomes, "warm": warm.outcomes, "hung": len(hung),
            "most_pods": watch.most, "pods": sorted(watch.seen), "pod": pod_seen[0].metadata.name,
            "ready_before_late_requests": ready_already,
            "phases": breakdown and {**breakdown, "all answered": answered}}


def summary(cycles, problems):
    outcomes = [o for c in cycles for o in c["outcomes"]]
    first = [o["s"] for o in outcomes if o["kind"] == "at zero" and o["ok"]]
    warm = [o["s"] for c in cycles for o in c["warm"] if o["ok"]]
    return {
        "cycles": len(cycles), "requests": len(outcomes), "answered_200": sum(o["ok"] for o in outcomes),
        "5xx": sum(1 for o in outcomes if (o["code"] or 0) >= 500),
        "429": sum(1 for o in outcomes if o["code"] == 429),
        "lost": sum(1 for o in outcomes if o["code"] is None) + sum(c["hung"] for c in cycles),
        "orphans": problems, "most_model_pods_at_once": max((c["most_pods"] for c in cycles), default=0),
        "cycles_with_a_second_pod": sum(1 for c in cycles if len(c["pods"]) > 1),
        "late_requests_sent_before_ready": sum(1 for c in cycles if not c["ready_before_late_requests"]),
        "cold_s": {"p50": pct(first, 50), "p95": pct(first, 95), "max": max(first, default=None)},
        "ready_replica_s": {"p50": pct(warm, 50), "p95": pct(warm, 95)},
        "to_zero_s": {q: pct([c["back_to_zero_s"] for c in cycles if "back_to_zero_s" in c], n)
                      for q, n in (("p50", 50), ("p95", 95))},
        "phases_p50": {k: pct([c["phases"][k] for c in cycles if (c["phases"] or {}).get(k) is not None], 50)
                       for k in dict.fromkeys(k for c in cycles for k in (c["phases"] or {}))},
        "failures": [o for o in outcomes if not o["ok"]][:10]}


@pytest.fixture(scope="module")
def cycling(node, core, apps, net, platform):
    """The scale-to-zero iris these tests cycle, Running, with its activator available; deleted afterwards."""
    net.call(platform.deploy, NAME, {"catalog": {"name": "iris-classifier"}}, namespace=NS,
             autoscaling={"minReplicas": 0, "maxReplicas": 2, "targetConcurrency": 100,
                          "scaleToZeroAfterSeconds": 1})
    with deleted_after(net, platform, NAME):
        # idle 1 s: it may well be at zero again before a poll of the status sees Running
        status = wait_for(node, lambda: (lambda st: st["state"] in ("Running", "ScaledToZero") and st)(
            net.call(platform.deployment, NAME, NS)["status"]), 300, f"{NAME} Running or ScaledToZero")
        endpoint = expose(core, net, NS, status["internalEndpoint"])
        platform._ca = platform.ca_path()
        key = net.call(platform.keys, NAME, NS)[0]
        wait_for(node, lambda: (apps.read_namespaced_deployment(f"{NAME}-activator", NS).status.available_replicas
                                or 0) >= 1, 300, "the activator pod to be available")
        yield endpoint, key


@pytest.mark.timeout(max(1800, 60 * cycles_wanted()))       # the benchmark's 100 cycles take longer than CI's 3
def test_zero_one_zero_cycles_with_requests_in_flight_lose_nothing_and_leave_no_pod(node, core, apps, net, platform,
                                                                                   cycling):
    endpoint, key = cycling
    cycles, problems = [], []
    report = os.environ.get("FOUNDRY_AUTOSCALE_CYCLES_REPORT")
    for number in range(cycles_wanted()):
        cycles.append(one_cycle(node, core, apps, net, platform, endpoint, key))
        cycles[-1]["back_to_zero_s"] = at_zero(node, core, apps, NAME)       # after its ready-replica request
        problems += [f"cycle {number}: {p}" for p in expected_objects(core, apps, NAME)]
        if report:                   # after every cycle: a long run cut short still reports what it did
            with open(report, "w") as out:
                json.dump({"summary": summary(cycles, problems), "cycles": cycles}, out, indent=1)
        last = cycles[-1]
        print(f"cycle {number}: " + json.dumps({
            "codes": [o["code"] for o in last["outcomes"]], "cold_s": [round(o["s"], 2) for o in last["outcomes"]],
            "ready_replica_s": [round(o["s"], 3) for o in last["warm"]], "pods": len(last["pods"]),
            "phases": last["phases"], "failures": [o["detail"] for o in last["outcomes"] if not o["ok"]][:2]}),
            flush=True)
    wait_for(node, lambda: not core.list_namespaced_pod(
        NS, label_selector=f"foundry.azure.com/deployment={NAME}").items, 120, "no model pod, terminating or not")
    found = summary(cycles, problems)
    NUMBERS[f"iris {len(cycles)} cycles zero -> one -> zero: cold / ready replica p50 (s)"] = [
        round(found["cold_s"]["p50"] or 0, 2), round(found["ready_replica_s"]["p50"] or 0, 3)]
    assert found["answered_200"] == found["requests"] == len(cycles) * (AT_ONCE + WHILE_STARTING), found
    assert found["5xx"] == 0 and found["lost"] == 0, found
    assert not problems, problems
    assert found["most_model_pods_at_once"] == 1 and found["cycles_with_a_second_pod"] == 0, found
    assert all(o["ok"] for c in cycles for o in c["warm"]), [c["warm"] for c in cycles]


def test_an_operator_killed_during_a_wake_up_starts_no_second_pod_and_the_held_requests_are_answered(
        node, core, apps, net, platform, cycling):
    endpoint, key = cycling
    before = {p.metadata.name for p in core.list_namespaced_pod(NS, label_selector=OPERATOR).items}
    assert len(before) == 1, before
    killed = {}
    at_zero(node, core, apps, NAME)              # the watch below counts the pods of this wake-up only

    def kill_operator():
        for pod in before:
            core.delete_namespaced_pod(pod, NS, grace_period_seconds=0)
        killed["at"] = time.monotonic()

    with PodWatch(core, NAME) as watch:
        cycle = one_cycle(node, core, apps, net, platform, endpoint, key, during_start=kill_operator)
        assert not cycle["ready_before_late_requests"], "the pod was ready before the operator was killed"

        def replaced():
            pods = core.list_namespaced_pod(NS, label_selector=OPERATOR).items
            return (len(pods) == 1 and pods[0].metadata.name not in before and pods_ready(core, NS, OPERATOR))
        wait_for(node, replaced, 300, "the operator to run again in a new pod")
        NUMBERS["operator killed -> a new operator pod Ready (s)"] = round(time.monotonic() - killed["at"], 1)
        # the new operator reconciles and its autoscaler takes over: the replica goes to zero again, by itself
        at_zero(node, core, apps, NAME)
        time.sleep(12)                       # two more reconcile passes (pollIntervalSeconds 5) at zero
    assert all(o["ok"] for o in cycle["outcomes"]), cycle["outcomes"]
    assert len(cycle["outcomes"]) == AT_ONCE + WHILE_STARTING
    assert watch.most == 1 and len(watch.seen) == 1, (watch.most, watch.seen)
    assert not expected_objects(core, apps, NAME), expected_objects(core, apps, NAME)
    # and the restarted operator's deployment still wakes and goes back to zero
    again = one_cycle(node, core, apps, net, platform, endpoint, key)
    assert all(o["ok"] for o in again["outcomes"]) and again["most_pods"] == 1, again
    at_zero(node, core, apps, NAME)
    assert not expected_objects(core, apps, NAME), expected_objects(core, apps, NAME)
