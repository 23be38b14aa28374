"""Predictive-server benchmark: our server beside raw onnxruntime, FastAPI+uvicorn and KServe, in one run.

    python benchmarks/bench_predictive.py [--duration 6] [--rounds 2] [--json out.json]

What it does, for the iris logistic regression and the digits MLP (1-row requests):
  * raw onnxruntime in-process: decode + session.run + encode in a loop (the limit, no HTTP);
  * each server started alone, pinned to the server CPU(s) (`taskset`), warmed, then loaded with `wrk` pinned to
    the other CPU at 1, 8 and 64 connections; requests/s, latency percentiles and the server's own CPU time per
    request (from /proc, which stays meaningful when other processes share the machine);
  * all servers run at once (idle ones cost nothing) and are measured in turn for each connection count, for
    `--rounds` rounds (order reversed every other round); the median of the rounds is reported, so a change in the
    machine's background load hits every server alike;
  * an overload phase on our server: 10x the connections (640) against the default queue depth, counting every
    answer by status (each request must get exactly one: 200 or 429, no timeouts, no socket errors) and sampling
    the server's RSS (it must stay bounded).
Then a table of ratios against the targets (docs/benchmarks.md).

Peers (benchmarks/peers/) run under `--peer-python` (default: ~/.cache/foundry-inference/bench-venv if it exists,
else this interpreter): install `fastapi uvicorn[standard] kserve onnxruntime numpy` there. All servers get the same
onnxruntime session options (1 intra-op thread, no spinning) and the same payload code paths.
"""
import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
PEERS = os.path.join(ROOT, "benchmarks", "peers")
DEFAULT_PEER_VENV = os.path.expanduser("~/.cache/foundry-inference/bench-venv/bin/python")

STATUS_LUA = """
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) counts = {} end
function response(status, headers, body) counts[status] = (counts[status] or 0) + 1 end
function done(summary, latency, requests)
  local total = {}
  for _, t in ipairs(threads) do
    for k, v in pairs(t:get("counts")) do total[k] = (total[k] or 0) + v end
  end
  local parts = {}
  for k, v in pairs(total) do table.insert(parts, string.format('"%d": %d', k, v)) end
  io.write("STATUS_COUNTS {" .. table.concat(parts, ", ") .. "}\\n")
end
"""


def request_body(rows):
    import base64
    data = base64.b64encode(json.dumps(rows).encode()).decode()
    return json.dumps({"items": [{"content_type": "application/json", "encoder": "base64", "data": data}]})


def lua_script(body, count_statuses=False):
    escaped = body.replace("\\", "\\\\").replace('"', '\\"')
    head = (f'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\nwrk.body = "{escaped}"\n')
    return head + (STATUS_LUA if count_statuses else "")


# --- processes ---------------------------------------------------------------------------------------------------

