"""The README's first command (`bash scripts/quickstart.sh`: setup, then `up --deploy-sample iris-classifier`)
followed, while it runs, by the docs/quickstart.md walk-through (tests/e2e/quickstart_walkthrough.py) with every
sample: predict over TLS, chat with the real `openai` client (streaming), transcribe a spoken clip, rotate a key,
delete and see the processes gone, exactly as a new user runs them one after the other.

The chat and Whisper samples need the chat stack (scripts/quickstart.sh installs it) and espeak-ng + sox for the
clip; without them this test skips on a developer machine and fails under CI (tests/support/require.py).
"""
from pathlib import Path

import pytest

from tests.e2e import quickstart_walkthrough as walk
from tests.support.procs import Cli, free_port, wait_http
from tests.support.require import require_module, require_tool, unavailable

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1500)]
QUICKSTART = Path(__file__).resolve().parents[2] / "scripts" / "quickstart.sh"


def _require_chat_stack():
    require_tool("nginx", "apt-get install nginx-light")
    for tool in ("espeak-ng", "sox"):
        require_tool(tool, "apt-get install espeak-ng sox")
    for module in ("openai", "faster_whisper", "onnxruntime_genai"):
        require_module(module, "bash scripts/quickstart.sh installs it")
    from foundry_inference import samples
    missing = [f"{name}: {why}" for name in samples.NAMES for state, why in [samples.status(name)]
               if state == "unavailable"]
    if missing:
        unavailable("chat samples: " + "; ".join(missing), topic="models")


def test_readme_quickstart_then_the_walkthrough_with_all_samples(tmp_path, capsys):
    _require_chat_stack()
    port = free_port()
    data = tmp_path / "data"
    cli = Cli("--data-dir", str(data), "--port", str(port), command=("bash", str(QUICKSTART)),
              log_path=tmp_path / "quickstart.log")
    try:
        wait_http(f"http://127.0.0.1:{port}/readyz", timeout=600, proc=cli.proc)
        # the README's command ends with the iris sample deployed and answering
        walk.wait_until(lambda: '"sample deployed and answering"' in cli.log() or cli.proc.poll() is not None,
                        600, "the quickstart's iris-classifier deployment to answer")
        assert '"sample deployed and answering"' in cli.log(), cli.log()[-3000:]
        from foundry_inference import samples
        walk.wait_until(lambda: cli.log().count('"sample ready"') + cli.log().count('"sample unavailable"')
                        >= len(samples.NAMES), 900, "the samples to be prepared")
        assert '"sample unavailable"' not in cli.log(), cli.log()[-3000:]
        walk.walkthrough(walk.Platform(f"http://127.0.0.1:{port}", data), chat=True)
        # the quickstart's own deployment was left alone by the walk-through's deletes
        platform = walk.Platform(f"http://127.0.0.1:{port}", data)
        assert platform.deployment("iris-classifier")["status"]["state"] == "Running"
        assert walk.processes_under(platform.workload_dir("iris-classifier"))
    finally:
        assert cli.stop() == 0, cli.log()[-3000:]
    out = capsys.readouterr().out
    assert "walk-through passed" in out and "transcript:" in out and "assistant:" in out
    assert walk.processes_under(data) == []
