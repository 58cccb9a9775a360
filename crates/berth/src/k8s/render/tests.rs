//! Render tests: a snapshot of the YAML for each combination of settings, and checks of
//! the objects against the Kubernetes API types and their field rules.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{PodTemplateSpec, Service};
use serde::Deserialize;

use super::*;
use crate::k8s::settings::{Partial, Settings};

fn settings(persistence: bool, localbuild: bool, storage_class: bool) -> Settings {
    Partial {
        persistence_enabled: Some(persistence),
        localbuild: Some(localbuild),
        persistence_storage_class_name: storage_class.then(|| "fast-ssd".to_string()),
        ..Partial::default()
    }
    .resolve(None)
    .unwrap()
}

fn custom() -> Settings {
    Partial {
        namespace: Some("dev-tools".into()),
        name: Some("images".into()),
        port: Some(5443),
        image: Some("registry.example.com:5000/berth:1.2.3".into()),
        build_kit_image: Some("moby/buildkit:v0.13.0-rootless".into()),
        persistence_enabled: Some(true),
        persistence_size: Some("20Gi".into()),
        ..Partial::default()
    }
    .resolve(None)
    .unwrap()
}

fn combinations() -> Vec<(String, Settings)> {
    let mut out = Vec::new();
    for persistence in [false, true] {
        for localbuild in [false, true] {
            for sc in [false, true] {
                let name = format!(
                    "persistence_{}__localbuild_{}__storage_class_{}",
                    if persistence { "on" } else { "off" },
                    if localbuild { "on" } else { "off" },
                    if sc { "set" } else { "unset" },
                );
                out.push((name, settings(persistence, localbuild, sc)));
            }
        }
    }
    out.push(("custom_namespace_name_port".to_string(), custom()));
    out
}

#[test]
fn snapshots() {
    for (name, s) in combinations() {
        let yaml = to_yaml(&objects(&s)).unwrap();
        // The crate version is in the default image; keep snapshots stable across releases.
        let yaml = yaml.replace(
            &crate::k8s::settings::default_image(),
            "ghcr.io/berth-registry/berth:VERSION",
        );
        insta::assert_snapshot!(name, yaml);
    }
}

/// The YAML parses back into the same typed objects, kind by kind, in apply order.
#[test]
fn yaml_round_trips_through_the_api_types() {
    for (name, s) in combinations() {
        let objs = objects(&s);
        let yaml = to_yaml(&objs).unwrap();
        let docs: Vec<serde_norway::Value> = serde_norway::Deserializer::from_str(&yaml)
            .map(|d| serde_norway::Value::deserialize(d).unwrap())
            .collect();
        let kinds: Vec<&str> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
        let mut i = 0;
        if let Some(h) = &objs.headless {
            let back: Service = serde_norway::from_value(docs[i].clone()).unwrap();
            assert_eq!(&back, h, "{name}");
            i += 1;
        }
        let back: Service = serde_norway::from_value(docs[i].clone()).unwrap();
        assert_eq!(back, objs.service, "{name}");
        i += 1;
        match &objs.workload {
            Workload::Deployment(d) => {
                let back: Deployment = serde_norway::from_value(docs[i].clone()).unwrap();
                assert_eq!(&back, d.as_ref(), "{name}");
            }
            Workload::StatefulSet(st) => {
                let back: StatefulSet = serde_norway::from_value(docs[i].clone()).unwrap();
                assert_eq!(&back, st.as_ref(), "{name}");
            }
        }
        assert_eq!(i + 1, docs.len(), "{name}: {kinds:?}");
        let want: &[&str] = if s.persistence.enabled {
            &["Service", "Service", "StatefulSet"]
        } else {
            &["Service", "Deployment"]
        };
        assert_eq!(kinds, want, "{name}");
        for d in &docs {
            assert_eq!(
                d["metadata"]["namespace"].as_str(),
                Some(s.namespace.as_str()),
                "{name}: every object carries metadata.namespace"
            );
        }
    }
}

fn is_label_value(v: &str) -> bool {
    v.len() <= 63
        && (v.is_empty()
            || (v
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
                && v.starts_with(|c: char| c.is_ascii_alphanumeric())
                && v.ends_with(|c: char| c.is_ascii_alphanumeric())))
}