def cpu_seconds(pid):
    """utime + stime of a process and of its reaped children, in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return sum(int(fields[i]) for i in (11, 12, 13, 14)) / ticks


def tree_pids(pid):
    pids = [pid]
    try:
        for child in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{child}/children") as f:
                for c in f.read().split():
                    pids += tree_pids(int(c))
    except OSError:
        pass
    return sorted(set(pids))


def tree_cpu(pid):
    total = 0.0
    for p in tree_pids(pid):
        try:
            total += cpu_seconds(p)
        except OSError:
            pass
    return total


def rss_kib(pid):
    total = 0
    for p in tree_pids(pid):
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


def wait_ready(url, proc, timeout=90):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}: {url}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except Exception:  # noqa: BLE001
            pass
        time.sleep(0.2)
    raise TimeoutError(url)


class Server:
    def __init__(self, name, argv, env, ready_url, predict_url, cpus):
        self.name, self.argv, self.env = name, argv, env
        self.ready_url, self.predict_url, self.cpus = ready_url, predict_url, cpus
        self.proc = None
        self.log = tempfile.NamedTemporaryFile(prefix=f"bench-predictive-{name}-", suffix=".log", delete=False)

    def __enter__(self):
        self.proc = subprocess.Popen(["taskset", "-c", self.cpus, *self.argv], env={**os.environ, **self.env},
                                     stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_ready(self.ready_url, self.proc)
        except Exception:  # noqa: BLE001 - any start failure: stop the process, keep its log, say where
            self.__exit__(RuntimeError, None, None)
            raise RuntimeError(f"{self.name} did not become ready; its output is in {self.log.name}") from None
        return self

    def __exit__(self, *exc):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()
        if not exc or exc[0] is None:
            os.unlink(self.log.name)


def wrk(url, script, connections, duration, wrk_cpus, timeout_s=10):
    threads = max(1, min(connections, 2 if connections >= 64 else 1))
    out = subprocess.run(["taskset", "-c", wrk_cpus, "wrk", f"-t{threads}", f"-c{connections}",
                          f"-d{int(round(duration))}s", f"--timeout={timeout_s}s", "--latency", "-s", script, url],
                         capture_output=True, text=True, check=True).stdout
    return parse_wrk(out)


def _duration_ms(text):
    value = float(text.rstrip("unms"))
    if text.endswith("us"):
        return value / 1000.0
    if text.endswith("ms"):
        return value
    if text.endswith("m"):
        return value * 60000.0
    return value * 1000.0       # seconds


def parse_wrk(out):
    result = {"errors": 0, "non_2xx": 0}
    for line in out.splitlines():
        parts = line.split()
        if not parts:
            continue
        if parts[0] == "Requests/sec:":
            result["rps"] = float(parts[1])
        elif parts[0] in ("50%", "75%", "90%", "99%") and len(parts) == 2:
            result[f"p{parts[0][:-1]}_ms"] = _duration_ms(parts[1])
        elif "requests in" in line:
            result["requests"] = int(parts[0])
        elif parts[0] == "Socket" and parts[1] == "errors:":
            nums = [int(p.strip(",")) for p in parts if p.strip(",").isdigit()]
            result["errors"] = sum(nums)
            result["socket_errors"] = line.strip()
        elif parts[0] == "Non-2xx":
            result["non_2xx"] = int(parts[-1])
        elif parts[0] == "STATUS_COUNTS":
            result["statuses"] = {int(k): v for k, v in json.loads(line.split(" ", 1)[1]).items()}
    return result


# --- the run -----------------------------------------------------------------------------------------------------

def build_models(names):
    from tests.support import models
    table = {"iris": models.iris_logreg, "digits-mlp": models.digits_mlp}
    out = {}
    for name in names:
        built = table[name]()
        out[name] = (built.path, built.X[:1].tolist())
    return out


class Sidecar(Server):
    """A server behind the deployment's nginx TLS sidecar: the configuration the operator renders
    (operator/builders/nginx.py), a certificate from the operator's CA code, nginx pinned with the server.
    predict_url is the https endpoint; CPU and RSS are counted for the server and nginx together."""

    def __init__(self, inner, tls_dir, tls_port):
        self.inner, self.tls_dir, self.tls_port = inner, tls_dir, tls_port
        self.name, self.cpus, self.script = inner.name + " via sidecar", inner.cpus, None
        self.predict_url = f"https://127.0.0.1:{tls_port}" + inner.predict_url.split(str(_port_of(inner)), 1)[1]
        self.nginx = None

    def __enter__(self):
        from foundry_inference.operator.builders import nginx
        self.inner.__enter__()
        run = tempfile.mkdtemp(prefix="bench-sidecar-")
        conf = os.path.join(run, "nginx.conf")
        with open(conf, "w") as f:
            f.write(nginx.render(nginx.NginxParams(
                listen=f"127.0.0.1:{self.tls_port}", app_ports=(_port_of(self.inner),),
                cert_path=os.path.join(self.tls_dir, "tls.crt"), key_path=os.path.join(self.tls_dir, "tls.key"),
                temp_dir=run, pid_path=os.path.join(run, "nginx.pid"))))
        user = " user root;" if os.geteuid() == 0 else ""
        self.nginx = subprocess.Popen(["taskset", "-c", self.cpus, shutil.which("nginx") or "/usr/sbin/nginx", "-e",
                                       "stderr", "-c", conf, "-p", run, "-g", "daemon off;" + user],
                                      stdout=self.inner.log, stderr=subprocess.STDOUT, start_new_session=True)
        self.proc = self.inner.proc
        deadline = time.monotonic() + 30
        while not _tcp_open(self.tls_port):
            if time.monotonic() > deadline or self.nginx.poll() is not None:
                self.__exit__(RuntimeError, None, None)
                raise RuntimeError(f"nginx in front of {self.inner.name} did not start; see {self.inner.log.name}")
            time.sleep(0.1)
        return self

    def pids(self):
        return [self.inner.proc.pid, self.nginx.pid]

    def __exit__(self, *exc):
        if self.nginx is not None and self.nginx.poll() is None:
            os.killpg(self.nginx.pid, signal.SIGTERM)
            self.nginx.wait(15)
        self.inner.__exit__(*exc)


def _port_of(server):
    return int(server.predict_url.split("127.0.0.1:", 1)[1].split("/", 1)[0])


def _tcp_open(port):
    import socket
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def server_cpu(server):
    return sum(tree_cpu(pid) for pid in (server.pids() if hasattr(server, "pids") else [server.proc.pid]))


def tls_material():
    import datetime

    from foundry_inference.operator.builders import tls
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_cert, ca_key = tls.generate_ca(now)
    cert, key = tls.issue(ca_cert, ca_key, ["localhost"], now)
    directory = tempfile.mkdtemp(prefix="bench-tls-")
    for name, data in (("tls.crt", cert), ("tls.key", key)):
        with open(os.path.join(directory, name), "wb") as f:
            f.write(data)
    return directory


def servers_for(model_path, args, port_base):
    py, peer_py = sys.executable, args.peer_python
    common = {"FOUNDRY_INTRA_OP_THREADS": str(args.intra_op_threads), "PYTHONUNBUFFERED": "1"}
    ours_env = {**common, "FOUNDRY_MODEL_PATH": model_path, "FOUNDRY_AUTH_MODE": "none",
                "FOUNDRY_PREDICTIVE_HOST": "127.0.0.1", "FOUNDRY_LOG_LEVEL": "WARNING"}
    specs, keys = [], None

    def ours(name, port, **env):
        specs.append(Server(name, [py, "-m", "foundry_inference.apps.predictive.server"],
                            {**ours_env, "FOUNDRY_PREDICTIVE_PORT": str(port), **env},
                            f"http://127.0.0.1:{port}/ready", f"http://127.0.0.1:{port}/v1/predict", args.server_cpus))
    if not args.sidecar:
        ours("ours", port_base, FOUNDRY_HTTP_FRONTEND="httptools")
    if "tornado" in args.variants and not args.sidecar:
        ours("ours-tornado-http", port_base + 1, FOUNDRY_HTTP_FRONTEND="tornado")
    if "apikey" in args.variants or args.sidecar:
        keys = tempfile.mkdtemp(prefix="bench-keys-")
        with open(os.path.join(keys, "primary-key"), "w") as f:
            f.write(args.api_key)
        ours("ours+apikey", port_base + 2, FOUNDRY_HTTP_FRONTEND="httptools", FOUNDRY_AUTH_MODE="api-key",
             FOUNDRY_API_KEYS_DIR=keys)
    if args.baseline_ref and not args.sidecar:
        # the same server at another commit (e.g. main), for a before/after comparison in one run
        tree = source_tree(args.baseline_ref)
        launcher = [py, "-c", f"import runpy, sys; sys.path[:] = [{tree!r}] + [p for p in sys.path if p]; "
                              "runpy.run_module('foundry_inference.apps.predictive.server', run_name='__main__')"]
        for name, port, env in (("base", port_base + 6, {}), ("base+apikey", port_base + 7, {
                "FOUNDRY_AUTH_MODE": "api-key", "FOUNDRY_API_KEYS_DIR": keys})):
            if name == "base+apikey" and "apikey" not in args.variants:
                continue
            specs.append(Server(name, launcher, {**ours_env, "FOUNDRY_PREDICTIVE_PORT": str(port),
                                                 "FOUNDRY_HTTP_FRONTEND": "httptools", **env},
                                f"http://127.0.0.1:{port}/ready", f"http://127.0.0.1:{port}/v1/predict",
                                args.server_cpus))
    port = port_base + 3
    if not args.skip_rival:
        # the rival: FastAPI + uvicorn doing our /v1/predict work, API key included (Authorization: Bearer)
        # uvicorn's console script, not `-m uvicorn`: that would put the repository root (and its operator/) first
        # on the rival's sys.path
        uvicorn = os.path.join(os.path.dirname(args.peer_python), "uvicorn")
        specs.append(Server("rival", [uvicorn, "fastapi_items_server:app", "--app-dir",
                                      PEERS, "--host", "127.0.0.1", "--port", str(port + 5), "--no-access-log",
                                      "--backlog", "2048"],
                            {**common, "MODEL_PATH": model_path, "API_KEY": args.api_key},
                            f"http://127.0.0.1:{port + 5}/openapi.json", f"http://127.0.0.1:{port + 5}/v1/predict",
                            args.server_cpus))
    if not args.skip_fastapi and not args.sidecar:
        specs.append(Server("fastapi", [peer_py, os.path.join(PEERS, "predictive_fastapi.py"), model_path,
                                        str(port)],
                            common, f"http://127.0.0.1:{port}/health", f"http://127.0.0.1:{port}/v1/predict",
                            args.server_cpus))
    port += 1
    if not args.skip_kserve and not args.sidecar:
        specs.append(Server("kserve", [peer_py, os.path.join(PEERS, "predictive_kserve.py"), model_path,
                                       str(port)],
                            common, f"http://127.0.0.1:{port}/v1/models/model",
                            f"http://127.0.0.1:{port}/v1/models/model:predict", args.server_cpus))
    if args.sidecar:
        tls_dir = tls_material()
        specs = [Sidecar(spec, tls_dir, _port_of(spec) + 100) for spec in specs]
    return specs


def source_tree(ref):
    """The package `foundry_inference` as it was at git `ref`, laid out for sys.path (a temporary directory)."""
    root = tempfile.mkdtemp(prefix="bench-baseline-")
    archive = subprocess.run(["git", "-C", ROOT, "archive", ref, "foundry_inference", "apps", "auth", "operator"],
                             capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", root], input=archive, check=True)
    for sub in ("apps", "auth", "operator"):
        os.rename(os.path.join(root, sub), os.path.join(root, "foundry_inference", sub))
    return root


def measure_all(servers, script, args, auth_script, on_result):
    """Start every server (each pinned to the server CPUs; idle ones cost nothing), warm each, then measure them in
    turn for each connection count, round after round: the measurements of different servers are seconds apart,
    so a change in the machine's background load hits all of them alike."""
    from contextlib import ExitStack
    with ExitStack() as stack:
        for server in servers:
            stack.enter_context(server)
            server.script = auth_script if server.name.startswith(("ours+apikey", "base+apikey", "rival")) else script
            wrk(server.predict_url, server.script, 8, args.warmup, args.wrk_cpus)
        for round_index in range(args.rounds):
            for c in args.connections:
                order = servers if round_index % 2 == 0 else list(reversed(servers))
                for server in order:
                    before = server_cpu(server)
                    r = wrk(server.predict_url, server.script, c, args.duration, args.wrk_cpus)
                    r["cpu_us_per_req"] = (server_cpu(server) - before) * 1e6 / max(r.get("requests", 1), 1)
                    on_result(server.name, c, round_index, r)


