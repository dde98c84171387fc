#!/usr/bin/env bash
# Build a pinned kube-apiserver into .tools/bin, and install etcd, for the tests that run a
# real Kubernetes API server (tests/kube.py).
#
#   tools/build-kube-apiserver.sh
#
# k8s.io/kubernetes cannot be `go install`ed: its go.mod replaces every k8s.io/* library with
# ./staging. The wrapper module tools/kube-apiserver requires it and replaces each of those
# libraries with its published v0.Y.Z; its committed go.sum pins every dependency, so the
# build runs with -mod=readonly. The version is the one that go.mod requires: change it there
# (and the replace block, and go.sum with `go mod tidy`). A stamp in .tools/stamps marks a
# finished build. etcd is Debian's etcd-server, installed with apt-get when missing.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
module=$root/tools/kube-apiserver

if ! command -v etcd >/dev/null 2>&1; then
  sudo=()
  if [[ $(id -u) -ne 0 ]]; then
    sudo=(sudo)
  fi
  echo "installing etcd-server (etcd for kube-apiserver)"
  "${sudo[@]}" apt-get update -q
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -q --no-install-recommends etcd-server
fi

version=$(awk '$1 == "k8s.io/kubernetes" && $2 ~ /^v/ { print $2; exit }' "$module/go.mod")
if [[ -z $version ]]; then
  echo "no k8s.io/kubernetes requirement in $module/go.mod" >&2
  exit 1
fi
stamp=$root/.tools/stamps/kube-apiserver-$version
binary=$root/.tools/bin/kube-apiserver
if [[ -f $stamp && -x $binary ]]; then
  exit 0
fi

mkdir -p "$root/.tools/bin" "$root/.tools/stamps"
cd "$module"
echo "building kube-apiserver $version (takes minutes: a few thousand packages)"
start=$SECONDS
ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$version"
ldflags+=" -X k8s.io/component-base/version.gitTreeState=clean"
GOFLAGS=-mod=readonly go build -trimpath -ldflags "$ldflags" -o "$binary.tmp" \
  k8s.io/kubernetes/cmd/kube-apiserver
mv "$binary.tmp" "$binary"
echo "built kube-apiserver $version in $((SECONDS - start))s ($(du -h "$binary" | cut -f1))"
rm -f "$root/.tools/stamps/kube-apiserver"-*
touch "$stamp"
