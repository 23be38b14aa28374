"""Scale-to-zero benchmark, embedded mode with real parts (operator + node agent, real nginx sidecars, the real
predictive and chat servers, models fetched from a real local registry), each number beside its baseline in the same
run:

1. cold start: the first request after scale to zero (the activator holds it, the model server starts, the answer
   comes back), p50/p95 over --rounds, beside the same request to an always-ready replica of the same model;
2. --cycles of zero -> one -> zero with --in-flight requests sent at once into each wake-up: 5xx, lost requests
   (no answer at all) and orphan processes counted;
3. the activator's overhead while a replica is ready (the activator is then only nginx's backup): latency of one
   request to an autoscaled deployment vs a fixed one, interleaved, --requests each;
4. --ramp: closed-loop chat users (--ramp-model: the tiny test model or SmolLM2) stepping 1, 2, 4, 8 for --step
   seconds each, against an autoscaled deployment (1..--max-replicas, target 1) and then a fixed single replica:
   latency p50/p99, the replica count over time, its direction reversals, and the time back to one replica after
   the load. --slots N sizes every chat replica (both deployments) as on a node that gives each replica one core:
   N sequences decoded together, one onnxruntime thread (FOUNDRY_CHAT_MAX_BATCH, FOUNDRY_INTRA_OP_THREADS).

    .venv/bin/python benchmarks/bench_autoscale.py [--chat] [--ramp] [--rounds 5] [--cycles 20] [--json out.json]
    .venv/bin/python benchmarks/bench_autoscale.py --ramp --skip-iris --ramp-model smollm2 --slots 1 \
        --max-replicas 2 --step 20 --json out.json

Reported in docs/benchmarks.md and docs/autoscaling.md. Needs nginx and Debian's docker-registry; --chat needs the
converted SmolLM2 in the test model cache (python tests/support/chat_models.py smollm2).
"""
import argparse
import base64
import json
import os
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

# the repository root goes last on sys.path: first would shadow the standard library's `operator` with ./operator
sys.path.append(str(Path(__file__).resolve().parents[1]))

import requests  # noqa: E402

from foundry_inference.operator.main import run_embedded  # noqa: E402
from foundry_inference.store.embedded import EmbeddedStore  # noqa: E402
from tests.e2e.quickstart_walkthrough import processes_under  # noqa: E402
from tests.support import models  # noqa: E402
from tests.support.registry import DockerRegistry  # noqa: E402
from tests.unit.operator.factories import decoded, mdep, settings  # noqa: E402

NS = "bench"
ZERO = {"minReplicas": 0, "maxReplicas": 1, "scaleToZeroAfterSeconds": 1}


def pct(values, q):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def wait(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except (requests.RequestException, KeyError, TypeError):
            pass
        time.sleep(0.05)
    raise RuntimeError(f"timed out waiting for {what}")


class Platform:
    def __init__(self, data, registry):
        self.data, self.registry = data, registry
        self.store = EmbeddedStore.with_chart_crds(data / "store.db")
        self.stop = threading.Event()
        conf = settings(NS, autoscaling={"periodSeconds": 0.25, "stableWindowSeconds": 10, "panicWindowSeconds": 1})
        self.thread = threading.Thread(target=run_embedded, args=(self.store, data, self.stop, conf), daemon=True)
        self.thread.start()
        self.store.create({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "creds", "namespace": NS},
                           "stringData": {"username": "user", "password": "pass"}})
        self.http = requests.Session()

    def deploy(self, name, repository, workload, port, autoscaling=None):
        spec = {"workloadType": workload, "port": port, "model": {"custom": {
            "registry": self.registry.address, "repository": repository, "tag": "v1",
            "credentials": {"secretRef": {"name": "creds"}}}}}
        if autoscaling:
            spec["autoscaling"] = autoscaling
        self.store.create(mdep(name, NS, **spec))

    def status(self, name):
        return self.store.get("ModelDeployment", NS, name).get("status") or {}

    def ready(self, name, states=("Running",), timeout=300):
        wait(lambda: self.status(name).get("state") in states, timeout, f"{name} {states}")
        st = self.status(name)
        key = decoded(self.store.get("Secret", NS, f"{name}-api-keys"), "primary-key")
        return st["internalEndpoint"], key

    def servers(self, name):
        """Model-server processes of one deployment."""
        under = self.data / "workloads" / NS / name
        return [p for p in processes_under(under) if "nginx" not in _cmd(p)]

    def close(self):
        self.stop.set()
        self.thread.join(120)
        self.store.close()
        return processes_under(self.data)


def _cmd(pid):
    try:
        return open(f"/proc/{pid}/cmdline", "rb").read().decode(errors="replace")
    except OSError:
        return ""


def call(http, url, key, kind, body, ca):
    path = "/v1/predict" if kind == "predictive" else "/v1/chat/completions"
    return http.post(url + path, json=body, verify=ca, timeout=120, headers={"api-key": key})


