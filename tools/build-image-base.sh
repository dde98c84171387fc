#!/usr/bin/env bash
# A stand-in for the image's Python base, for the test that builds and runs the image
# (tests/test_image.py) on a Docker engine that cannot pull: Debian bookworm (minbase) with
# its Python 3.11 and venv, made with debootstrap from Debian's mirror, as a root filesystem
# tarball in .tools/images. The official python:3.11-slim-bookworm is the same Debian
# release and Python minor version.
#
#   tools/build-image-base.sh
#
# About 3 minutes cold; a stamp marks a finished build. debootstrap is installed with
# apt-get when missing.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
suite=bookworm
packages=python3,python3-venv
stamp=$root/.tools/stamps/image-base-$suite-${packages//,/-}
tarball=$root/.tools/images/python3-$suite.tar
if [[ -f $stamp && -f $tarball ]]; then
  exit 0
fi

sudo=()
if [[ $(id -u) -ne 0 ]]; then
  sudo=(sudo)
fi
if ! command -v debootstrap >/dev/null 2>&1; then
  echo "installing debootstrap (the image test's base)"
  "${sudo[@]}" apt-get update -q
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends debootstrap
fi

mkdir -p "$root/.tools/images" "$root/.tools/stamps"
work=$(mktemp -d)
trap '"${sudo[@]}" rm -rf "$work"' EXIT
echo "debootstrap $suite ($packages) for the image test's base"
"${sudo[@]}" debootstrap --variant=minbase --include="$packages" "$suite" "$work/rootfs" \
  http://deb.debian.org/debian >"$work/debootstrap.log" 2>&1 || {
  tail -n 20 "$work/debootstrap.log" >&2
  exit 1
}
"${sudo[@]}" rm -rf "$work/rootfs/var/cache/apt/archives/"*.deb "$work/rootfs/var/lib/apt/lists/"*
"${sudo[@]}" tar -C "$work/rootfs" -cf "$tarball.partial" .
mv "$tarball.partial" "$tarball"
touch "$stamp"
