#!/usr/bin/env bash
# Set up and run the platform in embedded mode on this machine (no cluster needed). Ctrl-C stops it; state is kept
# in --data-dir (default ~/.local/share/foundry-inference) for the next start.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/foundry-inference up "$@"
