"""End-to-end: `berth import-distribution` of a directory written by the real CNCF
distribution registry (issue 6).

The distribution registry (Debian `docker-registry`, started by
../shared/peers/distribution.sh) is filled with skopeo: an OCI image with several
layers, a Docker schema 2 image, a multi-platform index, a nested repository name and
an image deleted again (distribution deletes a manifest's tags with it). Its storage directory is imported into a fresh Berth data
directory; Berth then serves the same manifests byte for byte, and every image copies
out of it completely with skopeo. A second import copies nothing and changes nothing.

With BERTH_E2E_REPLICAS the import goes into running replicas instead: the CLI on their
PostgreSQL database and S3 bucket, while they serve, and skopeo reads through the
round-robin proxy (the way a team moves off registry:2 onto a scaled-out Berth).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from conftest import (
    DEFAULT_BERTH_BIN,
    READY_TIMEOUT_S,
    Skopeo,
    _free_port,
    _http_status,
    _log_tail,
    make_client_env,
    replica_count,
    require_binary,
    start_replicas,
    stop_server,
)
from helpers import new_image_layout, run

PEER = Path(__file__).resolve().parents[3] / "shared" / "peers" / "distribution.sh"

# (repository, tag) pairs pushed into distribution; "gone" is deleted after its push.
IMAGES = [
    ("library/app", "v1"),
    ("library/app", "v2"),
    ("team/sub/tool", "latest"),
    ("multi/arch", "1.0"),
    ("docker/fmt", "v1"),
]


@pytest.fixture(scope="module")
def distribution(tmp_path_factory):
    """A running distribution registry, filled by skopeo: (host, storage dir, skopeo)."""
    if os.environ.get("BERTH_E2E_EXTERNAL_URL"):
        pytest.skip("imports into a Berth data directory of its own")
    require_binary("skopeo")
    if not PEER.exists():
        pytest.fail(f"{PEER} not found: ../shared must sit beside the repository",
                    pytrace=False)
    base = tmp_path_factory.mktemp("dist")
    host = f"127.0.0.1:{_free_port()}"
    pid = run(["bash", str(PEER), "start", host, str(base / "data")], timeout=300).stdout.strip()
    try:
        skopeo = Skopeo(make_client_env(base / "containers"), host)
        src, _, _ = new_image_layout(base / "src", "v1", layers=3, layer_kib=(64, 128, 32))
        gone, _ = src.add_image(layers=2, layer_kib=(48,), label="gone")
        src.tag(gone, "gone")
        v2, _ = src.add_image(layers=2, layer_kib=(96, 16), label="v2")
        src.tag(v2, "v2")
        amd, _ = src.add_image(arch="amd64", layers=1, layer_kib=(24,))
        arm, _ = src.add_image(arch="arm64", layers=1, layer_kib=(24,))
        index, _ = src.add_index([(amd, "amd64", "linux"), (arm, "arm64", "linux")])
        src.tag(index, "multi")

        def push(tag: str, repo: str, *extra):
            skopeo("copy", "--dest-tls-verify=false", *extra, f"oci:{src.path}:{tag}",
                   skopeo.ref(*repo.split(":")))

        push("v1", "library/app:v1")
        push("v2", "library/app:v2")
        push("v1", "team/sub/tool:latest")
        push("multi", "multi/arch:1.0", "--all")
        push("v1", "docker/fmt:v1", "--format", "v2s2")
        push("gone", "library/app:gone")
        skopeo("delete", "--tls-verify=false", skopeo.ref("library/app", "gone"), check=False)
        yield host, base / "data" / "storage", skopeo
    finally:
        subprocess.run(["bash", str(PEER), "stop", pid], check=False)


@pytest.fixture(scope="module")
def imported(distribution, tmp_path_factory):
    """The distribution storage imported into a Berth that serves it: `cli(*args)` runs
    a berth command on that Berth's stores."""
    _, storage, _ = distribution
    berth = os.environ.get("BERTH_BIN", DEFAULT_BERTH_BIN)
    base = tmp_path_factory.mktemp("berth-import")
    if replica_count():
        reps = start_replicas(berth, base, ["--no-auth"])
        try:
            def cli(*args):
                return reps.cli(*args, timeout=300)

            first = cli("import-distribution", str(storage))
            yield {"host": reps.host, "cli": cli, "berth": berth, "first": first.stdout}
        finally:
            reps.stop()
        return
    data = base / "data"

    def cli(*args):
        return run([berth, *args, "--data-dir", str(data)], timeout=300)

    first = cli("import-distribution", str(storage))
    host = f"127.0.0.1:{_free_port()}"
    log_path = base / "berth.log"
    log = open(log_path, "wb")
    proc = subprocess.Popen([berth, "serve", "--no-auth", "--listen", host, "--data-dir",
                             str(data)], stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        for _ in range(READY_TIMEOUT_S * 10):
            if _http_status(f"http://{host}/readyz") == 200:
                break
            if proc.poll() is not None:
                pytest.fail(f"berth exited:\n{_log_tail(log_path)}", pytrace=False)
            subprocess.run(["sleep", "0.1"])
        yield {"host": host, "cli": cli, "berth": berth, "first": first.stdout}
    finally:
        stop_server(proc, log)


def test_import_reports_what_it_brought(imported):
    out = imported["first"]
    # 4 repositories; tags v1, v2, latest, 1.0, v1 (the deleted "gone" is not one).
    assert "imported 4 repositories, 5 tags" in out, out
    assert "problem" not in out, out


def test_imported_images_are_byte_identical_and_pull_completely(distribution, imported,
                                                                 tmp_path):
    dist_host, _, skopeo = distribution
    berth = Skopeo(skopeo.env, imported["host"])
    for repo, tag in IMAGES:
        theirs = skopeo.raw(skopeo.ref(repo, tag))
        ours = berth.raw(berth.ref(repo, tag))
        assert ours == theirs, f"{repo}:{tag}: the manifest differs after import"
        # Every blob comes out: copy all platforms to an OCI layout from each registry.
        a, b = tmp_path / f"{repo.replace('/', '_')}-{tag}-dist", tmp_path / f"{repo.replace('/', '_')}-{tag}-berth"
        skopeo("copy", "--all", "--src-tls-verify=false", skopeo.ref(repo, tag), f"oci:{a}:x")
        berth("copy", "--all", "--src-tls-verify=false", berth.ref(repo, tag), f"oci:{b}:x")
        blobs = lambda p: sorted(f.name for f in (p / "blobs" / "sha256").iterdir())  # noqa: E731
        assert blobs(a) == blobs(b), f"{repo}:{tag}: different blobs"
    tags = berth.inspect(berth.ref("library/app", "v1"), tags=True)["RepoTags"]
    assert sorted(tags) == ["v1", "v2"], tags


def test_a_second_import_copies_nothing_and_changes_nothing(distribution, imported):
    _, storage, skopeo = distribution
    berth = Skopeo(skopeo.env, imported["host"])
    # A tag moved in Berth since the first import stays where Berth has it.
    skopeo("copy", "--src-tls-verify=false", "--dest-tls-verify=false",
           berth.ref("library/app", "v2"), berth.ref("library/app", "v1"))
    moved = berth.raw(berth.ref("library/app", "v1"))
    again = imported["cli"]("import-distribution", str(storage)).stdout
    assert "copied 0 blobs" in again and "imported 4 repositories, 0 tags" in again, again
    assert "5 tags already present" in again, again
    fsck = imported["cli"]("fsck").stdout
    assert "fsck: clean" in fsck, fsck
    assert berth.raw(berth.ref("library/app", "v1")) == moved, "the import moved a tag back"


def test_a_directory_that_is_not_distribution_storage_is_refused(imported, tmp_path):
    proc = run([imported["berth"], "import-distribution", str(tmp_path), "--data-dir",
                str(tmp_path / "data")], check=False)
    assert proc.returncode != 0
    assert "is not a distribution (registry:2) storage directory" in proc.stderr, proc.stderr


def test_a_corrupt_blob_in_the_source_is_reported_and_not_stored(distribution, imported,
                                                                 tmp_path):
    import shutil

    _, storage, _ = distribution
    copy = tmp_path / "storage"
    shutil.copytree(storage, copy)
    layers = copy / "docker/registry/v2/repositories/team/sub/tool/_layers/sha256"
    victim = sorted(layers.iterdir())[0].name
    data = copy / f"docker/registry/v2/blobs/sha256/{victim[:2]}/{victim}/data"
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    data.write_bytes(bytes(raw))
    target = tmp_path / "data"
    proc = run([imported["berth"], "import-distribution", str(copy), "--data-dir", str(target)],
               check=False)
    assert proc.returncode != 0, proc.stdout
    assert f"sha256:{victim}" in proc.stdout and "does not match" in proc.stdout, proc.stdout
    # Everything else came in, and nothing corrupt was stored.
    assert "imported 4 repositories" in proc.stdout, proc.stdout
    fsck = run([imported["berth"], "fsck", "--data-dir", str(target)], check=False).stdout
    assert "CORRUPT" not in fsck, fsck
