"""End-to-end: skopeo against the registry (push, pull, inspect, list-tags, delete)."""

from __future__ import annotations

import json
import random

import pytest

from helpers import (
    DOCKER_CONFIG,
    DOCKER_LAYER_GZIP,
    DOCKER_MANIFEST,
    OCI_INDEX,
    OCI_MANIFEST,
    Layout,
    new_image_layout,
    referenced_blobs,
    sha256,
)

NO_TLS_SRC = "--src-tls-verify=false"
NO_TLS_DEST = "--dest-tls-verify=false"


def _manifest(layout: Layout, desc: dict) -> dict:
    return json.loads(layout.blob(desc["digest"]))


def _assert_dir_copy(dir_path, manifest_raw: bytes, blobs: dict[str, bytes]):
    """A `dir:` destination holds manifest.json plus one file per blob named by its hex."""
    assert (dir_path / "manifest.json").read_bytes() == manifest_raw, "dir: manifest differs"
    for digest, data in blobs.items():
        f = dir_path / digest.split(":", 1)[1]
        assert f.is_file(), f"dir: copy lacks blob {digest}"
        assert f.read_bytes() == data, f"dir: blob {digest} differs"


def test_oci_image_roundtrip_is_bit_exact(skopeo, repo, tmp_path):
    src, desc, raw = new_image_layout(tmp_path / "src", "v1", layers=3)
    manifest = _manifest(src, desc)
    ref = skopeo.ref(repo, "v1")

    skopeo("copy", "--preserve-digests", NO_TLS_DEST, f"oci:{src.path}:v1", ref)

    # The registry serves the manifest exactly as pushed, by tag and by digest.
    assert skopeo.raw(ref) == raw
    assert skopeo.raw(skopeo.ref(repo, desc["digest"])) == raw

    info = skopeo.inspect(ref, tags=True)
    assert info["Digest"] == desc["digest"]
    assert info["Layers"] == [layer["digest"] for layer in manifest["layers"]]
    assert info["RepoTags"] == ["v1"]
    assert info["Architecture"] == "amd64" and info["Os"] == "linux"
    assert info["Labels"]["org.example.test"] == "berth-e2e"
    assert info["Name"].endswith(repo)

    # Back into another OCI layout: same manifest digest, every blob byte-identical.
    back = Layout(tmp_path / "back", create=False)
    skopeo("copy", "--preserve-digests", NO_TLS_SRC, ref, f"oci:{back.path}:v1")
    back_desc = back.resolve("v1")
    assert back_desc["digest"] == desc["digest"]
    assert back_desc["mediaType"] == OCI_MANIFEST
    for d in referenced_blobs(src, desc):
        assert back.blob(d["digest"]) == src.blob(d["digest"]), f"blob {d['digest']} differs"

    # And into a plain directory.
    out = tmp_path / "dir"
    skopeo("copy", "--preserve-digests", NO_TLS_SRC, ref, f"dir:{out}")
    _assert_dir_copy(out, raw, {d["digest"]: src.blob(d["digest"])
                                for d in referenced_blobs(src, desc)[1:]})