def raw_limit(model_path, body, args):
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        f.write(body)
    out = subprocess.run(["taskset", "-c", args.server_cpus, args.peer_python,
                          os.path.join(PEERS, "predictive_raw_onnxruntime.py"), model_path, f.name,
                          str(min(args.duration, 5))],
                         capture_output=True, text=True, check=True,
                         env={**os.environ, "FOUNDRY_INTRA_OP_THREADS": str(args.intra_op_threads)}).stdout
    return json.loads(out.strip().splitlines()[-1])


def overload(model_path, body, args, port):
    """640 connections (10x) against queue depth 100: exactly one answer per request, 200 or 429, bounded RSS."""
    script = write_script(lua_script(body, count_statuses=True))
    env = {"FOUNDRY_INTRA_OP_THREADS": str(args.intra_op_threads), "FOUNDRY_MODEL_PATH": model_path,
           "FOUNDRY_AUTH_MODE": "none", "FOUNDRY_PREDICTIVE_HOST": "127.0.0.1",
           "FOUNDRY_PREDICTIVE_PORT": str(port), "FOUNDRY_LOG_LEVEL": "WARNING"}
    server = Server("ours-overload", [sys.executable, "-m", "foundry_inference.apps.predictive.server"], env,
                    f"http://127.0.0.1:{port}/ready", f"http://127.0.0.1:{port}/v1/predict", args.server_cpus)
    if args.sidecar:
        server = Sidecar(server, tls_material(), port + 100)

    def rss():
        return sum(rss_kib(pid) for pid in (server.pids() if args.sidecar else [server.proc.pid]))
    samples = []
    with server:
        wrk(server.predict_url, script, 8, args.warmup, args.wrk_cpus)
        baseline = rss()
        stop = threading.Event()

        def sample():
            while not stop.is_set():
                samples.append(rss())
                time.sleep(0.25)
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        phases = []
        for _ in range(2):       # two back-to-back phases: memory must not keep growing
            phases.append(wrk(server.predict_url, script, 640, args.overload_duration, args.wrk_cpus, timeout_s=30))
        stop.set()
        sampler.join()
        after = rss()
        alive = server.proc.poll() is None
    half = len(samples) // 2
    result = {"baseline_rss_mib": baseline / 1024, "peak_rss_mib": max(samples) / 1024, "end_rss_mib": after / 1024,
              "peak_first_half_mib": max(samples[:half] or [0]) / 1024,
              "peak_second_half_mib": max(samples[half:] or [0]) / 1024, "phases": phases, "alive": alive}
    checks = []
    for p in phases:
        statuses = p.get("statuses", {})
        answered = sum(statuses.values())
        checks.append(set(statuses) <= {200, 429} and p["errors"] == 0 and answered == p.get("requests"))
    result["every_request_one_answer"] = all(checks)
    result["rss_bounded"] = (result["peak_rss_mib"] - result["baseline_rss_mib"] < 100
                             and result["peak_second_half_mib"] <= result["peak_first_half_mib"] + 16)
    return result


