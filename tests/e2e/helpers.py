"""Shared helpers for the end-to-end tests: running client commands and writing
OCI image layouts by hand (no Docker engine, no build tool)."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import subprocess
import tarfile
from pathlib import Path

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
REF_NAME = "org.opencontainers.image.ref.name"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def run(args, *, env=None, timeout=120, check=True, input=None):
    """Run a client command; on an unexpected exit status fail with everything it printed."""
    args = [str(a) for a in args]
    try:
        proc = subprocess.run(
            args, env=env, input=input, capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired as e:
        raise AssertionError(
            f"command timed out after {timeout}s: {' '.join(args)}\n"
            f"stdout:\n{e.stdout}\nstderr:\n{e.stderr}"
        ) from None
    if check and proc.returncode != 0:
        raise AssertionError(
            f"command failed (exit {proc.returncode}): {' '.join(args)}\n"
            f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
        )
    return proc


def run_expect_failure(args, *, env=None, timeout=120):
    proc = run(args, env=env, timeout=timeout, check=False)
    if proc.returncode == 0:
        raise AssertionError(
            f"command unexpectedly succeeded: {' '.join(map(str, args))}\nstdout:\n{proc.stdout}"
        )
    return proc


# --------------------------------------------------------------------------------------
# OCI image layout writer
# --------------------------------------------------------------------------------------


def _tar_bytes(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        dirs = set()
        for name in sorted(files):
            parts = name.split("/")[:-1]
            for i in range(1, len(parts) + 1):
                d = "/".join(parts[:i])
                if d not in dirs:
                    dirs.add(d)
                    info = tarfile.TarInfo(d + "/")
                    info.type = tarfile.DIRTYPE
                    info.mode = 0o755
                    info.mtime = 1_600_000_000
                    tar.addfile(info)
            data = files[name]
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            info.mtime = 1_600_000_000
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


class Layout:
    """An OCI image layout directory (image-spec v1.1 'oci-layout' 1.0.0)."""

    def __init__(self, path: Path, *, create: bool = True):
        self.path = Path(path)
        self.refs: list[dict] = []
        if not create:  # open a layout someone else (skopeo) wrote
            return
        (self.path / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
        (self.path / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
        self._write_index()

    # blobs ----------------------------------------------------------------------
    def put_blob(self, data: bytes, media_type: str, **extra) -> dict:
        digest = sha256(data)
        p = self.path / "blobs" / "sha256" / digest.split(":", 1)[1]
        p.write_bytes(data)
        desc = {"mediaType": media_type, "digest": digest, "size": len(data)}
        desc.update(extra)
        return desc

    def blob(self, digest: str) -> bytes:
        return (self.path / "blobs" / "sha256" / digest.split(":", 1)[1]).read_bytes()

    # images ---------------------------------------------------------------------
    def add_image(self, *, arch="amd64", os_="linux", layers=3, layer_kib=(64, 256, 1024),
                  label="berth-e2e") -> tuple[dict, bytes]:
        """Write a multi-layer image made of random (incompressible) files.

        Returns (manifest descriptor, manifest bytes)."""
        layer_descs, diff_ids, history = [], [], []
        for i in range(layers):
            kib = layer_kib[i % len(layer_kib)]
            files = {
                f"layer{i}/random.bin": os.urandom(kib * 1024),
                f"layer{i}/hello.txt": f"layer {i} of {label} for {arch}\n".encode(),
            }
            tar = _tar_bytes(files)
            gz = gzip.compress(tar, compresslevel=6, mtime=0)
            layer_descs.append(self.put_blob(gz, OCI_LAYER_GZIP))
            diff_ids.append(sha256(tar))
            history.append({"created": "2024-01-01T00:00:00Z",
                            "created_by": f"berth-e2e: add layer {i}"})
        config = {
            "created": "2024-01-01T00:00:00Z",
            "architecture": arch,
            "os": os_,
            "config": {
                "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                "Cmd": ["/layer0/hello.txt"],
                "Labels": {"org.example.test": label, "org.example.nonce": os.urandom(8).hex()},
            },
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "history": history,
        }
        config_desc = self.put_blob(json.dumps(config, indent=2).encode(), OCI_CONFIG)
        manifest = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": config_desc,
            "layers": layer_descs,
            "annotations": {"org.opencontainers.image.description": label},
        }
        raw = json.dumps(manifest, indent=3).encode()
        return self.put_blob(raw, OCI_MANIFEST), raw

    def add_index(self, manifests: list[tuple[dict, str, str]]) -> tuple[dict, bytes]:
        """manifests: list of (manifest descriptor, arch, os)."""
        index = {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [
                {**desc, "platform": {"architecture": arch, "os": os_}}
                for desc, arch, os_ in manifests
            ],
        }
        raw = json.dumps(index, indent=2).encode()
        return self.put_blob(raw, OCI_INDEX), raw

    def tag(self, desc: dict, tag: str):
        d = dict(desc)
        d["annotations"] = {REF_NAME: tag}
        self.refs = [r for r in self.refs if r["annotations"][REF_NAME] != tag] + [d]
        self._write_index()

    def _write_index(self):
        index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": self.refs}
        (self.path / "index.json").write_text(json.dumps(index, indent=2))

    # reading a layout written by someone else (skopeo) -----------------------------
    def resolve(self, tag: str) -> dict:
        index = json.loads((self.path / "index.json").read_text())
        found = [m for m in index["manifests"]
                 if (m.get("annotations") or {}).get(REF_NAME) == tag]
        assert len(found) == 1, f"tag {tag!r} not found exactly once in {index}"
        return found[0]

    def blob_digests(self) -> set[str]:
        return {"sha256:" + p.name for p in (self.path / "blobs" / "sha256").iterdir()}


def referenced_blobs(layout: Layout, desc: dict) -> list[dict]:
    """All descriptors reachable from desc (manifest or index), desc included."""
    out = [desc]
    doc = json.loads(layout.blob(desc["digest"]))
    if "manifests" in doc:
        for m in doc["manifests"]:
            out += referenced_blobs(layout, m)
    else:
        out.append(doc["config"])
        out += doc["layers"]
    return out


def new_image_layout(path: Path, tag: str, **kw) -> tuple[Layout, dict, bytes]:
    layout = Layout(path)
    desc, raw = layout.add_image(**kw)
    layout.tag(desc, tag)
    return layout, desc, raw
