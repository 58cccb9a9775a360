//! `berth k8s`: a development registry inside the developer's Kubernetes cluster, a
//! drop-in for the `registry:2` that DevSpace deploys.
//!
//! - [`settings`]: DevSpace's `localRegistry` keys and defaults, from a `devspace.yaml`
//!   and flags, checked key by key;
//! - [`render`]: the objects as typed `k8s-openapi` structs (a `NodePort` Service, and a
//!   Deployment with an `emptyDir`, or a StatefulSet with a claim template and its headless
//!   Service), only with fields Kubernetes 1.20 knows;
//! - [`apply`]: deploy (server-side apply with the field manager `berth`), wait for the
//!   pod, status and cleanup, through kube-rs and the current kube context;
//! - [`rewrite`]: image references in manifests → `localhost:NODE_PORT/<path>`;
//! - [`need_local`]: whether the local registry is needed for an image (may the caller
//!   push to its registry? is the cluster a KinD cluster?);
//! - [`reference`]: image reference parsing shared by the above;
//! - [`ha`]: `render --ha`, the production registry instead: a Deployment of several
//!   stateless replicas on an external PostgreSQL and S3 bucket (credentials from a
//!   Secret), a PodDisruptionBudget and a Service.
//!
//! Every object carries the labels of [`labels`]; `app.kubernetes.io/managed-by=berth`
//! marks what `cleanup` may remove, and deploy refuses to take over same-named objects
//! without it.

use std::collections::BTreeMap;

pub mod apply;
pub mod ha;
pub mod need_local;
pub mod reference;
pub mod render;
pub mod rewrite;
pub mod settings;

/// Server-side apply field manager of everything Berth applies.
pub const FIELD_MANAGER: &str = "berth";
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY: &str = "berth";
pub const INSTANCE_LABEL: &str = "app.kubernetes.io/instance";
/// Where the registry's data volume is mounted (the same path as registry:2's).
pub const DATA_DIR: &str = "/var/lib/registry";
pub const DATA_VOLUME: &str = "data";
pub const REGISTRY_CONTAINER: &str = "registry";
/// UID and GID the registry runs as (the `berth` user of Berth's image).
pub const RUN_AS: i64 = 1000;

/// The labels of every object (and pod) of the registry named `name`.
pub fn labels(name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app".to_string(), name.to_string()),
        ("app.kubernetes.io/name".to_string(), "berth".to_string()),
        (INSTANCE_LABEL.to_string(), name.to_string()),
        (
            "app.kubernetes.io/component".to_string(),
            "registry".to_string(),
        ),
        (MANAGED_BY_LABEL.to_string(), MANAGED_BY.to_string()),
    ])
}

/// The pod selector: `app=<name>`, as DevSpace's registry has it.
pub fn selector(name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([("app".to_string(), name.to_string())])
}

/// Label selector (query string form) for everything Berth manages for `name`.
pub fn managed_selector(name: &str) -> String {
    format!("{MANAGED_BY_LABEL}={MANAGED_BY},{INSTANCE_LABEL}={name}")
}
