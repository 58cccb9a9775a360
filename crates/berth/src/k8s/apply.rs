//! Deploy, status and cleanup against the current kube context's cluster.
//!
//! Deploy: create the namespace if needed; refuse to take over same-named objects that
//! Berth did not create; remove the other workload kind (Deployment ↔ StatefulSet, when
//! `persistence.enabled` changed); server-side apply every object with the field manager
//! `berth`; wait until the NodePort is assigned and (unless `--no-wait`) until the rollout
//! is complete, as `kubectl rollout status` judges it; ping `/v2/` at the address.

use std::fmt::Debug;
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{Namespace, PersistentVolumeClaim, Pod, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::NamespaceResourceScope;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::render::{self, Objects, Workload};
use super::settings::Settings;
use super::{managed_selector, MANAGED_BY, MANAGED_BY_LABEL};

/// How often the cluster is polled while waiting.
const POLL: Duration = Duration::from_millis(500);

/// A connection to the current kube context's cluster.
pub struct Cluster {
    pub client: Client,
    /// The context's namespace (`default` when it names none).
    pub namespace: String,
}

/// Connects to the cluster of the current context of `KUBECONFIG` (or `~/.kube/config`,
/// or the in-cluster service account).
pub async fn connect() -> anyhow::Result<Cluster> {
    let config = kube::Config::infer()
        .await
        .context("reading the kube configuration (KUBECONFIG, ~/.kube/config)")?;
    let namespace = config.default_namespace.clone();
    let client = Client::try_from(config).context("building the Kubernetes client")?;
    Ok(Cluster { client, namespace })
}

/// The namespace of the current kube context, read without connecting (for `render`).
pub fn context_namespace() -> Option<String> {
    let kc = kube::config::Kubeconfig::read().ok()?;
    let current = kc.current_context.as_deref()?;
    kc.contexts
        .iter()
        .find(|c| c.name == current)?
        .context
        .as_ref()?
        .namespace
        .clone()
}

/// The name of the current kube context, read without connecting.
pub fn context_name() -> Option<String> {
    kube::config::Kubeconfig::read().ok()?.current_context
}

#[derive(Debug, Clone)]
pub struct DeployOptions {
    /// Wait for the rollout (false: return once the NodePort is assigned).
    pub wait: bool,
    pub timeout: Duration,
    /// Take over fields that another field manager owns.
    pub force_conflicts: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Deployed {
    pub node_port: u16,
    /// `localhost:NODE_PORT`
    pub address: String,
    /// Whether `GET /v2/` at the address answered (only when waiting).
    pub answered: Option<bool>,
}

/// Progress on stderr: steps as lines; while waiting, one line rewritten in place on a
/// terminal, or a line per change of state otherwise.
pub struct Progress {
    tty: bool,
    start: Instant,
    last: String,
    open_line: bool,
    quiet: bool,
}

impl Default for Progress {
    fn default() -> Self {
        Self::new()
    }
}

impl Progress {
    pub fn new() -> Self {
        Progress {
            tty: std::io::stderr().is_terminal(),
            start: Instant::now(),
            last: String::new(),
            open_line: false,
            quiet: false,
        }
    }

    /// No output at all (library use, tests).
    pub fn quiet() -> Self {
        let mut p = Self::new();
        p.quiet = true;
        p
    }

    pub fn step(&mut self, msg: impl AsRef<str>) {
        if self.quiet {
            return;
        }
        self.close_line();
        eprintln!("{}", msg.as_ref());
    }

    pub fn waiting(&mut self, msg: &str) {
        if self.quiet {
            return;
        }
        let elapsed = self.start.elapsed().as_secs();
        if self.tty {
            const SPIN: [char; 4] = ['|', '/', '-', '\\'];
            let spin = SPIN[(self.start.elapsed().as_millis() / 250) as usize % 4];
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[K{spin} [{elapsed:>3}s] {msg}");
            let _ = err.flush();
            self.open_line = true;
        } else if msg != self.last {
            eprintln!("  [{elapsed:>3}s] {msg}");
        }
        self.last = msg.to_string();
    }

    fn close_line(&mut self) {
        if self.open_line {
            eprintln!();
            self.open_line = false;
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.close_line();
    }
}

trait Namespaced:
    Resource<Scope = NamespaceResourceScope, DynamicType = ()>
    + Clone
    + Debug
    + DeserializeOwned
    + Serialize
{
}
impl<K> Namespaced for K where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + Debug
        + DeserializeOwned
        + Serialize
{
}

fn kind<K: Resource<DynamicType = ()>>() -> String {
    K::kind(&()).into_owned()
}

fn is_ours(meta: &ObjectMeta) -> bool {
    meta.labels
        .as_ref()
        .and_then(|l| l.get(MANAGED_BY_LABEL))
        .is_some_and(|v| v == MANAGED_BY)
}

/// The API server's message for an API error, else the error itself.
fn api_message(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => format!("{} ({}, HTTP {})", s.message, s.reason, s.code),
        other => format!("{other}"),
    }
}

fn api_code(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(s) => Some(s.code),
        _ => None,
    }
}

/// Fails if an object named `name` exists without Berth's label.
async fn check_not_foreign<K: Namespaced>(
    client: &Client,
    ns: &str,
    name: &str,
) -> anyhow::Result<()> {
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    let existing = api
        .get_opt(name)
        .await
        .map_err(|e| anyhow!("reading {} {ns}/{name}: {}", kind::<K>(), api_message(&e)))?;
    if let Some(obj) = existing {
        if !is_ours(obj.meta()) {
            bail!(
                "{} {ns}/{name} exists and was not created by Berth (it has no label \
                 {MANAGED_BY_LABEL}={MANAGED_BY}); choose another name (--name or \
                 localRegistry.name) or remove it",
                kind::<K>()
            );
        }
    }
    Ok(())
}

/// Deletes the object if it exists and is Berth's; returns whether it did.
async fn delete_ours<K: Namespaced>(client: &Client, ns: &str, name: &str) -> anyhow::Result<bool> {
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    let Some(obj) = api
        .get_opt(name)
        .await
        .map_err(|e| anyhow!("reading {} {ns}/{name}: {}", kind::<K>(), api_message(&e)))?
    else {
        return Ok(false);
    };
    if !is_ours(obj.meta()) {
        return Ok(false);
    }
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => Ok(true),
        Err(e) if api_code(&e) == Some(404) => Ok(false),
        Err(e) => Err(anyhow!(
            "deleting {} {ns}/{name}: {}",
            kind::<K>(),
            api_message(&e)
        )),
    }
}

async fn apply_one<K: Namespaced>(
    client: &Client,
    obj: &K,
    params: &PatchParams,
) -> anyhow::Result<K> {
    let ns = obj.meta().namespace.clone().unwrap_or_default();
    let name = obj.name_any();
    let api: Api<K> = Api::namespaced(client.clone(), &ns);
    api.patch(&name, params, &Patch::Apply(obj)).await.map_err(|e| {
        let mut msg = format!("applying {} {ns}/{name}: {}", kind::<K>(), api_message(&e));
        match api_code(&e) {
            Some(409) => msg.push_str(
                "\nanother field manager owns these fields; pass --force-conflicts to take them over",
            ),
            Some(422) if kind::<K>() == "StatefulSet" => msg.push_str(
                "\na StatefulSet's claim template cannot change in place: run `berth k8s cleanup` \
                 (the PersistentVolumeClaim is kept) and deploy again",
            ),
            _ => {}
        }
        anyhow!(msg)
    })
}

async fn ensure_namespace(
    client: &Client,
    ns: &str,
    progress: &mut Progress,
) -> anyhow::Result<()> {
    let api: Api<Namespace> = Api::all(client.clone());
    match api
        .get_opt(ns)
        .await
        .map_err(|e| anyhow!("reading namespace {ns}: {}", api_message(&e)))?
    {
        Some(existing) if existing.metadata.deletion_timestamp.is_some() => {
            bail!("namespace {ns} is being deleted; wait until it is gone and deploy again")
        }
        Some(_) => Ok(()),
        None => {
            let obj = Namespace {
                metadata: ObjectMeta {
                    name: Some(ns.to_string()),
                    labels: Some([(MANAGED_BY_LABEL.to_string(), MANAGED_BY.to_string())].into()),
                    ..ObjectMeta::default()
                },
                ..Namespace::default()
            };
            match api.create(&PostParams::default(), &obj).await {
                Ok(_) => {
                    progress.step(format!("created namespace {ns}"));
                    Ok(())
                }
                Err(e) if api_code(&e) == Some(409) => Ok(()),
                Err(e) => Err(anyhow!("creating namespace {ns}: {}", api_message(&e))),
            }
        }
    }
}

/// Applies the registry's objects and waits as `opts` says.
pub async fn deploy(
    client: &Client,
    s: &Settings,
    opts: &DeployOptions,
    progress: &mut Progress,
) -> anyhow::Result<Deployed> {
    let ns = s.namespace.as_str();
    let objects = render::objects(s);
    let headless = render::headless_name(&s.name);

    ensure_namespace(client, ns, progress).await?;
    check_not_foreign::<Service>(client, ns, &s.name).await?;
    check_not_foreign::<Service>(client, ns, &headless).await?;
    check_not_foreign::<Deployment>(client, ns, &s.name).await?;
    check_not_foreign::<StatefulSet>(client, ns, &s.name).await?;

    // One workload kind at a time.
    match objects.workload {
        Workload::StatefulSet(_) => {
            if delete_ours::<Deployment>(client, ns, &s.name).await? {
                progress.step(format!(
                    "removed Deployment {ns}/{} (persistence is on: the registry is now a StatefulSet; \
                     images in the old emptyDir are gone)",
                    s.name
                ));
            }
        }
        Workload::Deployment(_) => {
            if delete_ours::<StatefulSet>(client, ns, &s.name).await? {
                progress.step(format!(
                    "removed StatefulSet {ns}/{} (persistence is off: the registry is now a Deployment; \
                     its PersistentVolumeClaim is kept until `berth k8s cleanup --delete-volumes`)",
                    s.name
                ));
            }
            if delete_ours::<Service>(client, ns, &headless).await? {
                progress.step(format!("removed Service {ns}/{headless}"));
            }
        }
    }

    let mut params = PatchParams::apply(super::FIELD_MANAGER);
    if opts.force_conflicts {
        params = params.force();
    }
    apply_objects(client, &objects, &params, progress).await?;

    let node_port = wait_node_port(client, ns, &s.name, opts.timeout, progress).await?;
    let address = format!("localhost:{node_port}");
    progress.step(format!(
        "registry address: {address} (NodePort of Service {ns}/{})",
        s.name
    ));
    if !opts.wait {
        return Ok(Deployed {
            node_port,
            address,
            answered: None,
        });
    }

    wait_rollout(client, s, &objects.workload, opts.timeout, progress).await?;
    let answered = ping(&address).await;
    match &answered {
        Ok(status) => progress.step(format!("GET http://{address}/v2/ answered {status}")),
        Err(e) => progress.step(format!(
            "warning: the registry is ready in the cluster, but http://{address}/v2/ does not \
             answer here ({e}); the NodePort must be reachable on localhost (for example \
             `kubectl port-forward -n {ns} svc/{} {node_port}:{}` or KinD's extraPortMappings)",
            s.name, s.port
        )),
    }
    Ok(Deployed {
        node_port,
        address,
        answered: Some(answered.is_ok()),
    })
}

async fn apply_objects(
    client: &Client,
    objects: &Objects,
    params: &PatchParams,
    progress: &mut Progress,
) -> anyhow::Result<()> {
    if let Some(h) = &objects.headless {
        apply_one(client, h, params).await?;
        progress.step(format!(
            "applied Service {}/{}",
            h.namespace().unwrap_or_default(),
            h.name_any()
        ));
    }
    let svc = &objects.service;
    apply_one(client, svc, params).await?;
    progress.step(format!(
        "applied Service {}/{} (NodePort)",
        svc.namespace().unwrap_or_default(),
        svc.name_any()
    ));
    let (kind, ns, name) = match &objects.workload {
        Workload::Deployment(d) => {
            apply_one(client, d.as_ref(), params).await?;
            ("Deployment", d.namespace(), d.name_any())
        }
        Workload::StatefulSet(st) => {
            apply_one(client, st.as_ref(), params).await?;
            ("StatefulSet", st.namespace(), st.name_any())
        }
    };
    progress.step(format!("applied {kind} {}/{name}", ns.unwrap_or_default()));
    Ok(())
}

async fn wait_node_port(
    client: &Client,
    ns: &str,
    name: &str,
    timeout: Duration,
    progress: &mut Progress,
) -> anyhow::Result<u16> {
    let api: Api<Service> = Api::namespaced(client.clone(), ns);
    let deadline = Instant::now() + timeout;
    loop {
        let svc = api
            .get(name)
            .await
            .map_err(|e| anyhow!("reading Service {ns}/{name}: {}", api_message(&e)))?;
        if let Some(port) = node_port(&svc) {
            return Ok(port);
        }
        if Instant::now() >= deadline {
            bail!(
                "timed out after {} waiting for Service {ns}/{name} to get a NodePort",
                humantime::format_duration(timeout)
            );
        }
        progress.waiting(&format!(
            "waiting for Service {ns}/{name} to get a NodePort"
        ));
        tokio::time::sleep(POLL).await;
    }
}

pub fn node_port(svc: &Service) -> Option<u16> {
    svc.spec
        .as_ref()?
        .ports
        .as_ref()?
        .iter()
        .find_map(|p| p.node_port)
        .and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p != 0)
}

