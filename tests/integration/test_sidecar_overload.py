"""10x overload through a deployment's endpoint: embedded mode, the real predictive server behind the real nginx TLS
sidecar, 640 connections (10x the 64 the server is sized for) from wrk over TLS. Every request must be answered 200 or
429 (the 429 with Retry-After and the documented queue-full envelope), with no connect, read, write or timeout error
(nginx used to run out of worker connections and reset them), and the memory of the model server and nginx must stay
flat from one overload phase to the next."""
import base64
import json
import subprocess
import threading
from pathlib import Path

import pytest

from foundry_inference.operator.builders import nginx as nginx_builder
from foundry_inference.operator.main import run_embedded
from tests.e2e.quickstart_walkthrough import processes_under
from tests.integration.test_operator_embedded import NS, Registry, byo, creds, state, wait_for
from tests.support.embedded_env import loopback_embedded
from tests.support.require import require_module, require_tool
from tests.unit.operator.factories import decoded, settings

pytestmark = pytest.mark.integration

CONNECTIONS = 640
PHASE_S = 5

# wrk counts every answer by status, keeps the first 429's Retry-After and body, and prints them at the end.
LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["api-key"] = "%(key)s"
wrk.body = "%(body)s"
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) counts = {} busy = "" retry = "" end
function response(status, headers, body)
  counts[status] = (counts[status] or 0) + 1
  if status == 429 and busy == "" then busy = body retry = headers["Retry-After"] or "" end
end
function done(summary, latency, requests)
  local total, busy_body, retry_after = {}, "", ""
  for _, t in ipairs(threads) do
    for k, v in pairs(t:get("counts")) do total[k] = (total[k] or 0) + v end
    if busy_body == "" then busy_body = t:get("busy") retry_after = t:get("retry") end
  end
  local parts = {}
  for k, v in pairs(total) do table.insert(parts, string.format('"%%d": %%d', k, v)) end
  io.write("STATUS_COUNTS {" .. table.concat(parts, ", ") .. "}\\n")
  io.write("RETRY_AFTER " .. retry_after .. "\\n")
  io.write("BUSY_BODY " .. busy_body .. "\\n")
  io.write(string.format("ERRORS %%d %%d %%d %%d %%d\\n", summary.errors.connect, summary.errors.read,
                         summary.errors.write, summary.errors.status, summary.errors.timeout))
  io.write(string.format("REQUESTS %%d\\n", summary.requests))
end
"""


def rss_mib(pids):
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                total += next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
        except (OSError, StopIteration):
            pass
    return total / 1024


def wrk_phase(wrk, url, script):
    out = subprocess.run([wrk, "-t2", f"-c{CONNECTIONS}", f"-d{PHASE_S}s", "--timeout=30s", "-s", script, url],
                         capture_output=True, text=True, timeout=PHASE_S + 60, check=True).stdout
    result = {}
    for line in out.splitlines():
        tag, _, rest = line.partition(" ")
        if tag == "STATUS_COUNTS":
            result["statuses"] = {int(k): v for k, v in json.loads(rest).items()}
        elif tag == "ERRORS":
            kinds = ("connect", "read", "write", "status", "timeout")
            result["errors"] = dict(zip(kinds, map(int, rest.split()), strict=True))
        elif tag == "REQUESTS":
            result["requests"] = int(rest)
        elif tag == "RETRY_AFTER":
            result["retry_after"] = rest.strip()
        elif tag == "BUSY_BODY":
            result["busy_body"] = rest
    return result, out


def test_ten_times_the_connections_through_the_sidecar_get_200_or_429_never_a_reset(tmp_path, monkeypatch):
    wrk = require_tool("wrk", "apt-get install wrk")
    require_tool("nginx", "apt-get install nginx-light")
    require_module("skl2onnx", "pip install -e .[test]")
    from tests.support import models
    built = models.iris_logreg()
    data, store = loopback_embedded(tmp_path, monkeypatch)
    stop = threading.Event()
    thread = threading.Thread(target=run_embedded, args=(store, data, stop, settings(NS)), daemon=True)
    with Registry(files={"iris.onnx": Path(built.path).read_bytes()}) as reg:
        thread.start()
        try:
            store.create(creds())
            store.create(byo("iris", reg))
            wait_for(lambda: state(store, "iris") == "Running", 90, "Running")
            endpoint = store.get("ModelDeployment", NS, "iris")["status"]["internalEndpoint"]
            assert endpoint.startswith("https://")
            key = decoded(store.get("Secret", NS, "iris-api-keys"), "primary-key")
            data_b64 = base64.b64encode(json.dumps([[float(v) for v in built.X[0]]]).encode()).decode()
            body = json.dumps({"items": [{"content_type": "application/json", "encoder": "base64", "data": data_b64}]})
            script = tmp_path / "overload.lua"
            script.write_text(LUA % {"key": key, "body": body.replace('"', '\\"')})
            pids = processes_under(data)
            subprocess.run([wrk, "-t1", "-c8", "-d1s", "-s", str(script), f"{endpoint}/v1/predict"],
                           capture_output=True, timeout=60, check=True)          # warm: TLS sessions, upstreams
            before = rss_mib(pids)
            phases = []
            for _ in range(2):
                result, out = wrk_phase(wrk, f"{endpoint}/v1/predict", str(script))
                result["rss_mib"] = rss_mib(pids)
                phases.append(result)
            for result in phases:
                statuses = result["statuses"]
                assert set(statuses) <= {200, 429}, (statuses, out)
                assert result["errors"] == dict(connect=0, read=0, write=0, status=result["errors"]["status"],
                                                timeout=0), out
                assert sum(statuses.values()) == result["requests"]
                assert statuses.get(200, 0) > 0
            refused = [r for r in phases if r["statuses"].get(429)]
            assert refused, "640 connections never overflowed the sidecar's in-flight limit or the server's queue"
            busy = json.loads(refused[0]["busy_body"])
            assert set(busy) == {"error", "queue_depth", "retry_after"} and busy["error"].startswith("Queue full: ")
            assert refused[0]["retry_after"] == str(busy["retry_after"])
            # RSS flat: the second phase does not grow beyond the first (sessions, buffers and queues are bounded)
            assert phases[1]["rss_mib"] <= phases[0]["rss_mib"] + 16, (before, phases)
            assert phases[0]["rss_mib"] <= before + 64, (before, phases)
            logs = list(data.glob("**/nginx.log"))
            assert logs
            text = "".join(p.read_text(errors="replace") for p in logs)
            assert "worker_connections are not enough" not in text
            assert "limiting connections" not in text                    # refusals are not logged at warn
        finally:
            stop.set()
            thread.join(60)
            store.close()
    assert processes_under(data) == []
    assert nginx_builder.IN_FLIGHT < CONNECTIONS
