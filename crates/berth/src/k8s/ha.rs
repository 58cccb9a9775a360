//! `berth k8s render --ha`: Berth as a production registry of several stateless replicas
//! on an external PostgreSQL and an S3-compatible bucket.
//!
//! Unlike the development registry of [`super::render`], a replica keeps nothing on its
//! own disk: blobs live in the bucket, everything else (accounts, tags, upload sessions,
//! the token-signing key, the garbage collector's lease) in PostgreSQL. So the workload is
//! a Deployment that may roll and spread freely, a PodDisruptionBudget keeps all but one
//! replica up through node drains, and a ClusterIP Service balances requests across them
//! (consecutive requests of one upload may land on different replicas).
//!
//! Credentials are never rendered: they come from a Secret the operator creates
//! (`kubectl create secret generic <name>-config --from-literal=metadata-url=… …`); the
//! rendered Deployment only names its keys.

use std::collections::BTreeMap;

use anyhow::bail;
use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment,
};
use k8s_openapi::api::core::v1::{
    Affinity, Container, ContainerPort, EmptyDirVolumeSource, EnvVar, EnvVarSource, HTTPGetAction,
    PodAffinityTerm, PodAntiAffinity, PodSecurityContext, PodSpec, PodTemplateSpec, Probe,
    ResourceRequirements, SecretKeySelector, Service, ServicePort, ServiceSpec, Volume,
    VolumeMount, WeightedPodAffinityTerm,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{labels, selector, DATA_DIR, DATA_VOLUME, REGISTRY_CONTAINER, RUN_AS};

/// The keys the Secret holds, and the environment variable each one sets.
pub const SECRET_KEYS: &[(&str, &str, bool)] = &[
    // (key, variable, optional)
    ("metadata-url", "BERTH_METADATA__URL", false),
    (
        "s3-access-key-id",
        "BERTH_STORAGE__S3__ACCESS_KEY_ID",
        false,
    ),
    (
        "s3-secret-access-key",
        "BERTH_STORAGE__S3__SECRET_ACCESS_KEY",
        false,
    ),
    // The first admin's password; without it the first replica to start creates a
    // random one and prints it in its log.
    ("admin-password", "BERTH_ADMIN_PASSWORD", true),
];

pub const SERVICE_TYPES: &[&str] = &["ClusterIP", "LoadBalancer", "NodePort"];

/// What `--ha` renders from.
#[derive(Debug, Clone, PartialEq)]
pub struct HaSettings {
    pub namespace: String,
    pub name: String,
    pub image: String,
    pub port: u16,
    pub replicas: i32,
    /// The Secret with [`SECRET_KEYS`]; default `<name>-config`.
    pub secret: String,
    /// Empty: AWS S3 itself.
    pub s3_endpoint: String,
    pub s3_region: String,
    pub s3_bucket: String,
    /// Answer blob pulls with a redirect to a presigned URL of the bucket.
    pub s3_redirect: bool,
    /// The registry's public base URL, e.g. `https://registry.example.com`.
    pub public_url: Option<String>,
    pub service_type: String,
}

impl HaSettings {
    pub fn check(&self) -> anyhow::Result<()> {
        if self.replicas < 1 {
            bail!("--replicas must be at least 1, not {}", self.replicas);
        }
        if self.s3_bucket.is_empty() {
            bail!("--ha needs --s3-bucket: the replicas keep their blobs in an S3 bucket");
        }
        if !SERVICE_TYPES.contains(&self.service_type.as_str()) {
            bail!(
                "--service-type must be one of {}, not {:?}",
                SERVICE_TYPES.join(", "),
                self.service_type
            );
        }
        let url = |u: &str| u.starts_with("http://") || u.starts_with("https://");
        if !(self.s3_endpoint.is_empty() || url(&self.s3_endpoint)) {
            bail!(
                "--s3-endpoint must be an http:// or https:// URL, not {:?}",
                self.s3_endpoint
            );
        }
        if let Some(u) = &self.public_url {
            if !url(u) {
                bail!("--public-url must be an http:// or https:// URL, not {u:?}");
            }
        }
        if self.secret.is_empty() {
            bail!("--secret must name a Secret");
        }
        Ok(())
    }
}

/// Everything `--ha` renders, in apply order.
#[derive(Debug, Clone)]
pub struct HaObjects {
    pub service: Service,
    pub budget: PodDisruptionBudget,
    pub deployment: Deployment,
}

pub fn objects(s: &HaSettings) -> HaObjects {
    HaObjects {
        service: service(s),
        budget: budget(s),
        deployment: deployment(s),
    }
}

/// Multi-document YAML, one object per document, in apply order.
pub fn to_yaml(o: &HaObjects) -> anyhow::Result<String> {
    Ok([
        serde_norway::to_string(&o.service)?,
        serde_norway::to_string(&o.budget)?,
        serde_norway::to_string(&o.deployment)?,
    ]
    .iter()
    .map(|d| format!("---\n{d}"))
    .collect())
}

fn meta(s: &HaSettings) -> ObjectMeta {
    ObjectMeta {
        name: Some(s.name.clone()),
        namespace: Some(s.namespace.clone()),
        labels: Some(labels(&s.name)),
        ..ObjectMeta::default()
    }
}

fn pods(s: &HaSettings) -> LabelSelector {
    LabelSelector {
        match_labels: Some(selector(&s.name)),
        ..LabelSelector::default()
    }
}

fn service(s: &HaSettings) -> Service {
    Service {
        metadata: meta(s),
        spec: Some(ServiceSpec {
            type_: Some(s.service_type.clone()),
            selector: Some(selector(&s.name)),
            ports: Some(vec![ServicePort {
                name: Some("registry".into()),
                port: s.port.into(),
                target_port: Some(IntOrString::String("registry".into())),
                protocol: Some("TCP".into()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// A node drain takes at most one replica at a time (with one replica, it may take it).
fn budget(s: &HaSettings) -> PodDisruptionBudget {
    PodDisruptionBudget {
        metadata: meta(s),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(pods(s)),
            ..PodDisruptionBudgetSpec::default()
        }),
        ..PodDisruptionBudget::default()
    }
}

fn deployment(s: &HaSettings) -> Deployment {
    Deployment {
        metadata: meta(s),
        spec: DeploymentSpec {
            replicas: Some(s.replicas),
            selector: pods(s),
            // Replicas share everything through PostgreSQL and the bucket, so old and new
            // ones may serve side by side: roll one at a time without losing capacity.
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_surge: Some(IntOrString::Int(1)),
                    max_unavailable: Some(IntOrString::Int(0)),
                }),
            }),
            template: pod_template(s),
            ..DeploymentSpec::default()
        },
        ..Deployment::default()
    }
}

fn pod_template(s: &HaSettings) -> PodTemplateSpec {
    PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(labels(&s.name)),
            ..ObjectMeta::default()
        }),
        spec: Some(PodSpec {
            containers: vec![container(s)],
            // Only scratch space: nothing a replica writes outlives it.
            volumes: Some(vec![Volume {
                name: DATA_VOLUME.into(),
                empty_dir: Some(EmptyDirVolumeSource::default()),
                ..Volume::default()
            }]),
            // Spread replicas over nodes where the scheduler can, so one node's loss
            // takes one replica.
            affinity: Some(Affinity {
                pod_anti_affinity: Some(PodAntiAffinity {
                    preferred_during_scheduling_ignored_during_execution: Some(vec![
                        WeightedPodAffinityTerm {
                            weight: 100,
                            pod_affinity_term: PodAffinityTerm {
                                label_selector: Some(pods(s)),
                                topology_key: "kubernetes.io/hostname".into(),
                                ..PodAffinityTerm::default()
                            },
                        },
                    ]),
                    ..PodAntiAffinity::default()
                }),
                ..Affinity::default()
            }),
            automount_service_account_token: Some(false),
            enable_service_links: Some(false),
            // In-flight requests (a layer upload) get the server's shutdown timeout (30s)
            // to finish after SIGTERM.
            termination_grace_period_seconds: Some(40),
            security_context: Some(PodSecurityContext {
                run_as_non_root: Some(true),
                run_as_user: Some(RUN_AS),
                run_as_group: Some(RUN_AS),
                fs_group: Some(RUN_AS),
                ..PodSecurityContext::default()
            }),
            ..PodSpec::default()
        }),
    }
}

