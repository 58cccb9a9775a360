//! The OCI Distribution protocol as types, with no I/O: digests, repository names,
//! references, media types, manifest and index validation, range headers, the `/v2`
//! path grammar ([`route`]), and the spec's error codes with their HTTP statuses.
//!
//! Everything that arrives from a client is parsed into one of these types at the edge;
//! code further in never sees an unvalidated name or digest, which is what keeps paths
//! built from them inside the data directory.

pub mod digest;
pub mod error;
pub mod manifest;
pub mod media;
pub mod name;
pub mod range;
pub mod reference;
pub mod route;

pub use digest::{Algorithm, Digest, DigestHasher};
pub use error::{ErrorCode, OciError};
pub use manifest::{Descriptor, ManifestKind, ParsedManifest};
pub use name::RepoName;
pub use reference::{Reference, Tag};
