//! Retention rules (issue 6): keep the newest N tags matching a pattern, delete untagged
//! images older than N days; evaluated by the collector, previewed by `--dry-run`.

use crate::common::TestApp;
use crate::gc::gc;
use crate::helpers::*;

async fn tags(app: &TestApp, repo: &str) -> Vec<String> {
    crate::management::tags(app, repo).await.unwrap_or_default()
}

async fn manifest_status(app: &TestApp, repo: &str, digest: &str) -> u16 {
    app.client
        .head(app.url(&format!("/v2/{repo}/manifests/{digest}")))
        .header("accept", OCI_MANIFEST)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn rules_keep_the_newest_tags_and_drop_old_untagged_images_after_a_preview() {
    let app = TestApp::start().await;
    if skip_external("retention", "runs berth gc on the data directory") {
        return;
    }
    // t1 … t5 pushed in order (distinct images), plus tags the pattern does not match.
    let mut imgs = Vec::new();
    for i in 1..=5 {
        imgs.push(push_image(&app, "ret/app", &format!("t{i}")).await);
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    push_image(&app, "ret/app", "latest").await;
    let elsewhere = push_image(&app, "other/app", "t1").await;
    for i in 2..=5 {
        put_manifest_ok(
            &app,
            "other/app",
            &format!("t{i}"),
            elsewhere.media_type,
            &elsewhere.manifest,
        )
        .await;
    }

    let out = app.cli_ok(
        &[
            "retention",
            "add",
            "--repos",
            "ret/*",
            "--tags",
            "t*",
            "--keep-tags",
            "2",
        ],
        None,
    );
    assert!(
        out.contains("ret/*: keep the newest 2 tags matching t*"),
        "{out}"
    );
    let out = app.cli_ok(
        &[
            "retention",
            "add",
            "--repos",
            "ret/*",
            "--untagged-days",
            "0",
        ],
        None,
    );
    assert!(out.starts_with("rule 2:"), "{out}");

    // The preview names what would go and deletes nothing.
    let out = gc(&app, &["--dry-run", "--grace-period", "0s"]);
    for t in ["t1", "t2", "t3"] {
        assert!(
            out.contains(&format!("retention: would delete tag ret/app:{t}")),
            "{out}"
        );
    }
    assert!(
        !out.contains("ret/app:t4") && !out.contains("other/app"),
        "{out}"
    );
    assert_eq!(tags(&app, "ret/app").await.len(), 6);

    // The run deletes the three oldest t* tags, then their images, now untagged.
    let out = gc(&app, &["--grace-period", "0s"]);
    assert!(out.contains("retention: deleted tag ret/app:t1"), "{out}");
    assert!(
        out.contains(&format!(
            "retention: deleted untagged image ret/app@{}",
            imgs[0].digest
        )),
        "{out}"
    );
    assert!(out.contains("3 manifests, 3 tags"), "{out}");
    assert_eq!(tags(&app, "ret/app").await, vec!["latest", "t4", "t5"]);
    assert_eq!(
        tags(&app, "other/app").await.len(),
        5,
        "other repositories are untouched"
    );
    for (i, img) in imgs.iter().enumerate() {
        let want = if i < 3 { 404 } else { 200 };
        assert_eq!(
            manifest_status(&app, "ret/app", &img.digest).await,
            want,
            "t{}",
            i + 1
        );
    }
    // The history counts the tags.
    let runs: serde_json::Value = app
        .client
        .get(app.url("/api/v1/gc/runs"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(runs[0]["tags_deleted"], 3, "{runs}");
    assert_eq!(runs[1]["dry_run"], true);

    // A second run finds nothing more; removing the rules stops them.
    let out = gc(&app, &["--grace-period", "0s"]);
    assert!(!out.contains("retention:"), "{out}");
    app.cli_ok(&["retention", "rm", "1"], None);
    app.cli_ok(&["retention", "rm", "2"], None);
    assert_eq!(app.cli_ok(&["retention", "ls"], None), "");
}

#[tokio::test]
async fn the_api_manages_rules_and_refuses_bad_ones() {
    let app = TestApp::start().await;
    if skip_external("retention", "uses Berth's management API") {
        return;
    }
    let post = |body: serde_json::Value| {
        app.client
            .post(app.url("/api/v1/retention"))
            .json(&body)
            .send()
    };
    let resp = post(serde_json::json!({"repositories": "web/*", "keep_tags": -1}))
        .await
        .unwrap();
    assert_eq!(resp.status(), 400, "a negative limit");
    let resp = post(serde_json::json!([{"repositories": "web/*", "keep_tags": 1}]))
        .await
        .unwrap();
    assert_eq!(resp.status(), 400, "not a JSON object");
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "bad_request", "{body}");
    let resp = post(serde_json::json!({"repositories": "web/$(rm -rf)", "keep_tags": 3}))
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let resp = post(serde_json::json!({"repositories": "web/*", "keep_tags": 3, "tags": "v*"}))
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let rule: serde_json::Value = resp.json().await.unwrap();
    let list: serde_json::Value = app
        .client
        .get(app.url("/api/v1/retention"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list[0]["keep_tags"], 3);
    assert_eq!(list[0]["tags"], "v*");
    let id = rule["id"].as_i64().unwrap();
    let del = |id: i64| {
        app.client
            .delete(app.url(&format!("/api/v1/retention/{id}")))
            .send()
    };
    assert_eq!(del(id).await.unwrap().status(), 204);
    assert_eq!(del(id).await.unwrap().status(), 404);
}
