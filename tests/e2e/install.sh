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
python3 -m pip --version >/dev/null 2>&1 || pkgs+=(python3-pip)
missing=()
for p in "${pkgs[@]}"; do installed "$p" || missing+=("$p"); done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "install.sh: apt-get install ${missing[*]}"
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Debian's own python3 refuses pip installs outside a venv (PEP 668); the pinned test
# packages don't conflict with Debian's, so allow it (ignored by pips that predate it).
export PIP_BREAK_SYSTEM_PACKAGES=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
python3 -m pip install -q -r "$here/requirements.txt"

skopeo --version
podman --version
python3 -c 'import oras.version, pytest; print("oras", oras.version.__version__, "/ pytest", pytest.__version__)'
