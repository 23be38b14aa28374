"""The docs/quickstart.md walk-through (tests/e2e/quickstart_walkthrough.py) against a real `foundry-inference up`
with all three samples: predict over TLS, chat with the real `openai` client (streaming), transcribe a spoken clip,
rotate a key, delete and see the processes gone.

The chat and Whisper samples need the chat stack (scripts/quickstart.sh installs it) and espeak-ng + sox for the
clip; without them this test skips, unless FOUNDRY_REQUIRE_MODELS=1 (CI), where that is a failure.
"""
import os
import shutil

import pytest

from tests.e2e import quickstart_walkthrough as walk
from tests.support.procs import Cli, free_port, wait_http

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1200),
              pytest.mark.skipif(not shutil.which("nginx"), reason="nginx is not installed")]


def _require_chat_stack():
    from foundry_inference import samples
    missing = [f"{name}: {why}" for name in samples.NAMES for state, why in [samples.status(name)]
               if state == "unavailable"]
    for tool in ("espeak-ng", "sox"):
        if not shutil.which(tool):
            missing.append(f"{tool} is not installed (apt-get install espeak-ng sox)")
    for module in ("openai", "faster_whisper", "onnxruntime_genai"):
        try:
            __import__(module)
        except ImportError:
            missing.append(f"python module {module} is missing")
    if missing:
        message = "; ".join(missing)
        if os.environ.get("FOUNDRY_REQUIRE_MODELS") == "1":
            pytest.fail(f"the chat samples are required: {message}")
        pytest.skip(f"chat samples unavailable: {message}")


def test_quickstart_walkthrough_with_all_samples(tmp_path, capsys):
    _require_chat_stack()
    port = free_port()
    data = tmp_path / "data"
    env = {"FOUNDRY_SAMPLES": "all", "FOUNDRY_SAMPLES_CACHE": str(tmp_path / "samples")}
    cli = Cli("up", "--data-dir", str(data), "--port", str(port), env=env, log_path=tmp_path / "up.log")
    try:
        wait_http(f"http://127.0.0.1:{port}/readyz", timeout=60, proc=cli.proc)
        walk.wait_until(lambda: cli.log().count('"sample ready"') + cli.log().count('"sample unavailable"') >= 3,
                        900, "the samples to be prepared")
        assert '"sample unavailable"' not in cli.log(), cli.log()[-3000:]
        walk.walkthrough(walk.Platform(f"http://127.0.0.1:{port}", data), chat=True)
    finally:
        assert cli.stop() == 0, cli.log()[-3000:]
    out = capsys.readouterr().out
    assert "walk-through passed" in out and "transcript:" in out and "assistant:" in out
    assert walk.processes_under(data) == []
