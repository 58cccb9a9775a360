//! Online garbage collection: what it deletes, what it keeps, and that pushes racing it
//! never lose an acknowledged blob.

use std::process::Command;
use std::sync::Arc;

use serde_json::{json, Value};

use crate::common::TestApp;
use crate::helpers::*;

/// Runs `berth gc ARGS…` against the app's data directory while the server runs.
pub(crate) fn gc(app: &TestApp, args: &[&str]) -> String {
    gc_with(app, &[], args)
}

/// `gc` with configuration in the environment (as the server got it).
fn gc_with(app: &TestApp, env: &[(&str, &str)], args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_berth"))
        .envs(app.env_vars())
        .envs(env.iter().copied())
        .arg("gc")
        .args(args)
        .arg("--data-dir")
        .arg(app.data_dir())
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "berth gc failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Blobs in the blob store (files, or objects when the server runs on S3).
async fn stored_files(app: &TestApp) -> usize {
    match app.s3_store() {
        Some(store) => blobstore::BlobStore::list(&store).await.unwrap().len(),
        None => walk(&app.data_dir().join("blobstore/blobs")),
    }
}

fn walk(p: &std::path::Path) -> usize {
    std::fs::read_dir(p)
        .map(|rd| {
            rd.flatten()
                .map(|e| {
                    if e.path().is_dir() {
                        walk(&e.path())
                    } else {
                        1
                    }
                })
                .sum()
        })
        .unwrap_or(0)
}

fn local() -> Option<()> {
    if std::env::var("BERTH_TEST_EXTERNAL_URL").is_ok() {
        eprintln!("SKIPPED: garbage collection tests run berth gc on a local data directory");
        return None;
    }
    Some(())
}

#[tokio::test]
async fn collects_unreferenced_blobs_and_keeps_everything_a_tag_reaches() {
    let Some(()) = local() else { return };
    let app = TestApp::start().await;
    let repo = unique_repo("gc");
    let img = push_image(&app, &repo, "v1").await;
    let orphan = random_bytes(5000);
    let orphan_digest = push_blob(&app, &repo, &orphan).await;
    // config + 2 layers + manifest + orphan
    assert_eq!(stored_files(&app).await, 5);

    // Inside the grace period nothing goes.
    let out = gc(&app, &[]);
    assert!(out.contains("deleted 0 blobs"), "{out}");
    assert_eq!(head_blob(&app, &repo, &orphan_digest).await.status(), 200);

    let out = gc(&app, &["--dry-run", "--grace-period", "0s"]);
    assert!(out.contains("would delete 1 blobs (4.9 KiB)"), "{out}");
    assert_eq!(stored_files(&app).await, 5, "a dry run deletes nothing");

    let out = gc(&app, &["--grace-period", "0s"]);
    assert!(out.contains("deleted 1 blobs"), "{out}");
    assert_eq!(stored_files(&app).await, 4);
    assert_eq!(head_blob(&app, &repo, &orphan_digest).await.status(), 404);
    assert_manifest(&app, &repo, "v1", img.media_type, &img.manifest).await;
    assert_blob(&app, &repo, &img.config_digest, &img.config).await;
    for (data, d) in &img.layers {
        assert_blob(&app, &repo, d, data).await;
    }

    // The run is in the history, and a second run finds nothing.
    let runs: Value = app
        .client
        .get(app.url("/api/v1/gc/runs"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(runs[0]["blobs_deleted"], 1);
    assert_eq!(runs[0]["trigger"], "cli");
    assert!(runs[0]["finished_at"].is_i64());
    assert!(gc(&app, &["--grace-period", "0s"]).contains("deleted 0 blobs"));
}

#[tokio::test]
async fn deleting_a_manifest_frees_layers_no_other_manifest_uses() {
    let Some(()) = local() else { return };
    let app = TestApp::start().await;
    let (a, b) = (unique_repo("gc-a"), unique_repo("gc-b"));
    let img = push_image(&app, &a, "v1").await;
    // The same first layer is used by an image in another repository.
    let shared = &img.layers[0];
    push_blob_with_digest(&app, &b, &shared.0, &shared.1).await;
    let config = br#"{"architecture":"arm64","os":"linux"}"#.to_vec();
    let config_digest = push_blob(&app, &b, &config).await;
    let other = manifest_bytes(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": descriptor("application/vnd.oci.image.config.v1+json", &config),
        "layers": [descriptor("application/vnd.oci.image.layer.v1.tar+gzip", &shared.0)],
    }));
    put_manifest_ok(
        &app,
        &b,
        "v1",
        "application/vnd.oci.image.manifest.v1+json",
        &other,
    )
    .await;

    let resp = app
        .client
        .delete(app.url(&format!("/v2/{a}/manifests/{}", img.digest)))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let out = gc(&app, &["--grace-period", "0s"]);
    // a's config, its second layer, and its manifest go; the shared layer stays.
    assert!(out.contains("deleted 3 blobs"), "{out}");
    assert_blob(&app, &b, &shared.1, &shared.0).await;
    assert_blob(&app, &b, &config_digest, &config).await;
    assert_eq!(head_blob(&app, &a, &img.layers[1].1).await.status(), 404);
}

#[tokio::test]
async fn untagged_manifests_are_kept_or_collected_by_policy() {
    let Some(()) = local() else { return };
    for (policy, kept) in [("keep", true), ("delete", false)] {
        let app = TestApp::builder()
            .env("BERTH_GC__UNTAGGED", policy)
            .start()
            .await;
        let repo = unique_repo("gc-untagged");
        let tagged = push_image(&app, &repo, "v1").await;
        // A referrer of the tagged image (reachable through its subject).
        let (sig_manifest, sig_digest) = make_artifact(
            &app,
            &repo,
            "application/vnd.example.sig",
            json!({
                "subject": subject(tagged.media_type, &tagged.manifest),
            }),
        )
        .await;
        put_manifest_ok(
            &app,
            &repo,
            &sig_digest,
            "application/vnd.oci.image.manifest.v1+json",
            &sig_manifest,
        )
        .await;
        // An untagged image pushed by digest.
        let loose = make_image(&app, &repo).await;
        put_manifest_ok(
            &app,
            &repo,
            &loose.digest,
            loose.media_type,
            &loose.manifest,
        )
        .await;
        // An index whose children are untagged but reachable through the tagged index.
        let child = make_image(&app, &repo).await;
        put_manifest_ok(
            &app,
            &repo,
            &child.digest,
            child.media_type,
            &child.manifest,
        )
        .await;
        let index = manifest_bytes(&json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [descriptor(child.media_type, &child.manifest)],
        }));
        put_manifest_ok(
            &app,
            &repo,
            "multi",
            "application/vnd.oci.image.index.v1+json",
            &index,
        )
        .await;

        gc_with(
            &app,
            &[("BERTH_GC__UNTAGGED", policy)],
            &["--grace-period", "0s"],
        );
        let status = |d: String| {
            let app = &app;
            let repo = repo.clone();
            async move { head_manifest(app, &repo, &d).await.status().as_u16() }
        };
        assert_eq!(status(tagged.digest.clone()).await, 200, "{policy}: tagged");
        assert_eq!(
            status(sig_digest.clone()).await,
            200,
            "{policy}: referrer of a tagged image"
        );
        assert_eq!(
            status(child.digest.clone()).await,
            200,
            "{policy}: child of a tagged index"
        );
        assert_eq!(
            status(loose.digest.clone()).await,
            if kept { 200 } else { 404 },
            "{policy}: untagged"
        );
        let layer_status = head_blob(&app, &repo, &loose.layers[0].1)
            .await
            .status()
            .as_u16();
        assert_eq!(
            layer_status,
            if kept { 200 } else { 404 },
            "{policy}: layer of the untagged image"
        );
        assert_blob(&app, &repo, &child.layers[0].1, &child.layers[0].0).await;
    }
}

