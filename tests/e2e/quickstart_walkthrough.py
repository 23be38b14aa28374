#!/usr/bin/env python3
"""The docs/quickstart.md walk-through as a script, against a running `foundry-inference up`.

    .venv/bin/foundry-inference up &                     # or scripts/quickstart.sh
    .venv/bin/python tests/e2e/quickstart_walkthrough.py [--url http://127.0.0.1:8080] [--data-dir DIR] [--no-chat]

Steps: list the models; deploy the iris sample; read its keys; call /v1/predict over TLS (certificate checked against
<data-dir>/tls/ca.crt); deploy the chat sample and talk to it with the `openai` client, streaming; transcribe a
generated audio clip with the Whisper sample; rotate a key and see the old one refused within 5 s while the other
still works; delete the deployments and see their processes gone. Exit status 0 when every step passed.

The `Platform` class is also what the end-to-end tests (tests/e2e/test_embedded_*.py) drive `up` with.
"""
import argparse
import base64
import datetime
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

DEFAULT_DATA_DIR = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share") / "foundry-inference"
IRIS_ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.1, 4.7, 1.5], [7.7, 3.0, 6.1, 2.3]]     # setosa, versicolor, virginica


class Failed(AssertionError):
    pass


class Platform:
    """A client of one `foundry-inference up`: the control plane with the admin key, the deployments over TLS."""

    def __init__(self, url="http://127.0.0.1:8080", data_dir=DEFAULT_DATA_DIR):
        self.url = url.rstrip("/")
        self.data_dir = Path(data_dir)
        self.admin = requests.Session()
        self.admin.headers["Authorization"] = f"Bearer {(self.data_dir / 'admin-key').read_text().strip()}"

    @property
    def ca(self):
        return str(self.data_dir / "tls" / "ca.crt")

    # --- control plane -------------------------------------------------------------------------------------------
    def api(self, method, path, expect=(200,), **kwargs):
        resp = self.admin.request(method, f"{self.url}/api/v1{path}", timeout=30, **kwargs)
        if resp.status_code not in expect:
            raise Failed(f"{method} {path}: HTTP {resp.status_code} {resp.text[:500]}")
        return resp.json() if resp.content else None

    def models(self, **query):
        return self.api("GET", "/models", params=query)["models"]

    def deploy(self, name, model, namespace="default", **spec):
        body = {"name": name, "spec": {"model": model, "compute": "cpu", **spec}}
        return self.api("POST", f"/namespaces/{namespace}/deployments", expect=(201,), json=body)

    def deployment(self, name, namespace="default"):
        return self.api("GET", f"/namespaces/{namespace}/deployments/{name}")

    def wait_state(self, name, state="Running", namespace="default", timeout=120, fail_on_error=True):
        deadline = time.monotonic() + timeout
        status = None
        while time.monotonic() < deadline:
            status = self.deployment(name, namespace)["status"]
            if status["state"] == state:
                return status
            if fail_on_error and status["state"] == "Error" and state != "Error":
                raise Failed(f"deployment {namespace}/{name} is in state Error: {status['message']}")
            time.sleep(0.3)
        raise Failed(f"deployment {namespace}/{name} did not reach {state} within {timeout}s (last: {status})")

    def keys(self, name, namespace="default"):
        body = self.api("GET", f"/namespaces/{namespace}/deployments/{name}/keys")
        return body["primaryKey"]["value"], body["secondaryKey"]["value"]

    def rotate(self, name, which="primary", namespace="default"):
        return self.api("POST", f"/namespaces/{namespace}/deployments/{name}/keys/{which}/rotate")

    def delete(self, name, namespace="default"):
        return self.api("DELETE", f"/namespaces/{namespace}/deployments/{name}", expect=(202,))

    def gone(self, name, namespace="default"):
        resp = self.admin.get(f"{self.url}/api/v1/namespaces/{namespace}/deployments/{name}", timeout=10)
        return resp.status_code == 404

    def workload_dir(self, name, namespace="default"):
        return self.data_dir / "workloads" / namespace / name

    # --- data plane ----------------------------------------------------------------------------------------------
    def endpoint(self, name, namespace="default"):
        return self.deployment(name, namespace)["status"]["internalEndpoint"]

    def predict_raw(self, endpoint, key, rows):
        data = base64.b64encode(json.dumps(rows).encode()).decode()
        body = {"items": [{"content_type": "application/json", "encoder": "base64", "data": data}]}
        # verify=<the generated CA>: the certificate is checked, never skipped
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return requests.post(f"{endpoint}/v1/predict", json=body, headers=headers, verify=self.ca, timeout=30)

    def predict(self, endpoint, key, rows=IRIS_ROWS):
        resp = self.predict_raw(endpoint, key, rows)
        if resp.status_code != 200:
            raise Failed(f"/v1/predict: HTTP {resp.status_code} {resp.text[:300]}")
        return json.loads(base64.b64decode(resp.json()["items"][0]["data"]))

    def openai_client(self, endpoint, key):
        import openai
        try:                      # recent openai releases ship their HTTP client as `httpx2`
            import httpx2 as httpx
        except ImportError:
            import httpx
        # verify=<the generated CA>: the certificate is checked, never skipped
        import ssl
        return openai.OpenAI(base_url=f"{endpoint}/v1", api_key=key, max_retries=0, timeout=120,
                             http_client=httpx.Client(verify=ssl.create_default_context(cafile=self.ca)))