def test_docker_schema2_roundtrip_is_bit_exact(skopeo, repo, tmp_path):
    src, desc, _ = new_image_layout(tmp_path / "src", "v1", layers=3)
    manifest = _manifest(src, desc)
    ref = skopeo.ref(repo, "v1")

    skopeo("copy", "--format", "v2s2", NO_TLS_DEST, f"oci:{src.path}:v1", ref)

    served = skopeo.raw(ref)
    m = json.loads(served)
    assert m["schemaVersion"] == 2
    assert m["mediaType"] == DOCKER_MANIFEST
    assert m["config"]["mediaType"] == DOCKER_CONFIG
    assert [layer["mediaType"] for layer in m["layers"]] == [DOCKER_LAYER_GZIP] * 3
    # The gzip layers and the config were pushed unchanged; only the manifest was converted.
    assert [layer["digest"] for layer in m["layers"]] == [x["digest"] for x in manifest["layers"]]
    assert m["config"]["digest"] == manifest["config"]["digest"]

    digest = sha256(served)
    info = skopeo.inspect(ref)
    assert info["Digest"] == digest
    assert info["Layers"] == [x["digest"] for x in manifest["layers"]]
    assert skopeo.raw(skopeo.ref(repo, digest)) == served

    blobs = {d["digest"]: src.blob(d["digest"]) for d in referenced_blobs(src, desc)[1:]}
    out = tmp_path / "dir"
    skopeo("copy", "--preserve-digests", NO_TLS_SRC, ref, f"dir:{out}")
    _assert_dir_copy(out, served, blobs)

    # Pulling it into an OCI layout converts manifest and config back (skopeo re-encodes the
    # config); the layers stay byte-identical.
    back = Layout(tmp_path / "back", create=False)
    skopeo("copy", NO_TLS_SRC, ref, f"oci:{back.path}:v1")
    back_manifest = json.loads(back.blob(back.resolve("v1")["digest"]))
    assert back_manifest["mediaType"] == OCI_MANIFEST
    assert [x["digest"] for x in back_manifest["layers"]] == [x["digest"] for x in manifest["layers"]]
    for x in manifest["layers"]:
        assert back.blob(x["digest"]) == src.blob(x["digest"])
    back_config = json.loads(back.blob(back_manifest["config"]["digest"]))
    src_config = json.loads(src.blob(manifest["config"]["digest"]))
    assert back_config["rootfs"] == src_config["rootfs"]
    assert back_config["architecture"] == "amd64"


def test_copy_between_repositories(skopeo, repo, tmp_path):
    """docker:// to docker:// on the same registry (skopeo tries a cross-repository mount)."""
    src, desc, raw = new_image_layout(tmp_path / "src", "v1", layers=2)
    a, b = f"{repo}/a", f"{repo}/b"
    skopeo("copy", "--preserve-digests", NO_TLS_DEST, f"oci:{src.path}:v1", skopeo.ref(a, "v1"))
    skopeo("copy", "--preserve-digests", NO_TLS_SRC, NO_TLS_DEST,
           skopeo.ref(a, "v1"), skopeo.ref(b, "copied"))
    assert skopeo.raw(skopeo.ref(b, "copied")) == raw
    out = tmp_path / "dir"
    skopeo("copy", "--preserve-digests", NO_TLS_SRC, skopeo.ref(b, "copied"), f"dir:{out}")
    _assert_dir_copy(out, raw, {d["digest"]: src.blob(d["digest"])
                                for d in referenced_blobs(src, desc)[1:]})
    # The source repository is untouched.
    assert skopeo.inspect(skopeo.ref(a, "v1"))["Digest"] == desc["digest"]


def test_list_tags_and_retag(skopeo, repo, tmp_path):
    src, desc, _ = new_image_layout(tmp_path / "src", "v1", layers=1, layer_kib=(16,))
    skopeo("copy", NO_TLS_DEST, f"oci:{src.path}:v1", skopeo.ref(repo, "v1"))
    tags = ["v1", "latest", "1.0.0", "beta", "v10", "v2", "a_b", "z-last", "1.0.0-rc.1", "0"]
    extra = tags[1:]
    random.Random(7).shuffle(extra)
    for tag in extra:
        skopeo("copy", "--preserve-digests", NO_TLS_SRC, NO_TLS_DEST,
               skopeo.ref(repo, "v1"), skopeo.ref(repo, tag))

    listed = json.loads(skopeo("list-tags", "--tls-verify=false",
                               f"docker://{skopeo.registry}/{repo}").stdout)
    assert listed["Repository"] == f"{skopeo.registry}/{repo}"
    assert sorted(listed["Tags"]) == sorted(tags)

    # Moving a tag to another image: the tag list is unchanged, the tag resolves anew.
    other = Layout(tmp_path / "other")
    odesc, oraw = other.add_image(layers=1, layer_kib=(16,), label="other")
    other.tag(odesc, "latest")
    skopeo("copy", "--preserve-digests", NO_TLS_DEST, f"oci:{other.path}:latest",
           skopeo.ref(repo, "latest"))
    assert skopeo.inspect(skopeo.ref(repo, "latest"))["Digest"] == odesc["digest"]
    assert skopeo.raw(skopeo.ref(repo, "latest")) == oraw
    assert skopeo.inspect(skopeo.ref(repo, "v1"))["Digest"] == desc["digest"]
    listed = json.loads(skopeo("list-tags", "--tls-verify=false",
                               f"docker://{skopeo.registry}/{repo}").stdout)
    assert sorted(listed["Tags"]) == sorted(tags)


