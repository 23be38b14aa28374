"""scripts/setup.sh stops on a failed install and names what failed (it used to swallow pip's failures and go on,
leaving a half-installed environment whose tests then skipped)."""
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.integration


def _checkout_copy(dest):
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout.split(b"\0")
    for name in filter(None, (f.decode() for f in files)):
        src = ROOT / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    return dest


def test_setup_stops_on_a_failed_pip_install_naming_the_package(tmp_path):
    repo = _checkout_copy(tmp_path / "repo")
    cfg = repo / "setup.cfg"
    text = cfg.read_text()
    cfg.write_text(text.replace("install_requires =\n", "install_requires =\n    foundry-no-such-package-zz9>=1\n", 1))
    proc = subprocess.run(["bash", "scripts/setup.sh"], cwd=repo, capture_output=True, text=True, timeout=600)
    assert proc.returncode != 0, proc.stderr[-3000:]
    assert "foundry-no-such-package-zz9" in proc.stderr
    assert "[setup] FAILED: pip install -e ." in proc.stderr
    assert "[setup] ready" not in proc.stderr


def test_setup_refuses_an_unknown_option(tmp_path):
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "setup.sh"), "--bogus"], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 1 and "unknown option --bogus" in proc.stderr