#[tokio::test]
async fn abandoned_uploads_expire() {
    let Some(()) = local() else { return };
    let app = TestApp::builder()
        .env("BERTH_GC__UPLOAD_EXPIRY", "0s")
        .start()
        .await;
    let repo = unique_repo("gc-upload");
    let loc = start_upload(&app, &repo).await;
    let resp = app
        .client
        .patch(loc.clone())
        .body(vec![7u8; 1000])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    std::thread::sleep(std::time::Duration::from_millis(20));
    let out = gc_with(&app, &[("BERTH_GC__UPLOAD_EXPIRY", "0s")], &[]);
    assert!(out.contains("1 upload sessions expired"), "{out}");
    assert_oci_error(
        app.client.get(loc).send().await.unwrap(),
        404,
        "BLOB_UPLOAD_UNKNOWN",
    )
    .await;
}

#[tokio::test]
async fn usage_counts_shared_blobs_once_in_the_total_and_in_each_namespace() {
    let Some(()) = local() else { return };
    let app = TestApp::start().await;
    let (a, b) = (format!("{}/app", unique()), format!("{}/app", unique()));
    let data = random_bytes(10_000);
    let d = push_blob(&app, &a, &data).await;
    push_blob_with_digest(&app, &b, &data, &d).await;
    let usage: Value = app
        .client
        .get(app.url("/api/v1/usage"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(usage["total_bytes"], 10_000);
    let ns = usage["namespaces"].as_array().unwrap();
    assert_eq!(ns.len(), 2);
    assert!(
        ns.iter()
            .all(|n| n["bytes"] == 10_000 && n["repositories"] == 1),
        "{usage}"
    );
}

/// One image of the shared-base race: the base layer every image has, and its own.
struct RaceImage {
    tag: String,
    manifest: Vec<u8>,
    digest: String,
    blobs: Vec<(Vec<u8>, String)>,
}

/// Pushes `blobs` (monolithic) and a manifest over them; `None` when garbage collection
/// took a blob between the push and the manifest (400, the client pushes again).
async fn push_race_image(
    next: &mut impl FnMut() -> Arc<TestApp>,
    repo: &str,
    tag: &str,
    blobs: &[(Vec<u8>, String)],
) -> Option<RaceImage> {
    for (data, d) in blobs {
        let app = next();
        let resp = app
            .client
            .post(app.url(&format!("/v2/{repo}/blobs/uploads/?digest={d}")))
            .body(data.clone())
            .send()
            .await
            .unwrap();
        if resp.status() != 201 {
            // The collector deleted the file between its store and its link: the client
            // is told to push again (400), never told it is stored when it is not.
            assert_eq!(resp.status(), 400, "only a GC race may refuse a blob push");
            return None;
        }
    }
    let manifest = manifest_bytes(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": descriptor("application/vnd.oci.image.config.v1+json", &blobs[0].0),
        "layers": blobs[1..].iter().map(|(d, _)| descriptor("application/vnd.oci.image.layer.v1.tar+gzip", d)).collect::<Vec<_>>(),
    }));
    let resp = put_manifest(
        &next(),
        repo,
        tag,
        "application/vnd.oci.image.manifest.v1+json",
        &manifest,
    )
    .await;
    match resp.status().as_u16() {
        201 => Some(RaceImage {
            tag: tag.into(),
            digest: sha256_digest(&manifest),
            manifest,
            blobs: blobs.to_vec(),
        }),
        400 => None,
        s => panic!("manifest PUT answered {s}"),
    }
}

