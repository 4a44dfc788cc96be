#!/usr/bin/env bash
# ops/image.sh builds the slice image, offline, and prints its reference.
#
#   1. The base image slicehub/base:bookworm-$BASE_REV (Debian bookworm minbase
#      with Chromium, fonts, CA certificates and tini) is built once with
#      mmdebstrap from this machine's own apt sources and `docker import`ed.
#      No image registry is reachable here, so nothing may be pulled.
#   2. The slice binary is built static (CGO_ENABLED=0) and reproducible
#      (-trimpath, no VCS stamp, empty build id): the same source gives the same
#      bytes, and so the same image tag.
#   3. The seccomp profile that lets Chromium's sandbox run in the container
#      (Docker's default profile plus user/pid/net namespaces for clone and
#      unshare; see jobs/README.md) is derived from the default profile of the
#      Docker release below, fetched as a Go module (it is not on disk in
#      Debian's docker.io), by `slice seccomp-profile`. It goes into the image
#      at /usr/share/slicehub/chromium-seccomp.json and into
#      bin/chromium-seccomp.json: the job's seccomp_profile variable must name
#      a copy on each Nomad client host.
#   4. `docker build` runs on a context holding only the binary, the seccomp
#      profile and slice/Dockerfile. The tag is a content hash of the three and
#      of the base image id: slicehub/slice:<12 hex>. Never `latest`: Nomad's
#      docker driver always tries to pull `latest`, and the pull fails here.
#
# The last line on stdout is the image reference; it is also written to
# bin/slice-image. Everything else goes to stderr. A second run with nothing
# changed only rebuilds the (cached) binary and takes a few seconds.
#
# Environment:
#   SLICEHUB_BASE_IMAGE   use this base instead of building slicehub/base
#   SLICEHUB_REBUILD_BASE=1  rebuild the base even if it exists
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

# Bump BASE_REV whenever the package list or the mmdebstrap options change:
# the tag is how a machine knows its base is current.
BASE_REV=2
BASE_PACKAGES=chromium,ca-certificates,fonts-liberation,tini
SOURCES=/etc/apt/sources.list.d/debian.sources
# The Docker release whose default seccomp profile the Chromium profile
# extends: the daemon's own (Debian bookworm's docker.io is 20.10.24).
DOCKER_SECCOMP_MODULE=github.com/docker/docker@v20.10.24+incompatible