fn is_label_key(k: &str) -> bool {
    let (prefix, name) = k.rsplit_once('/').map_or((None, k), |(p, n)| (Some(p), n));
    prefix.is_none_or(|p| {
        p.len() <= 253
            && p.split('.')
                .all(|l| crate::k8s::settings::check_dns_label(l, 63, false).is_ok())
    }) && !name.is_empty()
        && is_label_value(name)
}

fn check_labels(what: &str, labels: &BTreeMap<String, String>) {
    for (k, v) in labels {
        assert!(is_label_key(k), "{what}: label key {k:?}");
        assert!(is_label_value(v), "{what}: label value {v:?}");
    }
}

fn check_service(s: &Settings, svc: &Service, template: &PodTemplateSpec, headless: bool) {
    let name = svc.metadata.name.as_deref().unwrap();
    crate::k8s::settings::check_dns_label(name, 63, true).unwrap();
    check_labels(name, svc.metadata.labels.as_ref().unwrap());
    let spec = svc.spec.as_ref().unwrap();
    if headless {
        assert_eq!(spec.cluster_ip.as_deref(), Some("None"));
        assert_eq!(spec.type_, None);
    } else {
        assert_eq!(spec.type_.as_deref(), Some("NodePort"));
        assert_eq!(name, s.name);
    }
    assert_eq!(
        spec.selector.as_ref().unwrap(),
        &BTreeMap::from([("app".to_string(), s.name.clone())])
    );
    // The selector picks the pods.
    let pod_labels = template.metadata.as_ref().unwrap().labels.as_ref().unwrap();
    for (k, v) in spec.selector.as_ref().unwrap() {
        assert_eq!(pod_labels.get(k), Some(v));
    }
    let ports = spec.ports.as_ref().unwrap();
    assert_eq!(ports.len(), 1);
    assert_eq!(ports[0].port, i32::from(s.port));
    assert_eq!(ports[0].target_port, Some(IntOrString::Int(s.port.into())));
    assert_eq!(ports[0].node_port, None, "the cluster assigns the NodePort");
}

fn check_pod(s: &Settings, template: &PodTemplateSpec, claim_names: &[String]) {
    let meta = template.metadata.as_ref().unwrap();
    check_labels("pod template", meta.labels.as_ref().unwrap());
    let spec = template.spec.as_ref().unwrap();
    let psc = spec.security_context.as_ref().unwrap();
    assert_eq!(
        (psc.run_as_non_root, psc.run_as_user, psc.fs_group),
        (Some(true), Some(1000), Some(1000))
    );

    let volumes: BTreeSet<String> = spec
        .volumes
        .iter()
        .flatten()
        .map(|v| v.name.clone())
        .chain(claim_names.iter().cloned())
        .collect();
    let declared = spec.volumes.as_ref().map_or(0, Vec::len) + claim_names.len();
    assert_eq!(volumes.len(), declared, "volume names are unique");
    let names: BTreeSet<&str> = spec.containers.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        names.len(),
        spec.containers.len(),
        "container names are unique"
    );
    for c in &spec.containers {
        crate::k8s::settings::check_dns_label(&c.name, 63, false).unwrap();
        crate::k8s::reference::ImageRef::parse(c.image.as_deref().unwrap()).unwrap();
        for m in c.volume_mounts.iter().flatten() {
            assert!(
                volumes.contains(&m.name),
                "{}: mount of undeclared volume {}",
                c.name,
                m.name
            );
            assert!(m.mount_path.starts_with('/'));
        }
        let port_names: Vec<&str> = c
            .ports
            .iter()
            .flatten()
            .filter_map(|p| p.name.as_deref())
            .collect();
        for probe in [&c.readiness_probe, &c.liveness_probe]
            .into_iter()
            .flatten()
        {
            if let Some(h) = &probe.http_get {
                match &h.port {
                    IntOrString::String(n) => {
                        assert!(port_names.contains(&n.as_str()), "probe port {n}")
                    }
                    IntOrString::Int(p) => assert!((1..=65535).contains(p)),
                }
            }
        }
    }

    // The registry: Berth, open, on `port`, non-root, read-only root, data volume only.
    let reg = spec
        .containers
        .iter()
        .find(|c| c.name == "registry")
        .unwrap();
    assert_eq!(reg.image.as_deref(), Some(s.image.as_str()));
    assert_eq!(
        reg.args.as_ref().unwrap(),
        &[
            "serve",
            "--no-auth",
            "--listen",
            &format!("0.0.0.0:{}", s.port),
            "--data-dir",
            "/var/lib/registry"
        ]
    );
    assert_eq!(
        reg.ports.as_ref().unwrap()[0].container_port,
        i32::from(s.port)
    );
    for probe in [&reg.readiness_probe, &reg.liveness_probe] {
        assert_eq!(
            probe
                .as_ref()
                .unwrap()
                .http_get
                .as_ref()
                .unwrap()
                .path
                .as_deref(),
            Some("/v2/")
        );
    }
    let sc = reg.security_context.as_ref().unwrap();
    assert_eq!(sc.run_as_user, Some(1000));
    assert_eq!(sc.run_as_non_root, Some(true));
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    let mounts = reg.volume_mounts.as_ref().unwrap();
    assert_eq!(mounts.len(), 1);
    assert_eq!(
        (mounts[0].name.as_str(), mounts[0].mount_path.as_str()),
        ("data", "/var/lib/registry")
    );
    assert_eq!(mounts[0].read_only, None);

    // BuildKit unless localbuild, with its own emptyDir.
    let bk = spec.containers.iter().find(|c| c.name == "buildkitd");
    assert_eq!(bk.is_some(), !s.localbuild);
    if let Some(bk) = bk {
        assert_eq!(bk.image.as_deref(), Some(s.build_kit_image.as_str()));
        assert_eq!(
            bk.security_context.as_ref().unwrap().run_as_user,
            Some(1000)
        );
        let m = &bk.volume_mounts.as_ref().unwrap()[0];
        let v = spec
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == m.name)
            .unwrap();
        assert!(v.empty_dir.is_some());
        assert_ne!(m.name, "data");
    }
}