/// The issue's race: clients push images sharing a base layer, delete images and push
/// them again while the collector runs in a loop with no grace period. Afterwards every
/// image still tagged pulls completely and bit-exact, and once the collector has run
/// again nothing unreferenced is left in the store.
#[tokio::test]
async fn shared_layers_deletes_and_repushes_racing_the_collector_lose_nothing() {
    let Some(()) = local() else { return };
    let app = Arc::new(TestApp::start().await);
    let collector = {
        let app = app.clone();
        tokio::task::spawn_blocking(move || {
            for _ in 0..8 {
                gc(&app, &["--grace-period", "0s"]);
            }
        })
    };
    race(&[app], collector, 30).await;
}

/// The same race on two replicas sharing PostgreSQL and an S3 bucket: each image's
/// requests alternate between them, and both replicas' own collectors run every second
/// with no grace period next to `berth gc` from the shell. The lease lets one collector
/// run at a time (the others skip or are told another is running); nothing acknowledged
/// is lost and nothing unreferenced is left.
#[tokio::test]
async fn the_race_on_two_replicas_with_their_collectors_loses_nothing() {
    let test = "the_race_on_two_replicas_with_their_collectors_loses_nothing";
    if crate::common::postgres_url(test).is_none() {
        return;
    }
    let Some(builder) = TestApp::builder()
        .env("BERTH_GC__INTERVAL", "1s")
        .env("BERTH_GC__GRACE_PERIOD", "0s")
        .postgres()
        .s3()
    else {
        return;
    };
    let a = Arc::new(builder.start().await);
    let b = Arc::new(a.start_replica().await);
    let collector = {
        let a = a.clone();
        tokio::task::spawn_blocking(move || {
            let mut ran = 0;
            for _ in 0..8 {
                let out = gc_allowing_another(&a, &["--grace-period", "0s"]);
                ran += usize::from(out.is_some());
                std::thread::sleep(std::time::Duration::from_millis(200));
            }
            ran
        })
    };
    race(&[a.clone(), b.clone()], collector, 20).await;
    drop(b);
    // Collections ran (scheduled on both replicas, and from the shell), one at a time.
    let url = a
        .env_vars()
        .find(|(k, _)| *k == "BERTH_METADATA__URL")
        .map(|(_, v)| v.to_string())
        .unwrap();
    use sqlx::Connection;
    let mut db = sqlx::PgConnection::connect(&url).await.unwrap();
    let runs: Vec<(i64, i64, String)> = sqlx::query_as(
        "SELECT started_at, finished_at, trigger FROM gc_runs \
         WHERE finished_at IS NOT NULL ORDER BY started_at",
    )
    .fetch_all(&mut db)
    .await
    .unwrap();
    assert!(runs.len() >= 5, "collections during the race: {runs:?}");
    assert!(
        runs.iter().any(|r| r.2 == "schedule"),
        "the replicas' own collectors ran: {runs:?}"
    );
    for w in runs.windows(2) {
        assert!(w[0].1 <= w[1].0, "two collections overlapped: {w:?}");
    }
}

