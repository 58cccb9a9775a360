//! OCI image layouts for the skopeo workload, written without any tool.
//!
//! Each layer is a tar holding one file of incompressible bytes, wrapped in gzip with
//! *stored* (uncompressed) deflate blocks: it is a real `tar+gzip` layer, so skopeo
//! copies it as it is (it would gzip an uncompressed layer on its way to a registry,
//! and the benchmark would then measure Go's compressor), and costs nothing to make.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde_json::json;
use sha2::{Digest as _, Sha256};

use crate::data::{seed, Crc32, Pattern};

pub const LAYER_MEDIA_TYPE: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.image.config.v1+json";

pub struct Layout {
    /// Bytes of every blob of the image (layers, config, manifest).
    pub bytes: u64,
    pub digests: Vec<String>,
}

/// gzip with stored deflate blocks around a stream of tar bytes.
struct StoredGz<W: Write> {
    out: W,
    gz_sha: Sha256,
    gz_len: u64,
    tar_sha: Sha256,
    crc: Crc32,
    isize: u32,
    pending: Vec<u8>,
}

const STORED_MAX: usize = 65535;

impl<W: Write> StoredGz<W> {
    fn new(out: W) -> Result<Self> {
        let mut g = StoredGz {
            out,
            gz_sha: Sha256::new(),
            gz_len: 0,
            tar_sha: Sha256::new(),
            crc: Crc32::new(),
            isize: 0,
            pending: Vec::with_capacity(STORED_MAX),
        };
        g.emit(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff])?;
        Ok(g)
    }

    fn emit(&mut self, b: &[u8]) -> Result<()> {
        self.gz_sha.update(b);
        self.gz_len += b.len() as u64;
        self.out.write_all(b)?;
        Ok(())
    }

    fn block(&mut self, last: bool) -> Result<()> {
        let data = std::mem::take(&mut self.pending);
        let len = data.len() as u16;
        let head = [
            last as u8,
            len as u8,
            (len >> 8) as u8,
            !len as u8,
            ((!len) >> 8) as u8,
        ];
        self.emit(&head)?;
        self.emit(&data)?;
        self.pending = data;
        self.pending.clear();
        Ok(())
    }

    fn write_tar(&mut self, mut b: &[u8]) -> Result<()> {
        self.tar_sha.update(b);
        self.crc.update(b);
        self.isize = self.isize.wrapping_add(b.len() as u32);
        while !b.is_empty() {
            let n = (STORED_MAX - self.pending.len()).min(b.len());
            self.pending.extend_from_slice(&b[..n]);
            b = &b[n..];
            if self.pending.len() == STORED_MAX {
                self.block(false)?;
            }
        }
        Ok(())
    }

    /// Returns (gzip digest, gzip size, tar digest).
    fn finish(mut self) -> Result<(String, u64, String)> {
        self.block(true)?;
        let trailer: Vec<u8> = self
            .crc
            .finish()
            .to_le_bytes()
            .into_iter()
            .chain(self.isize.to_le_bytes())
            .collect();
        self.emit(&trailer)?;
        self.out.flush()?;
        Ok((
            format!("sha256:{}", hex::encode(self.gz_sha.finalize())),
            self.gz_len,
            format!("sha256:{}", hex::encode(self.tar_sha.finalize())),
        ))
    }
}

fn octal(field: &mut [u8], value: u64) {
    let s = format!("{:0width$o}\0", value, width = field.len() - 1);
    field.copy_from_slice(s.as_bytes());
}

fn tar_header(name: &str, size: u64) -> [u8; 512] {
    let mut h = [0u8; 512];
    h[..name.len()].copy_from_slice(name.as_bytes());
    octal(&mut h[100..108], 0o644);
    octal(&mut h[108..116], 0);
    octal(&mut h[116..124], 0);
    octal(&mut h[124..136], size);
    octal(&mut h[136..148], 0);
    h[156] = b'0';
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|&b| b as u32).sum();
    let s = format!("{sum:06o}\0 ");
    h[148..156].copy_from_slice(s.as_bytes());
    h
}

