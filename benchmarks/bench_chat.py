#!/usr/bin/env python3
"""Chat server vs a raw onnxruntime-genai generation loop, in the same run, on SmolLM2-135M-Instruct (int4, CPU);
plus the transcription real-time factor of Whisper tiny.en.

    .venv/bin/python benchmarks/bench_chat.py [--tokens 128] [--rounds 3] [--json out.json]

Measured (greedy, `--tokens` new tokens forced with min_tokens / min_length so every run generates the same count):
- raw: onnxruntime_genai.Generator in this process: time to first token (encode + append_tokens + first token,
  from `--ttft-rounds` short requests alternating with the server's) and decode tokens/s after the first token;
- server: `foundry-inference chat-server` as a separate process on loopback, one SSE stream at a time over a kept-alive
  connection: time to first content chunk from sending the request, decode tokens/s between the first and the last
  chunk (the client is a minimal http.client reader: on two shared cores a heavy client would slow the server);
- concurrent: 4 SSE streams at once: aggregate tokens/s (all tokens / wall time), each stream's own rate (no stream
  starved), time to first token per stream; compared with the single stream's rate;
- transcription: a spoken clip (espeak-ng) through POST /v1/audio/transcriptions; seconds per second of audio.
Raw and server runs alternate round by round so machine noise hits both alike; medians of the rounds are reported,
and the ratios are the medians of the per-round ratios.
"""
import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import requests

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(1, os.path.join(REPO, "benchmarks"))

PROMPT = "Write a long story about a dragon who learns to read."
PROMPTS4 = [PROMPT, "Write a long story about a princess and a ship.", "Describe a day in the life of a baker.",
            "Explain how rivers shape the land over millions of years."]


def raw_run(model_dir, tokens, prompt=PROMPT):
    import numpy as np
    import onnxruntime_genai as og
    state = raw_run.__dict__
    if state.get("dir") != model_dir:
        state["dir"] = model_dir
        state["model"] = og.Model(model_dir)
        state["tok"] = og.Tokenizer(state["model"])
    model, tok = state["model"], state["tok"]
    text = _template(model_dir).render([{"role": "user", "content": prompt}])   # the same prompt as the server's
    start = time.perf_counter()
    ids = tok.encode(text)
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=len(ids) + tokens, min_length=len(ids) + tokens, do_sample=False)
    gen = og.Generator(model, params)
    gen.append_tokens(np.asarray(ids, dtype=np.int32))
    gen.generate_next_token()
    stream = tok.create_stream()
    stream.decode(int(gen.get_next_tokens()[0]))
    first = time.perf_counter()
    n = 1
    while not gen.is_done():
        gen.generate_next_token()
        stream.decode(int(gen.get_next_tokens()[0]))
        n += 1
    end = time.perf_counter()
    return {"ttft": first - start, "tps": (n - 1) / (end - first), "tokens": n}


def raw_batch(model_dir, tokens, prompts=PROMPTS4):
    """onnxruntime-genai's own static batch (one Generator, batch_size = len(prompts), prompts padded by its
    tokenizer): aggregate tokens/s from the start, the rate the server's continuous batching is held to."""
    import onnxruntime_genai as og
    raw_run(model_dir, 1)                               # loads (and caches) the model and tokenizer
    model, tok = raw_run.__dict__["model"], raw_run.__dict__["tok"]
    template = _template(model_dir)
    texts = [template.render([{"role": "user", "content": p}]) for p in prompts]
    start = time.perf_counter()
    ids = tok.encode_batch(texts)
    width = ids.shape()[1]
    params = og.GeneratorParams(model)
    params.set_search_options(batch_size=len(texts), max_length=width + tokens, min_length=width + tokens,
                              do_sample=False)
    gen = og.Generator(model, params)
    gen.append_tokens(ids)
    steps = 0
    while not gen.is_done():
        gen.generate_next_token()
        steps += 1
    end = time.perf_counter()
    return {"aggregate_tps": len(texts) * steps / (end - start), "steps": steps}


def _template(model_dir):
    from foundry_inference.apps.chat.template import ChatTemplate, load_template
    return ChatTemplate(*load_template(model_dir))