/// `berth gc`, or `None` when another collector holds the lease.
fn gc_allowing_another(app: &TestApp, args: &[&str]) -> Option<String> {
    let out = Command::new(env!("CARGO_BIN_EXE_berth"))
        .envs(app.env_vars())
        .arg("gc")
        .args(args)
        .arg("--data-dir")
        .arg(app.data_dir())
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() && stderr.contains("another garbage collection is running") {
        return None;
    }
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "berth gc failed: {stdout}{stderr}");
    Some(stdout)
}

/// Four clients push, delete and re-push images sharing a base layer through `apps`
/// (each request of an image to the next app in turn) while `collector` runs; then
/// checks every live image and, after a last collection, that exactly what they
/// reference is stored.
async fn race<T: Send + 'static>(
    apps: &[Arc<TestApp>],
    collector: tokio::task::JoinHandle<T>,
    min_images: usize,
) {
    let base = random_bytes(8000);
    let base = (base.clone(), sha256_digest(&base));
    let pushers: Vec<_> = (0..4)
        .map(|w| {
            let (apps, base) = (apps.to_vec(), base.clone());
            tokio::spawn(async move {
                let repo = format!("race/w{w}");
                let mut live: Vec<RaceImage> = Vec::new();
                let mut turn = w;
                let mut next = || {
                    turn += 1;
                    apps[turn % apps.len()].clone()
                };
                for i in 0..12 {
                    let own = random_bytes(3000 + i * 10);
                    let config = format!("{{\"w\":{w},\"i\":{i}}}").into_bytes();
                    let blobs = vec![
                        (config.clone(), sha256_digest(&config)),
                        base.clone(),
                        (own.clone(), sha256_digest(&own)),
                    ];
                    let tag = format!("t{i}");
                    if let Some(img) = push_race_image(&mut next, &repo, &tag, &blobs).await {
                        live.push(img);
                    }
                    // Every third round: delete an older image, then push it again.
                    if i % 3 == 2 && live.len() > 1 {
                        let old = live.remove(0);
                        let app = next();
                        let resp = app
                            .client
                            .delete(app.url(&format!("/v2/{repo}/manifests/{}", old.digest)))
                            .send()
                            .await
                            .unwrap();
                        assert_eq!(resp.status(), 202);
                        if let Some(again) =
                            push_race_image(&mut next, &repo, &old.tag, &old.blobs).await
                        {
                            live.push(again);
                        }
                    }
                }
                (repo, live)
            })
        })
        .collect();
    let mut all = Vec::new();
    for p in pushers {
        all.push(p.await.unwrap());
    }
    collector.await.unwrap();
    let images: usize = all.iter().map(|(_, l)| l.len()).sum();
    assert!(
        images >= min_images,
        "most pushes should succeed, got {images}"
    );
    let mut referenced = std::collections::HashSet::new();
    for (k, (repo, live)) in all.iter().enumerate() {
        for img in live {
            // Each replica serves every live image.
            let app = &apps[k % apps.len()];
            assert_manifest(
                app,
                repo,
                &img.tag,
                "application/vnd.oci.image.manifest.v1+json",
                &img.manifest,
            )
            .await;
            referenced.insert(img.digest.clone());
            for (data, d) in &img.blobs {
                assert_blob(&apps[(k + 1) % apps.len()], repo, d, data).await;
                referenced.insert(d.clone());
            }
        }
    }
    // After the window (no grace here): exactly what the live images reference is left.
    // (The replicas' own collectors may run meanwhile: retry while one holds the lease.)
    let app = &apps[0];
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while gc_allowing_another(app, &["--grace-period", "0s"]).is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "the lease was never free"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(
        stored_files(app).await,
        referenced.len(),
        "unreferenced data is gone"
    );
}

