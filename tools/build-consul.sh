#!/usr/bin/env bash
# Build Consul (MPL-2.0 v1.14.11) from its Go module, once, into a cache outside
# the work tree, and print the binary's path on stdout.  Reused when present.
#
#   GLIMPSE_CONSUL=/path/to/consul   use that binary instead (no build)
#   GLIMPSE_CACHE=DIR                cache root (default ~/.cache/glimpse)
#
# The cache key is the wrapper module's go.sum plus `go version`, so a changed
# dependency pin or toolchain builds afresh instead of reusing a stale binary.
set -euo pipefail

VERSION=1.14.11
here="$(cd "$(dirname "$0")" && pwd)"
module="$here/consul"

die() { echo "build-consul: $*" >&2; exit 1; }

if [ -n "${GLIMPSE_CONSUL:-}" ]; then
    [ -x "$GLIMPSE_CONSUL" ] || die "GLIMPSE_CONSUL=$GLIMPSE_CONSUL is not an executable file; unset it to build Consul, or point it at a consul binary"
    echo "$GLIMPSE_CONSUL"
    exit 0
fi

command -v go >/dev/null 2>&1 || die "no Go toolchain on PATH. Install Go >= 1.24 (Debian: apt-get install golang-go, or the toolchain from go.dev), or set GLIMPSE_CONSUL=/path/to/consul"

cache="${GLIMPSE_CACHE:-$HOME/.cache/glimpse}"
out="$cache/consul-$VERSION"
bin="$out/consul"
key="$( (cat "$module/go.sum"; go version) | sha256sum | cut -c1-16)"

if [ -x "$bin" ] && [ "$(cat "$out/key" 2>/dev/null)" = "$key" ]; then
    echo "$bin"
    exit 0
fi

mkdir -p "$out"
echo "build-consul: building Consul v$VERSION into $bin (first time only: ~0.5 GB of modules, 10-20 minutes on 2 cores)" >&2
cd "$module"
go mod download github.com/hashicorp/consul >&2 || die "could not download the Consul module; check that the Go module proxy is reachable (GOPROXY=$(go env GOPROXY))"

# Licence guard: only the MPL-2.0 releases may be built.
src="$(go list -m -f '{{.Dir}}' github.com/hashicorp/consul)" \
    || die "go list could not find the downloaded Consul module (output above)"
grep -q "Mozilla Public License, version 2.0" "$src/LICENSE" \
    || die "$src/LICENSE is not MPL-2.0; refusing to build a Consul release under another licence"

tmp="$bin.tmp.$$"
build=""
# Nothing half-built is left behind, however this script ends.  On exit
# (set -e, die, or a signal below) a build still running is stopped and
# waited for first: bash dies on SIGTERM while its foreground child goes
# on, and a go build left running would write the temp binary after it was
# removed.  SIGKILL cannot be caught: its leftover is removed by the next
# run (below).
cleanup() {
    if [ -n "$build" ]; then
        kill "$build" 2>/dev/null || true
        wait "$build" 2>/dev/null || true
    fi
    rm -f "$tmp"
}
trap cleanup EXIT
trap 'exit 129' HUP
trap 'exit 130' INT
trap 'exit 143' TERM
# Temp binaries of earlier runs that were killed outright (their pid is gone).
for old in "$bin".tmp.*; do
    [ -e "$old" ] || continue
    kill -0 "${old##*.}" 2>/dev/null || rm -f "$old"
done
# In the background and waited for, so that a signal interrupts the wait
# and the trap runs at once rather than after a 20-minute build.
CGO_ENABLED=0 go build -trimpath -ldflags='-s -w -checklinkname=0' -o "$tmp" \
    github.com/hashicorp/consul >&2 &
build=$!
if ! wait "$build"; then
    build=""
    die "go build failed (output above). Try: go clean -modcache, then make consul again; or set GLIMPSE_CONSUL=/path/to/consul"
fi
build=""
# Read the whole output before matching it: `version | head -1` under
# pipefail failed whenever consul was still writing when head exited (SIGPIPE).
reported="$("$tmp" version)" || die "the built binary failed to run: $tmp version"
[ "${reported%%$'\n'*}" = "Consul v$VERSION" ] \
    || die "the built binary does not report Consul v$VERSION (it says: ${reported%%$'\n'*}); removed it"
mv "$tmp" "$bin"
echo "$key" > "$out/key"
echo "$bin"
