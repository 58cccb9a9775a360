//! Berth: a private container image registry.
//!
//! - [`config`]: settings from file, environment and flags;
//! - [`app`]: the shared state (config, blob store, metadata);
//! - [`api`]: HTTP — `/v2` (OCI Distribution), `/auth/token`, health;
//! - [`auth`]: who is calling, and the access rule;
//! - [`meta`]: the metadata database (all SQL lives there);
//! - [`gc`]: online garbage collection; [`fsck`]: consistency checks; [`import`]:
//!   `berth import-distribution`;
//! - [`server`]: listening, graceful shutdown;
//! - [`web`]: the web UI at `/`; [`human`]: sizes and times as people read them;
//! - [`k8s`]: `berth k8s`, the development registry for Kubernetes (and `render --ha`,
//!   the production one of several replicas);
//! - [`migrate`]: `berth migrate-storage`, moving blobs between the stores;
//! - [`cli`]: one module per subcommand.
//!
//! Dependency direction: cli → server → api → (meta, blobstore) → oci.

pub mod api;
pub mod app;
pub mod auth;
pub mod cache;
pub mod cli;
pub mod config;
pub mod fsck;
pub mod gc;
pub mod human;
pub mod import;
pub mod k8s;
pub mod meta;
pub mod migrate;
pub mod server;
pub mod telemetry;
pub mod tls;
pub mod web;
