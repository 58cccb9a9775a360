//! Test data generated on the fly: nothing of a large blob is ever held in memory.
//!
//! A large blob is a 1 MiB pseudo-random block (chosen by a seed) repeated: its bytes are
//! produced as cheap `Bytes` clones of that block, so the client spends almost no CPU
//! producing them (it shares the machine's cores with the server under test). No
//! registry compresses or deduplicates within a blob, so the repetition is invisible to
//! them; a different seed gives a different blob.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Frame, SizeHint};
use sha2::{Digest as _, Sha256};

use crate::client::Body;

pub const MIB: u64 = 1 << 20;

/// splitmix64: a tiny, fast, good-enough PRNG step.
pub fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// `len` pseudo-random bytes determined by `seed`.
pub fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut s = seed ^ 0x5eed_0000_0000_0000;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        out.extend_from_slice(&splitmix(&mut s).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Mixes several numbers into one seed.
pub fn seed(parts: &[u64]) -> u64 {
    let mut s = 0x0123_4567_89ab_cdef_u64;
    for p in parts {
        s ^= *p;
        splitmix(&mut s);
    }
    splitmix(&mut s)
}

pub fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// A large blob: one random block repeated.
#[derive(Clone)]
pub struct Pattern {
    block: Bytes,
    pub len: u64,
}

impl Pattern {
    pub fn new(seed: u64, len: u64) -> Self {
        Pattern {
            block: Bytes::from(random_bytes(seed, MIB as usize)),
            len,
        }
    }

    /// A request body of the bytes `[offset, offset + len)` of the blob.
    pub fn body(&self, offset: u64, len: u64) -> Body {
        use http_body_util::BodyExt;
        PatternBody {
            block: self.block.clone(),
            pos: (offset % self.block.len() as u64) as usize,
            remaining: len,
        }
        .boxed()
    }

    /// Calls `f` with successive slices of the whole blob.
    pub fn for_each_chunk(&self, mut f: impl FnMut(&[u8])) {
        let mut left = self.len;
        while left > 0 {
            let n = left.min(self.block.len() as u64) as usize;
            f(&self.block[..n]);
            left -= n as u64;
        }
    }

    pub fn digest(&self) -> String {
        let mut h = Sha256::new();
        self.for_each_chunk(|c| h.update(c));
        format!("sha256:{}", hex::encode(h.finalize()))
    }
}

struct PatternBody {
    block: Bytes,
    pos: usize,
    remaining: u64,
}

impl hyper::body::Body for PatternBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        let this = self.get_mut();
        if this.remaining == 0 {
            return Poll::Ready(None);
        }
        let n = ((this.block.len() - this.pos) as u64).min(this.remaining) as usize;
        let chunk = this.block.slice(this.pos..this.pos + n);
        this.pos = (this.pos + n) % this.block.len();
        this.remaining -= n as u64;
        Poll::Ready(Some(Ok(Frame::data(chunk))))
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

/// CRC-32 (IEEE), slicing-by-8, for the gzip trailer of generated layers.
pub struct Crc32 {
    tables: Box<[[u32; 256]; 8]>,
    crc: u32,
}

impl Default for Crc32 {
    fn default() -> Self {
        Self::new()
    }
}

impl Crc32 {
    pub fn new() -> Self {
        let mut t = Box::new([[0u32; 256]; 8]);
        for i in 0..256u32 {
            let mut c = i;
            for _ in 0..8 {
                c = if c & 1 != 0 {
                    0xedb8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
            }
            t[0][i as usize] = c;
        }
        for i in 0..256 {
            for k in 1..8 {
                let prev = t[k - 1][i];
                t[k][i] = (prev >> 8) ^ t[0][(prev & 0xff) as usize];
            }
        }
        Crc32 {
            tables: t,
            crc: 0xffff_ffff,
        }
    }

    pub fn update(&mut self, data: &[u8]) {
        let t = &self.tables;
        let mut c = self.crc;
        let mut chunks = data.chunks_exact(8);
        for b in &mut chunks {
            let lo = c ^ u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            let hi = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
            c = t[7][(lo & 0xff) as usize]
                ^ t[6][((lo >> 8) & 0xff) as usize]
                ^ t[5][((lo >> 16) & 0xff) as usize]
                ^ t[4][(lo >> 24) as usize]
                ^ t[3][(hi & 0xff) as usize]
                ^ t[2][((hi >> 8) & 0xff) as usize]
                ^ t[1][((hi >> 16) & 0xff) as usize]
                ^ t[0][(hi >> 24) as usize];
        }
        for &b in chunks.remainder() {
            c = t[0][((c ^ b as u32) & 0xff) as usize] ^ (c >> 8);
        }
        self.crc = c;
    }

    pub fn finish(&self) -> u32 {
        !self.crc
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;
    use http_body_util::BodyExt;

    #[test]
    fn crc32_matches_the_reference_value() {
        let mut c = Crc32::new();
        c.update(b"123456789");
        assert_eq!(c.finish(), 0xcbf4_3926);
        let mut c = Crc32::new();
        c.update(b"1234");
        c.update(b"56789");
        assert_eq!(c.finish(), 0xcbf4_3926);
    }

    #[tokio::test]
    async fn pattern_bodies_are_slices_of_the_blob() {
        let p = Pattern::new(7, 3 * MIB + 5);
        let mut whole = Vec::new();
        p.for_each_chunk(|c| whole.extend_from_slice(c));
        assert_eq!(whole.len() as u64, p.len);
        assert_eq!(sha256_digest(&whole), p.digest());
        let (off, len) = (MIB - 3, MIB + 10);
        let body = p.body(off, len).collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], &whole[off as usize..(off + len) as usize]);
        let frames: Vec<_> =
            StreamExt::collect(http_body_util::BodyStream::new(p.body(0, 2 * MIB))).await;
        assert_eq!(frames.len(), 2);
    }
}
