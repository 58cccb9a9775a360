//! `Range` (blob reads) and `Content-Range` (chunked uploads) headers.

/// The `Content-Range` of an upload chunk: `start-end`, inclusive (the spec's form; a
/// leading `bytes ` and a trailing `/size` are tolerated because clients send them).
pub fn parse_upload_content_range(v: &str) -> Option<(u64, u64)> {
    let v = v.trim();
    let v = v
        .strip_prefix("bytes ")
        .or_else(|| v.strip_prefix("bytes="))
        .unwrap_or(v);
    let v = v.split('/').next()?;
    let (a, b) = v.split_once('-')?;
    let (a, b) = (parse_u64(a)?, parse_u64(b)?);
    (a <= b).then_some((a, b))
}

/// A `Range` request header resolved against a blob of `size` bytes.
#[derive(Debug, PartialEq, Eq)]
pub enum ByteRange {
    /// Inclusive byte range within the blob.
    Satisfiable(u64, u64),
    Unsatisfiable,
    /// Not a form we serve as a range (several ranges, other units): answer with the
    /// whole blob, as RFC 9110 allows.
    Ignore,
}

pub fn resolve_range(header: &str, size: u64) -> ByteRange {
    let Some(spec) = header.trim().strip_prefix("bytes=") else {
        return ByteRange::Ignore;
    };
    if spec.contains(',') {
        return ByteRange::Ignore;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return ByteRange::Unsatisfiable;
    };
    match (a.trim(), b.trim()) {
        ("", suffix) => match parse_u64(suffix) {
            Some(0) | None => ByteRange::Unsatisfiable,
            Some(_) if size == 0 => ByteRange::Unsatisfiable,
            Some(n) => ByteRange::Satisfiable(size.saturating_sub(n), size - 1),
        },
        (start, end) => {
            let Some(start) = parse_u64(start) else {
                return ByteRange::Unsatisfiable;
            };
            let end = if end.is_empty() {
                Some(size.saturating_sub(1))
            } else {
                parse_u64(end).map(|e| e.min(size.saturating_sub(1)))
            };
            match end {
                Some(end) if start < size && start <= end => ByteRange::Satisfiable(start, end),
                _ => ByteRange::Unsatisfiable,
            }
        }
    }
}

fn parse_u64(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range() {
        assert_eq!(parse_upload_content_range("0-99"), Some((0, 99)));
        assert_eq!(
            parse_upload_content_range("bytes 100-199/*"),
            Some((100, 199))
        );
        assert_eq!(parse_upload_content_range("5-4"), None);
        assert_eq!(parse_upload_content_range("-4"), None);
        assert_eq!(parse_upload_content_range("+1-4"), None);
    }

    #[test]
    fn ranges() {
        assert_eq!(
            resolve_range("bytes=0-9", 100),
            ByteRange::Satisfiable(0, 9)
        );
        assert_eq!(
            resolve_range("bytes=90-", 100),
            ByteRange::Satisfiable(90, 99)
        );
        assert_eq!(
            resolve_range("bytes=90-1000", 100),
            ByteRange::Satisfiable(90, 99)
        );
        assert_eq!(
            resolve_range("bytes=-10", 100),
            ByteRange::Satisfiable(90, 99)
        );
        assert_eq!(resolve_range("bytes=100-", 100), ByteRange::Unsatisfiable);
        assert_eq!(resolve_range("bytes=5-4", 100), ByteRange::Unsatisfiable);
        assert_eq!(resolve_range("bytes=0-1,5-6", 100), ByteRange::Ignore);
        assert_eq!(resolve_range("items=0-1", 100), ByteRange::Ignore);
    }
}
