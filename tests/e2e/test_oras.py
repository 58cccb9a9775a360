"""End-to-end: artifacts with the oras Python client (oras-py) over plain HTTP."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from urllib.parse import quote

import pytest

from helpers import OCI_INDEX, OCI_MANIFEST, sha256

CONFIG_TYPE = "application/vnd.berth.e2e.config.v1+json"
README_TYPE = "application/vnd.berth.e2e.readme.v1+markdown"
DATA_TYPE = "application/vnd.berth.e2e.data.v1"
TITLE = "org.opencontainers.image.title"


def _write_files(d: Path, data_kib: int = 300) -> dict[str, bytes]:
    d.mkdir(parents=True, exist_ok=True)
    files = {
        "README.md": b"# berth e2e artifact\n\nhello from oras-py\n",
        "data.bin": os.urandom(data_kib * 1024),
        "config.json": json.dumps({"kind": "berth-e2e", "nonce": os.urandom(4).hex()}).encode(),
    }
    for name, data in files.items():
        (d / name).write_bytes(data)
    return files


def _raw_manifest(client, target: str, accept=OCI_MANIFEST) -> tuple[bytes, dict]:
    container = client.get_container(target)
    r = client.do_request(f"{client.prefix}://{container.manifest_url()}", "GET",
                          headers={"Accept": accept})
    assert r.status_code == 200, (r.status_code, r.text)
    return r.content, dict(r.headers)


def _push(client, target, files_dir: Path, monkeypatch, **kw):
    # oras-py insists that pushed paths are inside the working directory.
    monkeypatch.chdir(files_dir)
    return client.push(
        target=target,
        files=[f"README.md:{README_TYPE}", f"data.bin:{DATA_TYPE}"],
        manifest_config=f"config.json:{CONFIG_TYPE}",
        manifest_annotations={"org.opencontainers.image.description": "berth e2e"},
        **kw,
    )


@pytest.mark.parametrize("chunked", [False, True], ids=["monolithic", "chunked"])
def test_push_pull_artifact(oras_client, registry, repo, tmp_path, monkeypatch, chunked):
    files = _write_files(tmp_path / "push", data_kib=300)
    target = f"{registry}/{repo}:v1"
    # chunked: POST, then PATCH in 64 KiB chunks (5 of them for data.bin), then PUT ?digest=
    kw = {"do_chunked": True, "chunk_size": 64 * 1024} if chunked else {}
    resp = _push(oras_client, target, tmp_path / "push", monkeypatch, **kw)
    assert resp.status_code == 201, (resp.status_code, resp.text)

    assert resp.headers.get("Location"), "manifest PUT: 201 without Location"
    raw, headers = _raw_manifest(oras_client, target)
    digest = sha256(raw)
    # Docker-Content-Digest is a SHOULD; if sent it must be right.
    assert headers.get("Docker-Content-Digest", digest) == digest
    assert resp.headers.get("Docker-Content-Digest", digest) == digest
    manifest = json.loads(raw)
    assert manifest["mediaType"] == OCI_MANIFEST
    assert manifest["config"]["mediaType"] == CONFIG_TYPE
    assert manifest["config"]["digest"] == sha256(files["config.json"])
    assert [(layer["mediaType"], layer["annotations"][TITLE]) for layer in manifest["layers"]] == [
        (README_TYPE, "README.md"), (DATA_TYPE, "data.bin")]
    assert [layer["digest"] for layer in manifest["layers"]] == [
        sha256(files["README.md"]), sha256(files["data.bin"])]
    assert manifest["annotations"]["org.opencontainers.image.description"] == "berth e2e"
    assert oras_client.get_manifest(target) == manifest

    out = tmp_path / "pull"
    pulled = oras_client.pull(target=target, outdir=str(out))
    assert sorted(Path(p).name for p in pulled) == ["README.md", "data.bin"]
    for name in ("README.md", "data.bin"):
        assert (out / name).read_bytes() == files[name], f"{name} differs after pull"

    # The config blob comes back byte for byte too.
    blob = oras_client.get_blob(f"{registry}/{repo}", manifest["config"]["digest"])
    assert blob.status_code == 200
    assert blob.content == files["config.json"]
    assert oras_client.get_tags(f"{registry}/{repo}") == ["v1"]


def test_push_pull_directory(oras_client, registry, repo, tmp_path, monkeypatch):
    src = tmp_path / "push" / "tree"
    (src / "sub").mkdir(parents=True)
    content = {"a.txt": b"alpha\n", "sub/b.bin": os.urandom(50_000)}
    for name, data in content.items():
        (src / name).write_bytes(data)
    monkeypatch.chdir(tmp_path / "push")
    target = f"{registry}/{repo}:dir"
    resp = oras_client.push(target=target, files=["tree"])
    assert resp.status_code == 201

    out = tmp_path / "pull"
    oras_client.pull(target=target, outdir=str(out))
    for name, data in content.items():
        assert (out / "tree" / name).read_bytes() == data


def test_artifact_tags_and_delete(oras_client, registry, repo, tmp_path, monkeypatch):
    _write_files(tmp_path / "push", data_kib=8)
    for tag in ("v2", "v1"):
        resp = _push(oras_client, f"{registry}/{repo}:{tag}", tmp_path / "push", monkeypatch)
        assert resp.status_code == 201
    assert sorted(oras_client.get_tags(f"{registry}/{repo}")) == ["v1", "v2"]

    # Same content under both tags: one manifest; deleting it by digest (oras resolves the
    # tag with HEAD, then DELETEs the digest) removes it under either tag.
    assert oras_client.delete_tag(f"{registry}/{repo}", "v1") is True
    container = oras_client.get_container(f"{registry}/{repo}:v2")
    r = oras_client.do_request(f"{oras_client.prefix}://{container.manifest_url()}", "GET",
                               headers={"Accept": OCI_MANIFEST})
    assert r.status_code == 404
    assert r.json()["errors"][0]["code"] == "MANIFEST_UNKNOWN"


def test_manifest_by_unknown_digest_is_404(oras_client, registry, repo, tmp_path, monkeypatch):
    _write_files(tmp_path / "push", data_kib=4)
    _push(oras_client, f"{registry}/{repo}:v1", tmp_path / "push", monkeypatch)
    missing = "sha256:" + hashlib.sha256(b"nothing here").hexdigest()
    container = oras_client.get_container(f"{registry}/{repo}@{missing}")
    r = oras_client.do_request(f"{oras_client.prefix}://{container.manifest_url()}", "GET",
                               headers={"Accept": OCI_MANIFEST})
    assert r.status_code == 404
    assert r.json()["errors"][0]["code"] == "MANIFEST_UNKNOWN"
    blob = oras_client.get_blob(f"{registry}/{repo}", missing)
    assert blob.status_code == 404


@pytest.mark.oci11
def test_referrers(oras_client, registry, repo, tmp_path, monkeypatch):
    """A signature-like artifact pushed with a subject is listed by the referrers API."""
    import oras.oci

    _write_files(tmp_path / "push", data_kib=4)
    target = f"{registry}/{repo}:v1"
    _push(oras_client, target, tmp_path / "push", monkeypatch)
    raw, _ = _raw_manifest(oras_client, target)
    subject = oras.oci.Subject(mediaType=OCI_MANIFEST, digest=sha256(raw), size=len(raw))

    sig_dir = tmp_path / "sig"
    sig_dir.mkdir()
    (sig_dir / "sig.json").write_text('{"signed": true}')
    (sig_dir / "sbom.json").write_text('{"sbom": true}')
    monkeypatch.chdir(sig_dir)
    sig_type = "application/vnd.berth.e2e.signature.v1+json"
    sbom_type = "application/vnd.berth.e2e.sbom.v1+json"
    pushed = {}
    for name, mtype in (("sig", sig_type), ("sbom", sbom_type)):
        # Referrers are usually pushed by digest; oras-py needs a tag, so give each one.
        resp = oras_client.push(target=f"{registry}/{repo}:{name}",
                                files=[f"{name}.json:application/json"],
                                manifest_config=f"{name}.json:{mtype}", subject=subject)
        assert resp.status_code == 201
        # distribution-spec v1.1: a registry that processes `subject` MUST answer OCI-Subject.
        assert resp.headers.get("OCI-Subject") == subject.digest
        pushed[mtype] = sha256(_raw_manifest(oras_client, f"{registry}/{repo}:{name}")[0])

    url = f"http://{registry}/v2/{repo}/referrers/{subject.digest}"
    r = oras_client.do_request(url, "GET")
    assert r.status_code == 200, (r.status_code, r.text)
    assert r.headers["Content-Type"].startswith(OCI_INDEX)
    index = r.json()
    assert index["mediaType"] == OCI_INDEX
    got = {m["artifactType"]: m["digest"] for m in index["manifests"]}
    assert got == pushed
    assert all(m["mediaType"] == OCI_MANIFEST for m in index["manifests"])

    # Filtering is a SHOULD; a registry that filters MUST say so in OCI-Filters-Applied.
    r = oras_client.do_request(url + "?artifactType=" + quote(sig_type, safe=""), "GET")
    assert r.status_code == 200
    filtered = sorted(m["digest"] for m in r.json()["manifests"])
    if r.headers.get("OCI-Filters-Applied") == "artifactType":
        assert filtered == [pushed[sig_type]]
    else:
        assert filtered == sorted(pushed.values())

    # No referrers: an empty index, not a 404.
    r = oras_client.do_request(f"http://{registry}/v2/{repo}/referrers/{pushed[sig_type]}", "GET")
    assert r.status_code == 200
    assert r.json()["manifests"] == []


@pytest.mark.oci11
def test_tag_list_pagination(oras_client, registry, repo, tmp_path, monkeypatch):
    _write_files(tmp_path / "push", data_kib=4)
    tags = ["e", "a", "d", "c", "b"]
    for tag in tags:
        _push(oras_client, f"{registry}/{repo}:{tag}", tmp_path / "push", monkeypatch)
    # oras-py asks for ?n=3 (and would follow a Link header for more).
    assert oras_client.get_tags(f"{registry}/{repo}", N=3) == ["a", "b", "c"]
    base = f"http://{registry}/v2/{repo}/tags/list"
    # "the response MUST include <int> results" unless there are fewer; lexical order.
    assert oras_client.do_request(base + "?n=2", "GET").json()["tags"] == ["a", "b"]
    assert oras_client.do_request(base + "?n=2&last=b", "GET").json()["tags"] == ["c", "d"]
    assert oras_client.do_request(base + "?n=2&last=d", "GET").json()["tags"] == ["e"]
    r = oras_client.do_request(base + "?n=0", "GET")  # MUST be empty, MUST NOT have Link
    assert r.status_code == 200 and r.json()["tags"] in ([], None) and "Link" not in r.headers
    assert oras_client.get_tags(f"{registry}/{repo}") == sorted(tags)
