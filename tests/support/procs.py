"""Run platform processes for tests: free ports, wait for readiness, stop without orphans."""
import os
import signal
import socket
import subprocess
import sys
import time

import requests

# The console script, not `python -m`: run from the repo root, `-m` would put the root's operator/ folder in front of
# the standard library's `operator` module.
CLI = os.path.join(os.path.dirname(sys.executable), "foundry-inference")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url, timeout=30, proc=None, status=200, **kwargs):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {url} answered")
        try:
            last = requests.get(url, timeout=2, **kwargs)
            if last.status_code == status:
                return last
        except requests.RequestException as exc:
            last = exc
        time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer {status} within {timeout}s (last: {last})")


class Cli:
    """`foundry-inference ARGS` (or `command ARGS`, e.g. the README's quickstart script, which execs it) as a child
    process in its own session, stopped with SIGINT like Ctrl-C."""

    def __init__(self, *args, env=None, log_path=None, command=(CLI,)):
        self.log_path = log_path
        out = open(log_path, "wb") if log_path else subprocess.DEVNULL
        self.proc = subprocess.Popen([*command, *args],
                                     env={**os.environ, **(env or {})}, stdout=out, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def stop(self, sig=signal.SIGINT, timeout=20):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        return self.proc.returncode

    def log(self):
        return open(self.log_path, errors="replace").read() if self.log_path else ""
