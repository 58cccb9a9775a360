//! The registry's Kubernetes objects, built from typed `k8s-openapi` structs.
//!
//! Only fields that Kubernetes 1.20 knows are set, so the objects apply to every cluster
//! from 1.20 on (server-side apply refuses fields its schema does not declare).

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, StatefulSet, StatefulSetSpec,
};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EmptyDirVolumeSource, EnvVar, ExecAction,
    HTTPGetAction, PersistentVolumeClaim, PersistentVolumeClaimSpec, PodSecurityContext, PodSpec,
    PodTemplateSpec, Probe, ResourceRequirements, SeccompProfile, SecurityContext, Service,
    ServicePort, ServiceSpec, Volume, VolumeMount, VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::settings::Settings;
use super::{labels, selector, DATA_DIR, DATA_VOLUME, REGISTRY_CONTAINER, RUN_AS};

pub const BUILDKIT_CONTAINER: &str = "buildkitd";
const BUILDKIT_VOLUME: &str = "buildkitd";
/// Where rootless BuildKit keeps its state.
const BUILDKIT_STATE: &str = "/home/user/.local/share/buildkit";

/// Everything `deploy` applies, in the order it applies it.
#[derive(Debug, Clone)]
pub struct Objects {
    /// The StatefulSet's headless Service (persistence on).
    pub headless: Option<Service>,
    /// The `NodePort` Service named `name`.
    pub service: Service,
    pub workload: Workload,
}

#[derive(Debug, Clone)]
pub enum Workload {
    Deployment(Box<Deployment>),
    StatefulSet(Box<StatefulSet>),
}

impl Workload {
    pub fn kind(&self) -> &'static str {
        match self {
            Workload::Deployment(_) => "Deployment",
            Workload::StatefulSet(_) => "StatefulSet",
        }
    }
}

/// Name of the headless Service that governs the StatefulSet.
pub fn headless_name(name: &str) -> String {
    format!("{name}-headless")
}

pub fn objects(s: &Settings) -> Objects {
    let pod = pod_template(s);
    let workload = if s.persistence.enabled {
        Workload::StatefulSet(Box::new(stateful_set(s, pod)))
    } else {
        Workload::Deployment(Box::new(deployment(s, pod)))
    };
    Objects {
        headless: s.persistence.enabled.then(|| headless_service(s)),
        service: node_port_service(s),
        workload,
    }
}

/// Multi-document YAML, one object per document, in apply order.
pub fn to_yaml(objects: &Objects) -> anyhow::Result<String> {
    let mut docs = Vec::new();
    if let Some(h) = &objects.headless {
        docs.push(serde_norway::to_string(h)?);
    }
    docs.push(serde_norway::to_string(&objects.service)?);
    docs.push(match &objects.workload {
        Workload::Deployment(d) => serde_norway::to_string(d)?,
        Workload::StatefulSet(s) => serde_norway::to_string(s)?,
    });
    Ok(docs
        .iter()
        .map(|d| format!("---\n{d}"))
        .collect::<Vec<_>>()
        .concat())
}

fn meta(s: &Settings, name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_string()),
        namespace: Some(s.namespace.clone()),
        labels: Some(labels(&s.name)),
        ..ObjectMeta::default()
    }
}

fn registry_port(s: &Settings) -> ServicePort {
    ServicePort {
        name: Some("registry".into()),
        port: s.port.into(),
        target_port: Some(IntOrString::Int(s.port.into())),
        protocol: Some("TCP".into()),
        ..ServicePort::default()
    }
}

fn node_port_service(s: &Settings) -> Service {
    Service {
        metadata: meta(s, &s.name),
        spec: Some(ServiceSpec {
            type_: Some("NodePort".into()),
            selector: Some(selector(&s.name)),
            ports: Some(vec![registry_port(s)]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

fn headless_service(s: &Settings) -> Service {
    Service {
        metadata: meta(s, &headless_name(&s.name)),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            selector: Some(selector(&s.name)),
            ports: Some(vec![registry_port(s)]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

fn deployment(s: &Settings, template: PodTemplateSpec) -> Deployment {
    Deployment {
        metadata: meta(s, &s.name),
        spec: DeploymentSpec {
            replicas: Some(1),
            selector: LabelSelector {
                match_labels: Some(selector(&s.name)),
                ..LabelSelector::default()
            },
            // One registry at a time: the old pod goes before the new one starts.
            strategy: Some(DeploymentStrategy {
                type_: Some("Recreate".into()),
                ..DeploymentStrategy::default()
            }),
            template,
            ..DeploymentSpec::default()
        },
        ..Deployment::default()
    }
}

fn stateful_set(s: &Settings, template: PodTemplateSpec) -> StatefulSet {
    let claim = PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(DATA_VOLUME.into()),
            labels: Some(labels(&s.name)),
            ..ObjectMeta::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".to_string(),
                    Quantity(s.persistence.size.clone()),
                )])),
                ..VolumeResourceRequirements::default()
            }),
            storage_class_name: s.persistence.storage_class_name.clone(),
            ..PersistentVolumeClaimSpec::default()
        }),
        ..PersistentVolumeClaim::default()
    };
    StatefulSet {
        metadata: meta(s, &s.name),
        spec: StatefulSetSpec {
            replicas: Some(1),
            service_name: Some(headless_name(&s.name)),
            selector: LabelSelector {
                match_labels: Some(selector(&s.name)),
                ..LabelSelector::default()
            },
            template,
            volume_claim_templates: Some(vec![claim]),
            ..StatefulSetSpec::default()
        },
        ..StatefulSet::default()
    }
}

