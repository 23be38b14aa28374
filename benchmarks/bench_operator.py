"""Operator scale benchmark: N ModelDeployments created at once against the real test apiserver (etcd +
kube-apiserver 1.20 + kube-controller-manager on loopback, tests/kube), then operator passes until every deployment
has all its children and a written status; then idle passes, whose API calls are counted.

    .venv/bin/python benchmarks/bench_operator.py [--count 1000] [--workers 8] [--json out.json]

Reported in docs/benchmarks.md. Needs the test Kubernetes binaries (bash tests/kube/build-kube.sh).
"""
import argparse
import concurrent.futures
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

# the repository root goes last on sys.path: first would shadow the standard library's `operator` with ./operator
sys.path.append(str(Path(__file__).resolve().parents[1]))

from foundry_inference.operator import settings as settings_mod  # noqa: E402
from foundry_inference.operator.loop import Operator  # noqa: E402
from foundry_inference.store.kube import KubernetesStore  # noqa: E402
from tests.kube.harness import KubeCluster, binaries_available  # noqa: E402

CHILDREN = ("Deployment", "Service", "ConfigMap", "Secret")


def mdep(i, ns):
    return {"apiVersion": "foundrylocal.azure.com/v1", "kind": "ModelDeployment",
            "metadata": {"name": f"bench-{i:04d}", "namespace": ns},
            "spec": {"model": {"catalog": {"name": "phi-4-mini"}}, "compute": "cpu"}}


def count(store, kind, ns, selector="app.kubernetes.io/managed-by=inference-operator"):
    return len(store.list_all(kind, ns, label_selector=selector))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=8, help="operator reconcile workers")
    parser.add_argument("--idle-passes", type=int, default=5)
    parser.add_argument("--settle", type=float, default=60.0,
                        help="seconds to let the controller-manager finish its ReplicaSets/Pods before idle passes")
    parser.add_argument("--json", help="write the results here too")
    args = parser.parse_args(argv)
    if not binaries_available():
        print("Kubernetes test binaries missing: run tests/kube/build-kube.sh", file=sys.stderr)
        return 2
    cluster = KubeCluster().start()
    try:
        store = KubernetesStore(kubeconfig=cluster.kubeconfig, pool_size=32)
        ns = cluster.create_namespace("bench")
        settings = settings_mod.from_mapping({"watch": {"namespaces": [ns]}, "operatorNamespace": ns,
                                              "workers": args.workers})
        started = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            list(pool.map(lambda i: store.create(mdep(i, ns)), range(args.count)))
        created_s = time.monotonic() - started

        op = Operator(store, settings)
        passes = []
        t0 = time.monotonic()
        while True:
            report = op.run_pass()
            passes.append(report)
            print(f"pass {len(passes)}: {report.seconds:.1f}s, {report.child_writes} child writes, "
                  f"{report.status_writes} status writes, {report.failed} failed, calls {report.calls}", flush=True)
            if not (report.child_writes or report.status_writes or report.failed or report.skipped):
                break
            if len(passes) > 20:
                raise SystemExit("did not converge in 20 passes")
        converge_s = time.monotonic() - t0 - passes[-1].seconds    # the last pass only confirmed it
        owners = store.list_all("ModelDeployment", ns)
        written = sum(1 for o in owners if (o.get("status") or {}).get("state") == "Creating")
        kids = {kind: count(store, kind, ns) for kind in CHILDREN}
        busy = [op.run_pass() for _ in range(args.idle_passes)]     # while the controller-manager still churns
        time.sleep(args.settle)
        idle = [op.run_pass() for _ in range(args.idle_passes)]
        assert all(p.child_writes == 0 and p.status_writes == 0 for p in busy + idle)
        result = {
            "count": args.count, "workers": args.workers, "create_s": round(created_s, 1),
            "converge_s": round(converge_s, 1), "passes_to_converge": len(passes) - 1,
            "status_written": written, "children": kids,
            "first_pass": {"seconds": round(passes[0].seconds, 1), "calls": passes[0].calls},
            "idle_pass": {"seconds_median": round(statistics.median(p.seconds for p in idle), 2),
                          "seconds_median_while_cluster_busy": round(statistics.median(p.seconds for p in busy), 2),
                          "calls": idle[-1].calls, "api_calls": idle[-1].api_calls,
                          "owners_recomputed": idle[-1].reconciled},
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
        }
        print(json.dumps(result, indent=2))
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=2))
        ok = written == args.count and kids["Deployment"] == args.count and kids["Service"] == args.count
        ok = ok and kids["Secret"] >= 2 * args.count and kids["ConfigMap"] >= args.count
        return 0 if ok else 1
    finally:
        cluster.stop()


if __name__ == "__main__":
    sys.exit(main())