/// Whether the rollout is complete (the `kubectl rollout status` rules for one replica),
/// and if not, what it waits for.
async fn rollout_done(
    client: &Client,
    s: &Settings,
    workload: &Workload,
) -> anyhow::Result<Result<(), String>> {
    let ns = s.namespace.as_str();
    let name = s.name.as_str();
    let waiting = match workload {
        Workload::Deployment(_) => {
            let api: Api<Deployment> = Api::namespaced(client.clone(), ns);
            let d = api
                .get(name)
                .await
                .map_err(|e| anyhow!("reading Deployment {ns}/{name}: {}", api_message(&e)))?;
            let want = d.spec.replicas.unwrap_or(1);
            let st = d.status.clone().unwrap_or_default();
            let generation = d.metadata.generation.unwrap_or(0);
            if st.observed_generation.unwrap_or(0) < generation {
                Some("waiting for the Deployment controller to see the new spec".to_string())
            } else if st.updated_replicas.unwrap_or(0) < want {
                Some(format!(
                    "{}/{want} pods updated",
                    st.updated_replicas.unwrap_or(0)
                ))
            } else if st.replicas.unwrap_or(0) > st.updated_replicas.unwrap_or(0) {
                Some("waiting for the old pod to terminate".to_string())
            } else if st.available_replicas.unwrap_or(0) < want {
                Some(format!(
                    "{}/{want} pods ready",
                    st.available_replicas.unwrap_or(0)
                ))
            } else {
                None
            }
        }
        Workload::StatefulSet(_) => {
            let api: Api<StatefulSet> = Api::namespaced(client.clone(), ns);
            let sts = api
                .get(name)
                .await
                .map_err(|e| anyhow!("reading StatefulSet {ns}/{name}: {}", api_message(&e)))?;
            let want = sts.spec.replicas.unwrap_or(1);
            let st = sts.status.clone().unwrap_or_default();
            let generation = sts.metadata.generation.unwrap_or(0);
            if st.observed_generation.unwrap_or(0) < generation {
                Some("waiting for the StatefulSet controller to see the new spec".to_string())
            } else if st.ready_replicas.unwrap_or(0) < want {
                Some(format!(
                    "{}/{want} pods ready",
                    st.ready_replicas.unwrap_or(0)
                ))
            } else if st.update_revision.is_some() && st.update_revision != st.current_revision {
                Some("waiting for the pod to be updated".to_string())
            } else {
                None
            }
        }
    };
    match waiting {
        None => Ok(Ok(())),
        Some(w) => {
            let pods = describe_pods(client, ns, name).await;
            Ok(Err(if pods.is_empty() {
                w
            } else {
                format!("{w}; {pods}")
            }))
        }
    }
}

