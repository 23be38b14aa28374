"""Every folder of Python code in the checkout is a package of the built distribution: setup.cfg lists packages
explicitly (operator/, apps/ and auth/ are mapped under foundry_inference), so a new subfolder left out of the list
is missing from every image and wheel while the source checkout still imports it."""
import configparser
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]


def _setup_cfg():
    parser = configparser.ConfigParser()
    parser.read(ROOT / "setup.cfg")
    options = parser["options"]
    mapping = dict(line.split(" = ") for line in options["package_dir"].strip().splitlines())
    listed = set(options["packages"].split())
    return mapping, listed


def test_every_folder_of_python_code_is_a_listed_package():
    mapping, listed = _setup_cfg()
    found = set()
    for package, folder in mapping.items():
        for source in (ROOT / folder).rglob("*.py"):
            rel = source.parent.relative_to(ROOT / folder)
            if "__pycache__" in rel.parts:
                continue
            found.add(".".join((package, *rel.parts)))
    assert found - listed == set(), f"folders of Python code missing from setup.cfg's packages: {found - listed}"
    assert listed - found == set(), f"packages listed in setup.cfg without a folder: {listed - found}"