@pytest.mark.oci11
def test_list_tags_in_lexical_order(skopeo, repo, tmp_path):
    """distribution-spec v1.1: 'If the list is not empty, the tags MUST be in lexical order'.
    (distribution 2.8 returns them in storage order.)"""
    src, _, _ = new_image_layout(tmp_path / "src", "m", layers=1, layer_kib=(8,))
    tags = ["m", "latest", "1.0.0", "beta", "v10", "v2", "a_b", "z-last", "1.0.0-rc.1", "0"]
    skopeo("copy", NO_TLS_DEST, f"oci:{src.path}:m", skopeo.ref(repo, "m"))
    for tag in tags[1:]:
        skopeo("copy", "--preserve-digests", NO_TLS_SRC, NO_TLS_DEST,
               skopeo.ref(repo, "m"), skopeo.ref(repo, tag))
    listed = json.loads(skopeo("list-tags", "--tls-verify=false",
                               f"docker://{skopeo.registry}/{repo}").stdout)
    assert listed["Tags"] == sorted(tags)


def test_list_tags_of_unknown_repository_fails(skopeo, repo):
    proc = skopeo("list-tags", "--tls-verify=false", f"docker://{skopeo.registry}/{repo}",
                  check=False)
    assert proc.returncode != 0
    # skopeo 1.9 only reports the status; newer ones print the NAME_UNKNOWN message.
    assert "404" in proc.stderr or "name unknown" in proc.stderr.lower(), proc.stderr


def test_delete_then_inspect_fails(skopeo, repo, tmp_path):
    src = Layout(tmp_path / "src")
    gone, _ = src.add_image(layers=2, layer_kib=(32, 64), label="doomed")
    kept, kept_raw = src.add_image(layers=1, layer_kib=(32,), label="kept")
    src.tag(gone, "doomed")
    src.tag(kept, "kept")
    for tag in ("doomed", "kept"):
        skopeo("copy", "--preserve-digests", NO_TLS_DEST, f"oci:{src.path}:{tag}",
               skopeo.ref(repo, tag))
    assert skopeo.inspect(skopeo.ref(repo, "doomed"))["Digest"] == gone["digest"]

    skopeo("delete", "--tls-verify=false", skopeo.ref(repo, "doomed"))

    for ref in (skopeo.ref(repo, "doomed"), skopeo.ref(repo, gone["digest"])):
        proc = skopeo("inspect", "--tls-verify=false", ref, check=False)
        assert proc.returncode != 0, f"inspect {ref} still works after delete"
        assert "manifest unknown" in proc.stderr, proc.stderr
    listed = json.loads(skopeo("list-tags", "--tls-verify=false",
                               f"docker://{skopeo.registry}/{repo}").stdout)
    assert listed["Tags"] == ["kept"]
    # The other image in the same repository is unaffected.
    assert skopeo.raw(skopeo.ref(repo, "kept")) == kept_raw
    out = tmp_path / "dir"
    skopeo("copy", "--preserve-digests", NO_TLS_SRC, skopeo.ref(repo, "kept"), f"dir:{out}")
    assert (out / "manifest.json").read_bytes() == kept_raw