class Client:
    """A keep-alive HTTP/1.1 client that reads the chunked SSE body chunk by chunk with almost no Python work per
    token (requests/urllib3 cost more CPU per token than the server does, on the same two cores)."""

    IDLE_S = 60         # the server closes a connection idle for 75 s: reconnect before that (a long round can idle it)

    def __init__(self, base):
        import urllib.parse
        url = urllib.parse.urlparse(base)
        self.host, self.port = url.hostname, url.port
        self.conn = None
        self._connect()

    def _connect(self):
        import http.client
        import socket
        if self.conn is not None:
            self.conn.close()
        self.conn = http.client.HTTPConnection(self.host, self.port, timeout=600)
        self.conn.connect()
        self.conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.used = time.monotonic()

    def stream(self, body):
        """Yields (time, chunk bytes) per HTTP chunk of the answer."""
        if time.monotonic() - self.used > self.IDLE_S:
            self._connect()
        data = json.dumps(body).encode()
        self.conn.putrequest("POST", "/v1/chat/completions", skip_accept_encoding=True)
        self.conn.putheader("Content-Type", "application/json")
        self.conn.putheader("Content-Length", str(len(data)))
        self.conn.endheaders(data)
        resp = self.conn.getresponse()
        if resp.status != 200:
            raise RuntimeError(f"{resp.status}: {resp.read()[:500]}")
        fp = resp.fp
        while True:
            size = int(fp.readline().split(b";")[0], 16)
            if size == 0:
                fp.readline()
                break
            chunk = fp.read(size)
            fp.readline()
            yield time.perf_counter(), chunk
        resp.chunked = False
        resp.length = 0
        resp.close()
        self.used = time.monotonic()


def stream_run(base, tokens, prompt=PROMPT, start_event=None, client=None):
    body = {"model": "bench", "messages": [{"role": "user", "content": prompt}], "max_tokens": tokens,
            "min_tokens": tokens, "stream": True, "stream_options": {"include_usage": True}}
    client = client or Client(base)
    if start_event is not None:
        start_event.wait()
    start = time.perf_counter()
    times = []
    usage = None
    for at, chunk in client.stream(body):
        for line in chunk.split(b"\n\n"):
            if b'"content":"' in line and b'"content":""' not in line:
                times.append(at)
            elif b'"usage":{' in line:
                usage = json.loads(line[6:])["usage"]
    end = times[-1]
    n = usage["completion_tokens"]
    return {"ttft": times[0] - start, "tps": (n - 1) / (end - times[0]) if end > times[0] else 0.0, "tokens": n,
            "start": start, "end": end, "first": times[0]}


def concurrent_run(base, tokens, streams=4):
    go = threading.Event()
    results = [None] * streams

    clients = [Client(base) for _ in range(streams)]

    def worker(i):
        results[i] = stream_run(base, tokens, PROMPTS4[i % len(PROMPTS4)], go, clients[i])
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(streams)]
    for t in threads:
        t.start()
    time.sleep(0.2)
    go.set()
    for t in threads:
        t.join()
    start = min(r["start"] for r in results)
    end = max(r["end"] for r in results)
    total = sum(r["tokens"] for r in results)
    return {"aggregate_tps": total / (end - start), "per_stream_tps": [r["tokens"] / (r["end"] - r["start"])
                                                                          for r in results],
            "ttfts": [r["ttft"] for r in results]}


def over_capacity(base, streams=20):
    """`streams` long streams fill every slot and queue place (4 + 16 by default); one more request must be
    answered 429 with Retry-After at once. Returns what it got."""
    go = threading.Event()
    clients = [Client(base) for _ in range(streams)]
    threads = [threading.Thread(target=lambda c=c: stream_run(base, 64, PROMPT, go, c)) for c in clients]
    for t in threads:
        t.start()
    go.set()
    time.sleep(1.0)
    body = {"model": "bench", "messages": [{"role": "user", "content": PROMPT}], "max_tokens": 4}
    r = requests.post(base + "/v1/chat/completions", json=body, timeout=60)
    for t in threads:
        t.join()
    return f"{r.status_code}, Retry-After {r.headers.get('Retry-After')}, type {r.json()['error']['type']}"


def start_server(model_dir, port, model_id="bench", extra_env=None, tree=None):
    env = dict(os.environ, PORT=str(port), FOUNDRY_MODEL_PATH=model_dir, FOUNDRY_MODEL_ID=model_id,
               FOUNDRY_CHAT_HOST="127.0.0.1", FOUNDRY_AUTH_MODE="none", FOUNDRY_LOG_LEVEL="warning",
               **(extra_env or {}))
    cli = [os.path.join(os.path.dirname(sys.executable), "foundry-inference"), "chat-server"]
    if tree is not None:            # the server of another commit (bench_predictive.source_tree), same environment
        cli = [sys.executable, "-c", f"import sys; sys.path[:] = [{tree!r}] + [p for p in sys.path if p]; "
               "sys.argv[1:] = []; from foundry_inference.apps.chat import server; sys.exit(server.main())"]
    log = tempfile.NamedTemporaryFile(prefix="bench-chat-", suffix=".log", delete=False)
    proc = subprocess.Popen(cli, env=env, stdout=log, stderr=subprocess.STDOUT,
                            cwd=tempfile.gettempdir(), start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 300
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {open(log.name).read()[-2000:]}")
        try:
            if requests.get(base + "/ready", timeout=2).status_code == 200:
                return proc, base
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise TimeoutError("server not ready")


def stop_server(proc):
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)