def cold_starts(p, name, warm, kind, body, rounds, ca):
    url, key = p.ready(name, ("Running", "ScaledToZero"))
    warm_url, warm_key = p.ready(warm)
    cold, base = [], []
    for _ in range(rounds):
        wait(lambda: p.status(name).get("state") == "ScaledToZero" and not p.servers(name), 120, "scale to zero")
        started = time.perf_counter()
        resp = call(requests, url, key, kind, body, ca)          # a fresh connection, as a first client would
        cold.append(time.perf_counter() - started)
        assert resp.status_code == 200, resp.text
        started = time.perf_counter()
        resp = call(requests, warm_url, warm_key, kind, body, ca)
        base.append(time.perf_counter() - started)
        assert resp.status_code == 200, resp.text
    return {"cold_p50_s": statistics.median(cold), "cold_p95_s": pct(cold, 95), "cold_max_s": max(cold),
            "warm_p50_s": statistics.median(base), "rounds": rounds}


def cycles(p, name, kind, body, count, in_flight, ca):
    url, key = p.ready(name, ("Running", "ScaledToZero"))
    codes, lost, orphans = {}, 0, 0
    with ThreadPoolExecutor(in_flight) as pool:
        for i in range(count):
            wait(lambda: p.status(name).get("state") == "ScaledToZero" and not p.servers(name), 120,
                 "scale to zero")
            futures = [pool.submit(call, requests, url, key, kind, body, ca) for _ in range(in_flight)]
            for f in futures:
                try:
                    code = f.result().status_code
                    codes[code] = codes.get(code, 0) + 1
                except requests.RequestException:
                    lost += 1
            if len(p.servers(name)) > 1:
                orphans += 1
            print(f"  cycle {i + 1}/{count}: {codes}", file=sys.stderr, flush=True)
    return {"cycles": count, "in_flight": in_flight, "codes": codes, "lost": lost, "cycles_with_extra_process": orphans}


def overhead(p, auto, fixed, kind, body, n, ca):
    """Interleaved single requests over kept-alive connections: autoscaled-with-a-ready-replica vs fixed."""
    url_a, key_a = p.ready(auto)
    url_f, key_f = p.ready(fixed)
    sa, sf = requests.Session(), requests.Session()
    lat_a, lat_f = [], []
    for i in range(n + 20):
        for session, url, key, out in ((sa, url_a, key_a, lat_a), (sf, url_f, key_f, lat_f)):
            started = time.perf_counter()
            resp = call(session, url, key, kind, body, ca)
            if i >= 20:                                        # warm-up
                out.append(time.perf_counter() - started)
            assert resp.status_code == 200, resp.text
    return {"autoscaled_p50_ms": statistics.median(lat_a) * 1e3, "fixed_p50_ms": statistics.median(lat_f) * 1e3,
            "autoscaled_p99_ms": pct(lat_a, 99) * 1e3, "fixed_p99_ms": pct(lat_f, 99) * 1e3, "requests": n}


