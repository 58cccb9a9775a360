"""End-to-end: podman push/pull (OCI and Docker schema 2) and multi-platform manifest lists.

Images are made without a Docker engine: `podman pull oci:DIR:tag` from a layout this suite
writes, or `podman import` of a tarball."""

from __future__ import annotations

import io
import json
import os
import tarfile

import pytest

from helpers import (
    DOCKER_CONFIG,
    DOCKER_LIST,
    DOCKER_MANIFEST,
    OCI_CONFIG,
    OCI_INDEX,
    OCI_MANIFEST,
    new_image_layout,
    sha256,
)

FORMATS = {
    "oci": (OCI_MANIFEST, OCI_CONFIG, OCI_INDEX),
    "v2s2": (DOCKER_MANIFEST, DOCKER_CONFIG, DOCKER_LIST),
}


def _rootfs_tar(path, label: str):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in (("etc/label", label.encode()), ("data/random.bin", os.urandom(96 * 1024))):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 1_600_000_000
            tar.addfile(info, io.BytesIO(data))
    path.write_bytes(buf.getvalue())
    return path


@pytest.mark.parametrize("fmt", ["oci", "v2s2"])
def test_push_remove_pull_same_image(podman, skopeo, repo, tmp_path, fmt):
    manifest_type, config_type, _ = FORMATS[fmt]
    src, desc, _ = new_image_layout(tmp_path / "src", "v1", layers=3)
    src_manifest = json.loads(src.blob(desc["digest"]))
    src_config = json.loads(src.blob(src_manifest["config"]["digest"]))

    image_id = podman("pull", f"oci:{src.path}:v1").stdout.split()[-1]
    # podman's image ID is the config digest.
    assert "sha256:" + image_id == src_manifest["config"]["digest"]

    target = f"{podman.registry}/{repo}:v1"
    podman("tag", image_id, target)
    digest_file = tmp_path / "digest"
    podman("push", "--tls-verify=false", "--format", fmt, "--digestfile", digest_file, target)
    pushed_digest = digest_file.read_text().strip()

    served = skopeo.raw(skopeo.ref(repo, "v1"))
    assert sha256(served) == pushed_digest
    m = json.loads(served)
    assert m["mediaType"] == manifest_type
    assert m["config"]["mediaType"] == config_type
    assert m["config"]["digest"] == src_manifest["config"]["digest"]  # config pushed as is
    assert len(m["layers"]) == 3
    assert skopeo.inspect(skopeo.ref(repo, "v1"))["Digest"] == pushed_digest

    # Remove everything locally, then pull it back from the registry.
    podman("rmi", "--all", "--force")
    assert podman.image_ids() == []
    pulled_id = podman("pull", "--tls-verify=false", target).stdout.split()[-1]
    assert pulled_id == image_id

    info = podman.inspect(target)
    assert info["Id"] == image_id
    assert info["Digest"] == pushed_digest
    assert f"{podman.registry}/{repo}@{pushed_digest}" in info["RepoDigests"]
    assert info["ManifestType"] == manifest_type
    assert info["Architecture"] == "amd64"
    # The layers' uncompressed contents are what we built.
    assert info["RootFS"]["Layers"] == src_config["rootfs"]["diff_ids"]

    # And by digest.
    podman("rmi", "--all", "--force")
    by_digest = f"{podman.registry}/{repo}@{pushed_digest}"
    assert podman("pull", "--tls-verify=false", by_digest).stdout.split()[-1] == image_id


def test_push_imported_image_and_pull_by_other_tag(podman, skopeo, repo, tmp_path):
    tar = _rootfs_tar(tmp_path / "rootfs.tar", "imported")
    local = "localhost/e2e/imported:1"
    image_id = podman("import", "--change", "CMD=[\"/etc/label\"]", tar, local).stdout.split()[-1]
    image_id = image_id.removeprefix("sha256:")
    for tag in ("one", "two"):
        podman("push", "--tls-verify=false", local, f"docker://{podman.registry}/{repo}:{tag}")
    tags = json.loads(skopeo("list-tags", "--tls-verify=false",
                             f"docker://{skopeo.registry}/{repo}").stdout)["Tags"]
    assert sorted(tags) == ["one", "two"]
    podman("rmi", "--all", "--force")
    pulled_id = podman("pull", "--tls-verify=false", f"{podman.registry}/{repo}:two").stdout.split()[-1]
    assert pulled_id == image_id
    assert podman.inspect(pulled_id)["Config"]["Cmd"] == ["/etc/label"]


def test_pull_unknown_tag_fails(podman, repo):
    proc = podman("pull", "--tls-verify=false", f"{podman.registry}/{repo}:nope", check=False)
    assert proc.returncode != 0
    assert "manifest unknown" in proc.stderr, proc.stderr


@pytest.mark.parametrize("fmt", ["oci", "v2s2"])
def test_manifest_list_push_all(podman, skopeo, repo, tmp_path, fmt):
    manifest_type, _, list_type = FORMATS[fmt]
    archs = ["amd64", "arm64"]
    images = {}
    for arch in archs:
        tar = _rootfs_tar(tmp_path / f"{arch}.tar", arch)
        local = f"localhost/e2e/{arch}:1"
        podman("import", "--arch", arch, "--os", "linux", tar, local)
        images[arch] = local

    list_name = f"localhost/e2e/list-{fmt}:v1"
    podman("manifest", "create", list_name)
    for arch in archs:
        podman("manifest", "add", "--arch", arch, "--os", "linux", list_name,
               f"containers-storage:{images[arch]}")
    digest_file = tmp_path / "digest"
    podman("manifest", "push", "--all", "--format", fmt, "--tls-verify=false",
           "--digestfile", digest_file, list_name, f"docker://{podman.registry}/{repo}:v1")

    served = skopeo.raw(skopeo.ref(repo, "v1"))
    assert sha256(served) == digest_file.read_text().strip()
    index = json.loads(served)
    assert index["mediaType"] == list_type
    assert len(index["manifests"]) == 2
    assert sorted(m["platform"]["architecture"] for m in index["manifests"]) == archs
    by_arch = {m["platform"]["architecture"]: m for m in index["manifests"]}
    for arch, entry in by_arch.items():
        assert entry["mediaType"] == manifest_type
        child = skopeo.raw(skopeo.ref(repo, entry["digest"]))
        assert sha256(child) == entry["digest"] and len(child) == entry["size"]
        info = skopeo.inspect(skopeo.ref(repo, "v1"), "--override-arch", arch,
                              "--override-os", "linux")
        assert info["Architecture"] == arch

    # podman pulls the arm64 instance on request.
    podman("rmi", "--all", "--force")
    podman("pull", "--tls-verify=false", "--arch", "arm64", f"{podman.registry}/{repo}:v1")
    info = podman.inspect(f"{podman.registry}/{repo}:v1")
    assert info["Architecture"] == "arm64"
    # podman records both the list's digest and the arm64 instance's digest.
    assert info["Digest"] == sha256(served)
    repo_digests = set(info["RepoDigests"])
    assert f"{podman.registry}/{repo}@{sha256(served)}" in repo_digests
    assert f"{podman.registry}/{repo}@{by_arch['arm64']['digest']}" in repo_digests