def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def transcription(rounds):
    from tests.support.chat_models import speak, whisper_model
    text = ("Please call Stella and ask her to bring these things with her from the store: six spoons of fresh "
            "snow peas, five thick slabs of blue cheese, and maybe a snack for her brother Bob.")
    path = speak(text, os.path.join(tempfile.gettempdir(), "bench-speech.wav"))
    data = open(path, "rb").read()
    proc, base = start_server(whisper_model(), free_port(), "whisper-tiny-en")
    try:
        times, duration = [], None
        for _ in range(rounds):
            start = time.perf_counter()
            r = requests.post(base + "/v1/audio/transcriptions", files={"file": ("s.wav", data)},
                              data={"model": "whisper-tiny-en", "response_format": "verbose_json"}, timeout=300)
            times.append(time.perf_counter() - start)
            r.raise_for_status()
            duration = r.json()["duration"]
        best = statistics.median(times)
        return {"audio_s": duration, "seconds": best, "rtf": best / duration, "text": r.json()["text"]}
    finally:
        stop_server(proc)


def prefill_ab(model_dir, tokens, rounds):
    """The same server with and without its prefill worker, measured in turn: p90 time to first token of 4
    simultaneous streams, their aggregate, and 16 streams' aggregate against it."""
    servers = {"prefill worker": start_server(model_dir, free_port(), extra_env={
                   "FOUNDRY_CHAT_PREFILL_THREADS": "1"}),
               "engine thread only": start_server(model_dir, free_port(), extra_env={
                   "FOUNDRY_CHAT_PREFILL_THREADS": "0"})}
    results = {name: {"p90": [], "agg4": [], "agg16": []} for name in servers}
    print(f"load average before: {os.getloadavg()[0]:.2f}", flush=True)
    try:
        for _proc, base in servers.values():
            concurrent_run(base, 8)                     # warm
        for index in range(rounds):
            order = list(servers.items()) if index % 2 == 0 else list(reversed(servers.items()))
            for name, (_proc, base) in order:
                four, sixteen = concurrent_run(base, tokens), concurrent_run(base, tokens, 16)
                r = results[name]
                r["p90"].append(statistics.quantiles(four["ttfts"], n=10, method="inclusive")[-1])
                r["agg4"].append(four["aggregate_tps"])
                r["agg16"].append(sixteen["aggregate_tps"])
                print(f"  round {index + 1} {name:<20} 4 streams: p90 first token {1000 * r['p90'][-1]:6.0f} ms, "
                      f"{four['aggregate_tps']:6.1f} tok/s; 16 streams {sixteen['aggregate_tps']:6.1f} tok/s "
                      f"({sixteen['aggregate_tps'] / four['aggregate_tps']:.2f}x)", flush=True)
    finally:
        for proc, _base in servers.values():
            stop_server(proc)
    med = statistics.median
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    print("| server | 4 streams: first token p90 | 4 streams tok/s | 16 streams tok/s | 16 vs 4 |")
    print("|---|---:|---:|---:|---:|")
    for name, r in results.items():
        print(f"| {name} | {1000 * med(r['p90']):.0f} ms | {med(r['agg4']):.1f} | {med(r['agg16']):.1f} | "
              f"{med(a / b for a, b in zip(r['agg16'], r['agg4'], strict=True)):.2f}x |")
    new, old = results["prefill worker"], results["engine thread only"]
    print(f"prefill worker / engine thread only, per round then median: first token p90 "
          f"{med(a / b for a, b in zip(new['p90'], old['p90'], strict=True)):.2f}x, 4-stream aggregate "
          f"{med(a / b for a, b in zip(new['agg4'], old['agg4'], strict=True)):.2f}x, 16-stream aggregate "
          f"{med(a / b for a, b in zip(new['agg16'], old['agg16'], strict=True)):.2f}x")


