#!/usr/bin/env python3
"""Tracing overhead: the chat server with FOUNDRY_TRACING=on (OTLP/HTTP export to a loopback receiver that decodes
every span) beside the same server with tracing off, in the same run, on SmolLM2-135M-Instruct (int4, CPU).

    .venv/bin/python benchmarks/bench_tracing.py [--tokens 64] [--rounds 4] [--streams 4]

Both servers run at once (only one is asked at a time); each round runs `--streams` concurrent SSE streams of
`--tokens` forced tokens on the off server, then on the on server (the order alternates round by round so machine
noise hits both alike). Reported: aggregate decode tokens/s of each, and the median of the per-round ratios on/off.
On a shared 2-core machine one round's ratio swings by +-10 %, more than the effect, so the script also measures the
cost tracing adds to one request directly: `Tracing.record` (the only work tracing does on the event loop; export
runs in the SDK's background thread) timed over many calls, as a fraction of the median request's duration.
"""
import argparse
import json
import os
import statistics
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from benchmarks.bench_chat import concurrent_run, free_port, start_server, stop_server  # noqa: E402
from tests.support.chat_models import smollm2_model  # noqa: E402
from tests.support.otlp import OtlpReceiver  # noqa: E402


def record_cost(endpoint, calls=400):
    """Seconds one Tracing.record call takes (a 4-choice request with the three child spans)."""
    import time
    import types

    from foundry_inference.apps.chat.engine import DoneEvent, GenerationRequest
    from foundry_inference.apps.chat.tracing import Tracing
    os.environ["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"] = endpoint
    tracing = Tracing(True, "bench")
    now = time.perf_counter()
    gens = [types.SimpleNamespace(prompt_tokens=20, submitted_at=now, admitted_at=now + 0.001,
                                  first_token_at=now + 0.05)]
    handler = types.SimpleNamespace(
        request=types.SimpleNamespace(_start_time=time.time(), headers={"traceparent": f"00-{'1' * 32}-{'2' * 16}-01"},
                                      method="POST", path="/v1/chat/completions"),
        service=types.SimpleNamespace(model_id="bench"))
    request = GenerationRequest(prompt_ids=(1,) * 20, max_new_tokens=64, n=4)
    done = [DoneEvent(i, "length", 64) for i in range(4)]
    start = time.perf_counter()
    for _ in range(calls):
        tracing.record("chat", handler, request, gens, done, now + 0.05)
    seconds = (time.perf_counter() - start) / calls
    tracing.close()
    return seconds


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--streams", type=int, default=4)
    args = parser.parse_args()
    model = smollm2_model()
    with OtlpReceiver() as otlp:
        off, base_off = start_server(model, free_port())
        on, base_on = start_server(model, free_port(), extra_env={
            "FOUNDRY_TRACING": "on", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": otlp.endpoint})
        try:
            concurrent_run(base_off, 8, args.streams)          # warm both
            concurrent_run(base_on, 8, args.streams)
            rows = []
            for r in range(args.rounds):
                order = [("off", base_off), ("on", base_on)] if r % 2 == 0 else [("on", base_on), ("off", base_off)]
                got = {name: concurrent_run(base, args.tokens, args.streams)["aggregate_tps"] for name, base in order}
                rows.append(got)
                print(f"round {r + 1}: off {got['off']:.1f} tok/s, on {got['on']:.1f} tok/s, "
                      f"ratio {got['on'] / got['off']:.3f}", flush=True)
            spans = otlp.wait_for(lambda s: len(s) >= 4 * args.rounds * args.streams, timeout=30)
        finally:
            stop_server(off)
            stop_server(on)
        per_record = record_cost(otlp.endpoint)
    on_tps = statistics.median(r["on"] for r in rows)
    request_s = args.tokens * args.streams / on_tps          # every stream of a round lasts about the round
    result = {"tokens": args.tokens, "streams": args.streams, "rounds": args.rounds,
              "off_tps": statistics.median(r["off"] for r in rows), "on_tps": statistics.median(r["on"] for r in rows),
              "ratio_on_off": statistics.median(r["on"] / r["off"] for r in rows), "spans_received": len(spans),
              "record_us": per_record * 1e6, "median_request_s": request_s,
              "record_share_of_request": per_record / request_s}
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