#[test]
fn objects_follow_the_field_rules() {
    for (name, s) in combinations() {
        let objs = objects(&s);
        let (template, claims): (&PodTemplateSpec, Vec<String>) = match &objs.workload {
            Workload::Deployment(d) => {
                let spec = &d.spec;
                assert_eq!(d.metadata.name.as_deref(), Some(s.name.as_str()));
                assert_eq!(spec.replicas, Some(1));
                let data = spec
                    .template
                    .spec
                    .as_ref()
                    .unwrap()
                    .volumes
                    .iter()
                    .flatten()
                    .find(|v| v.name == "data")
                    .unwrap();
                assert!(data.empty_dir.is_some(), "{name}: emptyDir data volume");
                assert!(objs.headless.is_none());
                (&spec.template, vec![])
            }
            Workload::StatefulSet(st) => {
                let spec = &st.spec;
                assert_eq!(st.metadata.name.as_deref(), Some(s.name.as_str()));
                let headless = objs.headless.as_ref().expect("headless Service");
                assert_eq!(
                    spec.service_name.as_deref(),
                    headless.metadata.name.as_deref()
                );
                check_service(&s, headless, &spec.template, true);
                let vct = &spec.volume_claim_templates.as_ref().unwrap()[0];
                assert_eq!(vct.metadata.name.as_deref(), Some("data"));
                let vspec = vct.spec.as_ref().unwrap();
                assert_eq!(vspec.access_modes.as_ref().unwrap(), &["ReadWriteOnce"]);
                assert_eq!(
                    vspec.resources.as_ref().unwrap().requests.as_ref().unwrap()["storage"].0,
                    s.persistence.size
                );
                assert_eq!(vspec.storage_class_name, s.persistence.storage_class_name);
                assert!(
                    !spec
                        .template
                        .spec
                        .as_ref()
                        .unwrap()
                        .volumes
                        .iter()
                        .flatten()
                        .any(|v| v.name == "data"),
                    "{name}"
                );
                (&spec.template, vec!["data".to_string()])
            }
        };
        // The workload's selector picks its own pods.
        let sel = match &objs.workload {
            Workload::Deployment(d) => d.spec.selector.match_labels.clone().unwrap(),
            Workload::StatefulSet(st) => st.spec.selector.match_labels.clone().unwrap(),
        };
        let pod_labels = template.metadata.as_ref().unwrap().labels.clone().unwrap();
        for (k, v) in &sel {
            assert_eq!(pod_labels.get(k), Some(v), "{name}");
        }
        check_service(&s, &objs.service, template, false);
        check_pod(&s, template, &claims);
    }
}