def thread_cpu(pid):
    """{thread id: CPU seconds} of a process (from /proc)."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[int(tid)] = (int(fields[11]) + int(fields[12])) / tick
    return out


def baseline_ab(model_dir, tokens, rounds, ref):
    """This tree's server and `ref`'s (e.g. main) up together, one stream each in turn (order reversed every other
    round), beside raw onnxruntime-genai: decode tokens/s against raw, time to first token, and each server's CPU
    per token on its event-loop thread (the main thread) and on its other threads (the engine)."""
    from bench_predictive import source_tree
    servers = {"this tree": start_server(model_dir, free_port()),
               ref: start_server(model_dir, free_port(), tree=source_tree(ref))}
    stats = {name: {"ratio": [], "ttft": [], "loop": 0.0, "other": 0.0, "tokens": 0} for name in servers}
    print(f"load average before: {os.getloadavg()[0]:.2f}", flush=True)
    try:
        clients = {name: Client(base) for name, (_proc, base) in servers.items()}
        raw_run(model_dir, 8)
        for name, (_proc, base) in servers.items():
            stream_run(base, 8, client=clients[name])
        for index in range(rounds):
            order = list(servers) if index % 2 == 0 else list(reversed(servers))
            raw = raw_run(model_dir, tokens)
            for name in order:
                proc, base = servers[name]
                before = thread_cpu(proc.pid)
                run = stream_run(base, tokens, client=clients[name])
                after = thread_cpu(proc.pid)
                st = stats[name]
                st["ratio"].append(run["tps"] / raw["tps"])
                st["ttft"].append(run["ttft"])
                st["loop"] += after.get(proc.pid, 0) - before.get(proc.pid, 0)
                st["other"] += sum(v - before.get(t, 0) for t, v in after.items() if t != proc.pid)
                st["tokens"] += run["tokens"]
            print(f"  round {index + 1}: raw {raw['tps']:.1f} tok/s; " + "; ".join(
                f"{name} {stats[name]['ratio'][-1]:.1%} of raw" for name in servers), flush=True)
    finally:
        for proc, _base in servers.values():
            stop_server(proc)
    med = statistics.median
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    print("| server | one stream vs raw (median of rounds) | time to first token | event-loop CPU per token | "
          "engine CPU per token |")
    print("|---|---:|---:|---:|---:|")
    for name, st in stats.items():
        print(f"| {name} | {med(st['ratio']):.1%} | {1000 * med(st['ttft']):.1f} ms | "
              f"{1e6 * st['loop'] / st['tokens']:.0f} us | {1e6 * st['other'] / st['tokens']:.0f} us |")
    new, old = stats["this tree"], stats[ref]
    print(f"this tree / {ref}, per round then median: tokens/s "
          f"{med(a / b for a, b in zip(new['ratio'], old['ratio'], strict=True)):.3f}x")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=5, help="rounds of the throughput measurements")
    parser.add_argument("--ttft-rounds", type=int, default=20, help="request pairs for the time to first token")
    parser.add_argument("--json", help="write the results here too")
    parser.add_argument("--no-transcription", action="store_true")
    parser.add_argument("--streams16", action="store_true", help="also 16 simultaneous streams (default slots and "
                        "queue: 4 decode together, 12 wait) and a 21st request over the capacity (429)")
    parser.add_argument("--prefill-ab", type=int, metavar="ROUNDS", help="only compare prefill beside decoding with "
                        "prefill on the engine thread (FOUNDRY_CHAT_PREFILL_THREADS=0): two servers, 4 and 16 "
                        "simultaneous streams on each in turn for ROUNDS rounds")
    parser.add_argument("--baseline-ref", metavar="REF", help="only compare one stream on this tree's server with "
                        "the server at git REF (e.g. main), both up, in turn, beside raw onnxruntime-genai")
    args = parser.parse_args()
    from tests.support.chat_models import smollm2_model
    model_dir = smollm2_model()
    if args.baseline_ref:
        baseline_ab(model_dir, args.tokens, args.rounds, args.baseline_ref)
        return
    if args.prefill_ab:
        prefill_ab(model_dir, args.tokens, args.prefill_ab)
        return
    proc, base = start_server(model_dir, free_port())
    raw, single, conc, raw4, conc16, over = [], [], [], [], [], []
    try:
        client = Client(base)                           # one keep-alive connection, as an SDK client keeps
        raw_run(model_dir, 8)                           # warm both sides
        stream_run(base, 8, client=client)
        ttft_pairs = []
        for _ in range(args.ttft_rounds):           # time to first token: many short pairs, back to back
            ttft_pairs.append((raw_run(model_dir, 2)["ttft"], stream_run(base, 2, client=client)["ttft"]))
        for _ in range(args.rounds):
            raw.append(raw_run(model_dir, args.tokens))
            single.append(stream_run(base, args.tokens, client=client))
            conc.append(concurrent_run(base, args.tokens))
            raw4.append(raw_batch(model_dir, args.tokens))
            if args.streams16:
                conc16.append(concurrent_run(base, args.tokens, 16))
        if args.streams16:
            over.append(over_capacity(base))
    finally:
        stop_server(proc)
    med = statistics.median
    out = {
        "tokens": args.tokens, "rounds": args.rounds, "cpus": os.cpu_count(),
        "raw": {"ttft_ms": 1000 * med(r for r, _ in ttft_pairs), "tps": med(r["tps"] for r in raw)},
        "server": {"ttft_ms": 1000 * med(s for _, s in ttft_pairs), "tps": med(r["tps"] for r in single)},
        "concurrent4": {"aggregate_tps": med(c["aggregate_tps"] for c in conc),
                        "min_stream_tps": med(min(c["per_stream_tps"]) for c in conc),
                        "max_ttft_ms": 1000 * med(max(c["ttfts"]) for c in conc)},
    }
    # Ratios per round (raw and server ran back to back), then the median: steadier on a shared machine than the
    # ratio of the medians.
    out["server"]["tps_vs_raw"] = med(s["tps"] / r["tps"] for s, r in zip(single, raw, strict=True))
    out["server"]["ttft_overhead_ms"] = 1000 * med(s - r for r, s in ttft_pairs)
    single_stream_rate = med(r["tokens"] / (r["end"] - r["start"]) for r in single)
    out["concurrent4"]["speedup_vs_one_stream"] = out["concurrent4"]["aggregate_tps"] / single_stream_rate
    out["concurrent4"]["p90_ttft_ms"] = 1000 * med(statistics.quantiles(c["ttfts"], n=10, method="inclusive")[-1]
                                                   for c in conc)
    out["raw_batch4"] = {"aggregate_tps": med(r["aggregate_tps"] for r in raw4)}
    out["concurrent4"]["vs_raw_batch4"] = med(c["aggregate_tps"] / r["aggregate_tps"]
                                              for c, r in zip(conc, raw4, strict=True))
    if conc16:
        out["concurrent16"] = {"aggregate_tps": med(c["aggregate_tps"] for c in conc16),
                               "min_stream_tps": med(min(c["per_stream_tps"]) for c in conc16),
                               "max_ttft_ms": 1000 * med(max(c["ttfts"]) for c in conc16),
                               "over_capacity": over[0]}
    if not args.no_transcription:
        out["transcription"] = transcription(args.rounds)
    print(json.dumps(out, indent=2))
    print()
    print("| measure | raw onnxruntime-genai | chat server | ratio |")
    print("|---|---|---|---|")
    print(f"| decode tokens/s, one stream | {out['raw']['tps']:.1f} | {out['server']['tps']:.1f} | "
          f"{out['server']['tps_vs_raw']:.1%} |")
    print(f"| time to first token | {out['raw']['ttft_ms']:.1f} ms | {out['server']['ttft_ms']:.1f} ms | "
          f"+{out['server']['ttft_overhead_ms']:.1f} ms |")
    c = out["concurrent4"]
    print(f"| 4 concurrent streams, aggregate tokens/s | | {c['aggregate_tps']:.1f} | "
          f"{c['speedup_vs_one_stream']:.2f}x one stream |")
    print(f"| 4 streams vs onnxruntime-genai's static batch of 4 | {out['raw_batch4']['aggregate_tps']:.1f} | "
          f"{c['aggregate_tps']:.1f} | {c['vs_raw_batch4']:.1%} |")
    print(f"| slowest of the 4 streams, tokens/s | | {c['min_stream_tps']:.1f} | |")
    print(f"| time to first token of the 4, p90 / worst | | {c['p90_ttft_ms']:.0f} / {c['max_ttft_ms']:.0f} ms | |")
    if "concurrent16" in out:
        c16 = out["concurrent16"]
        print(f"| 16 concurrent streams, aggregate tokens/s | | {c16['aggregate_tps']:.1f} | "
              f"{c16['aggregate_tps'] / c['aggregate_tps']:.2f}x the 4-stream figure |")
        print(f"| over capacity (slots + queue) | | {c16['over_capacity']} | |")
    if "transcription" in out:
        t = out["transcription"]
        print(f"| transcription, {t['audio_s']:.1f} s clip | | {t['seconds']:.3f} s | RTF {t['rtf']:.3f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
