"""Golden manifests: readable YAML under tests/golden/operator/, reviewed by a human eye when they change.
FOUNDRY_UPDATE_GOLDEN=1 rewrites them instead of comparing."""
import os
from pathlib import Path

import yaml

GOLDEN_DIR = Path(__file__).resolve().parents[2] / "golden" / "operator"


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (the nginx config) as literal blocks; no anchors, so every object reads on its own."""

    def ignore_aliases(self, data):
        return True


def _str(dumper, value):
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def dump(objects):
    return yaml.dump_all(objects, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=120)


def check(name, objects):
    path = GOLDEN_DIR / f"{name}.yaml"
    text = f"# Golden manifest: {name}. Regenerate with FOUNDRY_UPDATE_GOLDEN=1 and review the diff.\n" + dump(objects)
    if os.environ.get("FOUNDRY_UPDATE_GOLDEN") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return
    assert path.exists(), f"missing golden {path}; run with FOUNDRY_UPDATE_GOLDEN=1 and review it"
    expected = list(yaml.safe_load_all(path.read_text()))
    assert objects == expected, f"{name} differs from {path}; run with FOUNDRY_UPDATE_GOLDEN=1 and review the diff"