async fn wait_rollout(
    client: &Client,
    s: &Settings,
    workload: &Workload,
    timeout: Duration,
    progress: &mut Progress,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        match rollout_done(client, s, workload).await? {
            Ok(()) => {
                progress.step(format!(
                    "{} {}/{} is ready",
                    workload.kind(),
                    s.namespace,
                    s.name
                ));
                return Ok(());
            }
            Err(waiting) => {
                if Instant::now() >= deadline {
                    bail!(
                        "timed out after {} waiting for {} {}/{} to become ready: {waiting}\n\
                         (`berth k8s status` shows the state; `kubectl describe pod -n {} -l app={}` \
                         shows why)",
                        humantime::format_duration(timeout),
                        workload.kind(),
                        s.namespace,
                        s.name,
                        s.namespace,
                        s.name
                    );
                }
                progress.waiting(&waiting);
            }
        }
        tokio::time::sleep(POLL).await;
    }
}

/// One line per current pod: phase, and why it is not ready.
async fn describe_pods(client: &Client, ns: &str, name: &str) -> String {
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let Ok(pods) = api
        .list(&ListParams::default().labels(&managed_selector(name)))
        .await
    else {
        return String::new();
    };
    pods.items
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .map(pod_state)
        .collect::<Vec<_>>()
        .join("; ")
}

