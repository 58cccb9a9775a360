//! Moving a registry between engines without re-pushing: blobs between the filesystem
//! store and S3 ([`storage`]).

pub mod storage;