def processes_under(path):
    """PIDs whose working directory or a command-line argument lies under `path` (model servers, nginx, fetchers).
    Paths match whole components: `.../default/iris` never matches `.../default/iris-classifier`."""
    under = re.compile(r"(?:^|[\s=:])" + re.escape(str(path).rstrip("/")) + r"(?=/|\s|$)")
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cwd = os.readlink(f"/proc/{pid}/cwd")
            # NUL-separated arguments; nginx rewrites its title into one space-separated string
            cmd = open(f"/proc/{pid}/cmdline", "rb").read().decode(errors="replace").replace("\0", " ")
        except OSError:
            continue
        if under.search(cwd) or under.search(cmd):
            found.append(int(pid))
    return found


def wait_until(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
        except (requests.RequestException, OSError, KeyError, Failed) as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(0.2)
    raise Failed(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def rotation_check(platform, name, endpoint, namespace="default", which="primary", rows=IRIS_ROWS):
    """Rotate `which`; the old key is refused within 5 s while the other key works throughout, and the new key works
    on the first call made at the time the rotate answer names (key.effectiveAt). Returns seconds until refusal."""
    primary, secondary = platform.keys(name, namespace)
    old, other = (primary, secondary) if which == "primary" else (secondary, primary)
    answer = platform.rotate(name, which, namespace)["key"]
    start = time.monotonic()
    effective = datetime.datetime.strptime(answer["effectiveAt"], "%Y-%m-%dT%H:%M:%SZ").replace(
        tzinfo=datetime.timezone.utc)
    while True:
        if platform.predict_raw(endpoint, other, rows).status_code != 200:
            raise Failed("the other key stopped working during the rotation")
        code = platform.predict_raw(endpoint, old, rows).status_code
        elapsed = time.monotonic() - start
        if code == 401:
            break
        if elapsed > 5.0:
            raise Failed(f"the rotated-out key still works after {elapsed:.1f}s")
        time.sleep(0.2)
    wait = (effective - datetime.datetime.now(datetime.timezone.utc)).total_seconds()
    if wait > 5.0:
        raise Failed(f"the rotate answer says the new key works only at {answer['effectiveAt']}")
    time.sleep(max(0.0, wait))
    code = platform.predict_raw(endpoint, answer["value"], rows).status_code
    if code != 200:
        raise Failed(f"the new key got HTTP {code} at the time the rotate answer named ({answer['effectiveAt']})")
    return elapsed


def speech_clip(path, text="The quick brown fox jumps over the lazy dog."):
    """A WAV of `text` (espeak-ng + sox); None when they are not installed."""
    if not shutil.which("espeak-ng") or not shutil.which("sox"):
        return None
    raw = path + ".raw.wav"
    subprocess.run(["espeak-ng", "-v", "en-us", "-s", "150", "-w", raw, text], check=True, capture_output=True)
    subprocess.run(["sox", raw, "-r", "16000", "-c", "1", path], check=True, capture_output=True)
    os.remove(raw)
    return path


# --- the walk-through ------------------------------------------------------------------------------------------------

def step(title):
    print(f"\n== {title}", flush=True)


def walkthrough(platform, chat=True):
    step("1. list the models (the samples sit next to the Foundry catalog entries)")
    for model in platform.models():
        print(f"  {model['alias']:<28} {model['task'] or '':<30} {model['source']}")
    aliases = {m["alias"] for m in platform.models(publisher="foundry-inference samples")}
    if "iris-classifier" not in aliases:
        raise Failed(f"the iris sample is not in the catalog (samples: {sorted(aliases)})")

    step("2. deploy the predictive sample")
    if not platform.gone("iris"):
        platform.delete("iris")
        wait_until(lambda: platform.gone("iris"), 60, "the previous iris deployment to go")
    platform.deploy("iris", {"catalog": {"name": "iris-classifier"}})
    status = platform.wait_state("iris", timeout=180)
    endpoint = status["internalEndpoint"]
    print(f"  Running at {endpoint}")

    step("3. read its keys")
    primary, secondary = platform.keys("iris")
    print(f"  primary {primary[:14]}...  secondary {secondary[:14]}...")

    step("4. call /v1/predict (TLS verified against <data-dir>/tls/ca.crt)")
    outputs = platform.predict(endpoint, primary)
    print(f"  {outputs}")
    if outputs.get("label_0") != [0, 1, 2]:
        raise Failed(f"unexpected iris labels: {outputs}")

    deployed = ["iris"]
    if chat:
        step("5. deploy the chat sample and talk to it with the openai client, streaming")
        platform.deploy("smollm2", {"catalog": {"name": "smollm2-135m-instruct"}})
        status = platform.wait_state("smollm2", timeout=600)
        deployed.append("smollm2")
        client = platform.openai_client(status["internalEndpoint"], platform.keys("smollm2")[0])
        stream = client.chat.completions.create(model="smollm2-135m-instruct", stream=True, max_tokens=40,
                                                messages=[{"role": "user", "content": "What is the capital of "
                                                                                      "France?"}])
        text = "".join((chunk.choices[0].delta.content or "") for chunk in stream if chunk.choices)
        print(f"  assistant: {text.strip()}")
        if not text.strip():
            raise Failed("the chat sample streamed no text")

        step("6. transcribe a generated audio clip")
        clip = speech_clip(os.path.join(tempfile.mkdtemp(), "fox.wav"))
        if clip is None:
            print("  skipped: espeak-ng and sox are needed to generate the clip (apt-get install espeak-ng sox)")
        else:
            platform.deploy("whisper", {"catalog": {"name": "whisper-tiny-en"}})
            status = platform.wait_state("whisper", timeout=300)
            deployed.append("whisper")
            client = platform.openai_client(status["internalEndpoint"], platform.keys("whisper")[0])
            with open(clip, "rb") as fh:
                result = client.audio.transcriptions.create(model="whisper-tiny-en", file=fh)
            print(f"  transcript: {result.text.strip()}")
            # Whisper tiny.en on synthetic speech is close, not exact ("brown fox" has come back as "roundfire"):
            # ask for most of the sentence's words, in the spirit of the chat server's measured WER bound.
            heard = re.findall(r"[a-z]+", result.text.lower())
            said = re.findall(r"[a-z]+", "The quick brown fox jumps over the lazy dog.".lower())
            if sum(min(heard.count(w), said.count(w)) for w in set(said)) < 0.6 * len(said):
                raise Failed(f"unexpected transcript: {result.text!r}")

        step("6b. embed sentences with the embedding sample (openai embeddings.create)")
        platform.deploy("minilm", {"catalog": {"name": "all-minilm-l6-v2"}})
        status = platform.wait_state("minilm", timeout=300)
        deployed.append("minilm")
        client = platform.openai_client(status["internalEndpoint"], platform.keys("minilm")[0])
        answer = client.embeddings.create(model="all-minilm-l6-v2", input=[
            "A man is eating food.", "A man is eating a piece of bread.", "A man is riding a horse."])
        vectors = [d.embedding for d in answer.data]
        near = sum(a * b for a, b in zip(vectors[0], vectors[1], strict=True))
        far = sum(a * b for a, b in zip(vectors[0], vectors[2], strict=True))
        print(f"  {len(vectors)} x {len(vectors[0])} floats; cosine eating/eating {near:.2f}, eating/riding {far:.2f}")
        if len(vectors[0]) != 384 or not near > far:
            raise Failed(f"unexpected embeddings: dimension {len(vectors[0])}, cosines {near:.3f} / {far:.3f}")

    step("7. rotate the primary key: the old one is refused within 5 s, the secondary works throughout")
    elapsed = rotation_check(platform, "iris", endpoint)
    print(f"  old key refused after {elapsed:.1f}s")

    step("8. delete the deployments and see their processes gone")
    for name in deployed:
        workload = platform.workload_dir(name)
        before = processes_under(workload)
        platform.delete(name)
        wait_until(lambda w=workload: not processes_under(w), 30, f"the processes of {name} to stop")
        wait_until(lambda n=name: platform.gone(n), 30, f"{name} to be deleted")
        print(f"  {name}: {len(before)} processes stopped")
    print("\nwalk-through passed")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:8080", help="the control plane (default %(default)s)")
    parser.add_argument("--data-dir", default=str(DEFAULT_DATA_DIR), help="up's --data-dir (default %(default)s)")
    parser.add_argument("--no-chat", action="store_true", help="skip the chat and transcription steps")
    args = parser.parse_args(argv)
    try:
        walkthrough(Platform(args.url, args.data_dir), chat=not args.no_chat)
    except Failed as exc:
        print(f"\nFAILED: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
