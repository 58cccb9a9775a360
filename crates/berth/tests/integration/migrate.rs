//! `berth migrate-metadata` and `berth migrate-storage` as an operator runs them: a
//! registry in use on the embedded defaults moves onto PostgreSQL (and S3), and
//! everything still works — images pull, passwords and access tokens sign in — without
//! anyone pushing again. Skipped (loudly) without the test services.

use serde_json::Value;

use crate::common::{PgDatabase, TestApp};
use crate::helpers::*;

#[tokio::test]
async fn migrate_metadata_moves_a_registry_onto_postgres_without_a_push() {
    let test = "migrate_metadata_moves_a_registry_onto_postgres_without_a_push";
    let Some((_db, url)) = PgDatabase::fresh(test).await else {
        return;
    };
    let mut app = TestApp::builder().auth().start().await;
    assert!(
        !app.on_postgres(),
        "the source is the embedded SQLite database"
    );
    app.cli_ok(
        &["user", "add", "alice", "--password-stdin"],
        Some("alice-password-1\n"),
    );
    app.cli_ok(&["team", "add", "web"], None);
    app.cli_ok(&["team", "member", "add", "web", "alice"], None);
    let out = app.cli_ok(
        &["token", "create", "--user", "alice", "--name", "ci"],
        None,
    );
    let token = out
        .split_whitespace()
        .find(|w| w.starts_with("berth_"))
        .expect("a token")
        .to_string();
    app.client = app.basic_client("alice", "alice-password-1");
    let img = push_image(&app, "alice/app", "v1").await;
    let web = push_image(&app, "web/site", "latest").await;
    app.terminate();

    let out = app.cli_ok(&["migrate-metadata", "--to", &url], None);
    assert!(out.contains("copied"), "{out}");
    // Copying into a database that holds data is refused, and changes nothing.
    let again = app.cli(&["migrate-metadata", "--to", &url], None);
    assert!(!again.status.success());
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(err.contains("already holds data"), "{err}");
    assert!(
        !err.contains("berth:berth@"),
        "no password in messages: {err}"
    );

    app.set_env("BERTH_METADATA__URL", &url);
    app.respawn().await;
    assert!(app.cli_ok(&["user", "ls"], None).contains("alice"));
    // The same password, the same access token, the same images and tags.
    assert_manifest(&app, "alice/app", "v1", img.media_type, &img.manifest).await;
    assert_manifest(&app, "web/site", "latest", web.media_type, &web.manifest).await;
    for (data, digest) in &img.layers {
        assert_blob(&app, "alice/app", digest, data).await;
    }
    let with_token = app.basic_client("alice", &token);
    let r = with_token
        .get(app.url("/v2/alice/app/tags/list"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let tags: Value = r.json().await.unwrap();
    assert_eq!(tags["tags"], serde_json::json!(["v1"]));
    // Ids continue after the copied ones: new accounts and tokens don't collide.
    app.cli_ok(
        &["user", "add", "bob", "--password-stdin"],
        Some("bob-password-1\n"),
    );
    app.cli_ok(&["token", "create", "--user", "bob", "--name", "ci"], None);
    app.client = app.basic_client("bob", "bob-password-1");
    push_image(&app, "bob/tool", "v1").await;
    // A bearer token from the migrated signing key is still honoured.
    let r = reqwest::Client::new()
        .get(app.url("/auth/token?service=berth&scope=repository:alice/app:pull"))
        .basic_auth("alice", Some("alice-password-1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn migrate_storage_moves_blobs_to_s3_and_back_resumably() {
    let Some(s3) = crate::common::s3_storage_env() else {
        return;
    };
    let mut app = TestApp::start().await;
    let img = push_image(&app, "team/app", "v1").await;
    let blob = random_bytes(9 * 1024 * 1024);
    let big = push_blob(&app, "team/app", &blob).await;
    app.terminate();
    for (k, v) in &s3 {
        if k != "BERTH_STORAGE__BACKEND" {
            app.set_env(k, v);
        }
    }
    // config, two layers, the manifest, the big blob
    let out = app.cli_ok(&["migrate-storage", "--to", "s3"], None);
    assert!(out.contains("5 blobs in the fs store: 5 copied"), "{out}");
    assert!(out.contains("set storage.backend = \"s3\""), "{out}");
    // Resumable: a second run finds everything there.
    let out = app.cli_ok(&["migrate-storage", "--to", "s3"], None);
    assert!(
        out.contains("0 copied") && out.contains("5 already"),
        "{out}"
    );

    app.set_env("BERTH_STORAGE__BACKEND", "s3");
    app.respawn().await;
    // The filesystem store is gone from the server's view: everything comes from S3.
    std::fs::remove_dir_all(app.data_dir().join("blobstore")).unwrap();
    assert_manifest(&app, "team/app", "v1", img.media_type, &img.manifest).await;
    for (data, digest) in &img.layers {
        assert_blob(&app, "team/app", digest, data).await;
    }
    assert_blob(&app, "team/app", &big, &blob).await;
    let pushed_on_s3 = push_blob(&app, "team/app", b"pushed after the move").await;
    app.terminate();

    // And back: the filesystem store receives everything, including what S3 got since.
    let out = app.cli_ok(&["migrate-storage", "--to", "fs"], None);
    assert!(out.contains("6 blobs in the s3 store: 6 copied"), "{out}");
    app.set_env("BERTH_STORAGE__BACKEND", "fs");
    app.respawn().await;
    assert_blob(&app, "team/app", &big, &blob).await;
    assert_blob(&app, "team/app", &pushed_on_s3, b"pushed after the move").await;
}
