//! Manifest and index validation: any bytes with any of the content types clients send
//! either parse or are refused with an OCI error; nothing panics, and what parses is
//! consistent (an index has no layers, every descriptor digest is well-formed).
#![no_main]

use libfuzzer_sys::fuzz_target;

const TYPES: [Option<&str>; 5] = [
    None,
    Some("application/vnd.oci.image.manifest.v1+json"),
    Some("application/vnd.oci.image.index.v1+json"),
    Some("application/vnd.docker.distribution.manifest.v2+json"),
    Some("application/vnd.docker.distribution.manifest.list.v2+json"),
];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let content_type = TYPES[selector as usize % TYPES.len()];
    match oci::manifest::parse(body, content_type) {
        Ok(m) => {
            if !m.manifests.is_empty() {
                assert!(m.layers.is_empty(), "an index with layers was accepted");
            }
            for d in m.required_blobs() {
                assert_eq!(
                    d.digest.to_string().parse::<oci::Digest>().unwrap(),
                    d.digest
                );
            }
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
