//! `berth k8s` end to end.
//!
//! Deploy, status and cleanup run against a real Kubernetes API server (kube-apiserver
//! and kube-controller-manager v1.20.2 with etcd, from `<repo>/../shared/k8s`), started
//! ONCE for all these tests (each test uses its own namespace) and stopped when the test
//! process exits. There is no kubelet: pods stay Pending, so readiness is tested by
//! patching a pod's status to Ready through the API, and the timeout path by leaving it
//! Pending. Where `../shared` is absent (a fresh clone) these tests skip with a message.
//!
//! render, rewrite-images and need-local need no cluster and always run.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{Namespace, PersistentVolumeClaim, Pod, Service};
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;

use berth::k8s::{render, settings::Partial};

// ---------------------------------------------------------------------------------------
// The shared API server
// ---------------------------------------------------------------------------------------

struct ClusterInfo {
    kubeconfig: PathBuf,
}

static CLUSTER: OnceLock<Option<ClusterInfo>> = OnceLock::new();

fn shared_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/k8s/apiserver.sh")
}

/// The test API server, started on first use; `None` (with a loud message) where
/// `../shared` is absent.
fn cluster() -> Option<&'static ClusterInfo> {
    CLUSTER.get_or_init(start_cluster).as_ref()
}

fn start_cluster() -> Option<ClusterInfo> {
    let script = shared_script();
    if !script.is_file() {
        say(format_args!(
            "\n=== SKIPPED: the `berth k8s` cluster tests need the test Kubernetes API server \
             at {} (the `shared/` directory beside the repository), which is absent here. \
             render, rewrite-images and need-local are still tested. ===\n",
            script.display()
        ));
        return None;
    }
    let script = script.canonicalize().unwrap();
    let dir = std::env::temp_dir().join(format!("berth-k8s-test-{}", std::process::id()));
    let started = Instant::now();
    let out = Command::new("bash")
        .arg(&script)
        .arg("start")
        .arg(&dir)
        .stdin(Stdio::null())
        .output()
        .expect("running apiserver.sh");
    assert!(
        out.status.success(),
        "apiserver.sh start failed ({}):\n{}\n{}\n(logs in {}/logs)",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        dir.display()
    );
    // Stop it (and remove its directory) once this test process has exited: the test
    // harness has no "after all tests" hook, so a detached watcher does it (started in
    // the background by a shell that exits at once).
    const WATCHER: &str =
        r#"while kill -0 "$0" 2>/dev/null; do sleep 0.5; done; bash "$1" stop "$2"; rm -rf "$2""#;
    let status = Command::new("sh")
        .args([
            "-c",
            r#"setsid sh -c "$0" "$@" </dev/null >/dev/null 2>&1 &"#,
            WATCHER,
        ])
        .arg(std::process::id().to_string())
        .arg(&script)
        .arg(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("starting the API server's watcher");
    assert!(
        status.success(),
        "starting the API server's watcher: {status}"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let kubeconfig = stdout
        .lines()
        .find_map(|l| l.strip_prefix("KUBECONFIG="))
        .map(PathBuf::from)
        .unwrap_or_else(|| panic!("apiserver.sh printed no KUBECONFIG: {stdout}"));
    say(format_args!(
        "k8s tests: API server v1.20.2 up in {:.1}s ({})",
        started.elapsed().as_secs_f64(),
        dir.display()
    ));
    Some(ClusterInfo { kubeconfig })
}

/// A line on the real standard error: the test harness captures `eprintln!` (and shows
/// it only for failures), and a skip must never be silent.
fn say(msg: std::fmt::Arguments) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{msg}");
}

macro_rules! cluster_or_skip {
    ($test:literal) => {
        match cluster() {
            Some(c) => c,
            None => {
                say(format_args!(
                    "SKIPPED {}: no test API server (see above)",
                    $test
                ));
                return;
            }
        }
    };
}

async fn client(c: &ClusterInfo) -> Client {
    let kc = kube::config::Kubeconfig::read_from(&c.kubeconfig).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .unwrap();
    Client::try_from(config).unwrap()
}

/// A namespace name unique to this test.
fn namespace(test: &str) -> String {
    format!("{test}-{}", &uuid::Uuid::new_v4().simple().to_string()[..8])
}

/// `berth ARGS` with the test cluster's kubeconfig, in an empty directory (so no
/// `devspace.yaml` is picked up).
fn berth_cmd(kubeconfig: Option<&Path>, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_berth"));
    cmd.args(args)
        .current_dir(std::env::temp_dir())
        .env(
            "KUBECONFIG",
            kubeconfig.unwrap_or(Path::new("/nonexistent/kubeconfig")),
        )
        .env_remove("BERTH_CONFIG")
        .stdin(Stdio::null());
    cmd
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn run(cmd: &mut Command) -> Run {
    let Output {
        status,
        stdout,
        stderr,
    } = cmd.output().expect("running berth");
    Run {
        code: status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    }
}

fn berth(c: &ClusterInfo, args: &[&str]) -> Run {
    run(&mut berth_cmd(Some(&c.kubeconfig), args))
}

fn ok(r: Run, what: &str) -> Run {
    assert_eq!(
        r.code, 0,
        "{what} failed:\nstdout:\n{}\nstderr:\n{}",
        r.stdout, r.stderr
    );
    r
}

fn node_port_of(addr: &str) -> u16 {
    addr.trim()
        .strip_prefix("localhost:")
        .unwrap_or_else(|| panic!("not an address: {addr:?}"))
        .parse()
        .unwrap()
}

fn applied_by_berth(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> bool {
    meta.managed_fields
        .iter()
        .flatten()
        .any(|m| m.manager.as_deref() == Some("berth") && m.operation.as_deref() == Some("Apply"))
}

async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

// ---------------------------------------------------------------------------------------
// Deploy, status, cleanup
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn deploy_applies_with_berths_field_manager_and_is_idempotent() {
    let c = cluster_or_skip!("deploy_applies_with_berths_field_manager_and_is_idempotent");
    let ns = namespace("deploy");
    let first = ok(
        berth(c, &["k8s", "deploy", "--no-wait", "-n", &ns]),
        "deploy",
    );
    let port = node_port_of(&first.stdout);
    assert!((30000..=32767).contains(&port), "{port}");
    assert!(
        first.stderr.contains(&format!("created namespace {ns}")),
        "{}",
        first.stderr
    );

    let client = client(c).await;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let n = namespaces.get(&ns).await.unwrap();
    assert_eq!(
        n.metadata.labels.unwrap()["app.kubernetes.io/managed-by"],
        "berth"
    );

    let services: Api<Service> = Api::namespaced(client.clone(), &ns);
    let svc = services.get("registry").await.unwrap();
    let spec = svc.spec.clone().unwrap();
    assert_eq!(spec.type_.as_deref(), Some("NodePort"));
    let p = &spec.ports.as_ref().unwrap()[0];
    assert_eq!((p.port, p.node_port), (5000, Some(port.into())));
    assert_eq!(spec.selector.unwrap()["app"], "registry");
    assert!(applied_by_berth(&svc.metadata));

    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let d = deployments.get("registry").await.unwrap();
    assert!(
        applied_by_berth(&d.metadata),
        "{:?}",
        d.metadata.managed_fields
    );
    let pod = d.spec.template.spec.as_ref().unwrap();
    assert_eq!(pod.containers[0].name, "registry");
    assert_eq!(pod.containers[1].name, "buildkitd");
    let statefulsets: Api<StatefulSet> = Api::namespaced(client.clone(), &ns);
    assert!(statefulsets.get_opt("registry").await.unwrap().is_none());

    // Again: nothing changes, the NodePort stays.
    let second = ok(
        berth(c, &["k8s", "deploy", "--no-wait", "-n", &ns]),
        "second deploy",
    );
    assert_eq!(second.stdout, first.stdout);
    assert!(!second.stderr.contains("created namespace"));
    let d2 = deployments.get("registry").await.unwrap();
    assert_eq!(
        d2.metadata.generation, d.metadata.generation,
        "re-applying changed the Deployment's spec"
    );
    assert_eq!(d2.metadata.uid, d.metadata.uid);
    let svc2 = services.get("registry").await.unwrap();
    assert_eq!(
        svc2.spec.unwrap().ports.unwrap()[0].node_port,
        Some(port.into())
    );
}

#[tokio::test]
async fn switching_persistence_replaces_the_workload_kind() {
    let c = cluster_or_skip!("switching_persistence_replaces_the_workload_kind");
    let ns = namespace("switch");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("devspace.yaml");
    std::fs::write(
        &file,
        "version: v2beta1\nname: app\nlocalRegistry:\n  name: images\n  port: 5050\n  localbuild: true\n  \
         persistence:\n    enabled: true\n    size: 1Gi\n    storageClassName: standard\n",
    )
    .unwrap();
    let file = file.to_str().unwrap();
    let client = client(c).await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let statefulsets: Api<StatefulSet> = Api::namespaced(client.clone(), &ns);
    let services: Api<Service> = Api::namespaced(client.clone(), &ns);

    // Start without persistence (a flag overrides the file's key)...
    let a = ok(
        berth(
            c,
            &[
                "k8s",
                "deploy",
                "--no-wait",
                "-f",
                file,
                "-n",
                &ns,
                "--persistence=false",
            ],
        ),
        "deploy",
    );
    assert!(deployments.get_opt("images").await.unwrap().is_some());

    // ...then as in the file: a StatefulSet with its claim template and headless Service.
    let b = ok(
        berth(c, &["k8s", "deploy", "--no-wait", "-f", file, "-n", &ns]),
        "deploy with persistence",
    );
    assert_eq!(a.stdout, b.stdout, "the NodePort stays");
    assert!(
        b.stderr
            .contains(&format!("removed Deployment {ns}/images")),
        "{}",
        b.stderr
    );
    assert!(deployments.get_opt("images").await.unwrap().is_none());
    let sts = statefulsets.get("images").await.unwrap();
    assert!(applied_by_berth(&sts.metadata));
    assert_eq!(sts.spec.service_name.as_deref(), Some("images-headless"));
    let vct = &sts.spec.volume_claim_templates.as_ref().unwrap()[0];
    let vspec = vct.spec.as_ref().unwrap();
    assert_eq!(vct.metadata.name.as_deref(), Some("data"));
    assert_eq!(
        vspec.access_modes.as_deref(),
        Some(&["ReadWriteOnce".to_string()][..])
    );
    assert_eq!(vspec.storage_class_name.as_deref(), Some("standard"));
    assert_eq!(
        vspec.resources.as_ref().unwrap().requests.as_ref().unwrap()["storage"].0,
        "1Gi"
    );
    let pod = sts.spec.template.spec.as_ref().unwrap();
    assert_eq!(pod.containers.len(), 1, "localbuild: no BuildKit sidecar");
    assert_eq!(pod.containers[0].args.as_ref().unwrap()[3], "0.0.0.0:5050");
    let headless = services.get("images-headless").await.unwrap();
    assert_eq!(headless.spec.unwrap().cluster_ip.as_deref(), Some("None"));

    // Idempotent with a StatefulSet too (its claim template must not "change").
    let generation = sts.metadata.generation;
    ok(
        berth(c, &["k8s", "deploy", "--no-wait", "-f", file, "-n", &ns]),
        "re-deploy",
    );
    assert_eq!(
        statefulsets
            .get("images")
            .await
            .unwrap()
            .metadata
            .generation,
        generation
    );

    // And back.
    let d = ok(
        berth(
            c,
            &[
                "k8s",
                "deploy",
                "--no-wait",
                "-f",
                file,
                "-n",
                &ns,
                "--persistence=false",
            ],
        ),
        "deploy without persistence",
    );
    assert_eq!(d.stdout, a.stdout);
    assert!(
        d.stderr
            .contains(&format!("removed StatefulSet {ns}/images")),
        "{}",
        d.stderr
    );
    assert!(statefulsets.get_opt("images").await.unwrap().is_none());
    assert!(services.get_opt("images-headless").await.unwrap().is_none());
    assert!(deployments.get_opt("images").await.unwrap().is_some());
}

#[tokio::test]
async fn status_and_cleanup_keep_volumes_unless_asked() {
    let c = cluster_or_skip!("status_and_cleanup_keep_volumes_unless_asked");
    let ns = namespace("cleanup");
    let client = client(c).await;
    let addr = ok(
        berth(
            c,
            &["k8s", "deploy", "--no-wait", "--persistence", "-n", &ns],
        ),
        "deploy",
    )
    .stdout;
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &ns);
    // The StatefulSet controller creates the claim for its pod.
    wait_for("the StatefulSet's claim", Duration::from_secs(30), || {
        let pvcs = pvcs.clone();
        async move { pvcs.get_opt("data-registry-0").await.unwrap() }
    })
    .await;

    let st = ok(berth(c, &["k8s", "status", "-n", &ns]), "status");
    for want in [
        format!("registry registry in namespace {ns}"),
        "StatefulSet".to_string(),
        "0/1 ready".to_string(),
        format!("address:   {}", addr.trim()),
        "PersistentVolumeClaim data-registry-0 5Gi".to_string(),
        "ready:     no".to_string(),
    ] {
        assert!(
            st.stdout.contains(&want),
            "status lacks {want:?}:\n{}",
            st.stdout
        );
    }

    let clean = ok(berth(c, &["k8s", "cleanup", "-n", &ns]), "cleanup");
    for want in [
        format!("removed StatefulSet {ns}/registry"),
        format!("removed Service {ns}/registry\n"),
        format!("removed Service {ns}/registry-headless"),
    ] {
        assert!(
            clean.stdout.contains(&want),
            "cleanup lacks {want:?}:\n{}",
            clean.stdout
        );
    }
    assert!(
        clean
            .stderr
            .contains(&format!("kept PersistentVolumeClaim {ns}/data-registry-0")),
        "{}",
        clean.stderr
    );
    let statefulsets: Api<StatefulSet> = Api::namespaced(client.clone(), &ns);
    assert!(statefulsets.get_opt("registry").await.unwrap().is_none());
    assert!(
        pvcs.get_opt("data-registry-0").await.unwrap().is_some(),
        "the claim is kept"
    );

    let gone = berth(c, &["k8s", "status", "-n", &ns]);
    assert_ne!(gone.code, 0);
    assert!(
        gone.stderr
            .contains(&format!("no registry named registry in namespace {ns}")),
        "{}",
        gone.stderr
    );

    let all = ok(
        berth(
            c,
            &[
                "k8s",
                "cleanup",
                "-n",
                &ns,
                "--delete-volumes",
                "--delete-namespace",
            ],
        ),
        "cleanup everything",
    );
    assert!(
        all.stdout.contains(&format!(
            "removed PersistentVolumeClaim {ns}/data-registry-0"
        )),
        "{}",
        all.stdout
    );
    assert!(
        all.stdout.contains(&format!("removed Namespace {ns}")),
        "{}",
        all.stdout
    );
    let claim = pvcs.get_opt("data-registry-0").await.unwrap();
    assert!(claim.is_none_or(|c| c.metadata.deletion_timestamp.is_some()));
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let n = namespaces.get_opt(&ns).await.unwrap();
    assert!(n.is_none_or(|n| n.metadata.deletion_timestamp.is_some()));
}

#[tokio::test]
async fn deploy_refuses_to_take_over_objects_berth_did_not_create() {
    let c = cluster_or_skip!("deploy_refuses_to_take_over_objects_berth_did_not_create");
    let ns = namespace("foreign");
    let client = client(c).await;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap(),
        )
        .await
        .unwrap();
    let services: Api<Service> = Api::namespaced(client.clone(), &ns);
    let svc: Service = serde_json::from_value(json!({
        "metadata": {"name": "registry"},
        "spec": {"ports": [{"port": 80}], "selector": {"app": "mine"}}
    }))
    .unwrap();
    services.create(&PostParams::default(), &svc).await.unwrap();
    let r = berth(c, &["k8s", "deploy", "--no-wait", "-n", &ns]);
    assert_ne!(r.code, 0);
    assert!(
        r.stderr.contains(&format!(
            "Service {ns}/registry exists and was not created by Berth"
        )),
        "{}",
        r.stderr
    );
    // Cleanup leaves it alone too.
    ok(berth(c, &["k8s", "cleanup", "-n", &ns]), "cleanup");
    assert!(services.get_opt("registry").await.unwrap().is_some());
}

/// Marks the pod Ready, as a kubelet would once the readiness probe passes.
async fn make_ready(pods: &Api<Pod>, name: &str) {
    let status = json!({"status": {
        "phase": "Running",
        "conditions": [
            {"type": "PodScheduled", "status": "True"},
            {"type": "Initialized", "status": "True"},
            {"type": "ContainersReady", "status": "True"},
            {"type": "Ready", "status": "True"}
        ]
    }});
    pods.patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();
}

/// The first pod of the registry, once the controllers have created it.
async fn registry_pod(pods: &Api<Pod>) -> String {
    wait_for("the registry's pod", Duration::from_secs(30), || {
        let pods = pods.clone();
        async move {
            let list = pods
                .list(&ListParams::default().labels("app=registry"))
                .await
                .unwrap();
            list.items.into_iter().next().and_then(|p| p.metadata.name)
        }
    })
    .await
}

async fn service_node_port(services: &Api<Service>) -> u16 {
    wait_for("the NodePort", Duration::from_secs(30), || {
        let services = services.clone();
        async move {
            let svc = services.get_opt("registry").await.unwrap()?;
            berth::k8s::apply::node_port(&svc)
        }
    })
    .await
}

/// A real `berth serve` on 127.0.0.1:PORT, standing in for what the NodePort reaches.
struct Server {
    child: std::process::Child,
    _data: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn serve_on(port: u16) -> Server {
    let data = tempfile::tempdir().unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args([
            "serve",
            "--no-auth",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
        ])
        .arg(data.path())
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let server = Server { child, _data: data };
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    wait_for(
        "berth serve on the NodePort",
        Duration::from_secs(20),
        || {
            let http = http.clone();
            async move {
                let r = http
                    .get(format!("http://127.0.0.1:{port}/readyz"))
                    .send()
                    .await
                    .ok()?;
                r.status().is_success().then_some(())
            }
        },
    )
    .await;
    server
}

#[tokio::test]
async fn deploy_waits_until_the_pod_is_ready_and_pings_the_registry() {
    let c = cluster_or_skip!("deploy_waits_until_the_pod_is_ready_and_pings_the_registry");
    let ns = namespace("ready");
    let client = client(c).await;
    let started = Instant::now();
    let child = berth_cmd(
        Some(&c.kubeconfig),
        &["k8s", "deploy", "-n", &ns, "--timeout", "60s"],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let services: Api<Service> = Api::namespaced(client.clone(), &ns);
    let port = service_node_port(&services).await;
    let _server = serve_on(port).await;
    let pod = registry_pod(&pods).await;
    // deploy is still waiting: nothing is ready yet.
    tokio::time::sleep(Duration::from_millis(700)).await;
    make_ready(&pods, &pod).await;

    let out = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "deploy failed:\n{stdout}\n{stderr}");
    assert_eq!(stdout.trim(), format!("localhost:{port}"));
    assert!(
        stderr.contains("pods ready") || stderr.contains("pods updated"),
        "no progress shown:\n{stderr}"
    );
    assert!(
        stderr.contains(&format!("Deployment {ns}/registry is ready")),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("GET http://localhost:{port}/v2/ answered 200")),
        "{stderr}"
    );
    assert!(started.elapsed() < Duration::from_secs(45));

    let st = ok(berth(c, &["k8s", "status", "-n", &ns]), "status");
    assert!(
        st.stdout.contains("1/1 ready") && st.stdout.contains("ready:     yes"),
        "{}",
        st.stdout
    );
}

#[tokio::test]
async fn deploy_waits_for_a_statefulset_and_warns_when_the_address_does_not_answer() {
    let c = cluster_or_skip!(
        "deploy_waits_for_a_statefulset_and_warns_when_the_address_does_not_answer"
    );
    let ns = namespace("ready-sts");
    let client = client(c).await;
    let child = berth_cmd(
        Some(&c.kubeconfig),
        &[
            "k8s",
            "deploy",
            "-n",
            &ns,
            "--persistence",
            "--timeout",
            "60s",
        ],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let pod = registry_pod(&pods).await;
    assert_eq!(pod, "registry-0");
    make_ready(&pods, &pod).await;
    let out = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "deploy failed:\n{stderr}");
    assert!(
        stderr.contains(&format!("StatefulSet {ns}/registry is ready")),
        "{stderr}"
    );
    // Nothing listens on the NodePort here (no kube-proxy): a warning, not a failure.
    assert!(stderr.contains("does not answer here"), "{stderr}");
}

#[tokio::test]
async fn deploy_times_out_while_the_pod_stays_pending() {
    let c = cluster_or_skip!("deploy_times_out_while_the_pod_stays_pending");
    let ns = namespace("timeout");
    let started = Instant::now();
    let r = berth(c, &["k8s", "deploy", "-n", &ns, "--timeout", "3s"]);
    assert_ne!(
        r.code, 0,
        "deploy succeeded with a pending pod:\n{}",
        r.stderr
    );
    assert!(
        r.stderr.contains(&format!(
            "timed out after 3s waiting for Deployment {ns}/registry to become ready"
        )),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("Pending"),
        "the pod's state is shown:\n{}",
        r.stderr
    );
    assert!(
        r.stdout.is_empty(),
        "no address on stdout after a failure: {}",
        r.stdout
    );
    assert!(started.elapsed() < Duration::from_secs(20));
}

/// Every rendered combination is accepted by the API server as it is (server-side
/// apply, dry run): the objects use only fields Kubernetes 1.20 knows, and pass its
/// validation.
#[tokio::test]
async fn rendered_objects_pass_the_api_servers_validation() {
    let c = cluster_or_skip!("rendered_objects_pass_the_api_servers_validation");
    let ns = namespace("dry-run");
    let client = client(c).await;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap(),
        )
        .await
        .unwrap();
    let params = PatchParams::apply("berth").dry_run();
    for persistence in [false, true] {
        for localbuild in [false, true] {
            for class in [None, Some("fast-ssd".to_string())] {
                let s = Partial {
                    namespace: Some(ns.clone()),
                    persistence_enabled: Some(persistence),
                    localbuild: Some(localbuild),
                    persistence_storage_class_name: class.clone(),
                    name: Some("reg".into()),
                    port: Some(5443),
                    ..Partial::default()
                }
                .resolve(None)
                .unwrap();
                let what =
                    format!("persistence={persistence} localbuild={localbuild} class={class:?}");
                let objs = render::objects(&s);
                let services: Api<Service> = Api::namespaced(client.clone(), &ns);
                for svc in objs.headless.iter().chain([&objs.service]) {
                    let name = svc.metadata.name.clone().unwrap();
                    services
                        .patch(&name, &params, &Patch::Apply(svc))
                        .await
                        .unwrap_or_else(|e| panic!("{what}: Service {name}: {e}"));
                }
                match &objs.workload {
                    render::Workload::Deployment(d) => {
                        let api: Api<Deployment> = Api::namespaced(client.clone(), &ns);
                        let back = api
                            .patch("reg", &params, &Patch::Apply(d.as_ref()))
                            .await
                            .unwrap_or_else(|e| panic!("{what}: Deployment: {e}"));
                        assert_eq!(
                            back.spec.template.spec.unwrap().containers.len(),
                            if localbuild { 1 } else { 2 }
                        );
                    }
                    render::Workload::StatefulSet(st) => {
                        let api: Api<StatefulSet> = Api::namespaced(client.clone(), &ns);
                        api.patch("reg", &params, &Patch::Apply(st.as_ref()))
                            .await
                            .unwrap_or_else(|e| panic!("{what}: StatefulSet: {e}"));
                    }
                }
            }
        }
    }
}