/// `pod NAME: Phase (reason)`, e.g. `pod registry-0: Pending (Unschedulable: …)`.
pub fn pod_state(p: &Pod) -> String {
    let name = p.name_any();
    let Some(st) = &p.status else {
        return format!("pod {name}: no status yet");
    };
    let phase = st.phase.clone().unwrap_or_else(|| "Unknown".into());
    let mut why = Vec::new();
    for c in st.container_statuses.iter().flatten() {
        if let Some(w) = c.state.as_ref().and_then(|s| s.waiting.as_ref()) {
            let reason = w.reason.clone().unwrap_or_default();
            let msg = w.message.clone().unwrap_or_default();
            why.push(format!(
                "{}: {reason}{}",
                c.name,
                if msg.is_empty() {
                    String::new()
                } else {
                    format!(" ({msg})")
                }
            ));
        }
    }
    let conditions = st.conditions.as_deref().unwrap_or_default();
    let ready = conditions
        .iter()
        .any(|c| c.type_ == "Ready" && c.status == "True");
    if why.is_empty() {
        for c in conditions {
            if c.status != "True" && c.reason.is_some() {
                why.push(format!(
                    "{} {}{}",
                    c.type_,
                    c.reason.clone().unwrap_or_default(),
                    c.message
                        .as_ref()
                        .map(|m| format!(": {m}"))
                        .unwrap_or_default()
                ));
            }
        }
    }
    let readiness = if ready { "ready" } else { "not ready" };
    if why.is_empty() {
        format!("pod {name}: {phase}, {readiness}")
    } else {
        format!("pod {name}: {phase}, {readiness} ({})", why.join(", "))
    }
}

