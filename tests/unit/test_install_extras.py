"""The package's dependencies are split by component (setup.cfg extras): the platform (control plane, operator,
model fetcher, auth proxy) imports no inference runtime, the predictive server none of the chat stack, the chat
server no image library; each image installs its own extra (locked); a command whose extra is missing says which one."""
import configparser
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit
REPO = Path(__file__).resolve().parents[2]
CHAT_STACK = ("onnxruntime_genai", "faster_whisper", "ctranslate2", "av", "tokenizers", "jinja2")
RUNTIMES = ("onnxruntime", "numpy", "PIL", *CHAT_STACK)


def _imports(modules, blocked, code=""):
    """Import `modules` in a fresh interpreter where each of `blocked` fails to import; returns the process."""
    script = (f"import sys\nfor m in {list(blocked)!r}: sys.modules[m] = None\n"
              f"import importlib\nfor m in {list(modules)!r}: importlib.import_module(m)\n{code}")
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          cwd=os.path.dirname(sys.executable))


def test_the_platform_imports_no_inference_runtime():
    done = _imports(["foundry_inference.cli", "foundry_inference.apps.controlplane.app",
                     "foundry_inference.operator.main", "foundry_inference.operator.fetch",
                     "foundry_inference.apps.authproxy", "foundry_inference.operator.model_push"], RUNTIMES)
    assert done.returncode == 0, done.stderr[-2000:]


def test_the_predictive_server_needs_no_chat_stack_and_the_chat_server_no_image_library():
    done = _imports(["foundry_inference.apps.predictive.server"], CHAT_STACK)
    assert done.returncode == 0, done.stderr[-2000:]
    done = _imports(["foundry_inference.apps.chat.server"], ("PIL",))
    assert done.returncode == 0, done.stderr[-2000:]


def test_each_image_installs_only_its_extra():
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    core = cfg["options"]["install_requires"]
    for heavy in ("onnxruntime", "onnxruntime-genai", "faster-whisper", "numpy", "pillow"):
        assert heavy not in core, f"{heavy} is in install_requires: every image would carry it"
    extras = cfg["options.extras_require"]
    assert "onnxruntime-genai" in extras["chat"] and "pillow" not in extras["chat"]
    assert "pillow" in extras["predictive"] and "faster-whisper" not in extras["predictive"]
    assert {line for line in extras["all"].split("\n") if line} == \
        {line for name in ("chat", "predictive") for line in extras[name].split("\n") if line}
    # what each image installs is its locked requirements (tests/unit/test_image_locks.py checks them)


def test_a_command_whose_extra_is_missing_names_it():
    code = ("from foundry_inference import cli\n"
            "sys.exit(cli.main(['predictive-server']))")
    done = _imports([], ("numpy", "onnxruntime"), code)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "needs the `predictive` extra (pip install 'foundry-inference[predictive]')" in done.stderr
    assert "Traceback" not in done.stderr
