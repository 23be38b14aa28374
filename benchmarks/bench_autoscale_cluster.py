"""Scale-to-zero cycles on the real single-node cluster (tests/kube/cluster.py; root): the cluster module
tests/e2e/test_cluster_autoscale_cycles.py run with --cycles zero -> one -> zero cycles of the iris sample
(scaleToZeroAfterSeconds 1) instead of CI's 3. In each cycle 4 keyed requests are sent at zero and 2 more while the
woken pod starts; then one request to the ready replica, the baseline of the same run. Reported: 5xx, lost (no
answer), 429s, orphans (a model pod left at zero, a second ReplicaSet, not exactly one activator pod), the most model
pods alive at once, the cold-start latency of the requests sent at zero (p50/p95/max) beside the ready replica's,
and where the woken pod's start went (created, scheduled, init containers, containers started, Ready).
The module's other test (the operator killed during a wake-up) runs too.

    sudo .venv/bin/python benchmarks/bench_autoscale_cluster.py [--cycles 100] [--json out.json]

Reported in docs/benchmarks.md ("Scale to zero on the real single-node cluster").
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODULE = "tests/e2e/test_cluster_autoscale_cycles.py"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cycles", type=int, default=100)
    parser.add_argument("--json", help="write the full report (every request of every cycle) here")
    args = parser.parse_args()
    report = Path(args.json) if args.json else Path(tempfile.mkdtemp()) / "cycles.json"
    env = {**os.environ, "FOUNDRY_AUTOSCALE_CYCLES": str(args.cycles), "FOUNDRY_AUTOSCALE_CYCLES_REPORT": str(report)}
    report.unlink(missing_ok=True)
    started = time.monotonic()
    done = subprocess.run([str(ROOT / ".venv/bin/pytest"), "-p", "no:cacheprovider", "-s", MODULE], cwd=ROOT,
                          env=env)
    took = time.monotonic() - started
    if not report.exists():
        print(f"no report: the cycles test did not finish (pytest exit {done.returncode})", file=sys.stderr)
        return done.returncode or 1
    found = json.loads(report.read_text())["summary"]
    if done.returncode:
        print(f"pytest exit {done.returncode}: the numbers below are the {found['cycles']} cycles done before it "
              "stopped", file=sys.stderr)
    cold, warm = ({k: v or 0.0 for k, v in found[part].items()} for part in ("cold_s", "ready_replica_s"))
    rows = [("cycles", found["cycles"]), ("requests answered 200 / sent", f"{found['answered_200']} / "
                                                                       f"{found['requests']}"),
            ("5xx / lost / 429", f"{found['5xx']} / {found['lost']} / {found['429']}"),
            ("orphans (model pod at zero, second ReplicaSet, activator pods != 1)", len(found["orphans"])),
            ("most model pods alive at once", found["most_model_pods_at_once"]),
            ("requests sent while the pod started, cycles where it was not ready yet",
             found["late_requests_sent_before_ready"]),
            ("first request at zero p50 / p95 / max (s)", f"{cold['p50']:.2f} / {cold['p95']:.2f} / {cold['max']:.2f}"),
            ("ready replica p50 / p95 (s), same run", f"{warm['p50']:.3f} / {warm['p95']:.3f}"),
            ("cold p50 / ready p50", f"{cold['p50'] / warm['p50']:.0f}x" if warm["p50"] else "-"),
            ("last answer -> at zero again, no model pod left, p50 / p95 (s)",
             " / ".join(f"{v:.1f}" if v is not None else "-" for v in found["to_zero_s"].values())),
            ("whole run, cluster up included (s)", round(took))]
    for label, value in rows:
        print(f"{label:<75} {value}")
    print("the woken pod, p50 seconds after the first request was sent (its status timestamps, 1 s resolution):")
    for label, value in (found.get("phases_p50") or {}).items():
        print(f"  {label:<73} {value}")
    if found["orphans"] or found["failures"]:
        print(json.dumps({"orphans": found["orphans"], "failures": found["failures"]}, indent=1))
    return done.returncode


if __name__ == "__main__":
    sys.exit(main())
