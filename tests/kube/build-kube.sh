#!/usr/bin/env bash
# Build (once) and cache the Kubernetes test binaries from Debian's `kubernetes` source package: kube-apiserver and
# kube-controller-manager (the API-only harness), plus kube-scheduler, kubelet and kube-proxy (the full node of
# tests/kube/cluster.py); etcd and kubectl from Debian. Idempotent: a cached build is reused.
# `build-kube.sh api` builds only the first two (what tests/kube/harness.py needs).
# The vendored github.com/modern-go/reflect2 1.0.1 crashes kube-apiserver under Go >= 1.18 ("fatal error: fault" in
# map iteration), so it is swapped for Debian's 1.0.2; `make WHAT=...` (not `go build`) runs the code generators.
set -euo pipefail
CACHE="${FOUNDRY_KUBE_CACHE:-$HOME/.cache/foundry-inference/kube}"
BIN="$CACHE/bin"
log() { printf '{"component":"build-kube","msg":"%s"}\n' "$*" >&2; }

apt_install() {
  local missing=()
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  if [ ${#missing[@]} -gt 0 ]; then
    log "apt-get install ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null
  fi
}

WANT=(kube-apiserver kube-controller-manager)
[ "${1:-all}" = "api" ] || WANT+=(kube-scheduler kubelet kube-proxy)
have_all=1
for what in "${WANT[@]}"; do [ -x "$BIN/$what" ] || have_all=0; done
if [ "$have_all" = 1 ] && command -v etcd >/dev/null; then
  log "cached binaries in $BIN"
  exit 0
fi

SRC_LIST=/etc/apt/sources.list.d/foundry-deb-src.sources
if ! grep -rqs '^Types:.*deb-src' /etc/apt/sources.list.d/ ; then
  log "adding deb-src entry"
  awk 'BEGIN{RS="";ORS="\n\n"} /Suites: bookworm/ && !/security/ {sub(/Types: deb/,"Types: deb-src"); print}' \
    /etc/apt/sources.list.d/debian.sources > "$SRC_LIST"
fi
DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null
apt_install golang-go etcd-server rsync golang-github-modern-go-reflect2-dev dpkg-dev
command -v kubectl >/dev/null || apt_install kubernetes-client

mkdir -p "$CACHE/src" "$BIN"
cd "$CACHE/src"
if ! ls kubernetes_*.orig.tar.gz >/dev/null 2>&1; then
  log "downloading the kubernetes source package"
  apt-get source --download-only kubernetes >/dev/null
fi
if [ ! -d tree ]; then
  log "unpacking"
  mkdir -p tree.tmp
  tar -xzf kubernetes_*.orig.tar.gz -C tree.tmp --strip-components=1
  rm -rf tree.tmp/vendor/github.com/modern-go/reflect2
  cp -r /usr/share/gocode/src/github.com/modern-go/reflect2 tree.tmp/vendor/github.com/modern-go/reflect2
  mv tree.tmp tree
fi
cd tree
export GOFLAGS=-mod=vendor GO111MODULE=on CGO_ENABLED=0 GOCACHE="$CACHE/gocache"
for what in "${WANT[@]}"; do
  if [ ! -x "$BIN/$what" ]; then
    log "building $what (minutes on 2 cores; the Go build cache in $CACHE/gocache makes the next one faster)"
    make WHAT=cmd/$what >"$CACHE/build-$what.log" 2>&1 || { tail -50 "$CACHE/build-$what.log"; exit 1; }
    cp _output/bin/$what "$BIN/$what.tmp" && mv "$BIN/$what.tmp" "$BIN/$what"
  fi
done
log "built into $BIN"
