#!/usr/bin/env bash
# Re-lock the Python requirements of the images in docker/ (docker/requirements/<image>.txt): every package pinned
# with the SHA-256 of each of its files on PyPI, resolved for CPython 3.11 on Linux from setup.cfg's requirements
# (+ docker/requirements/<image>.in). The Dockerfiles install them with `pip install --require-hashes`; the test
# cluster's image cache key includes them (tests/kube/images.py). Run after changing a requirement in setup.cfg or
# to take upgrades, then rebuild the images and run the cluster tests:
#
#   bash scripts/lock-images.sh            # all three images
#   bash scripts/lock-images.sh chat       # one
set -euo pipefail
cd "$(dirname "$0")/.."
say() { printf '[lock] %s\n' "$*" >&2; }
TOOLS="${FOUNDRY_CACHE:-$HOME/.cache/foundry-inference}/lock-venv"
if [ ! -x "$TOOLS/bin/pip-compile" ]; then
  say "creating $TOOLS with pip-tools"
  python3 -m venv "$TOOLS"
  "$TOOLS/bin/pip" install -q "pip-tools==7.6.2"
fi
images=("$@")
[ ${#images[@]} -eq 0 ] && images=(platform predictive chat)
for image in "${images[@]}"; do
  case "$image" in
    platform) extra=() ;;
    predictive|chat) extra=(--extra "$image") ;;
    *) echo "unknown image $image (platform, predictive or chat)" >&2; exit 2 ;;
  esac
  sources=(pyproject.toml)
  [ -f "docker/requirements/$image.in" ] && sources+=("docker/requirements/$image.in")
  say "resolving $image (a minute or two)"
  # PIP_FIND_LINKS: a machine's local wheel folder must not leak into the lock
  PIP_FIND_LINKS= "$TOOLS/bin/pip-compile" -q --generate-hashes --no-emit-index-url --no-emit-find-links \
    --strip-extras --allow-unsafe "${extra[@]}" -o "docker/requirements/$image.txt" "${sources[@]}"
done
say "done: docker/requirements/{$(IFS=,; echo "${images[*]}")}.txt"
