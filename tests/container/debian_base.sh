#!/usr/bin/env bash
# The local stand-in for python:3.11-slim-bookworm that tests/container builds the images from
# (no registry of container images is reachable here): Debian bookworm from debootstrap, with
# Debian's python3.11 and venv, `python` on PATH, and the host's CA bundle trusted, because HTTPS
# to the package index may pass a TLS-intercepting proxy. That trust is this harness's concern;
# the Dockerfile itself assumes an ordinary network.
#   bash tests/container/debian_base.sh IMAGE CACHE_DIR
# The debootstrap root file system is cached as a tarball in CACHE_DIR (~2 minutes cold, seconds
# warm); the image is rebuilt from it when podman's store lacks it. Podman's runtime and ulimits
# come from the caller's CONTAINERS_CONF.
set -euo pipefail
image="${1:?usage: debian_base.sh IMAGE CACHE_DIR}"
cache="${2:?usage: debian_base.sh IMAGE CACHE_DIR}"
tarball="$cache/debian-bookworm-python3.11.tar"
host_ca="${HOST_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}"

if podman image exists "$image"; then
  exit 0
fi
mkdir -p "$cache"
if [ ! -s "$tarball" ]; then
  rootfs="$(mktemp -d "$cache/rootfs.XXXXXX")"
  trap 'rm -rf "$rootfs"' EXIT
  debootstrap --variant=minbase --include=python3,python3-venv,python-is-python3,ca-certificates \
    bookworm "$rootfs" >"$cache/debootstrap.log" 2>&1 \
    || { tail -n 30 "$cache/debootstrap.log" >&2; exit 1; }
  rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/archives/*.deb
  tar -C "$rootfs" -cf "$tarball.part" . && mv "$tarball.part" "$tarball"
  rm -rf "$rootfs"
fi
context="$(mktemp -d)"
trap 'rm -rf "$context"' EXIT
cp "$host_ca" "$context/host-ca.crt"
podman import "$tarball" "$image-rootfs" >/dev/null
cat >"$context/Containerfile" <<CONTAINERFILE
FROM $image-rootfs
COPY host-ca.crt /usr/local/share/ca-certificates/host-ca.crt
RUN update-ca-certificates >/dev/null
# pip's bundled certifi would not know the local CA; the system bundle now does.
ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt
CONTAINERFILE
podman build --network host -t "$image" "$context" >/dev/null