_scripts = []


def write_script(text):
    f = tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False)
    f.write(text)
    f.close()
    _scripts.append(f.name)
    return f.name


def median_of(rounds, key):
    values = [r[key] for r in rounds if key in r]
    return statistics.median(values) if values else None


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="iris,digits-mlp")
    parser.add_argument("--connections", default="1,8,64")
    parser.add_argument("--duration", type=float, default=6)
    parser.add_argument("--warmup", type=float, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--server-cpus", default="0")
    parser.add_argument("--wrk-cpus", default="1")
    parser.add_argument("--intra-op-threads", type=int, default=1)
    parser.add_argument("--peer-python", default=DEFAULT_PEER_VENV if os.path.exists(DEFAULT_PEER_VENV)
                        else sys.executable)
    parser.add_argument("--variants", default="tornado,apikey", help="extra rows of our server: tornado,apikey")
    parser.add_argument("--skip-kserve", action="store_true")
    parser.add_argument("--skip-fastapi", action="store_true")
    parser.add_argument("--skip-rival", action="store_true", help="leave out the rival "
                        "(benchmarks/peers/fastapi_items_server.py)")
    parser.add_argument("--sidecar", action="store_true",
                        help="the path users call: ours (API key on) and the rival each behind the deployment's nginx "
                             "TLS sidecar configuration, measured over https; the overload phase goes through it too")
    parser.add_argument("--overload-duration", type=float, default=8)
    parser.add_argument("--no-overload", action="store_true")
    parser.add_argument("--api-key", default="fndry-pk-" + "0" * 40)
    parser.add_argument("--baseline-ref", help="also run our server (and with --variants apikey, its API-key row) at "
                        "this git commit, e.g. main: rows base and base+apikey, for a before/after in one run")
    parser.add_argument("--json", help="write all measurements here")
    parser.add_argument("--port-base", type=int, default=18700)
    args = parser.parse_args(argv)
    args.connections = [int(c) for c in args.connections.split(",")]
    if not shutil.which("wrk") or not shutil.which("taskset"):
        sys.exit("needs wrk and taskset (apt-get install wrk util-linux)")

    report = {"machine": {"cpus": os.cpu_count(), "load_before": os.getloadavg(), "server_cpus": args.server_cpus,
                          "wrk_cpus": args.wrk_cpus, "peer_python": args.peer_python}, "models": {}}
    for model_name, (path, rows) in build_models(args.models.split(",")).items():
        body = request_body(rows)
        script = write_script(lua_script(body))
        auth_script = write_script(lua_script(body) + f'wrk.headers["Authorization"] = "Bearer {args.api_key}"\n')
        print(f"== {model_name}: raw onnxruntime", flush=True)
        raw = raw_limit(path, body, args)
        per_server = {}

        def on_result(name, c, round_index, r, per_server=per_server):
            per_server.setdefault(name, {}).setdefault(c, []).append(r)
            print(f"   {name:<18} c={c:<3} round {round_index + 1}: {r.get('rps', 0):7.0f} req/s  "
                  f"p50 {r.get('p50_ms', 0):7.2f} ms  p99 {r.get('p99_ms', 0):7.2f} ms  "
                  f"cpu {r['cpu_us_per_req']:5.0f} us/req  errors {r['errors']} non-2xx {r['non_2xx']}", flush=True)
        servers = servers_for(path, args, args.port_base)
        print(f"== {model_name}: servers {', '.join(s.name for s in servers)}", flush=True)
        measure_all(servers, script, args, auth_script, on_result)
        summary = {name: {c: {k: median_of(rs, k) for k in ("rps", "p50_ms", "p90_ms", "p99_ms", "cpu_us_per_req")}
                          | {"errors": sum(r["errors"] for r in rs), "non_2xx": sum(r["non_2xx"] for r in rs)}
                          for c, rs in by_c.items()} for name, by_c in per_server.items()}
        report["models"][model_name] = {"raw": raw, "servers": summary, "rounds": per_server}
    if not args.no_overload:
        path, rows = build_models(["iris"])["iris"]
        print("== overload: 640 connections against queue depth 100", flush=True)
        report["overload"] = overload(path, request_body(rows), args, args.port_base + 9)
    report["machine"]["load_after"] = os.getloadavg()
    print_report(report, args)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1, default=str)
    for name in _scripts:
        os.unlink(name)
    return 0 if report.get("verdict_ok", True) else 1