def ramp(p, auto, fixed, ca, step_s, max_tokens=32, users=(1, 2, 4, 8)):
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": max_tokens,
            "min_tokens": max_tokens}
    out = {}
    for name in (auto, fixed):
        url, key = p.ready(name)
        timeline, lat, codes, stop = [], [], {}, threading.Event()

        def watch(name=name, timeline=timeline, stop=stop):
            while not stop.is_set():
                timeline.append((time.monotonic(), p.status(name).get("desiredReplicas")))
                time.sleep(0.5)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        started = time.monotonic()
        for count in users:
            deadline = time.monotonic() + step_s

            def user(_i, url=url, key=key, deadline=deadline, lat=lat, codes=codes):
                with requests.Session() as http:
                    while time.monotonic() < deadline:
                        t0 = time.perf_counter()
                        code = call(http, url, key, "chat", body, ca).status_code
                        lat.append(time.perf_counter() - t0)
                        codes[code] = codes.get(code, 0) + 1

            with ThreadPoolExecutor(count) as pool:
                list(pool.map(user, range(count)))
        load_end = time.monotonic()
        if name == auto:
            wait(lambda name=name: p.status(name).get("desiredReplicas") == 1, 300, "back to one replica")
        back = time.monotonic() - load_end
        stop.set()
        watcher.join()
        counts = [c for _t, c in timeline if c is not None]
        moves = [b - a for a, b in zip(counts, counts[1:], strict=False) if b != a]
        reversals = sum(1 for a, b in zip(moves, moves[1:], strict=False) if (a > 0) != (b > 0))
        out[name] = {"p50_s": statistics.median(lat), "p99_s": pct(lat, 99), "requests": len(lat), "codes": codes,
                     "max_replicas": max(counts or [1]), "reversals": reversals,
                     "load_s": load_end - started, "back_to_one_s": back if name == auto else None}
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--cycles", type=int, default=20)
    parser.add_argument("--in-flight", type=int, default=4)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--chat", action="store_true", help="also SmolLM2 (cold start only)")
    parser.add_argument("--ramp", action="store_true", help="the load ramp (tiny chat model)")
    parser.add_argument("--step", type=float, default=15.0, help="seconds per ramp step")
    parser.add_argument("--ramp-model", choices=("tiny", "smollm2"), default="tiny")
    parser.add_argument("--ramp-tokens", type=int, default=32, help="tokens per ramp answer")
    parser.add_argument("--max-replicas", type=int, default=4, help="the ramp's autoscaled maxReplicas")
    parser.add_argument("--slots", type=int, help="chat replicas sized to N sequences on one thread")
    parser.add_argument("--skip-iris", action="store_true", help="only what --chat/--ramp ask for")
    parser.add_argument("--data", default=None, help="data directory (default: a temporary one)")
    parser.add_argument("--json", help="write the results here too")
    args = parser.parse_args(argv)
    os.environ.update(FOUNDRY_FETCH_ALLOW_PRIVATE="1", FOUNDRY_FETCH_INSECURE="1", FOUNDRY_LOG_LEVEL="WARNING")
    if args.slots:                       # inherited by the model servers the node agent starts
        os.environ.update(FOUNDRY_CHAT_MAX_BATCH=str(args.slots), FOUNDRY_INTRA_OP_THREADS="1")
    import tempfile
    data = Path(args.data or tempfile.mkdtemp(prefix="bench-autoscale-")) / "data"
    iris = models.iris_logreg()
    row = [float(v) for v in iris.X[0]]
    predict = {"items": [{"content_type": "application/json", "encoder": "base64",
                          "data": base64.b64encode(json.dumps([row]).encode()).decode()}]}
    chat_body = {"model": "m", "messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 8}
    registry = DockerRegistry(username="user", password="pass")
    registry.start()
    results = {}
    try:
        registry.push_model({"iris.onnx": Path(iris.path).read_bytes()}, repository="models/iris", tag="v1")
        if args.chat or (args.ramp and args.ramp_model == "smollm2"):
            from tests.support.chat_models import smollm2_model
            registry.push_folder(smollm2_model(), "models/smollm2")
        if args.ramp and args.ramp_model == "tiny":
            from tests.support.chat_models import tiny_chat_model
            registry.push_folder(tiny_chat_model(), "models/tiny")
        p = Platform(data, registry)
        ca = str(data / "tls" / "ca.crt")
        if not args.skip_iris:
            p.deploy("iris-zero", "models/iris", "predictive", 8000, ZERO)
            p.deploy("iris-fixed", "models/iris", "predictive", 8000)
            p.deploy("iris-auto", "models/iris", "predictive", 8000, {"minReplicas": 1, "maxReplicas": 1})
        if args.chat:
            p.deploy("chat-zero", "models/smollm2", "generative", 5000, ZERO)
            p.deploy("chat-fixed", "models/smollm2", "generative", 5000)
        if args.ramp:
            repository = f"models/{args.ramp_model}"
            p.deploy("ramp-auto", repository, "generative", 5000, {
                "minReplicas": 1, "maxReplicas": args.max_replicas, "targetConcurrency": 1, "scaleDownDelaySeconds": 5})
            p.deploy("ramp-fixed", repository, "generative", 5000)
        try:
            if args.ramp:
                print("ramp", file=sys.stderr, flush=True)
                results["ramp"] = ramp(p, "ramp-auto", "ramp-fixed", ca, args.step, args.ramp_tokens)
                results["ramp"]["setup"] = {"model": args.ramp_model, "slots": args.slots,
                                            "max_replicas": args.max_replicas, "step_s": args.step,
                                            "tokens": args.ramp_tokens}
            if not args.skip_iris:
                print("cold start, iris", file=sys.stderr, flush=True)
                results["iris_cold_start"] = cold_starts(p, "iris-zero", "iris-fixed", "predictive", predict,
                                                         args.rounds, ca)
            if args.chat:
                print("cold start, SmolLM2", file=sys.stderr, flush=True)
                results["smollm2_cold_start"] = cold_starts(p, "chat-zero", "chat-fixed", "chat", chat_body,
                                                            args.rounds, ca)
            if not args.skip_iris:
                print("overhead", file=sys.stderr, flush=True)
                results["activator_overhead"] = overhead(p, "iris-auto", "iris-fixed", "predictive", predict,
                                                         args.requests, ca)
                print("cycles", file=sys.stderr, flush=True)
                results["cycles"] = cycles(p, "iris-zero", "predictive", predict, args.cycles, args.in_flight, ca)
        finally:
            left = p.close()
            results["processes_left_after_stop"] = len(left)
    finally:
        registry.stop()
    print(json.dumps(results, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
