"""The autoscaling rule as pure data over simulated time: stable and panic windows, the scale-down delay, scale to
zero only after an idle time with complete data, missing data holds, never more than one reversal per window."""
import json

import pytest

from foundry_inference.operator.autoscale import gauges
from foundry_inference.operator.autoscale import params as params_mod
from foundry_inference.operator.autoscale.policy import Policy

pytestmark = pytest.mark.unit


def params(**kw):
    base = dict(min_replicas=1, max_replicas=8, target_concurrency=2, scale_down_delay_s=30.0,
                scale_to_zero_after_s=60.0, period_s=2.0, stable_window_s=60.0, panic_window_s=6.0,
                panic_threshold=2.0, max_held=64, hold_timeout_s=120.0)
    base.update(kw)
    return params_mod.ScalingParams(**base)


def run(policy, replicas, load, start, end, step=2.0, answered=True):
    """Feed `load` (a number, None for missing, or a function of time) from `start` to `end`; apply decisions.
    Returns (replicas, [(time, replicas, reason)])."""
    changes = []
    t = start
    while t <= end:
        value = load(t) if callable(load) else load
        policy.observe(t, value, answered and bool(value))
        decision = policy.decide(t, replicas)
        if decision:
            replicas = decision[0]
            changes.append((t, replicas, decision[1]))
        t += step
    return replicas, changes


def test_steady_load_reaches_its_count_and_stays():
    p = Policy(params(), 0.0)
    replicas, changes = run(p, 1, 8.0, 0, 300)
    assert replicas == 4                                     # 8 in flight / target 2
    assert len(changes) <= 2 and all(r <= 4 for _t, r, _why in changes)


def test_a_burst_panics_up_fast_and_never_down_inside_the_panic():
    p = Policy(params(), 0.0)
    replicas, _ = run(p, 1, 1.0, 0, 120)
    assert replicas == 1
    replicas, changes = run(p, replicas, 16.0, 122, 128)     # x8 in one panic window
    assert replicas == 8 and changes[0][2].startswith("panic")
    assert changes[0][0] <= 124                              # within a period or two, not a stable window
    replicas, changes = run(p, replicas, 1.0, 130, 170)      # the panic holds for a stable window: no way down
    assert replicas == 8 and changes == []


def test_scale_down_waits_for_the_delay_and_flaps_at_most_once_per_window():
    p = Policy(params(panic_threshold=100.0), 0.0)          # stable mode only
    def square(t):                                           # load flapping every 20 s
        return 8.0 if int(t // 20) % 2 == 0 else 0.5

    _replicas, changes = run(p, 1, square, 0, 600)
    previous, last_up = 1, None
    for t, r, _why in changes:
        if r > previous:
            last_up = t
        elif last_up is not None:
            assert t - last_up >= 60                         # never down within a stable window of an up
        previous = r
    assert 1 <= len(changes) <= 600 // 60 * 2 + 1            # at most one reversal per window
    assert all(1 <= r <= 8 for _t, r, _w in changes)


def test_missing_data_holds_and_never_scales_down_or_to_zero():
    p = Policy(params(min_replicas=0, scale_to_zero_after_s=10.0), 0.0)
    replicas, _ = run(p, 3, 6.0, 0, 60)
    assert replicas == 3
    replicas, changes = run(p, replicas, None, 62, 400)      # the metrics source is gone
    assert replicas == 3 and changes == []


def test_idle_scales_to_zero_only_after_the_idle_time_and_only_with_min_zero():
    p = Policy(params(min_replicas=0, scale_to_zero_after_s=60.0), 0.0)
    replicas, changes = run(p, 1, 0.0, 0, 58, answered=False)
    assert replicas == 1
    replicas, changes = run(p, 1, 0.0, 60, 64, answered=False)
    assert replicas == 0 and "idle" in changes[0][2]
    held = Policy(params(min_replicas=1), 0.0)
    assert run(held, 1, 0.0, 0, 600, answered=False)[0] == 1


def test_answered_requests_count_as_activity_even_with_zero_in_flight():
    p = Policy(params(min_replicas=0, scale_to_zero_after_s=10.0), 0.0)
    for t in range(0, 40, 2):
        p.observe(float(t), 0.0, True)                     # quick requests: nothing in flight at a read
        assert p.decide(float(t), 1) is None


def test_the_activator_touch_defers_scale_to_zero():
    p = Policy(params(min_replicas=0, scale_to_zero_after_s=10.0), 0.0)
    run(p, 1, 0.0, 0, 8, answered=False)
    p.touch(9.0)
    assert run(p, 1, 0.0, 10, 18, answered=False)[0] == 1
    assert run(p, 1, 0.0, 20, 22, answered=False)[0] == 0


def test_annotation_round_trip_and_garbage():
    good = params(min_replicas=0)
    dep = {"metadata": {"annotations": {params_mod.ANNOTATION: good.to_annotation()}}}
    assert params_mod.of_deployment(dep) == good
    for raw in ("nope", "[]", json.dumps({"min_replicas": 0}),
                good.to_annotation().replace('"max_replicas":8', '"max_replicas":-1'),
                good.to_annotation().replace('"target_concurrency":2', '"target_concurrency":true')):
        assert params_mod.of_deployment({"metadata": {"annotations": {params_mod.ANNOTATION: raw}}}) is None


def test_gauges_parse_both_servers():
    chat = ("# TYPE foundry_chat_running_sequences gauge\nfoundry_chat_running_sequences 2.0\n"
            "# TYPE foundry_chat_waiting_sequences gauge\nfoundry_chat_waiting_sequences 3.0\n"
            "# TYPE foundry_chat_requests_total counter\n"
            'foundry_chat_requests_total{endpoint="chat",status="200"} 7.0\n')
    assert gauges.parse(chat) == (5.0, 7.0)
    predictive = ("# TYPE foundry_predict_queue_depth gauge\nfoundry_predict_queue_depth 4.0\n"
                  "# TYPE foundry_predict_requests_total counter\n"
                  'foundry_predict_requests_total{status="200"} 9.0\n')
    assert gauges.parse(predictive) == (4.0, 9.0)
    assert gauges.parse("# nothing here\n")[0] is None
    assert gauges.read("http://127.0.0.1:9/metrics", timeout=0.2) == (None, None)