def rival_verdicts(model_name, servers, args):
    """Issue 18: ours (API key on, as the rival checks one) against the rival in the same run."""
    suffix = " via sidecar" if args.sidecar else ""
    ours, rival = servers.get("ours+apikey" + suffix), servers.get("rival" + suffix)
    if not ours or not rival:
        return []
    top = max(args.connections)
    ratio = ours[top]["rps"] / rival[top]["rps"]
    cpu_ratio = rival[top]["cpu_us_per_req"] / ours[top]["cpu_us_per_req"]
    target = 2.0 if args.sidecar else 3.5
    verdicts = [ratio >= target]
    verdict = "OK" if ratio >= target else "MISSED"
    print(f"vs rival{suffix}, c={top}: {ratio:.2f}x req/s (target >= {target}x: {verdict})"
          f", {cpu_ratio:.2f}x less CPU per request ({ours[top]['cpu_us_per_req']:.0f} vs "
          f"{rival[top]['cpu_us_per_req']:.0f} us{' server + nginx' if args.sidecar else ''})")
    if not args.sidecar:
        p99_ok = ours[top]["p99_ms"] <= rival[top]["p99_ms"] / 2
        print(f"  p99 {ours[top]['p99_ms']:.2f} vs {rival[top]['p99_ms']:.2f} ms (target at most half: "
              f"{'OK' if p99_ok else 'MISSED'})")
        verdicts.append(p99_ok)
        if 1 in ours and 1 in rival:
            p50 = ours[1]["p50_ms"] / rival[1]["p50_ms"]
            print(f"  c=1 p50 {ours[1]['p50_ms']:.3f} vs {rival[1]['p50_ms']:.3f} ms = {p50:.2f}x (target <= 0.8x: "
                  f"{'OK' if p50 <= 0.8 else 'MISSED'})")
            verdicts.append(p50 <= 0.8)
        if model_name == "iris":
            cpu = ours[top]["cpu_us_per_req"]
            print(f"  server CPU per 1-row iris request {cpu:.0f} us (target <= 60: {'OK' if cpu <= 60 else 'MISSED'})")
            verdicts.append(cpu <= 60)
    return verdicts