/// `render --ha` from the command line: a Service, a PodDisruptionBudget and a Deployment
/// that the API server accepts as they are (dry run). The test server is Kubernetes 1.20,
/// which serves PodDisruptionBudgets only as policy/v1beta1 (policy/v1 came in 1.21, and
/// the HA render targets current clusters), so the budget's spec is checked under that
/// version: its fields (selector, maxUnavailable) are the same in both.
#[tokio::test]
async fn ha_render_passes_the_api_servers_validation() {
    let c = cluster_or_skip!("ha_render_passes_the_api_servers_validation");
    let ns = namespace("ha");
    let client = client(c).await;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap(),
        )
        .await
        .unwrap();
    let r = ok(
        berth(
            c,
            &[
                "k8s",
                "render",
                "--ha",
                "-n",
                &ns,
                "--name",
                "images",
                "--replicas",
                "4",
                "--s3-endpoint",
                "http://minio.storage:9000",
                "--s3-bucket",
                "layers",
                "--s3-redirect",
                "--public-url",
                "https://registry.example.com",
                "--service-type",
                "LoadBalancer",
            ],
        ),
        "render --ha",
    );
    let docs: Vec<serde_json::Value> = r
        .stdout
        .split("---\n")
        .filter(|d| !d.trim().is_empty())
        .map(|d| serde_norway::from_str(d).unwrap())
        .collect();
    let kinds: Vec<&str> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["Service", "PodDisruptionBudget", "Deployment"]);
    let params = PatchParams::apply("berth").dry_run();

    let svc: Service = serde_json::from_value(docs[0].clone()).unwrap();
    let services: Api<Service> = Api::namespaced(client.clone(), &ns);
    let back = services
        .patch("images", &params, &Patch::Apply(&svc))
        .await
        .unwrap_or_else(|e| panic!("Service: {e}"));
    assert_eq!(back.spec.unwrap().type_.as_deref(), Some("LoadBalancer"));

    let mut pdb = docs[1].clone();
    assert_eq!(pdb["apiVersion"], "policy/v1");
    pdb["apiVersion"] = json!("policy/v1beta1");
    let resource = kube::api::ApiResource {
        group: "policy".into(),
        version: "v1beta1".into(),
        api_version: "policy/v1beta1".into(),
        kind: "PodDisruptionBudget".into(),
        plural: "poddisruptionbudgets".into(),
    };
    let budgets: Api<kube::api::DynamicObject> =
        Api::namespaced_with(client.clone(), &ns, &resource);
    let back = budgets
        .patch("images", &params, &Patch::Apply(&pdb))
        .await
        .unwrap_or_else(|e| panic!("PodDisruptionBudget: {e}"));
    assert_eq!(back.data["spec"]["maxUnavailable"], 1);
    assert_eq!(
        back.data["spec"]["selector"]["matchLabels"]["app"],
        "images"
    );

    let d: Deployment = serde_json::from_value(docs[2].clone()).unwrap();
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let back = deployments
        .patch("images", &params, &Patch::Apply(&d))
        .await
        .unwrap_or_else(|e| panic!("Deployment: {e}"));
    let spec = back.spec;
    assert_eq!(spec.replicas, Some(4));
    let container = &spec.template.spec.unwrap().containers[0];
    let env: std::collections::BTreeMap<String, serde_json::Value> = container
        .env
        .clone()
        .unwrap()
        .into_iter()
        .map(|e| (e.name.clone(), serde_json::to_value(e).unwrap()))
        .collect();
    assert_eq!(env["BERTH_STORAGE__S3__BUCKET"]["value"], "layers");
    assert_eq!(env["BERTH_STORAGE__S3__REDIRECT"]["value"], "true");
    assert_eq!(
        env["BERTH_METADATA__URL"]["valueFrom"]["secretKeyRef"],
        json!({"name": "images-config", "key": "metadata-url"})
    );
    assert_eq!(
        env["BERTH_ADMIN_PASSWORD"]["valueFrom"]["secretKeyRef"]["optional"],
        true
    );
    assert!(!container
        .args
        .clone()
        .unwrap()
        .contains(&"--no-auth".to_string()));
}

