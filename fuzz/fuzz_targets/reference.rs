//! Repository names, tags and references: parsing never panics, valid values round-trip,
//! and nothing valid can climb out of a directory (no `..` component, no empty one, no
//! leading or trailing slash).
#![no_main]

use libfuzzer_sys::fuzz_target;
use oci::{Reference, RepoName, Tag};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(n) = s.parse::<RepoName>() {
        assert_eq!(n.as_str(), s);
        assert!(n.as_str().len() <= oci::name::MAX_NAME_LEN);
        for c in n.as_str().split('/') {
            assert!(
                !c.is_empty() && c != "." && c != "..",
                "component {c:?} of {s:?}"
            );
        }
        assert!(!n.namespace().is_empty());
    }
    if let Ok(t) = s.parse::<Tag>() {
        assert_eq!(t.as_str(), s);
        assert!(s.len() <= oci::reference::MAX_TAG_LEN);
        assert!(!s.contains('/') && !s.starts_with('.'));
    }
    if let Ok(r) = s.parse::<Reference>() {
        let text = r.to_string();
        assert_eq!(text.parse::<Reference>().unwrap(), r);
    }
});
