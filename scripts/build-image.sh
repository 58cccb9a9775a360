#!/usr/bin/env bash
# Builds Berth's own container image without Docker, as an OCI image layout, and can
# push it with skopeo.
#
# The image holds only what the binary needs at run time: /usr/local/bin/berth, the
# shared libraries it links (as ldd resolves them, with the dynamic loader), the CA
# certificates, and /etc/passwd and /etc/group entries for the `berth` user (UID/GID
# 1000, home /var/lib/registry). It runs as 1000:1000, entrypoint berth, command
# `serve --listen 0.0.0.0:5000 --data-dir /var/lib/registry`.
#
# Its reference is ghcr.io/berth-registry/berth:<crate version> — the default `image` of
# `berth k8s render|deploy`. Push it wherever your cluster pulls from (or load the
# --archive into KinD/k3s) and point `--image` / localRegistry.image at it.
#
# Usage:
#   scripts/build-image.sh [--binary PATH] [--output DIR] [--tag TAG]
#                          [--push docker://HOST/REPO:TAG [--dest-tls-verify=false]]
#                          [--archive FILE]
#     --binary   the berth binary (default: $CARGO_TARGET_DIR/release/berth, built if missing)
#     --output   the OCI image layout directory (default: target/image; replaced)
#     --tag      the tag inside the layout (default: the crate version)
#     --push     copy the image there with skopeo (any skopeo destination)
#     --archive  also write a docker-archive tarball tagged with the image's reference
#                (for `kind load image-archive FILE` or `k3s ctr images import FILE`)
# Needs: umoci, skopeo (for --push/--archive), ldd, and root (so that files are owned
# by the right users inside the image).
set -euo pipefail
cd "$(dirname "$0")/.."

die() { echo "build-image.sh: $*" >&2; exit 1; }

version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n1)
[ -n "$version" ] || die "cannot read the version from Cargo.toml"
reference="ghcr.io/berth-registry/berth:$version"

binary="" output="target/image" tag="$version" push="" archive="" tls_verify=true
while [ $# -gt 0 ]; do
  case "$1" in
    --binary) binary=$2; shift 2 ;;
    --output) output=$2; shift 2 ;;
    --tag) tag=$2; shift 2 ;;
    --push) push=$2; shift 2 ;;
    --archive) archive=$2; shift 2 ;;
    --dest-tls-verify=false) tls_verify=false; shift ;;
    --dest-tls-verify=true|--dest-tls-verify) tls_verify=true; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
done

command -v umoci >/dev/null || die "umoci is not installed (apt-get install umoci)"
if [ -n "$push$archive" ]; then
  command -v skopeo >/dev/null || die "skopeo is not installed (apt-get install skopeo)"
fi
if [ -z "$binary" ]; then
  binary="${CARGO_TARGET_DIR:-target}/release/berth"
  [ -x "$binary" ] || cargo build --release --locked -p berth
fi
[ -x "$binary" ] || die "$binary is not an executable"
ca=/etc/ssl/certs/ca-certificates.crt
[ -f "$ca" ] || die "$ca is missing (apt-get install ca-certificates)"

case "$(uname -m)" in
  x86_64) arch=amd64 ;;
  aarch64|arm64) arch=arm64 ;;
  *) arch=$(uname -m) ;;
esac

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root="$work/rootfs"
mkdir -p "$root/usr/local/bin" "$root/etc/ssl/certs" "$root/var/lib/registry" "$root/tmp"
install -m 0755 "$binary" "$root/usr/local/bin/berth"

# Shared libraries, at the paths the binary looks for them (the loader's included).
# A static binary has none ("not a dynamic executable").
libs=$(ldd "$binary" 2>/dev/null | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}' || true)
for lib in $libs; do
  [ -e "$lib" ] || die "ldd names $lib, which does not exist"
  mkdir -p "$root$(dirname "$lib")"
  cp -L "$lib" "$root$lib"
done

cp -L "$ca" "$root/etc/ssl/certs/ca-certificates.crt"
cat >"$root/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/sbin/nologin
berth:x:1000:1000:Berth registry:/var/lib/registry:/sbin/nologin
EOF
cat >"$root/etc/group" <<'EOF'
root:x:0:
berth:x:1000:
EOF
chmod 0644 "$root/etc/passwd" "$root/etc/group" "$root/etc/ssl/certs/ca-certificates.crt"
chmod 1777 "$root/tmp"
chmod 0750 "$root/var/lib/registry"
if [ "$(id -u)" -eq 0 ]; then
  chown -R 0:0 "$root"
  chown 1000:1000 "$root/var/lib/registry"
else
  echo "build-image.sh: not root: /var/lib/registry in the image belongs to root, not 1000" >&2
fi

rm -rf "$output"
mkdir -p "$(dirname "$output")"
image="$output:$tag"
umoci init --layout "$output"
umoci new --image "$image"
rootless=()
[ "$(id -u)" -eq 0 ] || rootless=(--rootless)
umoci insert "${rootless[@]}" --image "$image" --history.created_by "scripts/build-image.sh" "$root" /
umoci config --image "$image" \
  --os linux --architecture "$arch" \
  --author "Berth" \
  --config.user 1000:1000 \
  --config.entrypoint /usr/local/bin/berth \
  --config.cmd serve --config.cmd --listen --config.cmd 0.0.0.0:5000 \
  --config.cmd --data-dir --config.cmd /var/lib/registry \
  --config.env PATH=/usr/local/bin \
  --config.env SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
  --config.workingdir /var/lib/registry \
  --config.exposedports 5000/tcp \
  --config.volume /var/lib/registry \
  --config.label "org.opencontainers.image.title=berth" \
  --config.label "org.opencontainers.image.version=$version" \
  --config.label "org.opencontainers.image.ref.name=$reference" \
  --history.created_by "scripts/build-image.sh (config)"
umoci gc --layout "$output"
echo "built oci:$image ($reference, linux/$arch)" >&2

# The source is the layout just built here: no signature to check.
policy="$work/policy.json"
echo '{"default":[{"type":"insecureAcceptAnything"}]}' >"$policy"
if [ -n "$push" ]; then
  skopeo --policy "$policy" copy --dest-tls-verify="$tls_verify" "oci:$image" "$push"
  echo "pushed $push" >&2
fi
if [ -n "$archive" ]; then
  rm -f "$archive"
  skopeo --policy "$policy" copy "oci:$image" "docker-archive:$archive:$reference"
  echo "wrote $archive ($reference)" >&2
fi