fn plain(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        ..EnvVar::default()
    }
}

fn env(s: &HaSettings) -> Vec<EnvVar> {
    let mut env = vec![
        // Temporary files go to the scratch volume: the root file system is read-only.
        plain("TMPDIR", DATA_DIR),
        plain("BERTH_STORAGE__BACKEND", "s3"),
        plain("BERTH_STORAGE__S3__BUCKET", &s.s3_bucket),
        plain("BERTH_STORAGE__S3__REGION", &s.s3_region),
    ];
    if !s.s3_endpoint.is_empty() {
        env.push(plain("BERTH_STORAGE__S3__ENDPOINT", &s.s3_endpoint));
    }
    if s.s3_redirect {
        env.push(plain("BERTH_STORAGE__S3__REDIRECT", "true"));
    }
    if let Some(u) = &s.public_url {
        env.push(plain("BERTH_SERVER__PUBLIC_URL", u));
    }
    env.push(plain("BERTH_LOG__FORMAT", "json"));
    for (key, var, optional) in SECRET_KEYS {
        env.push(EnvVar {
            name: var.to_string(),
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: s.secret.clone(),
                    key: key.to_string(),
                    optional: optional.then_some(true),
                }),
                ..EnvVarSource::default()
            }),
            ..EnvVar::default()
        });
    }
    env
}