def test_multi_platform_index(skopeo, repo, tmp_path):
    src = Layout(tmp_path / "src")
    amd, amd_raw = src.add_image(arch="amd64", layers=2, layer_kib=(64, 128), label="amd")
    arm, arm_raw = src.add_image(arch="arm64", layers=2, layer_kib=(64, 128), label="arm")
    idx, idx_raw = src.add_index([(amd, "amd64", "linux"), (arm, "arm64", "linux")])
    src.tag(idx, "v1")
    ref = skopeo.ref(repo, "v1")

    skopeo("copy", "--all", "--preserve-digests", NO_TLS_DEST, f"oci:{src.path}:v1", ref)

    served = skopeo.raw(ref)
    assert served == idx_raw
    assert json.loads(served)["mediaType"] == OCI_INDEX
    # Each platform manifest is there by digest.
    assert skopeo.raw(skopeo.ref(repo, amd["digest"])) == amd_raw
    assert skopeo.raw(skopeo.ref(repo, arm["digest"])) == arm_raw

    for arch, desc in (("arm64", arm), ("amd64", amd)):
        info = skopeo.inspect(ref, "--override-arch", arch, "--override-os", "linux")
        assert info["Architecture"] == arch
        assert info["Digest"] == idx["digest"]  # skopeo reports the digest of what the tag names
        assert info["Labels"]["org.example.test"] == arch[:3]
        assert info["Layers"] == [x["digest"] for x in _manifest(src, desc)["layers"]]

    # Pull one platform only.
    out = tmp_path / "arm"
    skopeo("--override-arch", "arm64", "--override-os", "linux", "copy", "--preserve-digests",
           NO_TLS_SRC, ref, f"dir:{out}")
    _assert_dir_copy(out, arm_raw, {d["digest"]: src.blob(d["digest"])
                                    for d in referenced_blobs(src, arm)[1:]})

    # Everything back into a fresh OCI layout, bit for bit.
    back = Layout(tmp_path / "back", create=False)
    skopeo("copy", "--all", "--preserve-digests", NO_TLS_SRC, ref, f"oci:{back.path}:v1")
    assert back.resolve("v1")["digest"] == idx["digest"]
    for d in referenced_blobs(src, idx):
        assert back.blob(d["digest"]) == src.blob(d["digest"]), f"blob {d['digest']} differs"


def test_large_layer_roundtrip(skopeo, repo, tmp_path):
    """One 24 MiB layer: skopeo streams it with a chunked-encoded PATCH, then PUT ?digest=."""
    src, desc, raw = new_image_layout(tmp_path / "src", "big", layers=2, layer_kib=(24 * 1024, 4))
    ref = skopeo.ref(repo, "big")
    skopeo("copy", "--preserve-digests", NO_TLS_DEST, f"oci:{src.path}:big", ref)
    out = tmp_path / "dir"
    skopeo("copy", "--preserve-digests", NO_TLS_SRC, ref, f"dir:{out}")
    _assert_dir_copy(out, raw, {d["digest"]: src.blob(d["digest"])
                                for d in referenced_blobs(src, desc)[1:]})


def test_zstd_layers(skopeo, repo, tmp_path):
    """Layers recompressed to zstd on push: the registry stores whatever media type it gets."""
    src, desc, _ = new_image_layout(tmp_path / "src", "v1", layers=2, layer_kib=(64, 32))
    ref = skopeo.ref(repo, "zstd")
    skopeo("copy", "--dest-compress-format", "zstd", NO_TLS_DEST, f"oci:{src.path}:v1", ref)
    served = skopeo.raw(ref)
    m = json.loads(served)
    assert [x["mediaType"] for x in m["layers"]] == ["application/vnd.oci.image.layer.v1.tar+zstd"] * 2
    out = tmp_path / "dir"
    skopeo("copy", "--preserve-digests", NO_TLS_SRC, ref, f"dir:{out}")
    assert (out / "manifest.json").read_bytes() == served
    for x in m["layers"]:
        data = (out / x["digest"].split(":", 1)[1]).read_bytes()
        assert sha256(data) == x["digest"] and len(data) == x["size"]
        assert data[:4] == b"\x28\xb5\x2f\xfd"  # zstd frame magic