fn pod_template(s: &Settings) -> PodTemplateSpec {
    let mut containers = vec![registry_container(s)];
    let mut volumes = Vec::new();
    if !s.persistence.enabled {
        volumes.push(empty_dir(DATA_VOLUME));
    }
    let mut annotations = BTreeMap::new();
    if !s.localbuild {
        containers.push(buildkit_container(s));
        volumes.push(empty_dir(BUILDKIT_VOLUME));
        // Rootless BuildKit creates user namespaces, which the default AppArmor profile
        // forbids (the annotation is how Kubernetes 1.20 sets a container's profile).
        annotations.insert(
            format!("container.apparmor.security.beta.kubernetes.io/{BUILDKIT_CONTAINER}"),
            "unconfined".to_string(),
        );
    }
    PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(labels(&s.name)),
            annotations: (!annotations.is_empty()).then_some(annotations),
            ..ObjectMeta::default()
        }),
        spec: Some(PodSpec {
            containers,
            volumes: (!volumes.is_empty()).then_some(volumes),
            // The registry needs no Kubernetes API access and no service environment
            // variables (a Service named `berth` would inject BERTH_PORT=tcp://…).
            automount_service_account_token: Some(false),
            enable_service_links: Some(false),
            security_context: Some(PodSecurityContext {
                run_as_non_root: Some(true),
                run_as_user: Some(RUN_AS),
                run_as_group: Some(RUN_AS),
                // Volumes (the claim) become writable by the registry's group.
                fs_group: Some(RUN_AS),
                ..PodSecurityContext::default()
            }),
            ..PodSpec::default()
        }),
    }
}

fn empty_dir(name: &str) -> Volume {
    Volume {
        name: name.to_string(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Volume::default()
    }
}

fn registry_container(s: &Settings) -> Container {
    let probe = |initial_delay, period, failures| Probe {
        http_get: Some(HTTPGetAction {
            path: Some("/v2/".into()),
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
            "--no-auth".into(),
            "--listen".into(),
            format!("0.0.0.0:{}", s.port),
            "--data-dir".into(),
            DATA_DIR.into(),
        ]),
        // Temporary files (SQLite's included) go to the data volume too: the root file
        // system is read-only.
        env: Some(vec![EnvVar {
            name: "TMPDIR".into(),
            value: Some(DATA_DIR.into()),
            ..EnvVar::default()
        }]),
        ports: Some(vec![ContainerPort {
            name: Some("registry".into()),
            container_port: s.port.into(),
            protocol: Some("TCP".into()),
            ..ContainerPort::default()
        }]),
        readiness_probe: Some(probe(1, 5, 3)),
        liveness_probe: Some(probe(10, 10, 6)),
        resources: Some(ResourceRequirements {
            requests: Some(BTreeMap::from([
                ("cpu".to_string(), Quantity("50m".into())),
                ("memory".to_string(), Quantity("64Mi".into())),
            ])),
            ..ResourceRequirements::default()
        }),
        security_context: Some(registry_security_context()),
        volume_mounts: Some(vec![VolumeMount {
            name: DATA_VOLUME.into(),
            mount_path: DATA_DIR.into(),
            ..VolumeMount::default()
        }]),
        ..Container::default()
    }
}

/// The registry container's: as unprivileged as a container gets (the "restricted" Pod
/// Security Standard), shared with the HA render.
pub(super) fn registry_security_context() -> SecurityContext {
    SecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(RUN_AS),
        run_as_group: Some(RUN_AS),
        read_only_root_filesystem: Some(true),
        allow_privilege_escalation: Some(false),
        privileged: Some(false),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            ..Capabilities::default()
        }),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            ..SeccompProfile::default()
        }),
        ..SecurityContext::default()
    }
}

/// Rootless BuildKit for in-cluster builds (DevSpace runs `buildctl` in it).
fn buildkit_container(s: &Settings) -> Container {
    Container {
        name: BUILDKIT_CONTAINER.into(),
        image: Some(s.build_kit_image.clone()),
        image_pull_policy: Some("IfNotPresent".into()),
        // Without a privileged /proc mount, rootless BuildKit cannot sandbox RUN steps
        // in their own PID namespace.
        args: Some(vec!["--oci-worker-no-process-sandbox".into()]),
        readiness_probe: Some(Probe {
            exec: Some(ExecAction {
                command: Some(vec!["buildctl".into(), "debug".into(), "workers".into()]),
            }),
            initial_delay_seconds: Some(5),
            period_seconds: Some(30),
            ..Probe::default()
        }),
        security_context: Some(SecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(RUN_AS),
            run_as_group: Some(RUN_AS),
            // BuildKit's user namespaces need newuidmap (setuid) and unconfined seccomp.
            seccomp_profile: Some(SeccompProfile {
                type_: "Unconfined".into(),
                ..SeccompProfile::default()
            }),
            ..SecurityContext::default()
        }),
        volume_mounts: Some(vec![VolumeMount {
            name: BUILDKIT_VOLUME.into(),
            mount_path: BUILDKIT_STATE.into(),
            ..VolumeMount::default()
        }]),
        ..Container::default()
    }
}

#[cfg(test)]
mod tests;
