#!/usr/bin/env bash
# Set up and run the whole test suite: system packages, the Kubernetes test binaries (built once, cached under
# ~/.cache/foundry-inference), the virtualenv, lint, then unit + integration + e2e tests against real components.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --test
bash tests/kube/build-kube.sh
.venv/bin/ruff check .
# Test models built once and cached under ~/.cache/foundry-inference/models (tiny chat model, SmolLM2 int4,
# all-MiniLM-L6-v2 ONNX).
.venv/bin/python tests/support/chat_models.py all
# The platform images from docker/ for the real-cluster tests (tests/e2e/test_cluster.py, root only): buildah on a
# debootstrap base, cached by content hash under ~/.cache/foundry-inference/images (cold: about 5 minutes).
if [ "$(id -u)" = 0 ]; then .venv/bin/python tests/kube/images.py >/dev/null; fi
# a prerequisite the suite needs and cannot find fails its tests instead of skipping them (tests/support/require.py)
export FOUNDRY_REQUIRE_ALL=1 FOUNDRY_REQUIRE_KUBE=1 FOUNDRY_REQUIRE_MODELS=1
set +e
.venv/bin/pytest -m "unit or integration or e2e" -p no:cacheprovider "$@"
rc=$?
set -e
if [ "$rc" = 5 ]; then echo "no tests collected" >&2; exit 1; fi
exit "$rc"
