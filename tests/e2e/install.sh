#!/usr/bin/env bash
# Installs what tests/e2e needs on a Debian 12 machine, as root: the registry clients
# (skopeo, podman) from Debian and the Python packages (pytest, oras) from PyPI.
# Idempotent: a second run installs nothing and does not touch the network.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export DEBIAN_FRONTEND=noninteractive

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }

# podman's recommended extras (buildah, slirp4netns, uidmap, fuse-overlayfs, ...) are for
# running containers rootless; the tests only pull, push, import and build manifest lists
# with the vfs storage driver, so they are left out.
pkgs=(skopeo podman ca-certificates)
# scripts/build-image.sh and its test (tests/e2e/test_image.py) pack the image with umoci;
# the k8s integration tests' API server (../shared/k8s/apiserver.sh) needs xz and openssl.
pkgs+=(umoci xz-utils openssl)
# tests/e2e/test_tls.py makes its CA and server certificate with openssl and reads the
# token challenge over HTTP/2 with curl.
pkgs+=(curl)
# tests/e2e/test_ui.py drives the web UI in Debian's headless Chromium (through the
# playwright package from PyPI, which never downloads a browser of its own).
pkgs+=(chromium)
# tests/e2e/test_import.py fills a real CNCF distribution registry
# (../shared/peers/distribution.sh) and imports its storage directory.
pkgs+=(docker-registry)
# The benchmark harness's smoke run (bench/smoke.sh, from scripts/test) stops the servers
# it times with kill(1), from procps (Priority: important, so absent from minimal images);
# it also needs skopeo, openssl, curl and docker-registry, installed above.
pkgs+=(procps)
# The PostgreSQL metadata tests run against a real server (tests/services/start.sh).
pkgs+=(postgresql)
# BERTH_E2E_REPLICAS=2 runs the client tests against two replicas behind nginx, which
# hands each request to the next replica (tests/e2e/replicas.py); for the TLS suite it
# passes TCP through to replicas serving HTTPS themselves (its stream module).
pkgs+=(nginx libnginx-mod-stream)
python3 -m pip --version >/dev/null 2>&1 || pkgs+=(python3-pip)
missing=()
for p in "${pkgs[@]}"; do installed "$p" || missing+=("$p"); done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "install.sh: apt-get install ${missing[*]}"
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The Docker CLI, for `docker login` in tests/e2e/test_auth.py (no engine is run: the CLI
# checks the credentials itself when none answers). Debian 12 has no client-only package:
# docker.io also brings dockerd, containerd and runc and starts the engine from its
# postinst. So only its `docker` binary (dynamically linked against libc alone) is taken
# out of the package; a docker CLI already on PATH is kept.
if ! command -v docker >/dev/null 2>&1; then
  echo "install.sh: the docker CLI from Debian's docker.io package (client binary only)"
  tmp=$(mktemp -d)
  chown _apt "$tmp" 2>/dev/null || true  # lets apt download as _apt (no warning)
  [ "${#missing[@]}" -gt 0 ] || apt-get update -qq
  (cd "$tmp" && apt-get download -qq docker.io)
  dpkg-deb -x "$tmp"/docker.io_*.deb "$tmp/pkg"
  install -m 0755 "$tmp/pkg/usr/bin/docker" /usr/local/bin/docker
  rm -rf "$tmp"
fi

# Debian's own python3 refuses pip installs outside a venv (PEP 668); the pinned test
# packages don't conflict with Debian's, so allow it (ignored by pips that predate it).
export PIP_BREAK_SYSTEM_PACKAGES=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
python3 -m pip install -q -r "$here/requirements.txt"

# The S3 blob store tests run against Garage, a real S3-compatible object store, built
# once from crates.io into ~/.cache/berth-ci/tools (reused by later runs; about 20 minutes
# of CPU the first time). Only the SQLite metadata engine is built in; no LTO, and
# opt-level 1: it serves tests on loopback, and LLVM's optimisation is most of the build.
tools=${BERTH_TOOLS_DIR:-$HOME/.cache/berth-ci/tools}
if [ ! -x "$tools/bin/garage" ]; then
  echo "install.sh: cargo install garage 2.5.0 into $tools"
  CARGO_TARGET_DIR="$tools/garage-target" CARGO_PROFILE_RELEASE_LTO=off CARGO_PROFILE_RELEASE_OPT_LEVEL=1 \
    CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 CARGO_PROFILE_RELEASE_DEBUG=0 \
    cargo install garage --version 2.5.0 --locked --root "$tools" \
      --no-default-features --features bundled-libs,sqlite
  rm -rf "$tools/garage-target"
fi

skopeo --version
podman --version
docker --version
umoci --version
chromium --version
"$tools/bin/garage" --version 2>/dev/null | head -1 || "$tools/bin/garage" --help | head -1
ls -d /usr/lib/postgresql/*/bin
python3 -c 'import oras.version, pytest; print("oras", oras.version.__version__, "/ pytest", pytest.__version__)'