// ---------------------------------------------------------------------------------------
// render: no cluster needed
// ---------------------------------------------------------------------------------------

#[test]
fn render_prints_multi_document_yaml_with_every_namespace() {
    let r = run(&mut berth_cmd(
        None,
        &["k8s", "render", "--persistence", "-n", "tools"],
    ));
    assert_eq!(r.code, 0, "{}", r.stderr);
    let docs: Vec<serde_json::Value> = r
        .stdout
        .split("---\n")
        .filter(|d| !d.trim().is_empty())
        .map(|d| serde_norway::from_str(d).unwrap())
        .collect();
    let kinds: Vec<&str> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["Service", "Service", "StatefulSet"]);
    assert!(docs.iter().all(|d| d["metadata"]["namespace"] == "tools"));
    let pod = &docs[2]["spec"]["template"]["spec"];
    assert_eq!(pod["containers"][0]["securityContext"]["runAsUser"], 1000);
    assert_eq!(
        pod["containers"][0]["volumeMounts"][0]["mountPath"],
        "/var/lib/registry"
    );
    assert_eq!(
        pod["containers"][0]["image"],
        format!("ghcr.io/berth-registry/berth:{}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn render_ha_names_what_it_is_missing_or_cannot_use() {
    let r = run(&mut berth_cmd(None, &["k8s", "render", "--ha", "-n", "x"]));
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("--ha needs --s3-bucket"), "{}", r.stderr);
    let r = run(&mut berth_cmd(
        None,
        &[
            "k8s",
            "render",
            "--ha",
            "-n",
            "x",
            "--s3-bucket",
            "b",
            "--persistence",
        ],
    ));
    assert_ne!(r.code, 0);
    assert!(
        r.stderr.contains("--persistence has no meaning with --ha"),
        "{}",
        r.stderr
    );
    let r = run(&mut berth_cmd(None, &["k8s", "render", "--replicas", "3"]));
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("--ha"), "{}", r.stderr);
}

