//! Small in-process caches of what is read on every request and changes rarely
//! ([`TtlCache`]: entries expire, and a change made through this process empties it at
//! once with `forget_all`) or never ([`ContentCache`]: content by digest).

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long an entry may be served without asking the database again.
pub const TTL: Duration = Duration::from_secs(1);
/// Entries kept at most; past that the cache is emptied (it refills from the database).
const CAPACITY: usize = 4096;

pub struct TtlCache<K, V> {
    entries: Mutex<HashMap<K, (V, Instant)>>,
    ttl: Duration,
}

impl<K: Eq + Hash, V: Clone> Default for TtlCache<K, V> {
    fn default() -> Self {
        TtlCache::new(TTL)
    }
}

impl<K: Eq + Hash, V: Clone> TtlCache<K, V> {
    pub fn new(ttl: Duration) -> Self {
        TtlCache {
            entries: Mutex::new(HashMap::new()),
            ttl,
        }
    }

    /// The cached value of `key`, if fresh (looked up by reference: a hit allocates
    /// nothing).
    pub fn get<Q: Eq + Hash + ?Sized>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
    {
        let entries = self.entries.lock().unwrap();
        let (v, at) = entries.get(key)?;
        (at.elapsed() < self.ttl).then(|| v.clone())
    }

    pub fn insert(&self, key: K, value: V) {
        let mut entries = self.entries.lock().unwrap();
        if entries.len() >= CAPACITY {
            entries.clear();
        }
        entries.insert(key, (value, Instant::now()));
    }

    /// Drops every entry (after a change made through this process).
    pub fn forget_all(&self) {
        self.entries.lock().unwrap().clear();
    }
}

/// Content by digest, which never changes: small manifests served from memory instead
/// of the blob store. No expiry is needed; whether a repository may serve a digest is
/// still asked of the metadata on every request. Bounded by total size: when full it
/// starts over.
pub struct ContentCache {
    entries: Mutex<(HashMap<oci::Digest, bytes::Bytes>, usize)>,
    item_limit: usize,
    total_limit: usize,
}

impl ContentCache {
    pub fn new(item_limit: usize, total_limit: usize) -> Self {
        ContentCache {
            entries: Mutex::new((HashMap::new(), 0)),
            item_limit,
            total_limit,
        }
    }

    /// Whether content of `size` bytes is kept.
    pub fn admits(&self, size: u64) -> bool {
        size <= self.item_limit as u64
    }

    pub fn get(&self, digest: &oci::Digest) -> Option<bytes::Bytes> {
        self.entries.lock().unwrap().0.get(digest).cloned()
    }

    /// Keeps `content`, which the caller verified to be `digest`'s.
    pub fn insert(&self, digest: oci::Digest, content: bytes::Bytes) {
        if !self.admits(content.len() as u64) {
            return;
        }
        let mut guard = self.entries.lock().unwrap();
        let (map, total) = &mut *guard;
        if *total + content.len() > self.total_limit {
            map.clear();
            *total = 0;
        }
        *total += content.len();
        if let Some(old) = map.insert(digest, content) {
            *total -= old.len();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_expire_and_are_forgotten() {
        let c = TtlCache::new(Duration::from_millis(50));
        assert_eq!(c.get(&"ns"), None);
        c.insert("ns", Some(7u64));
        assert_eq!(c.get(&"ns"), Some(Some(7)));
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(c.get(&"ns"), None, "expired");
        c.insert("ns", None);
        assert_eq!(c.get(&"ns"), Some(None), "a cached absence");
        c.forget_all();
        assert_eq!(c.get(&"ns"), None);
    }

    #[test]
    fn content_is_bounded_per_item_and_in_total() {
        let d = |i: u8| oci::Digest::sha256_of(&[i]);
        let c = ContentCache::new(4, 10);
        c.insert(d(1), bytes::Bytes::from_static(b"12345"));
        assert_eq!(c.get(&d(1)), None, "larger than an item may be");
        c.insert(d(1), bytes::Bytes::from_static(b"1234"));
        c.insert(d(2), bytes::Bytes::from_static(b"5678"));
        assert_eq!(c.get(&d(1)).as_deref(), Some(&b"1234"[..]));
        c.insert(d(3), bytes::Bytes::from_static(b"9abc"));
        assert_eq!(c.get(&d(1)), None, "12 bytes would exceed 10: started over");
        assert_eq!(c.get(&d(3)).as_deref(), Some(&b"9abc"[..]));
    }

    #[test]
    fn a_full_cache_starts_over() {
        let c = TtlCache::default();
        for i in 0..CAPACITY + 1 {
            c.insert(i, i);
        }
        assert_eq!(c.get(&0), None);
        assert_eq!(c.get(&CAPACITY), Some(CAPACITY));
    }
}
