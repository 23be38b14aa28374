"""The commonest Python habits work from the repository root: `python -m pip install -e .` in a fresh venv,
`python -m pytest`, `python -m foundry_inference.cli`. The root's operator/ folder must not shadow the standard
library's `operator` module (it has no __init__.py; foundry_inference maps it as a namespace subpackage)."""
import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.integration


def _run(args, **kwargs):
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=600, **kwargs)


@pytest.mark.parametrize("args", [["-m", "foundry_inference.cli", "--help"], ["-m", "pytest", "--version"],
                                  ["-c", "import operator, foundry_inference.operator.spec; print(operator.__file__)"]])
def test_python_dash_m_from_the_repository_root(args):
    proc = _run([sys.executable, *args])
    assert proc.returncode == 0, proc.stderr[-2000:]
    if args[0] == "-c":
        assert not proc.stdout.strip().startswith(str(ROOT)), "the root's operator/ shadowed the standard library"


def test_fresh_venv_pip_install_editable_from_the_repository_root(tmp_path):
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = str(env_dir / "bin" / "python")
    proc = _run([python, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-deps", "-e", "."])
    assert proc.returncode == 0, proc.stderr[-3000:]
    # the package's dependencies are not installed here (--no-deps): locate the modules without executing them
    probe = ("import importlib.util as u; "
             "print(u.find_spec('foundry_inference.operator.spec').origin); "
             "print(u.find_spec('foundry_inference.apps.predictive.server').origin)")
    proc = subprocess.run([python, "-c", probe], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == [str(ROOT / "operator" / "spec.py"), str(ROOT / "apps" / "predictive" / "server.py")]