#[test]
fn render_reads_devspace_yaml_and_names_a_bad_key() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("devspace.yaml");
    std::fs::write(
        &good,
        "version: v2beta1\nlocalRegistry:\n  namespace: dev\n  port: 5050\n",
    )
    .unwrap();
    // ./devspace.yaml is read by default.
    let r = run(berth_cmd(None, &["k8s", "render", "--name", "reg"]).current_dir(dir.path()));
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stdout.contains("namespace: dev")
            && r.stdout.contains("0.0.0.0:5050")
            && r.stdout.contains("name: reg\n")
    );

    for (yaml, key) in [
        (
            "localRegistry:\n  port: fivethousand\n",
            "localRegistry.port",
        ),
        (
            "localRegistry:\n  persistence:\n    enabled: true\n    sise: 1Gi\n",
            "localRegistry.persistence.sise",
        ),
        (
            "localRegistry:\n  persistence: {enabled: 1}\n",
            "localRegistry.persistence.enabled",
        ),
        ("localRegistry:\n  name: Not_Valid\n", "localRegistry.name"),
    ] {
        let bad = dir.path().join("bad.yaml");
        std::fs::write(&bad, yaml).unwrap();
        for cmd in ["render", "deploy", "status", "cleanup"] {
            let r = run(&mut berth_cmd(
                None,
                &["k8s", cmd, "--file", bad.to_str().unwrap()],
            ));
            assert_ne!(r.code, 0, "{cmd} accepted {yaml}");
            assert!(
                r.stderr.contains(key),
                "{cmd}: stderr does not name {key}: {}",
                r.stderr
            );
            assert!(r.stdout.is_empty());
        }
    }
    let r = run(&mut berth_cmd(
        None,
        &["k8s", "render", "--persistence-size", "lots"],
    ));
    assert_ne!(r.code, 0);
    assert!(
        r.stderr.contains("localRegistry.persistence.size"),
        "{}",
        r.stderr
    );
}

