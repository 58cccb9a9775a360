//! Moving a registry between engines without re-pushing: blobs between the filesystem
//! store and S3 ([`storage`]), metadata from SQLite to PostgreSQL ([`metadata`]).

pub mod metadata;
pub mod storage;
