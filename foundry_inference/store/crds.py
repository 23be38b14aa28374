"""Where the chart's CRD files are: the single source of truth for the custom resource schemas."""
import os
from pathlib import Path

_SOURCE_TREE = Path(__file__).resolve().parents[2] / "charts" / "foundry-inference" / "crds"
_IMAGE = Path("/opt/foundry-inference/crds")


def crd_directory():
    """FOUNDRY_CRD_DIR if set, else the chart in the source tree (editable installs), else the container image copy."""
    configured = os.environ.get("FOUNDRY_CRD_DIR")
    if configured:
        return Path(configured)
    return _SOURCE_TREE if _SOURCE_TREE.is_dir() else _IMAGE