// ---------------------------------------------------------------------------------------
// rewrite-images
// ---------------------------------------------------------------------------------------

const APP_MANIFESTS: &str = r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: api
spec:
  selector:
    matchLabels: {app: api}
  template:
    metadata:
      labels: {app: api}
    spec:
      initContainers:
        - name: migrate
          image: registry.example.com:5000/team/api:2.1.0
      containers:
        - name: api
          image: registry.example.com:5000/team/api:2.1.0
        - name: cache
          image: redis:7
---
apiVersion: batch/v1
kind: CronJob
metadata:
  name: report
spec:
  schedule: "*/5 * * * *"
  jobTemplate:
    spec:
      template:
        spec:
          restartPolicy: Never
          containers:
            - name: report
              image: registry.example.com:5000/team/report@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
"#;

#[test]
fn rewrite_images_reads_files_and_stdin_and_leaves_files_alone() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("app.yaml");
    std::fs::write(&file, APP_MANIFESTS).unwrap();
    let r = run(&mut berth_cmd(
        None,
        &[
            "k8s",
            "rewrite-images",
            "--node-port",
            "31500",
            "--image",
            "registry.example.com:5000/team/api",
            "--image",
            "registry.example.com:5000/team/report",
            file.to_str().unwrap(),
        ],
    ));
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        APP_MANIFESTS,
        "the input file changed"
    );
    assert_eq!(
        r.stdout
            .matches("image: localhost:31500/team/api:2.1.0")
            .count(),
        2,
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains(
        "image: localhost:31500/team/report@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
    ));
    assert!(r.stdout.contains("image: redis:7"));
    assert!(
        r.stderr.contains("rewrote 3 image references"),
        "{}",
        r.stderr
    );

    // From standard input, every image.
    let mut child = berth_cmd(None, &["k8s", "rewrite-images", "--node-port", "31500"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(APP_MANIFESTS.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(
        stdout.contains("image: localhost:31500/redis:7"),
        "{stdout}"
    );
    assert_eq!(stdout.matches("---\n").count(), 2);

    let r = run(&mut berth_cmd(
        None,
        &[
            "k8s",
            "rewrite-images",
            "--node-port",
            "31500",
            "/nonexistent.yaml",
        ],
    ));
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("/nonexistent.yaml"));
}

// ---------------------------------------------------------------------------------------
// need-local, against a registry that wants a bearer token
// ---------------------------------------------------------------------------------------

/// A registry with token authentication: alice may push, bob may only pull, anonymous
/// may only pull. Counts the cancelled uploads.
async fn token_registry() -> (String, Arc<AtomicUsize>) {
    use axum::http::{HeaderMap, StatusCode};
    use axum::response::IntoResponse;
    use axum::routing::{delete, get, post};

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let host = listener.local_addr().unwrap().to_string();
    let cancelled = Arc::new(AtomicUsize::new(0));
    let realm = format!("http://{host}/token");
    let basic = |user: &str| {
        use base64::Engine;
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:secret"))
        )
    };
    let (alice, bob) = (basic("alice"), basic("bob"));
    let counter = cancelled.clone();
    let app = axum::Router::new()
        .route(
            "/token",
            get(move |h: HeaderMap| async move {
                let token = match h.get("authorization").and_then(|v| v.to_str().ok()) {
                    Some(a) if a == alice => "push-token",
                    Some(a) if a == bob => "pull-token",
                    Some(_) => return (StatusCode::UNAUTHORIZED, "bad credentials").into_response(),
                    None => "pull-token",
                };
                axum::Json(json!({"token": token})).into_response()
            }),
        )
        .route(
            "/v2/{*rest}",
            post(move |h: HeaderMap| async move {
                match h.get("authorization").and_then(|v| v.to_str().ok()) {
                    Some("Bearer push-token") => {
                        (StatusCode::ACCEPTED, [("location", "/v2/team/app/blobs/uploads/abc")]).into_response()
                    }
                    Some("Bearer pull-token") => (
                        StatusCode::FORBIDDEN,
                        axum::Json(json!({"errors": [{"code": "DENIED", "message": "push access denied"}]})),
                    )
                        .into_response(),
                    _ => (
                        StatusCode::UNAUTHORIZED,
                        [("www-authenticate", format!("Bearer realm=\"{realm}\",service=\"fake\""))],
                    )
                        .into_response(),
                }
            }),
        )
        .route(
            "/v2/team/app/blobs/uploads/abc",
            delete(move || async move {
                counter.fetch_add(1, Ordering::SeqCst);
                StatusCode::NO_CONTENT
            }),
        );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (host, cancelled)
}