/// `GET http://ADDRESS/v2/`: the status line, if anything answered.
async fn ping(address: &str) -> anyhow::Result<reqwest::StatusCode> {
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(3))
        .build()?;
    let resp = client.get(format!("http://{address}/v2/")).send().await?;
    let status = resp.status();
    // 200: an open registry; 401: one that wants a login. Both are registries.
    if status.is_success() || status == reqwest::StatusCode::UNAUTHORIZED {
        Ok(status)
    } else {
        bail!("it answered {status}")
    }
}

/// What `status` found.
#[derive(Debug, Clone, Default)]
pub struct Status {
    pub lines: Vec<String>,
    pub ready: bool,
    pub address: Option<String>,
}

pub async fn status(client: &Client, s: &Settings) -> anyhow::Result<Status> {
    let ns = s.namespace.as_str();
    let name = s.name.as_str();
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let statefulsets: Api<StatefulSet> = Api::namespaced(client.clone(), ns);
    let services: Api<Service> = Api::namespaced(client.clone(), ns);
    let err = |what: &str, e: kube::Error| anyhow!("reading {what}: {}", api_message(&e));

    let dep = deployments
        .get_opt(name)
        .await
        .map_err(|e| err("Deployment", e))?
        .filter(|d| is_ours(&d.metadata));
    let sts = statefulsets
        .get_opt(name)
        .await
        .map_err(|e| err("StatefulSet", e))?
        .filter(|d| is_ours(&d.metadata));
    let svc = services
        .get_opt(name)
        .await
        .map_err(|e| err("Service", e))?
        .filter(|d| is_ours(&d.metadata));
    if dep.is_none() && sts.is_none() && svc.is_none() {
        bail!("no registry named {name} in namespace {ns} (deploy it with `berth k8s deploy`)");
    }
    let mut out = Status::default();
    out.lines.push(format!("registry {name} in namespace {ns}"));
    let (ready, total, image) = if let Some(d) = &dep {
        let st = d.status.clone().unwrap_or_default();
        (
            st.available_replicas.unwrap_or(0),
            d.spec.replicas.unwrap_or(1),
            pod_image(&d.spec.template),
        )
    } else if let Some(st) = &sts {
        let status = st.status.clone().unwrap_or_default();
        (
            status.ready_replicas.unwrap_or(0),
            st.spec.replicas.unwrap_or(1),
            pod_image(&st.spec.template),
        )
    } else {
        (0, 1, None)
    };
    let kind = if dep.is_some() {
        "Deployment (emptyDir: images are lost when the pod goes)"
    } else if sts.is_some() {
        "StatefulSet (PersistentVolumeClaim)"
    } else {
        "missing"
    };
    out.lines
        .push(format!("  workload:  {kind}, {ready}/{total} ready"));
    if let Some(image) = image {
        out.lines.push(format!("  image:     {image}"));
    }
    out.ready = ready >= total && total > 0;
    match svc.as_ref().and_then(node_port) {
        Some(p) => {
            out.address = Some(format!("localhost:{p}"));
            out.lines.push(format!(
                "  service:   {name} (NodePort {p} -> port {})",
                service_port(svc.as_ref()).unwrap_or(s.port.into())
            ));
            out.lines.push(format!("  address:   localhost:{p}"));
        }
        None => out.lines.push("  service:   missing".to_string()),
    }
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns);
    let claims = pvcs
        .list(&ListParams::default().labels(&managed_selector(name)))
        .await
        .map_err(|e| err("PersistentVolumeClaims", e))?;
    for c in &claims.items {
        let size = c
            .spec
            .as_ref()
            .and_then(|s| s.resources.as_ref())
            .and_then(|r| r.requests.as_ref())
            .and_then(|r| r.get("storage"))
            .map(|q| q.0.clone())
            .unwrap_or_default();
        let phase = c
            .status
            .as_ref()
            .and_then(|s| s.phase.clone())
            .unwrap_or_default();
        out.lines.push(format!(
            "  volume:    PersistentVolumeClaim {} {size} {phase}",
            c.name_any()
        ));
    }
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let list = pods
        .list(&ListParams::default().labels(&managed_selector(name)))
        .await
        .map_err(|e| err("pods", e))?;
    for p in &list.items {
        let mut line = pod_state(p);
        if p.metadata.deletion_timestamp.is_some() {
            line.push_str(" (terminating)");
        }
        out.lines.push(format!("  {line}"));
    }
    out.lines.push(format!(
        "  ready:     {}",
        if out.ready { "yes" } else { "no" }
    ));
    Ok(out)
}

