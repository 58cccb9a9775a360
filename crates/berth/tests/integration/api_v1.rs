//! The management API: the access rule applied to account administration and to
//! repository listings, and deleting an account deleting its namespace.

use serde_json::{json, Value};

use crate::common::{TestApp, ADMIN_PASSWORD};
use crate::helpers::*;

async fn status_of(resp: reqwest::Response) -> (u16, Value) {
    let s = resp.status().as_u16();
    (s, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn management_api_follows_the_access_rule() {
    if skip_external("api_v1", "starts its own registry with auth") {
        return;
    }
    let mut app = TestApp::builder().auth().start().await;
    let admin = app.basic_client("admin", ADMIN_PASSWORD);
    let base = app.base.clone();
    let v1 = move |p: &str| format!("{base}/api/v1{p}");

    // Admin creates alice (generated password), bob (given), and team web with alice.
    let (s, alice) = status_of(
        admin
            .post(v1("/users"))
            .json(&json!({"name": "alice"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 201, "{alice}");
    let alice_pw = alice["password"].as_str().unwrap().to_string();
    let (s, _) = status_of(
        admin
            .post(v1("/users"))
            .json(&json!({"name": "bob", "password": "bob-password"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 201);
    assert_eq!(
        admin
            .post(v1("/users"))
            .json(&json!({"name": "Bad Name"}))
            .send()
            .await
            .unwrap()
            .status(),
        400
    );
    assert_eq!(
        admin
            .post(v1("/teams"))
            .json(&json!({"name": "web"}))
            .send()
            .await
            .unwrap()
            .status(),
        201
    );
    assert_eq!(
        admin
            .post(v1("/teams"))
            .json(&json!({"name": "alice"}))
            .send()
            .await
            .unwrap()
            .status(),
        409,
        "a team can't take a user's name"
    );
    assert_eq!(
        admin
            .put(v1("/teams/web/members/alice"))
            .send()
            .await
            .unwrap()
            .status(),
        204
    );

    let alice_c = app.basic_client("alice", &alice_pw);
    let bob_c = app.basic_client("bob", "bob-password");
    // Pushes as alice into her namespace and the team's, as bob into his.
    app.client = alice_c.clone();
    push_image(&app, "alice/app", "v1").await;
    push_image(&app, "web/site", "v1").await;
    app.client = bob_c.clone();
    push_image(&app, "bob/tool", "v1").await;

    // Account administration is for admins.
    assert_eq!(
        alice_c.get(v1("/users")).send().await.unwrap().status(),
        403
    );
    assert_eq!(
        alice_c
            .post(v1("/teams"))
            .json(&json!({"name": "x"}))
            .send()
            .await
            .unwrap()
            .status(),
        403
    );
    assert_eq!(
        bob_c
            .delete(v1("/users/alice"))
            .send()
            .await
            .unwrap()
            .status(),
        403
    );
    assert_eq!(
        reqwest::Client::new()
            .get(v1("/users"))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    // …but users read themselves and their teams.
    let (s, me) = status_of(alice_c.get(v1("/me")).send().await.unwrap()).await;
    assert_eq!(
        (s, me["name"].as_str(), me["teams"].clone()),
        (200, Some("alice"), json!(["web"]))
    );
    let (_, teams) = status_of(bob_c.get(v1("/teams")).send().await.unwrap()).await;
    assert_eq!(teams, json!([]), "bob sees no team");
    assert_eq!(
        bob_c.get(v1("/teams/web")).send().await.unwrap().status(),
        404
    );

    // Listings show only what the caller may pull.
    let names = |v: &Value| -> Vec<String> {
        v["repositories"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap().to_string())
            .collect()
    };
    let (_, a) = status_of(alice_c.get(v1("/repositories")).send().await.unwrap()).await;
    assert_eq!(names(&a), ["alice/app", "web/site"]);
    let (_, b) = status_of(bob_c.get(v1("/repositories")).send().await.unwrap()).await;
    assert_eq!(names(&b), ["bob/tool"]);
    let (_, all) = status_of(admin.get(v1("/repositories?q=app")).send().await.unwrap()).await;
    assert_eq!(names(&all), ["alice/app"]);
    let (s, tags) = status_of(
        alice_c
            .get(v1("/repositories/web%2Fsite/tags"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((s, tags[0]["name"].as_str()), (200, Some("v1")));
    assert!(tags[0]["size"].as_u64().unwrap() > 4500);
    // Another's repository is indistinguishable from a missing one.
    let forbidden = bob_c
        .get(v1("/repositories/alice%2Fapp/tags"))
        .send()
        .await
        .unwrap();
    let missing = bob_c
        .get(v1("/repositories/bob%2Fnothing/tags"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        (forbidden.status(), missing.status()),
        (
            reqwest::StatusCode::NOT_FOUND,
            reqwest::StatusCode::NOT_FOUND
        )
    );
    assert_eq!(
        bob_c
            .delete(v1("/repositories/alice%2Fapp"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );

    // Tokens: own ones only, usable as a password, revocable.
    let (s, t) = status_of(
        bob_c
            .post(v1("/tokens"))
            .json(&json!({"name": "ci"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 201);
    let secret = t["secret"].as_str().unwrap();
    assert_eq!(
        bob_c
            .post(v1("/tokens"))
            .json(&json!({"name": "x", "user": "alice"}))
            .send()
            .await
            .unwrap()
            .status(),
        403
    );
    let with_token = app.basic_client("bob", secret);
    assert_eq!(
        with_token
            .get(app.url("/v2/bob/tool/tags/list"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        bob_c
            .delete(v1("/tokens/bob/ci"))
            .send()
            .await
            .unwrap()
            .status(),
        204
    );
    assert_eq!(
        with_token
            .get(app.url("/v2/bob/tool/tags/list"))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );

    // Deleting a tag, then the team with its namespace, through the API.
    assert_eq!(
        alice_c
            .delete(v1("/repositories/alice%2Fapp/tags/v1"))
            .send()
            .await
            .unwrap()
            .status(),
        204
    );
    let (s, d) = status_of(admin.delete(v1("/teams/web")).send().await.unwrap()).await;
    assert_eq!((s, d["repositories_deleted"].as_u64()), (200, Some(1)));
    let (_, a) = status_of(alice_c.get(v1("/repositories")).send().await.unwrap()).await;
    assert_eq!(names(&a), ["alice/app"]);
    assert_eq!(
        alice_c
            .get(app.url("/v2/web/site/tags/list"))
            .send()
            .await
            .unwrap()
            .status(),
        403
    );

    // The audit log records who did it, for admins only.
    assert_eq!(
        alice_c.get(v1("/audit")).send().await.unwrap().status(),
        403
    );
    let (_, log) = status_of(admin.get(v1("/audit?limit=200")).send().await.unwrap()).await;
    let has = |actor: &str, action: &str| {
        log.as_array()
            .unwrap()
            .iter()
            .any(|e| e["actor"] == actor && e["action"] == action)
    };
    assert!(
        has("admin", "team_rm")
            && has("admin", "user_add")
            && has("alice", "push")
            && has("bob", "token_create"),
        "{log}"
    );

    // The document describing all this is generated and served.
    let doc: Value = reqwest::get(v1("/openapi.json"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(doc["paths"]["/api/v1/users/{name}"]["delete"].is_object());
}