fn blob_path(dir: &Path, digest: &str) -> PathBuf {
    dir.join("blobs/sha256")
        .join(digest.trim_start_matches("sha256:"))
}

fn write_blob(dir: &Path, bytes: &[u8]) -> Result<(String, u64)> {
    let d = crate::data::sha256_digest(bytes);
    std::fs::write(blob_path(dir, &d), bytes)?;
    Ok((d, bytes.len() as u64))
}

/// Writes an image of `layers` layers of `layer_size` bytes each, tagged `tag`, as an
/// OCI layout in `dir` (which must not exist). Different seeds give images that share
/// no blob.
pub fn make_layout(
    dir: &Path,
    layers: usize,
    layer_size: u64,
    image_seed: u64,
    tag: &str,
) -> Result<Layout> {
    std::fs::create_dir_all(dir.join("blobs/sha256"))
        .with_context(|| format!("creating {}", dir.display()))?;
    let mut total = 0u64;
    let mut digests = Vec::new();
    let mut layer_descs = Vec::new();
    let mut diff_ids = Vec::new();
    for i in 0..layers {
        let tmp = dir.join(format!("layer-{i}.tmp"));
        let mut gz = StoredGz::new(BufWriter::with_capacity(1 << 20, File::create(&tmp)?))?;
        gz.write_tar(&tar_header(&format!("layer{i}.bin"), layer_size))?;
        let p = Pattern::new(seed(&[image_seed, i as u64]), layer_size);
        let mut err = None;
        p.for_each_chunk(|c| {
            if err.is_none() {
                err = gz.write_tar(c).err();
            }
        });
        if let Some(e) = err {
            return Err(e);
        }
        let pad = (512 - (layer_size % 512) as usize) % 512;
        gz.write_tar(&vec![0u8; pad + 1024])?;
        let (d, size, diff) = gz.finish()?;
        std::fs::rename(&tmp, blob_path(dir, &d))?;
        layer_descs.push(json!({"mediaType": LAYER_MEDIA_TYPE, "digest": d, "size": size}));
        diff_ids.push(diff);
        digests.push(d);
        total += size;
    }
    let config = serde_json::to_vec(&json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))?;
    let (config_digest, config_size) = write_blob(dir, &config)?;
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "config": {"mediaType": CONFIG_MEDIA_TYPE, "digest": config_digest, "size": config_size},
        "layers": layer_descs,
    }))?;
    let (manifest_digest, manifest_size) = write_blob(dir, &manifest)?;
    digests.push(config_digest);
    digests.push(manifest_digest.clone());
    total += config_size + manifest_size;
    std::fs::write(
        dir.join("index.json"),
        serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "manifests": [{
                "mediaType": MANIFEST_MEDIA_TYPE,
                "digest": manifest_digest,
                "size": manifest_size,
                "annotations": {"org.opencontainers.image.ref.name": tag},
            }],
        }))?,
    )?;
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    Ok(Layout {
        bytes: total,
        digests,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_are_valid_gzip_of_a_tar() {
        let dir = std::env::temp_dir().join(format!("berth-bench-layout-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let l = make_layout(&dir, 2, 100_000, 1, "v1").unwrap();
        assert_eq!(l.digests.len(), 4);
        let layer = blob_path(&dir, &l.digests[0]);
        // GNU tar (with gzip) is the reference check when it is installed.
        if let Ok(out) = std::process::Command::new("tar")
            .arg("-tzf")
            .arg(&layer)
            .output()
        {
            assert!(out.status.success(), "{out:?}");
            assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "layer0.bin");
        }
        let bytes = std::fs::read(&layer).unwrap();
        assert_eq!(crate::data::sha256_digest(&bytes), l.digests[0]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
