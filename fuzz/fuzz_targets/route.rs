//! The `/v2` router: any path parses to an endpoint or an OCI error, never a panic;
//! every name and digest in an endpoint is valid, so nothing built from them can point
//! outside the data directory.
#![no_main]

use libfuzzer_sys::fuzz_target;
use oci::route::{parse, Endpoint};

fuzz_target!(|data: &[u8]| {
    let Ok(path) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(e) = parse(path) else {
        return;
    };
    let name = match &e {
        Endpoint::Base | Endpoint::Catalog => return,
        Endpoint::Tags(n) | Endpoint::UploadStart(n) | Endpoint::Upload(n, _) => n,
        Endpoint::Manifest(n, _) | Endpoint::Blob(n, _) | Endpoint::Referrers(n, _) => n,
    };
    assert!(path.starts_with("/v2/"), "{path:?} -> {e:?}");
    assert!(path.contains(name.as_str()), "{path:?} -> {e:?}");
    assert!(!name.as_str().split('/').any(|c| c == ".." || c == "."));
});