/// `berth k8s need-local` with a home of its own: only `docker_config` as credentials.
fn need_local(
    home: &Path,
    docker_config: Option<serde_json::Value>,
    kubeconfig: Option<&Path>,
    args: &[&str],
) -> Run {
    let docker = home.join(".docker");
    std::fs::create_dir_all(&docker).unwrap();
    match docker_config {
        Some(c) => std::fs::write(docker.join("config.json"), c.to_string()).unwrap(),
        None => {
            let _ = std::fs::remove_file(docker.join("config.json"));
        }
    }
    let mut all = vec!["k8s", "need-local"];
    all.extend_from_slice(args);
    let mut cmd = berth_cmd(kubeconfig, &all);
    cmd.current_dir(home)
        .env("HOME", home)
        .env(
            "PATH",
            format!(
                "{}:{}",
                home.join("bin").display(),
                std::env::var("PATH").unwrap_or_default()
            ),
        )
        .env("NO_PROXY", "*")
        .env_remove("REGISTRY_AUTH_FILE")
        .env_remove("XDG_RUNTIME_DIR")
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("DOCKER_CONFIG");
    let r = run(&mut cmd);
    assert_eq!(r.code, 0, "need-local failed: {}", r.stderr);
    r
}

fn auth(user: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(format!("{user}:secret"))
}

