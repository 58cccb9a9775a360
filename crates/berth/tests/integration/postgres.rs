//! The registry on PostgreSQL metadata, end to end through HTTP and the CLI: what the
//! metadata suite (`meta::tests`) checks per method, here as users see it, including
//! two replicas on one database. Skipped (loudly) without `BERTH_TEST_POSTGRES_URL`.

use serde_json::Value;

use crate::common::TestApp;
use crate::gc::gc;
use crate::helpers::*;

#[tokio::test]
async fn push_pull_tag_delete_and_collect_on_postgres() {
    let Some(app) = TestApp::builder()
        .start_postgres("push_pull_tag_delete_and_collect_on_postgres")
        .await
    else {
        return;
    };
    let repo = unique_repo("pg");
    let img = push_image(&app, &repo, "v1").await;
    put_manifest_ok(&app, &repo, "v2", img.media_type, &img.manifest).await;
    assert_manifest(&app, &repo, "v1", img.media_type, &img.manifest).await;
    assert_manifest(&app, &repo, &img.digest, img.media_type, &img.manifest).await;
    assert_blob(&app, &repo, &img.config_digest, &img.config).await;
    for (data, digest) in &img.layers {
        assert_blob(&app, &repo, digest, data).await;
    }

    let tags: Value = app
        .client
        .get(app.url(&format!("/v2/{repo}/tags/list")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(tags["tags"], serde_json::json!(["v1", "v2"]));
    let catalog: Value = app
        .client
        .get(app.url("/v2/_catalog"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(catalog["repositories"], serde_json::json!([repo]));

    // Deleting the manifest takes both tags; the collector then frees its blobs.
    let r = app
        .client
        .delete(app.url(&format!("/v2/{repo}/manifests/{}", img.digest)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    assert_eq!(get_manifest(&app, &repo, "v1").await.status(), 404);
    let orphan = random_bytes(3000);
    let orphan_digest = push_blob(&app, &repo, &orphan).await;
    let out = gc(&app, &["--grace-period", "0s"]);
    // config, two layers, the manifest's own bytes, the orphan
    assert!(out.contains("deleted 5 blobs"), "{out}");
    assert_eq!(head_blob(&app, &repo, &orphan_digest).await.status(), 404);
    assert_eq!(
        head_blob(&app, &repo, &img.config_digest).await.status(),
        404
    );
    for (_, digest) in &img.layers {
        assert_eq!(head_blob(&app, &repo, digest).await.status(), 404);
    }
    // Pushing the same image again works (rows and files come back together).
    push_image(&app, &repo, "v1").await;
    assert_eq!(get_manifest(&app, &repo, "v1").await.status(), 200);
}

#[tokio::test]
async fn two_replicas_share_metadata_accounts_and_the_token_key() {
    let Some(mut a) = TestApp::builder()
        .auth()
        .start_postgres("two_replicas_share_metadata_accounts_and_the_token_key")
        .await
    else {
        return;
    };
    let mut b = a.start_replica().await;
    a.cli_ok(
        &["user", "add", "alice", "--password-stdin"],
        Some("alice-password-1\n"),
    );

    // A bearer token issued by one replica is honoured by the other.
    let token: Value = reqwest::Client::new()
        .get(a.url("/auth/token?service=berth&scope=repository:alice/app:pull,push"))
        .basic_auth("alice", Some("alice-password-1"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = token["token"].as_str().expect("a token").to_string();
    let r = reqwest::Client::new()
        .get(b.url("/v2/alice/app/tags/list"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        404,
        "authorised on b, the repository does not exist yet"
    );

    // Pushed through one, pulled through the other.
    a.client = a.basic_client("alice", "alice-password-1");
    b.client = b.basic_client("alice", "alice-password-1");
    let img = push_image(&a, "alice/app", "v1").await;
    assert_manifest(&b, "alice/app", "v1", img.media_type, &img.manifest).await;
    let r = reqwest::Client::new()
        .get(b.url("/v2/alice/app/tags/list"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    drop(b);
}

/// Found running the suite on PostgreSQL by hand: its text can't hold NUL, so a user
/// name or a `last` with one failed the query (500) where SQLite answered 401 and 200.
#[tokio::test]
async fn a_nul_in_credentials_or_parameters_answers_as_on_sqlite() {
    let Some(app) = TestApp::builder()
        .auth()
        .start_postgres("a_nul_in_credentials_or_parameters_answers_as_on_sqlite")
        .await
    else {
        return;
    };
    let r = reqwest::Client::new()
        .get(app.url("/v2/"))
        .basic_auth("ad\0min", Some(crate::common::ADMIN_PASSWORD))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let admin = app.basic_client("admin", crate::common::ADMIN_PASSWORD);
    let r = admin
        .get(app.url("/v2/_catalog?last=a%00b"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}