log() { printf 'image: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

mkdir -p "$root/bin"
# Test packages run in parallel and may each call this script: one build at a
# time, the others then find the image up to date.
exec 9>"$root/bin/.image.lock"
flock 9

command -v docker >/dev/null || die "docker is not installed"
docker info >/dev/null 2>&1 || die "the docker daemon is not reachable"

# ---- 1. base image -----------------------------------------------------------
base=${SLICEHUB_BASE_IMAGE:-slicehub/base:bookworm-$BASE_REV}
if [ -n "${SLICEHUB_REBUILD_BASE:-}" ] || ! docker image inspect "$base" >/dev/null 2>&1; then
  [ -z "${SLICEHUB_BASE_IMAGE:-}" ] || die "base image $base does not exist"
  command -v mmdebstrap >/dev/null || die "mmdebstrap is missing (ops/tools.sh installs it)"
  [ -r "$SOURCES" ] || die "no apt sources at $SOURCES"
  log "building base image $base with mmdebstrap (about a minute)"
  t0=$SECONDS
  # path-exclude keeps documentation, man pages, translations and Chromium's
  # UI locales (all but en-US, which Chromium needs to start) out of the
  # image. Copyright files stay: the licences travel with the binaries.
  # The graphics stack is left out too: the slice runs Chromium with
  # --disable-gpu --in-process-gpu --disable-software-rasterizer (no GPU
  # process, no SwiftShader, compositing in software in the browser
  # process), and a running slice maps none of these files (checked in
  # /proc/<pid>/maps; jobs/README.md, "The image"). They come in as
  # dependencies only: libgl1-mesa-dri (Mesa's DRI/gallium drivers) through
  # libgl1/libglx-mesa0, libllvm15 and libz3-4 for Mesa's shader compilers,
  # and Chromium's own Vulkan pieces (SwiftShader, the validation layer, the
  # mock ICD). libgbm stays: chromium links it.
  # pipefail makes a failed mmdebstrap fail the import too.
  mmdebstrap --variant=minbase --include="$BASE_PACKAGES" \
    --aptopt='APT::Install-Recommends "false"' \
    --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/info/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    --dpkgopt='path-exclude=/usr/share/lintian/*' \
    --dpkgopt='path-exclude=/usr/lib/chromium/locales/*' \
    --dpkgopt='path-include=/usr/lib/chromium/locales/en-US.pak' \
    --dpkgopt='path-exclude=/usr/lib/x86_64-linux-gnu/dri/*' \
    --dpkgopt='path-exclude=/usr/lib/x86_64-linux-gnu/libLLVM*' \
    --dpkgopt='path-exclude=/usr/lib/x86_64-linux-gnu/libz3.so*' \
    --dpkgopt='path-exclude=/usr/lib/chromium/libvk_swiftshader.so' \
    --dpkgopt='path-exclude=/usr/lib/chromium/vk_swiftshader_icd.json' \
    --dpkgopt='path-exclude=/usr/lib/chromium/libVkLayer_khronos_validation.so' \
    --dpkgopt='path-exclude=/usr/lib/chromium/libVkICD_mock_icd.so' \
    --quiet \
    bookworm - "$SOURCES" |
    docker import \
      --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
      --change 'ENV LANG=C.UTF-8' \
      --message "mmdebstrap minbase bookworm +$BASE_PACKAGES (rev $BASE_REV)" \
      - "$base" >/dev/null
  log "built $base in $((SECONDS - t0))s ($(docker image inspect -f '{{.Size}}' "$base" | numfmt --to=iec))"
fi
base_id=$(docker image inspect -f '{{.Id}}' "$base")

# ---- 2. slice binary ---------------------------------------------------------
ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
CGO_ENABLED=0 GOOS=linux GOARCH=amd64 go build -trimpath -buildvcs=false \
  -ldflags='-s -w -buildid=' -o "$ctx/slice" ./cmd/slice
cp slice/Dockerfile "$ctx/Dockerfile"

# ---- 3. seccomp profile for Chromium (it goes into the image) -----------------
moddir=$(cd /tmp && GOFLAGS=-mod=mod go mod download -json "$DOCKER_SECCOMP_MODULE" 2>/dev/null |
  sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
[ -n "$moddir" ] && [ -r "$moddir/profiles/seccomp/default.json" ] ||
  die "cannot fetch Docker's default seccomp profile ($DOCKER_SECCOMP_MODULE)"
"$ctx/slice" seccomp-profile "$moddir/profiles/seccomp/default.json" >"$ctx/chromium-seccomp.json"
# Atomic: Nomad reads the file at every task start.
cp "$ctx/chromium-seccomp.json" "$root/bin/.chromium-seccomp.json.tmp"
mv "$root/bin/.chromium-seccomp.json.tmp" "$root/bin/chromium-seccomp.json"

# ---- 4. slice image ----------------------------------------------------------
hash=$( { sha256sum "$ctx/slice" "$ctx/Dockerfile" "$ctx/chromium-seccomp.json" | cut -d' ' -f1; echo "$base_id"; } | sha256sum | cut -c1-12)
ref=slicehub/slice:$hash
if docker image inspect "$ref" >/dev/null 2>&1; then
  log "$ref is up to date"
else
  log "building $ref"
  # This machine's docker CLI has no buildx plugin; the classic builder is
  # all that is needed for a COPY and a RUN, so ask for it explicitly instead
  # of relying on the CLI's fallback.
  # Its deprecation notice is noise; show the output only on failure.
  if ! out=$(DOCKER_BUILDKIT=0 docker build --quiet --pull=false \
    --build-arg "BASE=$base" -t "$ref" "$ctx" 2>&1); then
    printf '%s\n' "$out" >&2
    die "docker build failed"
  fi
fi
log "size $(docker image inspect -f '{{.Size}}' "$ref" | numfmt --to=iec)"

printf '%s\n' "$ref" >"$root/bin/slice-image"
printf '%s\n' "$ref"
