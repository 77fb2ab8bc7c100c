#!/usr/bin/env bash
# `make images`: the adapter image and the two predictor images (CPU and CUDA), tagged as the chart and the
# compose files name them. docs/container-images.md.
#
#   scripts/images.sh build    build the three images (the default)
#   scripts/images.sh tags     print "name tag" for each image
#   scripts/images.sh sizes    print each image's size (buildah)
#   scripts/images.sh scan     pip-audit over each image's Python packages, and the Debian updates each
#                              image lacks (buildah; needs PyPI and Debian's archive, no other service)
#
# IMAGE_BUILDER=docker|buildah|auto (auto: docker when a Docker engine answers, buildah otherwise).
# With buildah (no Docker engine, e.g. CI here): the base is a Debian 12 root file system made locally
# with mmdebstrap (no registry of container images is needed), cached in build/images/ and in buildah's
# storage; layers are cached between runs (`--layers`), pip's downloads in a cache mount.
# CPU_TORCH_INDEX_URL: where the CPU image's torch comes from. The default, PyPI, gives the CUDA image's
# wheels, so the two predictor images share one package layer (one download, one build); the CPU-only
# index, https://download.pytorch.org/whl/cpu, gives a CPU image ~4 GB smaller where it can be reached.
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION=$(sed -nE 's/^appVersion: *"?([^"]+)"?.*/\1/p' charts/chatterbox-tts/Chart.yaml)
REGISTRY=${IMAGE_REGISTRY:-ghcr.io/chatterbox-serve}
ADAPTER_IMAGE=$REGISTRY/chatterbox-adapter:$VERSION
PREDICTOR_IMAGE=$REGISTRY/chatterbox-predictor:$VERSION
PREDICTOR_CUDA_IMAGE=$REGISTRY/chatterbox-predictor:$VERSION-cuda
CPU_TORCH_INDEX_URL=${CPU_TORCH_INDEX_URL:-https://pypi.org/simple}
CUDA_TORCH_INDEX_URL=${CUDA_TORCH_INDEX_URL:-https://pypi.org/simple}
# The locally made base (buildah): Debian 12's Python 3.11, as python:3.11-slim-bookworm is, with the
# security and point-release updates of the day it is made. Its tag carries a hash of the recipe, so a
# changed recipe makes a new base; REFRESH_BASE=1 makes it anew (today's updates, then every layer again).
BASE_PACKAGES=python3,python3-venv,python-is-python3,ca-certificates,netbase,tzdata
BASE_SOURCES=(
  "deb http://deb.debian.org/debian bookworm main"
  "deb http://deb.debian.org/debian bookworm-updates main"
  "deb http://deb.debian.org/debian-security bookworm-security main"
)
BASE_RECIPE=$(printf '%s\n' "$BASE_PACKAGES" "${BASE_SOURCES[@]}" | sha256sum | cut -c1-8)
BASE_IMAGE=localhost/chatterbox-python-base:3.11-bookworm-$BASE_RECIPE
BASE_TAR=build/images/python-base-bookworm-$BASE_RECIPE.tar
CA_BUNDLE=${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
export BUILDAH_ISOLATION=${BUILDAH_ISOLATION:-chroot}

log() { echo "images: $*" >&2; }

builder() {
  case "${IMAGE_BUILDER:-auto}" in
    docker | buildah) echo "$IMAGE_BUILDER" ;;
    auto) if command -v docker >/dev/null && docker info >/dev/null 2>&1; then echo docker; else echo buildah; fi ;;
    *) echo "IMAGE_BUILDER must be docker, buildah or auto" >&2; exit 2 ;;
  esac
}

