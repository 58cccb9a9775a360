//! `Content-Range` of upload chunks and `Range` of blob reads: never panics, and a
//! resolved range always lies inside the blob.
#![no_main]

use libfuzzer_sys::fuzz_target;
use oci::range::{parse_upload_content_range, resolve_range, ByteRange};

fuzz_target!(|data: &[u8]| {
    if data.len() < 8 {
        return;
    }
    let size = u64::from_le_bytes(data[..8].try_into().unwrap()) >> (data[0] % 64);
    let Ok(s) = std::str::from_utf8(&data[8..]) else {
        return;
    };
    if let Some((start, end)) = parse_upload_content_range(s) {
        assert!(start <= end, "{s:?} parsed as {start}-{end}");
    }
    if let ByteRange::Satisfiable(first, last) = resolve_range(s, size) {
        assert!(
            first <= last && last < size,
            "{s:?} on {size} bytes gave {first}-{last}"
        );
    }
});