def print_report(report, args):
    print()
    print(f"server CPUs {args.server_cpus}, wrk CPUs {args.wrk_cpus}, load average before/after "
          f"{report['machine']['load_before'][0]:.2f}/{report['machine']['load_after'][0]:.2f}")
    verdicts = []
    for model_name, data in report["models"].items():
        servers = data["servers"]
        raw = data["raw"]
        print(f"\n### {model_name}  (raw onnxruntime, no HTTP: {raw['requests_per_s']:.0f} req/s, "
              f"{raw['us_per_request']:.0f} us/request of which session.run {raw['us_per_run']:.0f} us)")
        print("| server | conns | req/s | p50 ms | p99 ms | server CPU us/req |")
        print("|---|---:|---:|---:|---:|---:|")
        for name, by_c in servers.items():
            for c, m in sorted(by_c.items()):
                print(f"| {name} | {c} | {m['rps']:.0f} | {m['p50_ms']:.2f} | {m['p99_ms']:.2f} | "
                      f"{m['cpu_us_per_req']:.0f} |")
        verdicts += rival_verdicts(model_name, servers, args)
        for now, before in (("ours", "base"), ("ours+apikey", "base+apikey")):
            if now in servers and before in servers:
                top = max(args.connections)
                a, b = servers[now][top], servers[before][top]
                print(f"{now} vs {before} ({args.baseline_ref}), c={top}: CPU per request {a['cpu_us_per_req']:.0f} / "
                      f"{b['cpu_us_per_req']:.0f} us = {a['cpu_us_per_req'] / b['cpu_us_per_req']:.2f}x, "
                      f"req/s {a['rps'] / b['rps']:.2f}x")
        peers = [n for n in ("fastapi", "kserve") if n in servers]
        if not peers or "ours" not in servers:
            continue
        top = max(args.connections)
        best = max(peers, key=lambda n: servers[n][top]["rps"])
        ours = servers["ours"]
        ratio = ours[top]["rps"] / servers[best][top]["rps"]
        cpu_ratio = servers[best][top]["cpu_us_per_req"] / ours[top]["cpu_us_per_req"]
        p99_ok = ours[top]["p99_ms"] < min(servers[n][top]["p99_ms"] for n in peers)
        line = (f"c={top}: ours/{best} = {ratio:.2f}x req/s (target >= 2x: {'OK' if ratio >= 2 else 'MISSED'}), "
                f"{cpu_ratio:.2f}x less CPU per request; p99 {ours[top]['p99_ms']:.2f} ms vs best peer "
                f"{min(servers[n][top]['p99_ms'] for n in peers):.2f} ms ({'OK' if p99_ok else 'MISSED'})")
        print(line)
        verdicts += [ratio >= 2, p99_ok]
        if 1 in ours and "fastapi" in servers:
            diff = ours[1]["p50_ms"] - servers["fastapi"][1]["p50_ms"]
            print(f"c=1: median ours {ours[1]['p50_ms']:.3f} ms vs fastapi {servers['fastapi'][1]['p50_ms']:.3f} ms "
                  f"(difference {diff:+.3f} ms; target within +0.3 ms: {'OK' if diff <= 0.3 else 'MISSED'})")
            verdicts.append(diff <= 0.3)
    if "overload" in report:
        o = report["overload"]
        print("\n### overload (640 connections, queue depth 100, two back-to-back phases)")
        for i, p in enumerate(o["phases"]):
            print(f"phase {i + 1}: {p.get('requests')} requests, statuses {p.get('statuses')}, "
                  f"socket errors {p['errors']}, {p.get('rps', 0):.0f} answers/s, p99 {p.get('p99_ms', 0):.1f} ms")
        print(f"RSS MiB: baseline {o['baseline_rss_mib']:.1f}, peak {o['peak_rss_mib']:.1f} (first half "
              f"{o['peak_first_half_mib']:.1f}, second half {o['peak_second_half_mib']:.1f}), "
              f"end {o['end_rss_mib']:.1f}")
        print(f"every request exactly one answer (200/429): {'OK' if o['every_request_one_answer'] else 'FAILED'}; "
              f"RSS bounded: {'OK' if o['rss_bounded'] else 'FAILED'}; server alive: {o['alive']}")
        verdicts += [o["every_request_one_answer"], o["rss_bounded"]]
    report["verdict_ok"] = all(verdicts)
    print(f"\nall targets met: {report['verdict_ok']}")


if __name__ == "__main__":
    sys.exit(main())