fn container(s: &HaSettings) -> Container {
    let probe = |path: &str, initial_delay, period, failures| Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String("registry".into()),
            scheme: Some("HTTP".into()),
            ..HTTPGetAction::default()
        }),
        initial_delay_seconds: Some(initial_delay),
        period_seconds: Some(period),
        timeout_seconds: Some(3),
        failure_threshold: Some(failures),
        ..Probe::default()
    };
    Container {
        name: REGISTRY_CONTAINER.into(),
        image: Some(s.image.clone()),
        image_pull_policy: Some("IfNotPresent".into()),
        args: Some(vec![
            "serve".into(),
            "--listen".into(),
            format!("0.0.0.0:{}", s.port),
            "--data-dir".into(),
            DATA_DIR.into(),
        ]),
        env: Some(env(s)),
        ports: Some(vec![ContainerPort {
            name: Some("registry".into()),
            container_port: s.port.into(),
            protocol: Some("TCP".into()),
            ..ContainerPort::default()
        }]),
        // Ready only while PostgreSQL answers: a replica cut off from it leaves the
        // Service instead of failing requests. Alive as long as it serves HTTP at all,
        // so a database outage does not restart every replica.
        readiness_probe: Some(probe("/readyz", 1, 5, 2)),
        liveness_probe: Some(probe("/healthz", 10, 10, 6)),
        resources: Some(ResourceRequirements {
            requests: Some(BTreeMap::from([
                ("cpu".to_string(), Quantity("100m".into())),
                ("memory".to_string(), Quantity("128Mi".into())),
            ])),
            ..ResourceRequirements::default()
        }),
        security_context: Some(super::render::registry_security_context()),
        volume_mounts: Some(vec![VolumeMount {
            name: DATA_VOLUME.into(),
            mount_path: DATA_DIR.into(),
            ..VolumeMount::default()
        }]),
        ..Container::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> HaSettings {
        HaSettings {
            namespace: "registry".into(),
            name: "berth".into(),
            image: "ghcr.io/berth-registry/berth:1.0.0".into(),
            port: 5000,
            replicas: 3,
            secret: "berth-config".into(),
            s3_endpoint: "https://s3.example.com".into(),
            s3_region: "eu-west-1".into(),
            s3_bucket: "images".into(),
            s3_redirect: false,
            public_url: Some("https://registry.example.com".into()),
            service_type: "ClusterIP".into(),
        }
    }

    fn env_of(d: &Deployment) -> BTreeMap<String, EnvVar> {
        d.spec.template.spec.as_ref().unwrap().containers[0]
            .env
            .clone()
            .unwrap()
            .into_iter()
            .map(|e| (e.name.clone(), e))
            .collect()
    }

    #[test]
    fn credentials_come_only_from_the_secret() {
        let o = objects(&settings());
        let env = env_of(&o.deployment);
        for (key, var, optional) in SECRET_KEYS {
            let e = &env[*var];
            assert_eq!(e.value, None, "{var} must not be rendered in clear");
            let r = e
                .value_from
                .as_ref()
                .unwrap()
                .secret_key_ref
                .as_ref()
                .unwrap();
            assert_eq!((r.name.as_str(), r.key.as_str()), ("berth-config", *key));
            assert_eq!(r.optional, optional.then_some(true));
        }
        assert_eq!(env["BERTH_STORAGE__BACKEND"].value.as_deref(), Some("s3"));
        assert_eq!(
            env["BERTH_STORAGE__S3__ENDPOINT"].value.as_deref(),
            Some("https://s3.example.com")
        );
        assert!(!env.contains_key("BERTH_STORAGE__S3__REDIRECT"));
        let yaml = to_yaml(&o).unwrap();
        assert!(!yaml.contains("--no-auth"), "an HA registry keeps auth on");
    }

    #[test]
    fn replicas_roll_without_losing_capacity_and_drains_take_one() {
        let o = objects(&settings());
        let spec = &o.deployment.spec;
        assert_eq!(spec.replicas, Some(3));
        let ru = spec
            .strategy
            .as_ref()
            .unwrap()
            .rolling_update
            .as_ref()
            .unwrap();
        assert_eq!(ru.max_unavailable, Some(IntOrString::Int(0)));
        let pdb = o.budget.spec.as_ref().unwrap();
        assert_eq!(pdb.max_unavailable, Some(IntOrString::Int(1)));
        assert_eq!(pdb.selector.as_ref().unwrap(), &spec.selector);
        let svc = o.service.spec.as_ref().unwrap();
        assert_eq!(svc.selector, spec.selector.match_labels);
        assert_eq!(svc.type_.as_deref(), Some("ClusterIP"));
    }

    #[test]
    fn bad_settings_are_named() {
        let mut s = settings();
        s.s3_bucket.clear();
        assert!(s.check().unwrap_err().to_string().contains("--s3-bucket"));
        let mut s = settings();
        s.replicas = 0;
        assert!(s.check().unwrap_err().to_string().contains("--replicas"));
        let mut s = settings();
        s.service_type = "ExternalName".into();
        assert!(s
            .check()
            .unwrap_err()
            .to_string()
            .contains("--service-type"));
        let mut s = settings();
        s.s3_endpoint = "s3.example.com".into();
        assert!(s.check().unwrap_err().to_string().contains("--s3-endpoint"));
        settings().check().unwrap();
    }
}