# buildah, mmdebstrap, and runc with iproute2 for the test that runs the images (tests/e2e/test_images.py).
ensure_tools() {
  local missing=()
  command -v buildah >/dev/null || missing+=(buildah)
  command -v mmdebstrap >/dev/null || missing+=(mmdebstrap)
  command -v runc >/dev/null || missing+=(runc)
  command -v ip >/dev/null || missing+=(iproute2)
  [ ${#missing[@]} -eq 0 ] && return
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    log "installing ${missing[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "error: ${missing[*]} needed (Debian: apt-get install ${missing[*]}), or a Docker engine" >&2
    exit 1
  fi
}

base_image() {
  local refresh=${REFRESH_BASE:-0}
  if [ "$refresh" != 1 ] && buildah inspect --type image "$BASE_IMAGE" >/dev/null 2>&1; then return; fi
  if [ "$refresh" = 1 ] || [ ! -s "$BASE_TAR" ]; then
    log "making the base root file system ($BASE_TAR) with mmdebstrap"
    mkdir -p "$(dirname "$BASE_TAR")"
    mmdebstrap --quiet --variant=minbase --format=tar --include="$BASE_PACKAGES" \
      --aptopt='APT::Install-Recommends "false"' \
      --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
      --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
      bookworm "$BASE_TAR.part" "${BASE_SOURCES[@]}"
    mv "$BASE_TAR.part" "$BASE_TAR"
  fi
  log "importing $BASE_TAR as $BASE_IMAGE"
  local ctr
  ctr=$(buildah from scratch)
  buildah add --quiet "$ctr" "$BASE_TAR" / >/dev/null
  buildah config --env LANG=C.UTF-8 --cmd python3 "$ctr"
  buildah commit --quiet --rm "$ctr" "$BASE_IMAGE" >/dev/null
}

build_buildah() {
  ensure_tools
  base_image
  # pip inside the build checks TLS against the image's CA bundle: lend it the host's (which knows any
  # proxy's authority). A RUN's mounts are not part of the image.
  local mounts=()
  [ -s "$CA_BUNDLE" ] && mounts+=(-v "$CA_BUNDLE:/etc/ssl/certs/ca-certificates.crt:ro")
  local common=(bud --layers --pull=never --build-arg "PYTHON_IMAGE=$BASE_IMAGE" "${mounts[@]}")
  bud_replacing adapter "$ADAPTER_IMAGE" docker/adapter.Dockerfile
  bud_replacing "predictor (CPU)" "$PREDICTOR_IMAGE" docker/predictor.Dockerfile \
    --build-arg "TORCH_INDEX_URL=$CPU_TORCH_INDEX_URL"
  bud_replacing "predictor (CUDA)" "$PREDICTOR_CUDA_IMAGE" docker/predictor-cuda.Dockerfile \
    --build-arg "TORCH_INDEX_URL=$CUDA_TORCH_INDEX_URL"
  sizes
}

# bud_replacing LABEL IMAGE DOCKERFILE [BUILD OPTIONS...]: `buildah bud` with build_buildah's common
# options, tagged IMAGE, then the image that IMAGE named before, if the build moved the name: it is
# nobody's now, and with it go its own layers (a changed package layer of the predictor is gigabytes), not
# those it shares with the new one (the layer cache). Without this every rebuild, as each `make test` does
# after a change, leaves the old images behind until the disk is full.
bud_replacing() {
  local label=$1 image=$2 dockerfile=$3 before after start=$SECONDS
  shift 3
  before=$(buildah images --quiet --no-trunc "$image" 2>/dev/null || true)
  buildah "${common[@]}" "$@" -f "$dockerfile" -t "$image" .
  after=$(buildah images --quiet --no-trunc "$image")
  if [ -n "$before" ] && [ "$before" != "$after" ]; then
    buildah rmi "$before" >/dev/null 2>&1 || log "kept the image $image named before ($before): it is still in use"
  fi
  log "$label: $((SECONDS - start)) s"
}

build_docker() {
  local start=$SECONDS
  docker build -f docker/adapter.Dockerfile -t "$ADAPTER_IMAGE" .
  docker build --build-arg "TORCH_INDEX_URL=$CPU_TORCH_INDEX_URL" -f docker/predictor.Dockerfile -t "$PREDICTOR_IMAGE" .
  docker build --build-arg "TORCH_INDEX_URL=$CUDA_TORCH_INDEX_URL" \
    -f docker/predictor-cuda.Dockerfile -t "$PREDICTOR_CUDA_IMAGE" .
  log "built in $((SECONDS - start)) s"
  docker image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep -F "$REGISTRY/" || true
}

sizes() {
  local image
  for image in "$ADAPTER_IMAGE" "$PREDICTOR_IMAGE" "$PREDICTOR_CUDA_IMAGE" "$BASE_IMAGE"; do
    buildah images --format '{{.Name}}:{{.Tag}} {{.Size}}' "$image" 2>/dev/null || echo "$image (not built)"
  done
}

# No image scanner (trivy, grype) is packaged on PyPI, npm or Debian, and their vulnerability databases
# come from hosts outside those registries. pip-audit (PyPA) covers the images' Python packages, where
# nearly all of their code is, given PyPI's JSON API or OSV (where neither answers, as in CI here, it
# says "could not be audited" for each package). apt lists the Debian updates (bookworm, bookworm-updates,
# bookworm-security) each image lacks: that needs only Debian's archive.
PIP_AUDIT=.tools/pip-audit/bin/pip-audit
PIP_AUDIT_VERSION=2.10.1
scan() {
  command -v buildah >/dev/null || { echo "error: scan needs buildah (make images)" >&2; exit 1; }
  if [ ! -x "$PIP_AUDIT" ]; then
    python3 -m venv .tools/pip-audit && .tools/pip-audit/bin/python -m pip install -q "pip-audit==$PIP_AUDIT_VERSION"
  fi
  local mounts=() image ctr rootfs status=0
  [ -s "$CA_BUNDLE" ] && mounts+=(-v "$CA_BUNDLE:/etc/ssl/certs/ca-certificates.crt:ro")
  for image in "$ADAPTER_IMAGE" "$PREDICTOR_IMAGE" "$PREDICTOR_CUDA_IMAGE"; do
    echo "== $image"
    ctr=$(buildah from --pull=never "$image")
    rootfs=$(buildah mount "$ctr")
    echo "-- Python packages (pip-audit, PyPI's advisories)"
    local report unaudited
    report=$("$PIP_AUDIT" --progress-spinner off --vulnerability-service pypi \
      --path "$rootfs/opt/venv/lib/python3.11/site-packages" 2>&1) || status=1
    unaudited=$(grep -c "could not be audited" <<<"$report" || true)
    grep -v "could not be audited" <<<"$report"
    if [ "$unaudited" -gt 0 ]; then
      # pip-audit still says "No known vulnerabilities found": that is not a result.
      echo "NOT AUDITED: $unaudited packages (no advisory service answered: PyPI's JSON API, OSV)"
      status=1
    fi
    echo "-- Debian packages with updates not in the image"
    buildah run --user 0:0 "${mounts[@]}" "$ctr" -- sh -c \
      'apt-get update -qq >/dev/null && apt-get -s -o Debug::NoLocking=1 upgrade | grep "^Inst" || echo none'
    buildah umount "$ctr" >/dev/null
    buildah rm "$ctr" >/dev/null
  done
  return $status
}

case "${1:-build}" in
  build) if [ "$(builder)" = docker ]; then build_docker; else build_buildah; fi ;;
  tags)
    echo "adapter $ADAPTER_IMAGE"
    echo "predictor $PREDICTOR_IMAGE"
    echo "predictor-cuda $PREDICTOR_CUDA_IMAGE"
    echo "base $BASE_IMAGE"
    ;;
  sizes) sizes ;;
  scan) scan ;;
  *) echo "usage: $0 [build|tags|sizes|scan]" >&2; exit 2 ;;
esac
