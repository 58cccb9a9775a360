//! Integration tests: OCI Distribution Spec v1.1 conformance and durability, against a
//! real `berth serve` process (see `common.rs`), one binary for link-time's sake.
//!
//! `BERTH_TEST_EXTERNAL_URL=http://host:port` runs the suite against another registry
//! (e.g. the CNCF distribution registry) to compare behaviour.

#[allow(dead_code)]
mod common;
mod crash;
#[allow(dead_code)]
mod helpers;

mod api_v1;
mod auth;
mod discovery;
mod durability;
mod errors;
mod fsck;
mod gc;
mod k8s;
mod management;
mod memory;
mod metrics;
mod migrate;
mod outage;
mod postgres;
mod pull;
mod push;
mod quota;
mod replicas;
mod retention;
mod s3;
mod soak;
mod tls;
mod web;
