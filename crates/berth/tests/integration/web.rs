//! The web UI's server side without a browser: sign-in, session cookies, CSRF, the
//! access rule behind every form, and the management API on the UI's session.
//! (tests/e2e/test_ui.py drives the same pages in Chromium.)

use crate::common::{TestApp, ADMIN_PASSWORD};
use crate::helpers::*;
use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use reqwest::{Client, Response};

fn plain_client() -> Client {
    Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// `name=value` of the cookie `name` that a response sets, with its attributes.
fn set_cookie(resp: &Response, name: &str) -> Option<(String, String)> {
    resp.headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .map(|v| {
            let (pair, attrs) = v.split_once(';').unwrap_or((v, ""));
            (pair.to_string(), attrs.to_string())
        })
}

/// The value of the hidden `csrf` field of an HTML page.
fn csrf_field(html: &str) -> String {
    let at = html.find("name=\"csrf\" value=\"").expect("a csrf field") + 19;
    html[at..].split('"').next().unwrap().to_string()
}

/// A browser-like session: the cookies it holds and its CSRF token.
struct Browser {
    client: Client,
    cookies: Vec<String>,
    csrf: String,
}

impl Browser {
    fn cookie_header(&self) -> String {
        self.cookies.join("; ")
    }

    async fn get(&self, app: &TestApp, path: &str) -> Response {
        self.client
            .get(app.url(path))
            .header(COOKIE, self.cookie_header())
            .send()
            .await
            .unwrap()
    }

    async fn post(&self, app: &TestApp, path: &str, form: &[(&str, &str)]) -> Response {
        self.client
            .post(app.url(path))
            .header(COOKIE, self.cookie_header())
            .form(form)
            .send()
            .await
            .unwrap()
    }
}

/// Opens the sign-in page (which sets the pre-session CSRF cookie).
async fn visit_login(app: &TestApp) -> Browser {
    let client = plain_client();
    let resp = client.get(app.url("/login")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let (pair, attrs) = set_cookie(&resp, "berth_csrf").expect("a CSRF cookie before sign-in");
    assert!(
        attrs.contains("HttpOnly") && attrs.contains("SameSite=Strict"),
        "{attrs}"
    );
    let csrf = csrf_field(&resp.text().await.unwrap());
    Browser {
        client,
        cookies: vec![pair],
        csrf,
    }
}

async fn sign_in(app: &TestApp, user: &str, password: &str) -> Browser {
    let mut b = visit_login(app).await;
    let csrf = b.csrf.clone();
    let resp = b
        .post(
            app,
            "/login",
            &[
                ("username", user),
                ("password", password),
                ("csrf", &csrf),
                ("next", "/"),
            ],
        )
        .await;
    assert_eq!(resp.status(), 303, "sign-in of {user}");
    let (pair, attrs) = set_cookie(&resp, "berth_session").expect("a session cookie");
    assert!(
        attrs.contains("HttpOnly") && attrs.contains("SameSite=Strict"),
        "session cookie attributes: {attrs}"
    );
    b.cookies.push(pair);
    let page = b.get(app, "/").await;
    assert_eq!(page.status(), 200);
    b.csrf = csrf_field(&page.text().await.unwrap());
    b
}

async fn auth_app_with_users() -> TestApp {
    let app = TestApp::builder().auth().start().await;
    for u in ["alice", "bob"] {
        app.cli_ok(
            &["user", "add", u, "--password-stdin"],
            Some(&format!("{u}-password-1\n")),
        );
    }
    app
}

#[tokio::test]
async fn pages_need_a_sign_in_and_come_back_after_it() {
    let app = auth_app_with_users().await;
    let resp = plain_client()
        .get(app.url("/admin/users"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 303);
    assert_eq!(
        header(&resp, "location").unwrap(),
        "/login?next=%2Fadmin%2Fusers"
    );

    let b = visit_login(&app).await;
    let csrf = b.csrf.clone();
    let resp = b
        .post(
            &app,
            "/login",
            &[
                ("username", "admin"),
                ("password", ADMIN_PASSWORD),
                ("csrf", &csrf),
                ("next", "/admin/users"),
            ],
        )
        .await;
    assert_eq!(resp.status(), 303);
    assert_eq!(resp.headers()[LOCATION], "/admin/users");

    // Never off-site: an absolute or protocol-relative `next` goes home.
    for evil in [
        "//evil.example/",
        "https://evil.example/",
        "/\\evil.example",
        "/\t/evil.example",
        "/\n/evil.example",
    ] {
        let resp = b
            .post(
                &app,
                "/login",
                &[
                    ("username", "admin"),
                    ("password", ADMIN_PASSWORD),
                    ("csrf", &csrf),
                    ("next", evil),
                ],
            )
            .await;
        assert_eq!(resp.headers()[LOCATION], "/", "next={evil}");
    }
}

#[tokio::test]
async fn sign_in_needs_the_forms_csrf_token_and_starts_a_fresh_session() {
    let app = auth_app_with_users().await;
    let mut b = visit_login(&app).await;
    // A session id planted before sign-in (fixation) is not adopted.
    b.cookies
        .push("berth_session=planted-by-an-attacker".into());
    let resp = b
        .post(
            &app,
            "/login",
            &[
                ("username", "alice"),
                ("password", "alice-password-1"),
                ("csrf", "wrong"),
            ],
        )
        .await;
    assert_eq!(resp.status(), 403, "sign-in without the form's token");
    let csrf = b.csrf.clone();
    let resp = b
        .post(
            &app,
            "/login",
            &[
                ("username", "alice"),
                ("password", "alice-password-1"),
                ("csrf", &csrf),
            ],
        )
        .await;
    assert_eq!(resp.status(), 303);
    let (pair, _) = set_cookie(&resp, "berth_session").unwrap();
    assert_ne!(pair, "berth_session=planted-by-an-attacker");
    assert!(pair.len() > "berth_session=".len() + 40, "{pair}");

    // A wrong password: 401 and the form again, with a message for people.
    let resp = b
        .post(
            &app,
            "/login",
            &[
                ("username", "alice"),
                ("password", "wrong-password"),
                ("csrf", &csrf),
            ],
        )
        .await;
    assert_eq!(resp.status(), 401);
    assert!(resp.text().await.unwrap().contains("do not match"));
    // An access token is for docker login, not the UI.
    let resp = b
        .post(
            &app,
            "/login",
            &[
                ("username", "alice"),
                ("password", "berth_0123"),
                ("csrf", &csrf),
            ],
        )
        .await;
    assert_eq!(resp.status(), 401);
}

#[tokio::test]
async fn forms_are_refused_without_the_sessions_token_or_from_another_origin() {
    let app = auth_app_with_users().await;
    let admin = sign_in(&app, "admin", ADMIN_PASSWORD).await;
    let before = app.cli_ok(&["team", "ls"], None);

    let resp = admin
        .post(&app, "/admin/teams", &[("name", "t1"), ("csrf", "forged")])
        .await;
    assert_eq!(resp.status(), 403);
    let resp = admin.post(&app, "/admin/teams", &[("name", "t1")]).await;
    assert!(
        resp.status() == 403 || resp.status() == 422,
        "{}",
        resp.status()
    );
    // The right token, but posted from another site's page.
    let resp = admin
        .client
        .post(app.url("/admin/teams"))
        .header(COOKIE, admin.cookie_header())
        .header("origin", "http://evil.example")
        .form(&[("name", "t1"), ("csrf", admin.csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    assert_eq!(app.cli_ok(&["team", "ls"], None), before, "nothing changed");

    // With the token, from our own page: done.
    let resp = admin
        .post(
            &app,
            "/admin/teams",
            &[("name", "t1"), ("csrf", &admin.csrf)],
        )
        .await;
    assert_eq!(resp.status(), 303);
    assert_eq!(resp.headers()[LOCATION], "/admin/teams/t1");
    assert!(app.cli_ok(&["team", "ls"], None).contains("t1"));
}

#[tokio::test]
async fn every_form_goes_through_the_access_rule() {
    let mut app = auth_app_with_users().await;
    let bob = app.basic_client("bob", "bob-password-1");
    let admin_client = std::mem::replace(&mut app.client, bob);
    push_image(&app, "bob/private", "v1").await;
    app.client = admin_client;

    let alice = sign_in(&app, "alice", "alice-password-1").await;
    // Not listed, not shown, not deletable: 404 like a missing repository.
    let page = alice.get(&app, "/").await.text().await.unwrap();
    assert!(!page.contains("bob/private"));
    assert_eq!(
        alice.get(&app, "/repositories/bob/private").await.status(),
        404
    );
    for path in [
        "/repositories/bob/private/-/delete",
        "/repositories/bob/private/-/tags/v1/delete",
    ] {
        let resp = alice.post(&app, path, &[("csrf", &alice.csrf)]).await;
        assert_eq!(resp.status(), 404, "{path}");
    }
    // Admin pages and actions: 403.
    assert_eq!(alice.get(&app, "/admin").await.status(), 403);
    for (path, form) in [
        ("/admin/users", vec![("name", "mallory")]),
        (
            "/admin/users/alice/password",
            vec![("password", "no-current-1")],
        ),
        ("/admin/users/alice/tokens/x/revoke", vec![]),
        ("/admin/users/bob/admin", vec![("admin", "true")]),
        ("/admin/users/bob/delete", vec![]),
        ("/admin/gc", vec![]),
    ] {
        let mut form = form;
        form.push(("csrf", alice.csrf.as_str()));
        let resp = alice.post(&app, path, &form).await;
        assert_eq!(resp.status(), 403, "{path}");
    }
    // bob's image is intact.
    let tags = bob_tags(&app).await;
    assert_eq!(tags, vec!["v1"]);
    // And alice may not make herself an admin through her own account either.
    let resp = alice
        .post(
            &app,
            "/admin/users/alice/admin",
            &[("admin", "true"), ("csrf", &alice.csrf)],
        )
        .await;
    assert_eq!(resp.status(), 403);
}

async fn bob_tags(app: &TestApp) -> Vec<String> {
    let resp = app
        .basic_client("bob", "bob-password-1")
        .get(app.url("/v2/bob/private/tags/list"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let v: serde_json::Value = resp.json().await.unwrap();
    v["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn the_management_api_accepts_the_session_with_its_csrf_header_for_changes() {
    let app = auth_app_with_users().await;
    let admin = sign_in(&app, "admin", ADMIN_PASSWORD).await;
    let me = admin.get(&app, "/api/v1/me").await;
    assert_eq!(me.status(), 200);
    let me: serde_json::Value = me.json().await.unwrap();
    assert_eq!(me["name"], "admin");

    let create = |token: Option<&str>| {
        let mut r = admin
            .client
            .post(app.url("/api/v1/teams"))
            .header(COOKIE, admin.cookie_header())
            .json(&serde_json::json!({"name": "ops"}));
        if let Some(t) = token {
            r = r.header("x-csrf-token", t);
        }
        r.send()
    };
    let resp = create(None).await.unwrap();
    assert_eq!(resp.status(), 403);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert!(
        body["message"].as_str().unwrap().contains("X-CSRF-Token"),
        "{body}"
    );
    assert_eq!(create(Some("forged")).await.unwrap().status(), 403);
    assert_eq!(create(Some(&admin.csrf)).await.unwrap().status(), 201);
    // A session does not prove the password: changing one's own needs it (the Account
    // page asks for it).
    let resp = admin
        .client
        .patch(app.url("/api/v1/users/admin"))
        .header(COOKIE, admin.cookie_header())
        .header("x-csrf-token", admin.csrf.as_str())
        .json(&serde_json::json!({"password": "taken-over-1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
}

#[tokio::test]
async fn signing_out_deleting_the_user_or_resetting_the_password_ends_sessions() {
    let app = auth_app_with_users().await;
    async fn status_of_me(app: &TestApp, b: &Browser) -> u16 {
        b.get(app, "/api/v1/me").await.status().as_u16()
    }
    let a1 = sign_in(&app, "alice", "alice-password-1").await;
    let resp = a1.post(&app, "/logout", &[("csrf", &a1.csrf)]).await;
    assert_eq!(resp.status(), 303);
    assert_eq!(
        status_of_me(&app, &a1).await,
        401,
        "the cookie is dead on the server"
    );

    let a2 = sign_in(&app, "alice", "alice-password-1").await;
    let admin = sign_in(&app, "admin", ADMIN_PASSWORD).await;
    let resp = admin
        .post(
            &app,
            "/admin/users/alice/password",
            &[("password", "alice-password-2"), ("csrf", &admin.csrf)],
        )
        .await;
    assert_eq!(resp.status(), 303);
    assert_eq!(
        status_of_me(&app, &a2).await,
        401,
        "a password reset signs the user out"
    );

    // A password changed through the API (HTTP Basic) signs the user out too.
    let a3 = sign_in(&app, "alice", "alice-password-2").await;
    let resp = app
        .basic_client("admin", ADMIN_PASSWORD)
        .patch(app.url("/api/v1/users/alice"))
        .json(&serde_json::json!({"password": "alice-password-3"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    assert_eq!(
        status_of_me(&app, &a3).await,
        401,
        "an API password reset signs the user out"
    );

    // Changing one's own password on the Account page: other sign-ins end, this
    // browser gets a new session.
    let mut a4 = sign_in(&app, "alice", "alice-password-3").await;
    let a5 = sign_in(&app, "alice", "alice-password-3").await;
    let resp = a4
        .post(
            &app,
            "/account/password",
            &[
                ("current", "alice-password-3"),
                ("new", "alice-password-4"),
                ("repeat", "alice-password-4"),
                ("csrf", &a4.csrf),
            ],
        )
        .await;
    assert_eq!(resp.status(), 303);
    let (fresh, _) = set_cookie(&resp, "berth_session").expect("a new session cookie");
    assert_eq!(
        status_of_me(&app, &a4).await,
        401,
        "the old session of this browser is gone"
    );
    assert_eq!(
        status_of_me(&app, &a5).await,
        401,
        "another browser is signed out"
    );
    a4.cookies.retain(|c| !c.starts_with("berth_session="));
    a4.cookies.push(fresh);
    assert_eq!(
        status_of_me(&app, &a4).await,
        200,
        "this browser goes on with its new session"
    );

    let b1 = sign_in(&app, "bob", "bob-password-1").await;
    assert_eq!(status_of_me(&app, &b1).await, 200);
    let resp = admin
        .post(&app, "/admin/users/bob/delete", &[("csrf", &admin.csrf)])
        .await;
    assert_eq!(resp.status(), 303);
    assert_eq!(
        status_of_me(&app, &b1).await,
        401,
        "a deleted user's session goes with them"
    );
}

#[tokio::test]
async fn pages_carry_security_headers_and_assets_are_cacheable() {
    let app = auth_app_with_users().await;
    let resp = plain_client().get(app.url("/login")).send().await.unwrap();
    let csp = header(&resp, "content-security-policy").unwrap();
    assert!(csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"));
    assert_eq!(header(&resp, "x-frame-options").unwrap(), "DENY");
    assert_eq!(header(&resp, "cache-control").unwrap(), "no-store");
    let html = resp.text().await.unwrap();
    let at = html.find("/static/berth.css?v=").unwrap();
    let css_url = html[at..].split('"').next().unwrap().to_string();
    let css = plain_client().get(app.url(&css_url)).send().await.unwrap();
    assert_eq!(css.status(), 200);
    assert!(header(&css, "cache-control").unwrap().contains("immutable"));
    assert!(header(&css, "content-type")
        .unwrap()
        .starts_with("text/css"));
    let missing = plain_client()
        .get(app.url("/static/nope.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
}

#[tokio::test]
async fn with_authentication_off_the_ui_is_open_and_still_checks_csrf() {
    let app = TestApp::start().await;
    push_image(&app, "open/app", "v1").await;
    let client = plain_client();
    let resp = client.get(app.url("/")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let (pair, _) = set_cookie(&resp, "berth_csrf").unwrap();
    let html = resp.text().await.unwrap();
    assert!(html.contains("open/app") && html.contains("authentication off"));
    let confirm = client
        .get(app.url("/repositories/open/app/-/tags/v1/delete"))
        .header(COOKIE, pair.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(confirm.status(), 200);
    let csrf = csrf_field(&confirm.text().await.unwrap());
    let post = |token: String| {
        client
            .post(app.url("/repositories/open/app/-/tags/v1/delete"))
            .header(COOKIE, pair.clone())
            .form(&[("csrf", token)])
            .send()
    };
    assert_eq!(post("forged".into()).await.unwrap().status(), 403);
    assert_eq!(post(csrf).await.unwrap().status(), 303);
    let tags = app
        .client
        .get(app.url("/v2/open/app/tags/list"))
        .send()
        .await
        .unwrap();
    let v: serde_json::Value = tags.json().await.unwrap();
    assert!(v["tags"].as_array().is_none_or(|t| t.is_empty()), "{v}");
}

#[tokio::test]
async fn a_repository_with_many_tags_is_shown_a_page_at_a_time() {
    let app = TestApp::start().await;
    let img = push_image(&app, "many/tags", "t000").await;
    for i in 1..150 {
        put_manifest_ok(
            &app,
            "many/tags",
            &format!("t{i:03}"),
            img.media_type,
            &img.manifest,
        )
        .await;
    }
    let client = plain_client();
    let html = client
        .get(app.url("/repositories/many/tags"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(html.matches("<tr data-tag=").count(), 100);
    assert!(html.contains("data-tag=\"t099\"") && !html.contains("data-tag=\"t100\""));
    assert!(html.contains(">150</span>"), "the total is shown");
    let next = html.find("?last=t099").expect("a link to the next page");
    assert!(next > 0);
    let html = client
        .get(app.url("/repositories/many/tags?last=t099"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(html.matches("<tr data-tag=").count(), 50);
    assert!(html.contains("data-tag=\"t100\"") && !html.contains("?last="));
}

#[tokio::test]
async fn the_image_page_shows_referrers_and_deleting_an_image_or_repository_asks_first() {
    let app = TestApp::start().await;
    let repo = "ui/signed";
    let img = push_image(&app, repo, "v1").await;
    put_manifest_ok(&app, repo, "also", img.media_type, &img.manifest).await;
    let subj = subject(OCI_MANIFEST, &img.manifest);
    let (sbom, sbom_d) = make_artifact(
        &app,
        repo,
        "application/vnd.example.sbom.v1",
        serde_json::json!({ "subject": subj }),
    )
    .await;
    put_manifest_ok(&app, repo, &sbom_d, OCI_MANIFEST, &sbom).await;
    let client = plain_client();
    let get = |path: String| {
        let client = client.clone();
        let url = app.url(&path);
        async move {
            let resp = client.get(url).send().await.unwrap();
            let status = resp.status();
            (status, resp.text().await.unwrap())
        }
    };

    let (status, page) = get(format!("/repositories/{repo}/-/manifests/{}", img.digest)).await;
    assert_eq!(status, 200);
    assert!(
        page.contains("application/vnd.example.sbom.v1"),
        "the SBOM is listed"
    );
    assert!(page.contains(&format!("/repositories/{repo}/-/manifests/{sbom_d}")));
    let (_, sbom_page) = get(format!("/repositories/{repo}/-/manifests/{sbom_d}")).await;
    assert!(
        sbom_page.contains("Attached to"),
        "the SBOM links back to its subject"
    );

    // Deleting the image: the confirmation names its tags and the attached artifact.
    let (status, confirm) = get(format!(
        "/repositories/{repo}/-/manifests/{}/delete",
        img.digest
    ))
    .await;
    assert_eq!(status, 200);
    assert!(
        confirm.contains("Its tags go with it: also, v1."),
        "{confirm}"
    );
    assert!(confirm.contains("1 artifact attached to it"), "{confirm}");
    let csrf = csrf_field(&confirm);
    let cookie = format!("berth_csrf={csrf}");
    let post = |path: String| {
        client
            .post(app.url(&path))
            .header(COOKIE, cookie.clone())
            .form(&[("csrf", csrf.clone())])
            .send()
    };
    let resp = post(format!(
        "/repositories/{repo}/-/manifests/{}/delete",
        img.digest
    ))
    .await
    .unwrap();
    assert_eq!(resp.status(), 303);
    let resp = app
        .client
        .get(app.url(&format!("/v2/{repo}/manifests/{}", img.digest)))
        .header("accept", OCI_MANIFEST)
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        404,
        "the image is gone from the registry API"
    );

    // Deleting the repository: the confirmation counts what goes.
    let (_, confirm) = get(format!("/repositories/{repo}/-/delete")).await;
    assert!(
        confirm.contains("0 tags and 1 image (manifest) go with it"),
        "{confirm}"
    );
    let resp = post(format!("/repositories/{repo}/-/delete"))
        .await
        .unwrap();
    assert_eq!(resp.status(), 303);
    assert_eq!(resp.headers()[LOCATION], "/");
    let resp = app
        .client
        .get(app.url(&format!("/v2/{repo}/tags/list")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404, "the repository is gone");
}