#[tokio::test]
async fn a_deleted_users_storage_is_reclaimed_by_the_next_collection() {
    let Some(()) = local() else { return };
    let mut app = TestApp::builder().auth().start().await;
    app.cli_ok(
        &["user", "add", "bob", "--password-stdin"],
        Some("bob-password-1\n"),
    );
    app.cli_ok(
        &["user", "add", "carol", "--password-stdin"],
        Some("carol-password-1\n"),
    );
    app.client = app.basic_client("carol", "carol-password-1");
    let keep = push_image(&app, "carol/app", "v1").await;
    app.client = app.basic_client("bob", "bob-password-1");
    push_image(&app, "bob/app", "v1").await;
    push_image(&app, "bob/other", "v1").await;
    let before = stored_files(&app).await;
    assert_eq!(before, 12, "3 images of config + 2 layers + manifest");

    let out = app.cli_ok(&["user", "rm", "bob"], None);
    assert!(out.contains("2 repositories"), "{out}");
    gc(&app, &["--grace-period", "0s"]);
    assert_eq!(stored_files(&app).await, 4, "only carol's image is left");
    app.client = app.basic_client("carol", "carol-password-1");
    assert_manifest(&app, "carol/app", "v1", keep.media_type, &keep.manifest).await;
    let usage: Value = app
        .basic_client("admin", crate::common::ADMIN_PASSWORD)
        .get(app.url("/api/v1/usage"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let names: Vec<&str> = usage["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["namespace"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["carol"]);
}

/// The mark phase on crafted graphs: a layer shared across namespaces survives the
/// deletion of one of its users; the referrers of a deleted subject go with it; an
/// index of an index keeps its grandchildren.
#[tokio::test]
async fn mark_phase_on_crafted_graphs() {
    let Some(()) = local() else { return };
    let env = [("BERTH_GC__UNTAGGED", "delete")];
    let app = TestApp::builder().env(env[0].0, env[0].1).start().await;

    // One layer in two namespaces, each with an image over it plus a layer of its own.
    let shared = random_bytes(6000);
    let shared_d = push_blob(&app, "ns-a/app", &shared).await;
    push_blob(&app, "ns-b/app", &shared).await;
    let mut own = Vec::new();
    for repo in ["ns-a/app", "ns-b/app"] {
        let mine = random_bytes(5000);
        let mine_d = push_blob(&app, repo, &mine).await;
        let config = format!("{{\"repo\":\"{repo}\"}}").into_bytes();
        push_blob(&app, repo, &config).await;
        let m = manifest_bytes(&json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": descriptor(OCI_CONFIG, &config),
            "layers": [descriptor(OCI_LAYER, &shared), descriptor(OCI_LAYER, &mine)],
        }));
        put_manifest_ok(&app, repo, "v1", OCI_MANIFEST, &m).await;
        own.push((repo, sha256_digest(&m), mine_d));
    }

    // A signed image whose subject is then deleted.
    let signed = push_image(&app, "ns-c/signed", "v1").await;
    let (sig, sig_d) = make_artifact(
        &app,
        "ns-c/signed",
        "application/vnd.example.sig",
        json!({ "subject": subject(signed.media_type, &signed.manifest) }),
    )
    .await;
    put_manifest_ok(&app, "ns-c/signed", &sig_d, OCI_MANIFEST, &sig).await;

    // index (tagged) → index → image.
    let leaf = make_image(&app, "ns-d/nested").await;
    put_manifest_ok(
        &app,
        "ns-d/nested",
        &leaf.digest,
        leaf.media_type,
        &leaf.manifest,
    )
    .await;
    let inner = manifest_bytes(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [descriptor(leaf.media_type, &leaf.manifest)],
    }));
    let inner_d = sha256_digest(&inner);
    put_manifest_ok(&app, "ns-d/nested", &inner_d, OCI_INDEX, &inner).await;
    let outer = manifest_bytes(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [descriptor(OCI_INDEX, &inner)],
    }));
    put_manifest_ok(&app, "ns-d/nested", "multi", OCI_INDEX, &outer).await;

    // Delete ns-a's image and the signed subject.
    for (repo, digest) in [
        ("ns-a/app", own[0].1.clone()),
        ("ns-c/signed", signed.digest.clone()),
    ] {
        let resp = app
            .client
            .delete(app.url(&format!("/v2/{repo}/manifests/{digest}")))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 202);
    }
    gc_with(&app, &env, &["--grace-period", "0s"]);

    // The shared layer lives on in ns-b; ns-a's own layer is gone.
    assert_blob(&app, "ns-b/app", &shared_d, &shared).await;
    assert_eq!(head_blob(&app, "ns-b/app", &own[1].2).await.status(), 200);
    assert_eq!(head_blob(&app, "ns-a/app", &own[0].2).await.status(), 404);
    // The signature of the deleted subject is gone, with its payload.
    assert_eq!(
        head_manifest(&app, "ns-c/signed", &sig_d).await.status(),
        404
    );
    // The nested index keeps its grandchild and the grandchild's layers.
    assert_eq!(
        head_manifest(&app, "ns-d/nested", &inner_d).await.status(),
        200
    );
    assert_eq!(
        head_manifest(&app, "ns-d/nested", &leaf.digest)
            .await
            .status(),
        200
    );
    assert_blob(&app, "ns-d/nested", &leaf.layers[0].1, &leaf.layers[0].0).await;
}
