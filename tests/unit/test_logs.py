"""`up` in a terminal logs readable lines; anywhere else (a pod, a pipe, a file) JSON lines; the flag or
FOUNDRY_LOG_FORMAT overrides either way."""
import json
import os
import pty
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from foundry_inference import logs
from tests.support.procs import free_port

pytestmark = pytest.mark.unit
CLI = str(Path(sys.executable).parent / "foundry-inference")


def test_the_format_follows_the_terminal_unless_told(monkeypatch):
    monkeypatch.delenv("FOUNDRY_LOG_FORMAT", raising=False)
    primary, secondary = pty.openpty()
    read, write = os.pipe()
    try:
        with os.fdopen(os.dup(secondary), "w") as tty, os.fdopen(os.dup(write), "w") as pipe:
            assert logs.choose_format(None, tty) == "text"
            assert logs.choose_format(None, pipe) == "json"
            assert logs.choose_format("json", tty) == "json"
            monkeypatch.setenv("FOUNDRY_LOG_FORMAT", "text")
            assert logs.choose_format(None, pipe) == "text"
    finally:
        for fd in (primary, secondary, read, write):
            os.close(fd)


def test_text_lines_carry_the_fields():
    import logging
    record = logging.LogRecord("foundry_inference.operator.agent", logging.INFO, __file__, 1, "node agent started",
                               None, None)
    record.fields = {"data_dir": "/tmp/x y", "nginx": "/usr/sbin/nginx", "count": 3}
    line = logs.TextFormatter().format(record)
    assert "info" in line and "operator.agent" in line and "node agent started" in line
    assert 'data_dir="/tmp/x y"' in line and "nginx=/usr/sbin/nginx" in line and "count=3" in line
    assert not line.lstrip().startswith("{")


def _up(tmp_path, terminal, *flags):
    env = dict(os.environ, FOUNDRY_SAMPLES="none", FOUNDRY_LOG_FORMAT="")
    argv = [CLI, *flags, "up", "--data-dir", str(tmp_path / "data"), "--port", str(free_port())]
    if terminal:
        primary, secondary = pty.openpty()
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=secondary, stderr=secondary, env=env)
        os.close(secondary)
        fd = primary
    else:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                env=env)
        fd = proc.stdout.fileno()
    out, deadline = b"", time.monotonic() + 60
    try:
        while b"listening" not in out and time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 1)
            if ready:
                try:
                    chunk = os.read(fd, 65536)
                except OSError:
                    break
                if not chunk:
                    break
                out += chunk
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(30)
        if terminal:
            os.close(fd)
    lines = [ln for ln in out.decode(errors="replace").splitlines() if ln.strip()]
    assert any("listening" in ln for ln in lines), out[-2000:]
    return lines


def test_up_is_readable_on_a_terminal_and_json_in_a_pipe(tmp_path):
    text = _up(tmp_path, terminal=True)
    assert not any(ln.lstrip().startswith("{") for ln in text), text[:5]
    assert any("control plane listening" in ln and "url=http://127.0.0.1:" in ln for ln in text)
    piped = _up(tmp_path, terminal=False)
    listening = [json.loads(ln) for ln in piped if '"control plane listening"' in ln]
    assert listening and listening[0]["url"].startswith("http://127.0.0.1:")
    forced = _up(tmp_path, True, "--log-format", "json")
    assert any(ln.lstrip().startswith("{") and "listening" in ln for ln in forced)