#[tokio::test]
async fn need_local_asks_the_registry_whether_the_caller_may_push() {
    let (host, cancelled) = token_registry().await;
    let home = tempfile::tempdir().unwrap();
    let home = home.path().to_path_buf();
    let image = format!("{host}/team/app:dev");

    let h = home.clone();
    let i = image.clone();
    let anonymous = tokio::task::spawn_blocking(move || need_local(&h, None, None, &[&i]))
        .await
        .unwrap();
    assert!(
        anonymous.stdout.starts_with("yes: cannot push to"),
        "{}",
        anonymous.stdout
    );
    assert!(
        anonymous.stdout.contains("without credentials") && anonymous.stdout.contains("DENIED"),
        "{}",
        anonymous.stdout
    );

    let config = json!({"auths": {host.clone(): {"auth": auth("alice")}}});
    let (h, i) = (home.clone(), image.clone());
    let alice = tokio::task::spawn_blocking(move || need_local(&h, Some(config), None, &[&i]))
        .await
        .unwrap();
    assert!(
        alice.stdout.starts_with(&format!(
            "no: {host}/team/app accepts a push with the credentials from"
        )),
        "{}",
        alice.stdout
    );
    assert_eq!(
        cancelled.load(Ordering::SeqCst),
        1,
        "the test upload was not cancelled"
    );

    let config = json!({"auths": {format!("http://{host}/v2/"): {"auth": auth("bob")}}});
    let (h, i) = (home.clone(), image.clone());
    let bob = tokio::task::spawn_blocking(move || need_local(&h, Some(config), None, &[&i]))
        .await
        .unwrap();
    assert!(
        bob.stdout.starts_with("yes: cannot push to"),
        "{}",
        bob.stdout
    );
    assert!(bob.stdout.contains("push access denied"), "{}", bob.stdout);

    let config = json!({"auths": {host.clone(): {"auth": auth("mallory")}}});
    let (h, i) = (home.clone(), image.clone());
    let wrong = tokio::task::spawn_blocking(move || need_local(&h, Some(config), None, &[&i]))
        .await
        .unwrap();
    assert!(
        wrong.stdout.contains("refused the credentials"),
        "{}",
        wrong.stdout
    );

    // A credential helper, as Docker Desktop and cloud CLIs configure them.
    std::fs::create_dir_all(home.join("bin")).unwrap();
    let helper = home.join("bin/docker-credential-berthtest");
    std::fs::write(&helper, "#!/bin/sh\nread server\necho '{\"ServerURL\":\"'$server'\",\"Username\":\"alice\",\"Secret\":\"secret\"}'\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let config = json!({"credHelpers": {host.clone(): "berthtest"}});
    let (h, i) = (home.clone(), image.clone());
    let helped = tokio::task::spawn_blocking(move || need_local(&h, Some(config), None, &[&i]))
        .await
        .unwrap();
    assert!(helped.stdout.starts_with("no: "), "{}", helped.stdout);
    assert!(
        helped.stdout.contains("docker-credential-berthtest"),
        "{}",
        helped.stdout
    );

    // Settings and KinD decide before the registry is asked.
    std::fs::write(
        home.join("devspace.yaml"),
        "localRegistry:\n  enabled: true\n",
    )
    .unwrap();
    let (h, i) = (home.clone(), image.clone());
    let forced = tokio::task::spawn_blocking(move || need_local(&h, None, None, &[&i]))
        .await
        .unwrap();
    assert_eq!(forced.stdout.trim(), "yes: localRegistry.enabled is true");
    std::fs::remove_file(home.join("devspace.yaml")).unwrap();
    let kubeconfig = home.join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        "apiVersion: v1\nkind: Config\ncurrent-context: kind-dev\nclusters:\n- name: kind-dev\n  cluster: {server: 'https://127.0.0.1:1'}\n\
         contexts:\n- name: kind-dev\n  context: {cluster: kind-dev, user: kind-dev}\nusers:\n- name: kind-dev\n  user: {}\n",
    )
    .unwrap();
    let (h, i) = (home.clone(), image.clone());
    let kind = tokio::task::spawn_blocking(move || need_local(&h, None, Some(&kubeconfig), &[&i]))
        .await
        .unwrap();
    assert!(
        kind.stdout
            .starts_with("no: the current kube context kind-dev is a KinD cluster"),
        "{}",
        kind.stdout
    );
    assert!(
        kind.stdout
            .contains(&format!("kind load docker-image {image} --name dev")),
        "{}",
        kind.stdout
    );
}

#[tokio::test]
async fn need_local_says_no_for_an_open_registry_and_yes_for_an_unreachable_one() {
    let app = crate::common::TestApp::start().await;
    let host = app.base.trim_start_matches("http://").to_string();
    let home = tempfile::tempdir().unwrap();
    let h = home.path().to_path_buf();
    let r = tokio::task::spawn_blocking(move || {
        need_local(&h, None, None, &[&format!("{host}/team/app:1")])
    })
    .await
    .unwrap();
    assert!(
        r.stdout.starts_with("no: ") && r.stdout.contains("accepts a push without credentials"),
        "{}",
        r.stdout
    );

    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let h = home.path().to_path_buf();
    let r = tokio::task::spawn_blocking(move || {
        need_local(
            &h,
            None,
            None,
            &[&format!("127.0.0.1:{port}/team/app:1"), "--timeout", "5s"],
        )
    })
    .await
    .unwrap();
    assert!(
        r.stdout.starts_with("yes: ") && r.stdout.contains("cannot reach"),
        "{}",
        r.stdout
    );
}
