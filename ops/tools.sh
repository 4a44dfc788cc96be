#!/usr/bin/env bash
# ops/tools.sh installs what Slicehub needs on a machine: the Debian packages
# (Chromium, mmdebstrap, nginx, wrk, tini) and the HashiCorp agents.
#
# nomad and consul are taken from PATH when a good enough version is there.
# Otherwise they are built from the MPL releases' module source into ./bin,
# because no binary release can be downloaded here (see
# ../shared/docs/architecture.md for why these exact versions and edits).
# A second run finds everything in place and takes a second or two.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
bin="$root/bin"
mkdir -p "$bin"
export CHECKPOINT_DISABLE=1

NOMAD_VERSION=v1.6.1
NOMAD_API_PSEUDO=v0.0.0-20230721134942-515895c7690c
CONSUL_VERSION=v1.14.11

log() { printf 'tools: %s\n' "$*" >&2; }

# ---- Debian packages --------------------------------------------------------
# command-name:package pairs; a package is installed only when its command is missing.
debs=(chromium:chromium mmdebstrap:mmdebstrap nginx:nginx wrk:wrk tini:tini psql:postgresql-client-15 openssl:openssl)
missing=()
for pair in "${debs[@]}"; do
  cmd=${pair%%:*} pkg=${pair##*:}
  if ! command -v "$cmd" >/dev/null 2>&1 && ! [ -x "/usr/sbin/$cmd" ] && ! [ -x "/usr/bin/$cmd" ]; then
    missing+=("$pkg")
  fi
done
# PostgreSQL server binaries (initdb, pg_ctl, postgres) live outside PATH on Debian.
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && ! command -v initdb >/dev/null 2>&1; then
  missing+=(postgresql)
fi
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ]; then
    log "installing Debian packages: ${missing[*]}"
    # An apt list older than this boot may not know the packages: update once.
    if [ ! -f /var/lib/apt/periodic/slicehub-updated ] || [ -n "${SLICEHUB_APT_UPDATE:-}" ]; then
      apt-get update -qq
      mkdir -p /var/lib/apt/periodic && touch /var/lib/apt/periodic/slicehub-updated
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    log "missing Debian packages; run as root:"
    log "  apt-get update && apt-get install -y --no-install-recommends ${missing[*]}"
    exit 1
  fi
fi

# ---- HashiCorp agents ----------------------------------------------------------
# version_ok CMD MIN_MAJOR MIN_MINOR: true when CMD (a path) reports at least that version.
version_ok() {
  local v
  # Read all of the output first: `head` closing the pipe early would make
  # the agent die of SIGPIPE and, under pipefail, look like a failure.
  v=$("$1" version 2>/dev/null) || return 1
  v=$(printf '%s\n' "$v" | sed -n -E '1s/^[A-Za-z]+ v?([0-9]+)\.([0-9]+).*/\1 \2/p')
  set -- $v "$2" "$3"
  [ $# -eq 4 ] || return 1
  [ "$1" -gt "$3" ] || { [ "$1" -eq "$3" ] && [ "$2" -ge "$4" ]; }
}

# build_from_module MODULE VERSION OUT EDIT_FN: copies the module's source out
# of the module cache, lets EDIT_FN fix its go.mod, and builds the main package.
build_from_module() {
  local mod=$1 ver=$2 out=$3 edit=$4
  local src work
  src=$(cd /tmp && GOFLAGS=-mod=mod go mod download -json "$mod@$ver" 2>/dev/null | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
  [ -n "$src" ] || { log "could not download $mod@$ver"; return 1; }
  work=$(mktemp -d)
  cp -r "$src/." "$work/"
  chmod -R u+w "$work"
  # The build prints hundreds of "go: downloading" lines: keep them in a log,
  # and show its tail only when the build fails.
  local buildlog="$bin/.build-$(basename "$out").log"
  if ! (cd "$work" && "$edit" && GOFLAGS=-mod=mod CGO_ENABLED=1 go build -trimpath -o "$out" .) >"$buildlog" 2>&1; then
    tail -n 30 "$buildlog" >&2
    rm -rf "$work"
    return 1
  fi
  rm -rf "$work"
}

nomad_edit() { go mod edit -replace "github.com/hashicorp/nomad/api=github.com/hashicorp/nomad/api@$NOMAD_API_PSEUDO"; }
consul_edit() { sed -i -E '/^replace github.com\/hashicorp\/consul\/(api|sdk|proto-public) => /d' go.mod; }

ensure_agent() {
  local name=$1 minmaj=$2 minmin=$3 mod=$4 ver=$5 edit=$6
  local onpath
  if [ -x "$bin/$name" ] && version_ok "$bin/$name" "$minmaj" "$minmin"; then return 0; fi
  onpath=$(command -v "$name" 2>/dev/null || true)
  if [ -n "$onpath" ] && [ "$onpath" != "$bin/$name" ] && version_ok "$onpath" "$minmaj" "$minmin"; then
    ln -sf "$onpath" "$bin/$name"; return 0
  fi
  log "building $name $ver from module source (about 2 minutes on 2 cores)"
  local t0=$SECONDS
  build_from_module "$mod" "$ver" "$bin/$name.tmp" "$edit"
  mv "$bin/$name.tmp" "$bin/$name"
  log "built $name in $((SECONDS - t0))s"
}

# The two builds are independent; run them side by side.
ensure_agent nomad 1 6 github.com/hashicorp/nomad "$NOMAD_VERSION" nomad_edit &
p1=$!
ensure_agent consul 1 14 github.com/hashicorp/consul "$CONSUL_VERSION" consul_edit &
p2=$!
rc=0
wait $p1 || rc=1
wait $p2 || rc=1
[ $rc -eq 0 ] || { log "building the agents failed"; exit 1; }
printf 'tools: %s, %s\n' "$("$bin/nomad" version | sed -n 1p)" "$("$bin/consul" version | sed -n 1p)" >&2

# stripe-mock, for the billing tests (Go module proxy; installs into GOBIN).
bash "$root/ops/stripe-mock.sh"