fn pod_image(t: &k8s_openapi::api::core::v1::PodTemplateSpec) -> Option<String> {
    t.spec
        .as_ref()?
        .containers
        .iter()
        .find(|c| c.name == super::REGISTRY_CONTAINER)?
        .image
        .clone()
}

fn service_port(svc: Option<&Service>) -> Option<i32> {
    svc?.spec.as_ref()?.ports.as_ref()?.first().map(|p| p.port)
}

#[derive(Debug, Clone, Default)]
pub struct CleanupOptions {
    /// Delete the PersistentVolumeClaims (the registry's images) too.
    pub delete_volumes: bool,
    /// Delete the namespace too, if Berth created it.
    pub delete_namespace: bool,
}

/// Removes what `deploy` created; returns what it removed, one line each.
pub async fn cleanup(
    client: &Client,
    s: &Settings,
    opts: &CleanupOptions,
    progress: &mut Progress,
) -> anyhow::Result<Vec<String>> {
    let ns = s.namespace.as_str();
    let name = s.name.as_str();
    let headless = render::headless_name(name);
    let mut removed = Vec::new();
    if delete_ours::<Deployment>(client, ns, name).await? {
        removed.push(format!("Deployment {ns}/{name}"));
    }
    if delete_ours::<StatefulSet>(client, ns, name).await? {
        removed.push(format!("StatefulSet {ns}/{name}"));
    }
    if delete_ours::<Service>(client, ns, name).await? {
        removed.push(format!("Service {ns}/{name}"));
    }
    if delete_ours::<Service>(client, ns, &headless).await? {
        removed.push(format!("Service {ns}/{headless}"));
    }
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns);
    let claims = pvcs
        .list(&ListParams::default().labels(&managed_selector(name)))
        .await
        .map_err(|e| {
            anyhow!(
                "listing PersistentVolumeClaims in {ns}: {}",
                api_message(&e)
            )
        })?;
    let mut kept_claims = false;
    for c in claims
        .items
        .iter()
        .filter(|c| c.metadata.deletion_timestamp.is_none())
    {
        let claim = c.name_any();
        if opts.delete_volumes {
            match pvcs.delete(&claim, &DeleteParams::background()).await {
                Ok(_) => removed.push(format!("PersistentVolumeClaim {ns}/{claim}")),
                Err(e) if api_code(&e) == Some(404) => {}
                Err(e) => bail!(
                    "deleting PersistentVolumeClaim {ns}/{claim}: {}",
                    api_message(&e)
                ),
            }
        } else {
            kept_claims = true;
            progress.step(format!(
                "kept PersistentVolumeClaim {ns}/{claim} (the registry's images; remove it with --delete-volumes)"
            ));
        }
    }
    if opts.delete_namespace {
        let api: Api<Namespace> = Api::all(client.clone());
        match api.get_opt(ns).await.map_err(|e| anyhow!("reading namespace {ns}: {}", api_message(&e)))? {
            Some(_) if kept_claims => progress.step(format!(
                "kept namespace {ns}: it holds the kept PersistentVolumeClaims (add --delete-volumes)"
            )),
            Some(n) if is_ours(&n.metadata) && n.metadata.deletion_timestamp.is_none() => {
                api.delete(ns, &DeleteParams::background())
                    .await
                    .map_err(|e| anyhow!("deleting namespace {ns}: {}", api_message(&e)))?;
                removed.push(format!("Namespace {ns}"));
            }
            Some(n) if is_ours(&n.metadata) => {}
            Some(_) => progress.step(format!("kept namespace {ns}: Berth did not create it")),
            None => {}
        }
    }
    Ok(removed)
}
