//! Digests: parsing never panics, and what parses prints back to the same text and
//! re-parses to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use oci::Digest;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(d) = s.parse::<Digest>() {
        let text = d.to_string();
        assert_eq!(text, s, "a digest prints as it was written");
        assert_eq!(text.parse::<Digest>().unwrap(), d);
        assert_eq!(d.hex().len(), d.algorithm().hex_len());
    }
});
