//! `berth k8s rewrite-images`: point image references at the development registry.
//!
//! Every `image:` field in the documents is looked at, wherever it is: containers,
//! initContainers and ephemeralContainers of every workload kind (Pods, Deployments,
//! StatefulSets, DaemonSets, Jobs, CronJobs, ReplicaSets, custom resources alike), and
//! Helm-style values, as a string (`image: repo/app:tag`) or as a mapping
//! (`image: {registry: …, repository: …, tag: …}`). A reference that belongs to one of the
//! wanted images (every image when none is given) becomes
//! `localhost:NODE_PORT/<path>[:tag][@digest]`; everything else is left as it was.
//!
//! The documents are parsed and printed again, so comments and quoting style are not
//! kept; the structure, key order and values are.

use serde::Deserialize;
use serde_norway::{Mapping, Value};

use super::reference::ImageRef;

#[derive(Debug)]
pub struct Rewriter {
    registry: String,
    wanted: Vec<(String, ImageRef)>,
}

/// What one run rewrote.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Report {
    pub rewritten: usize,
    /// `--image` names that matched no reference.
    pub unmatched: Vec<String>,
}

impl Rewriter {
    /// `images`: the images to move (`--image NAME`: a repository, optionally with a tag
    /// or digest to narrow it down); empty: every image.
    pub fn new(node_port: u16, images: &[String]) -> anyhow::Result<Rewriter> {
        if node_port == 0 {
            anyhow::bail!("--node-port: must be from 1 to 65535");
        }
        let wanted = images
            .iter()
            .map(|i| {
                ImageRef::parse(i)
                    .map(|r| (i.clone(), r))
                    .map_err(|e| anyhow::anyhow!("--image {i}: {e}"))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Rewriter {
            registry: format!("localhost:{node_port}"),
            wanted,
        })
    }

    /// Rewrites multi-document YAML (or JSON); the result is multi-document YAML.
    pub fn rewrite_yaml(
        &self,
        text: &str,
        matched: &mut Vec<bool>,
    ) -> anyhow::Result<(String, usize)> {
        matched.resize(self.wanted.len(), false);
        let mut out = String::new();
        let mut count = 0;
        for (i, doc) in serde_norway::Deserializer::from_str(text).enumerate() {
            let mut value = Value::deserialize(doc)
                .map_err(|e| anyhow::anyhow!("document {}: invalid YAML: {e}", i + 1))?;
            if value.is_null() {
                continue;
            }
            // Resolve `<<:` merge keys, so that what is printed needs no anchors.
            let _ = value.apply_merge();
            self.walk(&mut value, &mut count, matched);
            out.push_str("---\n");
            out.push_str(&serde_norway::to_string(&value)?);
        }
        Ok((out, count))
    }

    /// Rewrites several inputs (files' contents) into one stream.
    pub fn rewrite_all<'a>(
        &self,
        inputs: impl IntoIterator<Item = (String, &'a str)>,
    ) -> anyhow::Result<(String, Report)> {
        let mut matched = vec![false; self.wanted.len()];
        let mut out = String::new();
        let mut report = Report::default();
        for (name, text) in inputs {
            let (s, n) = self
                .rewrite_yaml(text, &mut matched)
                .map_err(|e| anyhow::anyhow!("{name}: {e:#}"))?;
            out.push_str(&s);
            report.rewritten += n;
        }
        report.unmatched = self
            .wanted
            .iter()
            .zip(&matched)
            .filter(|(_, m)| !**m)
            .map(|((name, _), _)| name.clone())
            .collect();
        Ok((out, report))
    }

    /// The index of the wanted image that `r` is, or `usize::MAX` when every image is
    /// wanted (no `--image`); `None` when `r` is not wanted.
    fn wanted_index(&self, r: &ImageRef) -> Option<usize> {
        if self.wanted.is_empty() {
            return Some(usize::MAX);
        }
        self.wanted.iter().position(|(_, w)| r.is_image(w))
    }

    fn mark(matched: &mut [bool], i: usize) {
        if let Some(m) = matched.get_mut(i) {
            *m = true;
        }
    }

    /// The new reference for `s`, if it is one of the wanted images.
    pub fn rewrite_ref(&self, s: &str, matched: &mut [bool]) -> Option<String> {
        let r = ImageRef::parse(s).ok()?;
        let i = self.wanted_index(&r)?;
        Self::mark(matched, i);
        let new = r.moved_to(&self.registry);
        (new != s).then_some(new)
    }

    fn walk(&self, v: &mut Value, count: &mut usize, matched: &mut [bool]) {
        match v {
            Value::Mapping(m) => {
                for (k, val) in m.iter_mut() {
                    if k.as_str() == Some("image") {
                        match val {
                            Value::String(s) => {
                                if let Some(new) = self.rewrite_ref(s, matched) {
                                    *s = new;
                                    *count += 1;
                                }
                            }
                            Value::Mapping(helm)
                                if helm.get("repository").is_some_and(Value::is_string) =>
                            {
                                if self.rewrite_helm(helm, matched) {
                                    *count += 1;
                                }
                            }
                            other => self.walk(other, count, matched),
                        }
                    } else {
                        self.walk(val, count, matched);
                    }
                }
            }
            Value::Sequence(seq) => {
                for x in seq {
                    self.walk(x, count, matched);
                }
            }
            Value::Tagged(t) => self.walk(&mut t.value, count, matched),
            _ => {}
        }
    }

    /// `image: {registry?, repository, tag?, digest?}` (the Bitnami/Helm convention).
    fn rewrite_helm(&self, m: &mut Mapping, matched: &mut [bool]) -> bool {
        let scalar = |v: Option<&Value>| -> Option<String> {
            match v? {
                Value::String(s) if !s.is_empty() => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            }
        };
        let registry = scalar(m.get("registry"));
        let Some(repository) = scalar(m.get("repository")) else {
            return false;
        };
        let mut full = match &registry {
            Some(r) => format!("{r}/{repository}"),
            None => repository.clone(),
        };
        if let Some(tag) = scalar(m.get("tag")) {
            full = format!("{full}:{tag}");
        }
        if let Some(digest) = scalar(m.get("digest")) {
            full = format!("{full}@{digest}");
        }
        let Ok(r) = ImageRef::parse(&full) else {
            return false;
        };
        let Some(i) = self.wanted_index(&r) else {
            return false;
        };
        Self::mark(matched, i);
        let path = r.short_path().to_string();
        if registry.is_some() {
            if registry.as_deref() == Some(self.registry.as_str()) && repository == path {
                return false;
            }
            m.insert("registry".into(), Value::String(self.registry.clone()));
            m.insert("repository".into(), Value::String(path));
        } else {
            let new = format!("{}/{path}", self.registry);
            if new == repository {
                return false;
            }
            m.insert("repository".into(), Value::String(new));
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn rewrite(images: &[&str], yaml: &str) -> (String, Report) {
        let r = Rewriter::new(
            31555,
            &images.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        )
        .unwrap();
        r.rewrite_all([("test.yaml".to_string(), yaml)]).unwrap()
    }

    fn docs(yaml: &str) -> Vec<Value> {
        serde_norway::Deserializer::from_str(yaml)
            .map(|d| Value::deserialize(d).unwrap())
            .collect()
    }

    fn at<'a>(v: &'a Value, path: &str) -> &'a Value {
        path.split('.').fold(v, |v, k| match k.parse::<usize>() {
            Ok(i) => &v[i],
            Err(_) => &v[k],
        })
    }

    const DEPLOYMENT: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: {app: web}
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      initContainers:
        - name: migrate
          image: registry.example.com:5000/team/web:1.4.2
          command: ["./migrate"]
      containers:
        - name: web
          image: registry.example.com:5000/team/web:1.4.2
          ports: [{containerPort: 8080}]
          env:
            - name: IMAGE
              value: registry.example.com:5000/team/web:1.4.2
        - name: proxy
          image: nginx:1.25-alpine
"#;

    #[test]
    fn deployment_containers_and_init_containers() {
        let (out, report) = rewrite(&["registry.example.com:5000/team/web"], DEPLOYMENT);
        assert_eq!(
            report,
            Report {
                rewritten: 2,
                unmatched: vec![]
            }
        );
        let d = &docs(&out)[0];
        assert_eq!(
            at(d, "spec.template.spec.initContainers.0.image"),
            "localhost:31555/team/web:1.4.2"
        );
        assert_eq!(
            at(d, "spec.template.spec.containers.0.image"),
            "localhost:31555/team/web:1.4.2"
        );
        // Not one of the wanted images, and not an `image:` field: untouched.
        assert_eq!(
            at(d, "spec.template.spec.containers.1.image"),
            "nginx:1.25-alpine"
        );
        assert_eq!(
            at(d, "spec.template.spec.containers.0.env.0.value"),
            "registry.example.com:5000/team/web:1.4.2"
        );
        // Everything else survives the round trip.
        assert_eq!(
            at(d, "spec.template.spec.containers.0.ports.0.containerPort"),
            8080
        );
        assert_eq!(at(d, "spec.replicas"), 2);
        assert_eq!(at(d, "metadata.name"), "web");
    }

    #[test]
    fn every_image_when_none_is_named() {
        let (out, report) = rewrite(&[], DEPLOYMENT);
        assert_eq!(report.rewritten, 3);
        let d = &docs(&out)[0];
        assert_eq!(
            at(d, "spec.template.spec.containers.1.image"),
            "localhost:31555/nginx:1.25-alpine"
        );
    }

    #[test]
    fn statefulsets_cronjobs_pods_in_one_multi_document_file() {
        let yaml = format!(
            r#"# a comment
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {{name: db}}
spec:
  serviceName: db
  selector: {{matchLabels: {{app: db}}}}
  template:
    metadata: {{labels: {{app: db}}}}
    spec:
      containers:
        - name: db
          image: docker.io/library/postgres:16@{D}
---
apiVersion: batch/v1
kind: CronJob
metadata: {{name: backup}}
spec:
  schedule: "0 3 * * *"
  jobTemplate:
    spec:
      template:
        spec:
          restartPolicy: OnFailure
          containers:
            - name: backup
              image: postgres@{D}
---
apiVersion: v1
kind: Pod
metadata: {{name: debug}}
spec:
  containers:
    - name: main
      image: "ghcr.io/acme/tools:v2"
  ephemeralContainers:
    - name: dbg
      image: ghcr.io/acme/tools
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {{name: agent}}
spec:
  selector: {{matchLabels: {{app: agent}}}}
  template:
    metadata: {{labels: {{app: agent}}}}
    spec:
      containers:
        - {{name: agent, image: "quay.io/acme/agent:1.0"}}
"#
        );
        let (out, report) = rewrite(
            &["postgres", "ghcr.io/acme/tools", "quay.io/other/thing"],
            &yaml,
        );
        assert_eq!(report.rewritten, 4);
        assert_eq!(report.unmatched, vec!["quay.io/other/thing".to_string()]);
        let d = docs(&out);
        assert_eq!(d.len(), 4, "the comment-only document is dropped: {out}");
        assert_eq!(
            at(&d[0], "spec.template.spec.containers.0.image")
                .as_str()
                .unwrap(),
            format!("localhost:31555/postgres:16@{D}")
        );
        assert_eq!(
            at(
                &d[1],
                "spec.jobTemplate.spec.template.spec.containers.0.image"
            )
            .as_str()
            .unwrap(),
            format!("localhost:31555/postgres@{D}")
        );
        assert_eq!(at(&d[1], "spec.schedule"), "0 3 * * *");
        assert_eq!(
            at(&d[2], "spec.containers.0.image"),
            "localhost:31555/acme/tools:v2"
        );
        assert_eq!(
            at(&d[2], "spec.ephemeralContainers.0.image"),
            "localhost:31555/acme/tools"
        );
        assert_eq!(
            at(&d[3], "spec.template.spec.containers.0.image"),
            "quay.io/acme/agent:1.0"
        );
    }

    #[test]
    fn tags_narrow_the_match() {
        let yaml = "spec:\n  containers:\n    - image: app:1\n    - image: app:2\n";
        let (out, report) = rewrite(&["app:2"], yaml);
        assert_eq!(report.rewritten, 1);
        let d = &docs(&out)[0];
        assert_eq!(at(d, "spec.containers.0.image"), "app:1");
        assert_eq!(at(d, "spec.containers.1.image"), "localhost:31555/app:2");
    }

    #[test]
    fn helm_values() {
        let yaml = r#"
image: myteam/api:0.3.1
worker:
  image:
    repository: myteam/worker
    tag: "2.0"
    pullPolicy: IfNotPresent
metrics:
  image:
    registry: docker.io
    repository: bitnami/redis-exporter
    tag: 1.55.0
sidecar:
  image:
    repository: "{{ .Values.global.registry }}/side"
"#;
        let (out, report) = rewrite(
            &["myteam/api", "myteam/worker", "bitnami/redis-exporter"],
            yaml,
        );
        assert_eq!(report.rewritten, 3, "{out}");
        let d = &docs(&out)[0];
        assert_eq!(at(d, "image"), "localhost:31555/myteam/api:0.3.1");
        assert_eq!(
            at(d, "worker.image.repository"),
            "localhost:31555/myteam/worker"
        );
        assert_eq!(at(d, "worker.image.tag"), "2.0");
        assert_eq!(at(d, "worker.image.pullPolicy"), "IfNotPresent");
        assert_eq!(at(d, "metrics.image.registry"), "localhost:31555");
        assert_eq!(at(d, "metrics.image.repository"), "bitnami/redis-exporter");
        assert_eq!(at(d, "metrics.image.tag"), "1.55.0");
        assert_eq!(
            at(d, "sidecar.image.repository"),
            "{{ .Values.global.registry }}/side"
        );
    }

    #[test]
    fn rewriting_twice_changes_nothing_more() {
        let (once, _) = rewrite(&[], DEPLOYMENT);
        let (twice, report) = rewrite(&[], &once);
        assert_eq!(once, twice);
        assert_eq!(report.rewritten, 0);
    }

    #[test]
    fn lists_json_and_anchors() {
        let json = r#"{"apiVersion": "v1", "kind": "List", "items": [
            {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
             "spec": {"containers": [{"name": "c", "image": "busybox:1.36"}]}}]}"#;
        let (out, report) = rewrite(&["busybox"], json);
        assert_eq!(report.rewritten, 1);
        assert_eq!(
            at(&docs(&out)[0], "items.0.spec.containers.0.image"),
            "localhost:31555/busybox:1.36"
        );

        let anchors = "base: &b {name: c, image: busybox}\npod:\n  containers:\n    - <<: *b\n      name: d\n";
        let (out, report) = rewrite(&["busybox"], anchors);
        assert_eq!(report.rewritten, 2, "{out}");
        assert_eq!(
            at(&docs(&out)[0], "pod.containers.0.image"),
            "localhost:31555/busybox"
        );
    }

    #[test]
    fn bad_input_is_a_clear_error() {
        let r = Rewriter::new(30000, &[]).unwrap();
        let e = r
            .rewrite_all([("x.yaml".to_string(), "a: [1\n")])
            .unwrap_err();
        assert!(
            format!("{e:#}").starts_with("x.yaml: document 1: invalid YAML"),
            "{e:#}"
        );
        assert!(Rewriter::new(30000, &["Not/Valid".to_string()]).is_err());
        assert!(Rewriter::new(0, &[]).is_err());
    }
}
