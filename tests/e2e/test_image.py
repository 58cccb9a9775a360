"""Berth's own container image (scripts/build-image.sh), built without Docker: pushed into
the running Berth with skopeo, pulled back, unpacked with umoci, and started from the
unpacked root file system with chroot."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from conftest import DEFAULT_BERTH_BIN, missing, require_binary
from helpers import run

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "build-image.sh"


def crate_version() -> str:
    m = re.search(r'^version = "([^"]+)"', (ROOT / "Cargo.toml").read_text(), re.M)
    assert m, "no version in Cargo.toml"
    return m.group(1)


def test_own_image_round_trips_and_starts(registry, skopeo, client_env, repo, tmp_path):
    require_binary("umoci")
    require_binary("chroot")
    if os.geteuid() != 0:
        missing("root", "unpacking with owners and chroot need root")
    berth = os.environ.get("BERTH_BIN", DEFAULT_BERTH_BIN)
    if not os.access(berth, os.X_OK):
        pytest.fail(f"berth binary {berth} not found (set BERTH_BIN)", pytrace=False)

    layout = tmp_path / "layout"
    dest = f"docker://{registry}/{repo}:v1"
    build = run([SCRIPT, "--binary", berth, "--output", layout, "--tag", "v1", "--push", dest,
                 "--dest-tls-verify=false"], env=client_env, timeout=300)
    assert f"ghcr.io/berth-registry/berth:{crate_version()}" in build.stderr, build.stderr

    # What the registry now holds: a config with the user and the entrypoint.
    config = skopeo.inspect(skopeo.ref(repo, "v1"), "--config")
    assert config["config"]["User"] == "1000:1000"
    assert config["config"]["Entrypoint"] == ["/usr/local/bin/berth"]
    assert config["config"]["Cmd"][0] == "serve"
    assert config["architecture"] in ("amd64", "arm64") and config["os"] == "linux"

    # Pull it back and unpack it.
    pulled = tmp_path / "pulled"
    skopeo("copy", "--src-tls-verify=false", skopeo.ref(repo, "v1"), f"oci:{pulled}:v1")
    bundle = tmp_path / "bundle"
    run(["umoci", "unpack", "--image", f"{pulled}:v1", bundle])
    rootfs = bundle / "rootfs"

    # Only what the binary needs at run time.
    top = {p.name for p in rootfs.iterdir()}
    assert top <= {"usr", "etc", "var", "tmp", "lib", "lib64", "lib32", "libx32"}, top
    assert (rootfs / "usr/local/bin/berth").stat().st_size > 0
    assert (rootfs / "etc/ssl/certs/ca-certificates.crt").stat().st_size > 0
    assert "berth:x:1000:1000:" in (rootfs / "etc/passwd").read_text()
    assert "berth:x:1000:" in (rootfs / "etc/group").read_text()
    data = (rootfs / "var/lib/registry").stat()
    assert (data.st_uid, data.st_gid) == (1000, 1000)
    runtime = json.loads((bundle / "config.json").read_text())
    assert runtime["process"]["user"]["uid"] == 1000
    files = [p for p in rootfs.rglob("*") if p.is_file()]
    assert len(files) < 20, sorted(str(p.relative_to(rootfs)) for p in files)

    # It starts, as UID 1000, from the unpacked root file system alone.
    out = subprocess.run(["chroot", "--userspec=1000:1000", str(rootfs), "/usr/local/bin/berth",
                          "--version"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"berth {crate_version()}"
