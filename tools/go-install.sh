#!/usr/bin/env bash
# Build a pinned Go tool into .tools/bin with `go install`, once per version.
#
#   tools/go-install.sh NAME MODULE VERSION [VERSION_VARIABLE]
#
# The tool is built inside a small wrapper module under .tools/build that requires
# MODULE@VERSION, so go.sum pins every dependency and the build does not depend on the
# module proxy's version listing. VERSION_VARIABLE, when given, is set with -ldflags -X
# so `NAME version` reports the pin. A stamp in .tools/stamps marks a finished build.
set -euo pipefail

name=$1 module=$2 version=$3 version_var=${4:-}
root=$(cd "$(dirname "$0")/.." && pwd)
stamp=$root/.tools/stamps/$name-$version
if [[ -f $stamp && -x $root/.tools/bin/$name ]]; then
  exit 0
fi

build=$root/.tools/build/$name-$version
mkdir -p "$build" "$root/.tools/bin" "$root/.tools/stamps"
cd "$build"
if [[ ! -f go.mod ]]; then
  go mod init "tools/$name" >/dev/null 2>&1
fi
echo "building $name $version (go install $module)"
GOFLAGS=-mod=mod go get "$module@$version"
ldflags=""
if [[ -n $version_var ]]; then
  ldflags="-X $version_var=${version#v}"
fi
GOFLAGS=-mod=mod GOBIN=$root/.tools/bin go install -ldflags "$ldflags" "$module"
rm -f "$root/.tools/stamps/$name"-*
touch "$stamp"
