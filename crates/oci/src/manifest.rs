//! Manifest and index parsing and validation. The registry stores the client's bytes
//! unchanged; this module only extracts what the registry needs (references to check,
//! subject, artifact type) and refuses what is not a valid manifest.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{ErrorCode, OciError};
use crate::media;
use crate::Digest;

/// Deepest JSON nesting accepted in a manifest (defends the parser's stack).
const MAX_DEPTH: usize = 64;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<serde_json::Value>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ManifestKind {
    /// An image (or artifact) manifest: config + layers.
    Image,
    /// An index / manifest list: child manifests.
    Index,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ParsedManifest {
    pub media_type: String,
    pub kind: ManifestKind,
    pub config: Option<Descriptor>,
    pub layers: Vec<Descriptor>,
    pub manifests: Vec<Descriptor>,
    pub subject: Option<Descriptor>,
    /// `artifactType`, or for an image manifest without one, the config's media type
    /// (what the referrers API reports).
    pub artifact_type: Option<String>,
    pub annotations: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Raw {
    schema_version: Option<serde_json::Value>,
    media_type: Option<String>,
    artifact_type: Option<String>,
    config: Option<serde_json::Value>,
    layers: Option<Vec<serde_json::Value>>,
    manifests: Option<Vec<serde_json::Value>>,
    subject: Option<serde_json::Value>,
    annotations: Option<BTreeMap<String, String>>,
}

fn invalid(msg: impl Into<String>) -> OciError {
    ErrorCode::ManifestInvalid.msg(msg)
}

/// The media type without parameters (`; charset=utf-8`).
pub fn essence(content_type: &str) -> &str {
    content_type.split(';').next().unwrap_or("").trim()
}

fn descriptor(v: serde_json::Value, what: &str) -> Result<Descriptor, OciError> {
    let d: Descriptor = serde_json::from_value(v)
        .map_err(|e| invalid(format!("invalid {what} descriptor: {e}")))?;
    if d.media_type.is_empty() {
        return Err(invalid(format!("{what} descriptor has an empty mediaType")));
    }
    Ok(d)
}

fn json_depth_ok(bytes: &[u8]) -> bool {
    let (mut depth, mut in_str, mut esc) = (0usize, false, false);
    for &b in bytes {
        if in_str {
            match (esc, b) {
                (true, _) => esc = false,
                (false, b'\\') => esc = true,
                (false, b'"') => in_str = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_str = true,
            b'{' | b'[' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return false;
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    true
}

/// Validates `bytes` as a manifest sent with `content_type` (the request's
/// `Content-Type`, if any).
pub fn parse(bytes: &[u8], content_type: Option<&str>) -> Result<ParsedManifest, OciError> {
    if !json_depth_ok(bytes) {
        return Err(invalid(format!(
            "manifest JSON nests deeper than {MAX_DEPTH} levels"
        )));
    }
    let raw: Raw = serde_json::from_slice(bytes)
        .map_err(|e| invalid(format!("manifest is not a valid JSON object: {e}")))?;
    let content_type = content_type.map(essence).filter(|c| !c.is_empty());
    let media_type = match (&raw.media_type, content_type) {
        (Some(m), Some(c)) if m != c => {
            return Err(invalid(format!(
                "Content-Type {c:?} does not match the manifest's mediaType {m:?}"
            )))
        }
        (Some(m), _) => m.clone(),
        (None, Some(c)) => c.to_string(),
        (None, None) => {
            return Err(invalid(
                "manifest has no mediaType and the request no Content-Type",
            ))
        }
    };
    let kind = match media_type.as_str() {
        media::OCI_MANIFEST | media::DOCKER_MANIFEST => ManifestKind::Image,
        media::OCI_INDEX | media::DOCKER_MANIFEST_LIST => ManifestKind::Index,
        media::DOCKER_SCHEMA1 | media::DOCKER_SCHEMA1_SIGNED => {
            return Err(invalid(
                "Docker schema 1 manifests are not supported; push schema 2 or OCI",
            ))
        }
        other => {
            return Err(invalid(format!(
                "unsupported manifest media type {other:?}"
            )))
        }
    };
    if raw.schema_version.as_ref().and_then(|v| v.as_i64()) != Some(2) {
        return Err(invalid("schemaVersion must be 2"));
    }
    let subject = raw.subject.map(|s| descriptor(s, "subject")).transpose()?;
    let mut parsed = ParsedManifest {
        media_type,
        kind,
        config: None,
        layers: Vec::new(),
        manifests: Vec::new(),
        subject,
        artifact_type: raw.artifact_type.clone(),
        annotations: raw.annotations,
    };
    match kind {
        ManifestKind::Image => {
            if raw.manifests.is_some() {
                return Err(invalid("an image manifest has no \"manifests\" field"));
            }
            let config = descriptor(
                raw.config
                    .ok_or_else(|| invalid("image manifest has no config"))?,
                "config",
            )?;
            parsed.layers = raw
                .layers
                .ok_or_else(|| invalid("image manifest has no layers array"))?
                .into_iter()
                .map(|l| descriptor(l, "layer"))
                .collect::<Result<_, _>>()?;
            if parsed.artifact_type.is_none() && config.media_type != media::OCI_EMPTY {
                parsed.artifact_type = Some(config.media_type.clone());
            }
            parsed.config = Some(config);
        }
        ManifestKind::Index => {
            if raw.config.is_some() || raw.layers.is_some() {
                return Err(invalid("an index has no config or layers"));
            }
            parsed.manifests = raw
                .manifests
                .ok_or_else(|| invalid("index has no manifests array"))?
                .into_iter()
                .map(|m| descriptor(m, "manifest"))
                .collect::<Result<_, _>>()?;
        }
    }
    Ok(parsed)
}

impl ParsedManifest {
    /// Blobs this manifest needs in the repository (config and layers). Layers with a
    /// foreign-layer media type live elsewhere and are not required.
    pub fn required_blobs(&self) -> impl Iterator<Item = &Descriptor> {
        self.config.iter().chain(self.layers.iter().filter(|l| {
            !l.media_type.contains(".foreign.") && !l.media_type.contains("nondistributable")
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CFG: &str = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";

    fn image(extra: &str) -> String {
        format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{CFG}","size":2}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{CFG}","size":2}}]{extra}}}"#,
            media::OCI_MANIFEST
        )
    }

    #[test]
    fn parses_an_image_manifest() {
        let m = parse(image("").as_bytes(), Some(media::OCI_MANIFEST)).unwrap();
        assert_eq!(m.kind, ManifestKind::Image);
        assert_eq!(m.required_blobs().count(), 2);
        assert_eq!(
            m.artifact_type.as_deref(),
            Some("application/vnd.oci.image.config.v1+json")
        );
    }

    #[test]
    fn content_type_must_agree_with_media_type() {
        let e = parse(image("").as_bytes(), Some(media::OCI_INDEX)).unwrap_err();
        assert_eq!(e.code, ErrorCode::ManifestInvalid);
        // Parameters are ignored.
        assert!(parse(
            image("").as_bytes(),
            Some("application/vnd.oci.image.manifest.v1+json; charset=utf-8")
        )
        .is_ok());
    }

    #[test]
    fn refuses_garbage() {
        for bad in [
            "",
            "{",
            "[]",
            "null",
            r#"{"schemaVersion":2}"#,
            r#"{"schemaVersion":1,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#,
        ] {
            assert!(
                parse(bad.as_bytes(), Some(media::OCI_MANIFEST)).is_err(),
                "{bad:?}"
            );
        }
        let deep = format!("{}{}", "[".repeat(1000), "]".repeat(1000));
        assert!(parse(deep.as_bytes(), None).is_err());
        let bad_digest = image("").replace(CFG, "sha256:nothex");
        assert!(parse(bad_digest.as_bytes(), None).is_err());
    }

    #[test]
    fn subject_and_index() {
        let m = parse(
            image(&format!(
                r#","subject":{{"mediaType":"{}","digest":"{CFG}","size":2}}"#,
                media::OCI_MANIFEST
            ))
            .as_bytes(),
            None,
        )
        .unwrap();
        assert!(m.subject.is_some());
        let idx = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","manifests":[{{"mediaType":"{}","digest":"{CFG}","size":2,"platform":{{"architecture":"amd64","os":"linux"}}}}]}}"#,
            media::OCI_INDEX,
            media::OCI_MANIFEST
        );
        let m = parse(idx.as_bytes(), None).unwrap();
        assert_eq!(m.kind, ManifestKind::Index);
        assert_eq!(m.manifests.len(), 1);
    }
}
