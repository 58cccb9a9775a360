//! Accounts, namespaces and authentication (issue 4), against `berth serve` with auth on
//! (`TestApp::builder().auth()`), accounts made with the `berth` CLI while it runs.
//!
//! - `permission_matrix`: every caller kind × every verb × every namespace kind, with HTTP
//!   Basic and with Bearer tokens from `/auth/token`, on one server;
//! - the token flow: downgraded grants, `*`, `insufficient_scope`, forged tokens, the
//!   bearer token's own expiry (`auth.token_ttl`);
//! - access tokens: as a Basic password and through `/auth/token`, revocation and expiry
//!   taking effect at once (also for JWTs already issued);
//! - account changes taking effect at once: deleting a user (and their namespace),
//!   leaving a team, the admin flag, a new password;
//! - throttling of failed logins per user and per client address;
//! - another user's upload session, and crafted paths (`..`, `%2e%2e`, `//`, `%2f`);
//! - the conformance workflows with a user's Basic credentials in their own namespace.
//!
//! Every failed login counts towards the per-address throttle (5 free failures), and
//! every test talks from 127.0.0.1: a test that makes logins fail therefore has its own
//! server and stays under 5 failures, and the throttle tests use other loopback source
//! addresses (127.0.0.2, …) to tell "per user" from "per address".

use std::net::IpAddr;
use std::time::Duration;

use base64::Engine;
use reqwest::header::HeaderMap;
use reqwest::{Method, Url};
use serde_json::{json, Value};

use crate::common::{TestApp, ADMIN_PASSWORD};
use crate::helpers::*;

const SERVICE: &str = "berth";

// ---------------------------------------------------------------------------------
// Accounts and credentials

fn password(user: &str) -> String {
    if user == "admin" {
        ADMIN_PASSWORD.to_string()
    } else {
        format!("{user}-password-1234")
    }
}

/// A registry with auth on, or `None` (and a loud skip) against an external registry.
async fn start_auth(test: &str) -> Option<TestApp> {
    if skip_external(
        test,
        "needs its own registry with auth on and the berth CLI",
    ) {
        return None;
    }
    Some(TestApp::builder().auth().start().await)
}

fn add_user(app: &TestApp, name: &str) {
    let out = app.cli_ok(
        &["user", "add", name, "--password-stdin"],
        Some(&format!("{}\n", password(name))),
    );
    assert!(out.contains(name), "user add {name}: {out}");
}

fn add_team(app: &TestApp, team: &str, members: &[&str]) {
    app.cli_ok(&["team", "add", team], None);
    for m in members {
        app.cli_ok(&["team", "member", "add", team, m], None);
    }
}

/// `berth token create`; returns the secret (the `berth_…` line of stdout).
fn create_token(app: &TestApp, user: &str, name: &str, expires: Option<&str>) -> String {
    let mut args = vec!["token", "create", "--user", user, "--name", name];
    if let Some(e) = expires {
        args.extend(["--expires", e]);
    }
    let out = app.cli_ok(&args, None);
    out.lines()
        .map(str::trim)
        .find(|l| l.starts_with("berth_"))
        .unwrap_or_else(|| panic!("token create printed no berth_… secret line: {out}"))
        .to_string()
}

fn plain_client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// A client whose connections come from `ip` (any 127.0.0.0/8 address works on Linux's
/// loopback), so the server sees a different client address.
fn client_from(ip: [u8; 4]) -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .local_address(IpAddr::from(ip))
        .build()
        .unwrap()
}

#[derive(Debug, Clone)]
enum Cred {
    Anonymous,
    Basic(String, String),
    Bearer(String),
}

impl Cred {
    fn basic(user: &str, secret: &str) -> Cred {
        Cred::Basic(user.to_string(), secret.to_string())
    }
}

/// A response read to the end.
#[derive(Debug)]
struct Answer {
    what: String,
    status: u16,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Answer {
    async fn read(what: String, resp: reqwest::Response) -> Answer {
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.bytes().await.unwrap().to_vec();
        Answer {
            what,
            status,
            headers,
            body,
        }
    }

    fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{}: body is not JSON ({e}): {}", self.what, self.text()))
    }

    fn describe(&self) -> String {
        format!(
            "{} -> {} {} {}",
            self.what,
            self.status,
            self.header("www-authenticate")
                .map(|w| format!("[WWW-Authenticate: {w}]"))
                .unwrap_or_default(),
            self.text()
        )
    }

    /// `Ok` when the status is `status` and (unless `code` is empty or this answers a
    /// HEAD) the body is OCI error JSON containing `code`.
    fn expect_error(&self, status: u16, code: &str) -> Result<(), String> {
        if self.status != status {
            return Err(format!("expected {status} {code}, got {}", self.describe()));
        }
        if code.is_empty() || self.what.starts_with("HEAD ") {
            return Ok(());
        }
        let codes = oci_error_codes(&self.body).map_err(|e| format!("{}: {e}", self.what))?;
        if !codes.iter().any(|c| c == code) {
            return Err(format!("expected code {code}, got {}", self.describe()));
        }
        let ctype = self.header("content-type").unwrap_or_default();
        if !ctype.starts_with("application/json") {
            return Err(format!(
                "{}: OCI error with Content-Type {ctype:?}",
                self.what
            ));
        }
        Ok(())
    }

    fn expect_status(&self, status: u16) -> Result<(), String> {
        if self.status != status {
            return Err(format!("expected {status}, got {}", self.describe()));
        }
        Ok(())
    }

    /// The `Location` header resolved against `base`.
    fn location(&self, base: &str) -> Result<Url, String> {
        let raw = self
            .header("location")
            .ok_or_else(|| format!("no Location: {}", self.describe()))?;
        Url::parse(base)
            .unwrap()
            .join(&raw)
            .map_err(|e| format!("Location {raw:?}: {e}"))
    }
}

/// Sends a request with `cred`; `target` is a path (`/v2/…`) or an absolute URL.
async fn send(
    app: &TestApp,
    client: &reqwest::Client,
    cred: &Cred,
    method: Method,
    target: &str,
    headers: &[(&str, String)],
    body: Vec<u8>,
) -> Answer {
    let url = if target.starts_with("http") {
        target.to_string()
    } else {
        app.url(target)
    };
    let what = format!("{method} {target}");
    let mut rb = client.request(method.clone(), &url);
    for (k, v) in headers {
        rb = rb.header(*k, v);
    }
    rb = match cred {
        Cred::Anonymous => rb,
        Cred::Basic(u, p) => rb.basic_auth(u, Some(p)),
        Cred::Bearer(t) => rb.bearer_auth(t),
    };
    if !matches!(method, Method::GET | Method::HEAD | Method::DELETE) {
        rb = rb.body(body);
    }
    Answer::read(what, rb.send().await.unwrap()).await
}

async fn get(app: &TestApp, cred: &Cred, path: &str) -> Answer {
    send(
        app,
        &plain_client(),
        cred,
        Method::GET,
        path,
        &[("accept", ACCEPT_ALL_MANIFESTS.to_string())],
        Vec::new(),
    )
    .await
}

/// `GET /auth/token?service=berth&scope=…` with Basic credentials.
async fn token_request(
    app: &TestApp,
    client: &reqwest::Client,
    user: &str,
    secret: &str,
    scopes: &[&str],
) -> Answer {
    let mut query = vec![("service", SERVICE)];
    query.extend(scopes.iter().map(|s| ("scope", *s)));
    let resp = client
        .get(app.url("/auth/token"))
        .query(&query)
        .basic_auth(user, Some(secret))
        .send()
        .await
        .unwrap();
    Answer::read(format!("GET /auth/token {scopes:?} as {user}"), resp).await
}

/// A bearer token for `scopes`, asserting `/auth/token` answers 200 with the documented
/// fields.
async fn bearer(app: &TestApp, user: &str, secret: &str, scopes: &[&str]) -> String {
    bearer_via(app, &plain_client(), user, secret, scopes).await
}

async fn bearer_via(
    app: &TestApp,
    client: &reqwest::Client,
    user: &str,
    secret: &str,
    scopes: &[&str],
) -> String {
    let ans = token_request(app, client, user, secret, scopes).await;
    assert_eq!(ans.status, 200, "{}", ans.describe());
    let v = ans.json();
    let token = v["token"]
        .as_str()
        .unwrap_or_else(|| panic!("no token: {v}"));
    assert_eq!(v["access_token"].as_str(), Some(token), "access_token: {v}");
    assert!(v["expires_in"].as_u64().is_some_and(|e| e > 0), "{v}");
    assert!(v["issued_at"].is_string(), "{v}");
    token.to_string()
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
}

/// The JWT's (header, payload), decoded without verifying anything.
fn jwt_parts(token: &str) -> (Value, Value) {
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "a JWT has three parts: {token}");
    let decode = |p: &str| -> Value {
        serde_json::from_slice(&b64().decode(p).expect("JWT part is base64url"))
            .expect("JWT part is JSON")
    };
    (decode(parts[0]), decode(parts[1]))
}

/// The `access` claim as (type, name, sorted actions).
fn access(token: &str) -> Vec<(String, String, Vec<String>)> {
    let (_, claims) = jwt_parts(token);
    let mut out: Vec<(String, String, Vec<String>)> = claims["access"]
        .as_array()
        .unwrap_or_else(|| panic!("no access claim: {claims}"))
        .iter()
        .map(|a| {
            let mut actions: Vec<String> = a["actions"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_str().unwrap().to_string())
                .collect();
            actions.sort();
            (
                a["type"].as_str().unwrap().to_string(),
                a["name"].as_str().unwrap().to_string(),
                actions,
            )
        })
        .collect();
    out.sort();
    out
}

fn grant(kind: &str, name: &str, actions: &[&str]) -> (String, String, Vec<String>) {
    let mut a: Vec<String> = actions.iter().map(|s| s.to_string()).collect();
    a.sort();
    (kind.to_string(), name.to_string(), a)
}

fn challenge(app: &TestApp, scope: &str) -> String {
    format!(
        "Bearer realm=\"{}/auth/token\",service=\"{SERVICE}\",scope=\"{scope}\"",
        app.base
    )
}

/// Asserts the 401 that sends a client to `/auth/token` for `scope`.
fn assert_challenge(app: &TestApp, ans: &Answer, scope: &str, insufficient: bool) {
    ans.expect_error(401, "UNAUTHORIZED")
        .unwrap_or_else(|e| panic!("{e}"));
    let mut want = challenge(app, scope);
    if insufficient {
        want.push_str(",error=\"insufficient_scope\"");
    }
    assert_eq!(
        ans.header("www-authenticate").as_deref(),
        Some(want.as_str()),
        "{}",
        ans.describe()
    );
}

/// Every repository of `_catalog` (following `Link` pages of `n`).
async fn catalog_all(app: &TestApp, cred: &Cred, n: usize) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut next = format!("/v2/_catalog?n={n}");
    for _ in 0..10_000 {
        let ans = get(app, cred, &next).await;
        ans.expect_status(200)?;
        let v = ans.json();
        let repos = v["repositories"]
            .as_array()
            .ok_or_else(|| format!("no repositories array: {}", ans.describe()))?;
        out.extend(repos.iter().map(|r| r.as_str().unwrap().to_string()));
        match ans.header("link") {
            None => return Ok(out),
            Some(link) => {
                let start = link.find('<').ok_or("Link without <")? + 1;
                let end = link.find('>').ok_or("Link without >")?;
                next = link[start..end].to_string();
            }
        }
    }
    Err("catalog pagination does not end".into())
}

fn namespace(repo: &str) -> &str {
    repo.split('/').next().unwrap()
}

// ---------------------------------------------------------------------------------
// The permission matrix

/// Team memberships of the matrix.
const TEAMS: &[(&str, &[&str])] = &[("web", &["alice"]), ("ops", &["carol"])];
const USERS: &[&str] = &["alice", "bob", "carol"];
const CALLERS: &[&str] = &["admin", "alice", "bob", "carol", "anonymous"];
/// `ghost` is a namespace nobody owns and no repository is in.
const NAMESPACES: &[&str] = &["alice", "web", "bob", "ops", "ghost"];

/// The rule under test (issue 4), spelled out: admin anywhere, a user in their own
/// namespace, a team member in the team's namespace, nobody else anywhere.
///
/// | caller    | alice | web | bob | ops | ghost |
/// |-----------|-------|-----|-----|-----|-------|
/// | admin     |  yes  | yes | yes | yes |  yes  |
/// | alice     |  own  | team|  no |  no |   no  |
/// | bob       |   no  |  no | own |  no |   no  |
/// | carol     |   no  |  no |  no | team|   no  |
/// | anonymous |   no  |  no |  no |  no |   no  |
fn may(who: &str, ns: &str) -> bool {
    who == "admin"
        || (who != "anonymous" && who == ns)
        || TEAMS
            .iter()
            .any(|(team, members)| *team == ns && members.contains(&who))
}

fn kind(who: &str, ns: &str) -> &'static str {
    if ns == "ghost" {
        "missing namespace"
    } else if who == "admin" {
        "admin, any namespace"
    } else if who == ns {
        "own namespace"
    } else if may(who, ns) {
        "own team's namespace"
    } else if USERS.contains(&ns) {
        "other user's namespace"
    } else {
        "other team's namespace"
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    Basic,
    Bearer,
}

/// What each namespace's `<ns>/app` holds.
struct Fixture {
    manifest: Vec<u8>,
    digest: String,
    layer: Vec<u8>,
    layer_digest: String,
    referrer: String,
}

struct Matrix {
    /// `client` is the admin's (Basic): used for fixtures and checks behind the scenes.
    app: TestApp,
    plain: reqwest::Client,
    fixtures: Vec<(String, Fixture)>,
    failures: Vec<String>,
    checks: usize,
    /// Bearer tokens already fetched, by caller and scopes.
    tokens: std::sync::Mutex<std::collections::HashMap<String, String>>,
}

impl Matrix {
    fn fixture(&self, ns: &str) -> &Fixture {
        let ns = if ns == "ghost" { "alice" } else { ns };
        &self
            .fixtures
            .iter()
            .find(|(n, _)| n == ns)
            .expect("fixture")
            .1
    }

    /// The credentials `who` uses for a request needing `scopes`: Basic, or a Bearer
    /// token asked for exactly those scopes.
    async fn cred(&self, who: &str, mode: Mode, scopes: &[String]) -> Cred {
        if who == "anonymous" {
            return Cred::Anonymous;
        }
        match mode {
            Mode::Basic => Cred::basic(who, &password(who)),
            Mode::Bearer => {
                // A token per (caller, exact scopes), as a client keeps them.
                let key = format!("{who} {}", scopes.join(" "));
                if let Some(t) = self.tokens.lock().unwrap().get(&key) {
                    return Cred::Bearer(t.clone());
                }
                let scopes: Vec<&str> = scopes.iter().map(String::as_str).collect();
                let t = bearer_via(&self.app, &self.plain, who, &password(who), &scopes).await;
                self.tokens.lock().unwrap().insert(key, t.clone());
                Cred::Bearer(t)
            }
        }
    }

    async fn send(
        &self,
        cred: &Cred,
        method: Method,
        target: &str,
        headers: &[(&str, String)],
        body: Vec<u8>,
    ) -> Answer {
        send(&self.app, &self.plain, cred, method, target, headers, body).await
    }

    fn record(&mut self, cell: &str, verb: &str, r: Result<(), String>) {
        self.checks += 1;
        if let Err(e) = r {
            self.failures.push(format!("[{cell}] {verb}: {e}"));
        }
    }

    /// The answer a denied caller must get: 401 + challenge for `scope` when anonymous,
    /// else 403 DENIED.
    fn denied(&self, who: &str, ans: &Answer, scope: &str) -> Result<(), String> {
        if who == "anonymous" {
            ans.expect_error(401, "UNAUTHORIZED")?;
            let want = challenge(&self.app, scope);
            if ans.header("www-authenticate").as_deref() != Some(want.as_str()) {
                return Err(format!(
                    "expected WWW-Authenticate {want}, got {}",
                    ans.describe()
                ));
            }
            Ok(())
        } else {
            ans.expect_error(403, "DENIED")
        }
    }

    /// A denied caller learns nothing: the answer for `b` (another repository, missing
    /// or existing) equals the one for `a`, repository names aside.
    fn same_denial(a: &Answer, a_repo: &str, b: &Answer, b_repo: &str) -> Result<(), String> {
        let norm = |ans: &Answer, repo: &str| {
            (
                ans.status,
                ans.header("content-type"),
                ans.header("www-authenticate")
                    .map(|w| w.replace(repo, "<repo>")),
                ans.text().replace(repo, "<repo>"),
            )
        };
        if norm(a, a_repo) != norm(b, b_repo) {
            return Err(format!(
                "a denied caller can tell {a_repo} from {b_repo}:\n    {}\n    {}",
                a.describe(),
                b.describe()
            ));
        }
        Ok(())
    }

    /// Runs every verb for one (caller, namespace, mode) cell.
    async fn cell(&mut self, who: &str, ns: &str, mode: Mode) {
        let cell = format!("{who} in {ns}/… ({}) via {mode:?}", kind(who, ns));
        let allowed = may(who, ns);
        let exists = ns != "ghost";
        let repo = format!("{ns}/app");
        let missing = format!("{ns}/nothing");
        let (manifest, digest, layer, layer_digest, referrer) = {
            let f = self.fixture(ns);
            (
                f.manifest.clone(),
                f.digest.clone(),
                f.layer.clone(),
                f.layer_digest.clone(),
                f.referrer.clone(),
            )
        };
        let pull = |r: &str| format!("repository:{r}:pull");
        let accept = [("accept", ACCEPT_ALL_MANIFESTS.to_string())];

        // ---- reads: on the repository (existing but for ghost) and on a missing one.
        struct Read {
            verb: &'static str,
            method: Method,
            path: String,
        }
        let reads = |r: &str| {
            vec![
                Read {
                    verb: "pull manifest (GET by tag)",
                    method: Method::GET,
                    path: format!("/v2/{r}/manifests/v1"),
                },
                Read {
                    verb: "pull manifest (HEAD by digest)",
                    method: Method::HEAD,
                    path: format!("/v2/{r}/manifests/{digest}"),
                },
                Read {
                    verb: "HEAD blob",
                    method: Method::HEAD,
                    path: format!("/v2/{r}/blobs/{layer_digest}"),
                },
                Read {
                    verb: "GET blob",
                    method: Method::GET,
                    path: format!("/v2/{r}/blobs/{layer_digest}"),
                },
                Read {
                    verb: "tags list",
                    method: Method::GET,
                    path: format!("/v2/{r}/tags/list"),
                },
                Read {
                    verb: "referrers",
                    method: Method::GET,
                    path: format!("/v2/{r}/referrers/{digest}"),
                },
            ]
        };
        let (on_repo, on_missing) = (reads(&repo), reads(&missing));
        for (a, b) in on_repo.into_iter().zip(on_missing) {
            let cred = self.cred(who, mode, &[pull(&repo)]).await;
            let ans = self
                .send(&cred, a.method.clone(), &a.path, &accept, Vec::new())
                .await;
            let r = if !allowed {
                self.denied(who, &ans, &pull(&repo))
            } else if !exists {
                read_missing(a.verb, &ans)
            } else {
                match a.verb {
                    "pull manifest (GET by tag)" => ans.expect_status(200).and_then(|_| {
                        (ans.body == manifest
                            && ans.header("docker-content-digest").as_deref() == Some(&digest))
                        .then_some(())
                        .ok_or_else(|| format!("wrong manifest: {}", ans.describe()))
                    }),
                    "pull manifest (HEAD by digest)" => ans.expect_status(200),
                    "HEAD blob" => ans.expect_status(200).and_then(|_| {
                        (ans.header("content-length") == Some(layer.len().to_string()))
                            .then_some(())
                            .ok_or_else(|| format!("Content-Length: {}", ans.describe()))
                    }),
                    "GET blob" => ans.expect_status(200).and_then(|_| {
                        (ans.body == layer)
                            .then_some(())
                            .ok_or_else(|| "blob content differs".to_string())
                    }),
                    "tags list" => ans.expect_status(200).and_then(|_| {
                        let v = ans.json();
                        (v["name"] == json!(repo)
                            && v["tags"]
                                .as_array()
                                .is_some_and(|t| t.contains(&json!("v1"))))
                        .then_some(())
                        .ok_or_else(|| format!("tags: {}", ans.describe()))
                    }),
                    _ => ans.expect_status(200).and_then(|_| {
                        let v = ans.json();
                        let found = v["manifests"]
                            .as_array()
                            .is_some_and(|m| m.iter().any(|d| d["digest"] == json!(referrer)));
                        found
                            .then_some(())
                            .ok_or_else(|| format!("referrer missing: {}", ans.describe()))
                    }),
                }
            };
            self.record(&cell, a.verb, r);

            let cred = self.cred(who, mode, &[pull(&missing)]).await;
            let miss = self
                .send(&cred, b.method.clone(), &b.path, &accept, Vec::new())
                .await;
            let r = if allowed {
                read_missing(b.verb, &miss)
            } else {
                Self::same_denial(&ans, &repo, &miss, &missing)
            };
            self.record(&cell, &format!("{} (missing repository)", b.verb), r);
        }

        let tag = format!("{who}-{mode:?}").to_lowercase();

        // ---- push: blob upload (POST + PUT, and single POST) and manifest PUT, into a
        // new repository of the namespace.
        let target = format!("{ns}/push-{tag}");
        let push_scope = format!("repository:{target}:pull,push");
        let cred = self
            .cred(who, mode, std::slice::from_ref(&push_scope))
            .await;
        let r = if allowed {
            self.push_as(&cred, &target).await
        } else {
            self.push_denied(who, &cred, &target, &repo, mode, &manifest)
                .await
        };
        self.record(&cell, "push (blob upload + manifest PUT)", r);

        // ---- deletes, each of something the admin has just put there.
        for verb in [
            "delete manifest by digest",
            "delete manifest by tag",
            "delete blob",
        ] {
            let r = self
                .delete(who, mode, allowed, exists, verb, &repo, &missing, &tag)
                .await;
            self.record(&cell, verb, r);
        }

        // ---- cross-namespace mount into the caller's own namespace.
        let r = self
            .mount(
                who,
                mode,
                ns,
                allowed && exists,
                &repo,
                &layer,
                &layer_digest,
                true,
            )
            .await;
        self.record(&cell, "mount (with from)", r);
        if exists {
            let r = self
                .mount(who, mode, ns, allowed, &repo, &layer, &layer_digest, false)
                .await;
            self.record(&cell, "mount (without from)", r);
        }
    }

    /// A full push as `cred` into `target`, then checked by the admin.
    async fn push_as(&self, cred: &Cred, target: &str) -> Result<(), String> {
        let layer = random_bytes(900);
        let layer_digest = sha256_digest(&layer);
        let ans = self
            .send(
                cred,
                Method::POST,
                &format!("/v2/{target}/blobs/uploads/"),
                &[],
                Vec::new(),
            )
            .await;
        ans.expect_status(202)?;
        let upload = with_query(ans.location(&self.app.base)?, "digest", &layer_digest);
        let ans = self
            .send(
                cred,
                Method::PUT,
                upload.as_str(),
                &[("content-type", "application/octet-stream".into())],
                layer.clone(),
            )
            .await;
        ans.expect_status(201)?;
        let config = serde_json::to_vec(&json!({"architecture": "amd64", "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": []}, "nonce": unique()}))
        .unwrap();
        let config_digest = sha256_digest(&config);
        let ans = self
            .send(
                cred,
                Method::POST,
                &format!("/v2/{target}/blobs/uploads/?digest={config_digest}"),
                &[("content-type", "application/octet-stream".into())],
                config.clone(),
            )
            .await;
        ans.expect_status(201)?;
        let manifest = manifest_bytes(&json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": descriptor(OCI_CONFIG, &config),
            "layers": [descriptor(OCI_LAYER, &layer)],
        }));
        let ans = self
            .send(
                cred,
                Method::PUT,
                &format!("/v2/{target}/manifests/v1"),
                &[("content-type", OCI_MANIFEST.into())],
                manifest.clone(),
            )
            .await;
        ans.expect_status(201)?;
        let got = get_manifest(&self.app, target, "v1").await;
        if got.status() != 200 || got.bytes().await.unwrap()[..] != manifest[..] {
            return Err(format!(
                "{target}:v1 is not readable by the admin after the push"
            ));
        }
        Ok(())
    }

    /// Every push step is denied, the same for a new and an existing repository, and
    /// nothing is created.
    async fn push_denied(
        &self,
        who: &str,
        cred: &Cred,
        target: &str,
        repo: &str,
        mode: Mode,
        manifest: &[u8],
    ) -> Result<(), String> {
        let scope = format!("repository:{target}:pull,push");
        let start = self
            .send(
                cred,
                Method::POST,
                &format!("/v2/{target}/blobs/uploads/"),
                &[],
                Vec::new(),
            )
            .await;
        self.denied(who, &start, &scope)?;
        let data = random_bytes(100);
        let ans = self
            .send(
                cred,
                Method::POST,
                &format!(
                    "/v2/{target}/blobs/uploads/?digest={}",
                    sha256_digest(&data)
                ),
                &[("content-type", "application/octet-stream".into())],
                data,
            )
            .await;
        self.denied(who, &ans, &scope)?;
        let put = self
            .send(
                cred,
                Method::PUT,
                &format!("/v2/{target}/manifests/v1"),
                &[("content-type", OCI_MANIFEST.into())],
                manifest.to_vec(),
            )
            .await;
        self.denied(who, &put, &scope)?;
        // The same into the existing repository (a manifest whose blobs are all there).
        let repo_scope = format!("repository:{repo}:pull,push");
        let cred2 = self.cred(who, mode, &[repo_scope]).await;
        let put2 = self
            .send(
                &cred2,
                Method::PUT,
                &format!("/v2/{repo}/manifests/pwned"),
                &[("content-type", OCI_MANIFEST.into())],
                manifest.to_vec(),
            )
            .await;
        Self::same_denial(&put, target, &put2, repo)?;
        let start2 = self
            .send(
                &cred2,
                Method::POST,
                &format!("/v2/{repo}/blobs/uploads/"),
                &[],
                Vec::new(),
            )
            .await;
        Self::same_denial(&start, target, &start2, repo)?;
        if get_manifest(&self.app, repo, "pwned").await.status() != 404 {
            return Err(format!("a denied manifest PUT created {repo}:pwned"));
        }
        let tags = get(
            &self.app,
            &Cred::basic("admin", ADMIN_PASSWORD),
            &format!("/v2/{target}/tags/list"),
        )
        .await;
        tags.expect_error(404, "NAME_UNKNOWN")
            .map_err(|e| format!("a denied push created {target}: {e}"))
    }

    #[allow(clippy::too_many_arguments)]
    async fn delete(
        &self,
        who: &str,
        mode: Mode,
        allowed: bool,
        exists: bool,
        verb: &str,
        repo: &str,
        missing: &str,
        tag: &str,
    ) -> Result<(), String> {
        let scope = format!("repository:{repo}:delete");
        // What to delete: when the caller may, something the admin has just put there
        // (a blob, or a manifest made of the fixture's blobs); when not, the fixture
        // itself, which must survive; for ghost, the fixture of another namespace (a
        // valid reference that is not in the repository).
        let (reference, check_path) = if allowed && exists {
            match verb {
                "delete blob" => {
                    let d = push_blob(&self.app, repo, &random_bytes(300)).await;
                    (format!("blobs/{d}"), format!("/v2/{repo}/blobs/{d}"))
                }
                _ => {
                    let t = format!("del-{}-{tag}", verb.len());
                    let mut m: Value =
                        serde_json::from_slice(&self.fixture(namespace(repo)).manifest).unwrap();
                    m["annotations"] = json!({"nonce": unique()});
                    let bytes = manifest_bytes(&m);
                    let digest = put_manifest_ok(&self.app, repo, &t, OCI_MANIFEST, &bytes).await;
                    let r = if verb.ends_with("digest") { digest } else { t };
                    (
                        format!("manifests/{r}"),
                        format!("/v2/{repo}/manifests/{r}"),
                    )
                }
            }
        } else {
            let f = self.fixture(namespace(repo));
            let r = match verb {
                "delete blob" => format!("blobs/{}", f.layer_digest),
                "delete manifest by digest" => format!("manifests/{}", f.digest),
                _ => "manifests/v1".to_string(),
            };
            let check = format!("/v2/{repo}/{r}");
            (r, check)
        };
        let cred = self.cred(who, mode, std::slice::from_ref(&scope)).await;
        let ans = self
            .send(
                &cred,
                Method::DELETE,
                &format!("/v2/{repo}/{reference}"),
                &[],
                Vec::new(),
            )
            .await;
        let admin = Cred::basic("admin", ADMIN_PASSWORD);
        let after = send(
            &self.app,
            &self.plain,
            &admin,
            Method::HEAD,
            &check_path,
            &[("accept", ACCEPT_ALL_MANIFESTS.into())],
            Vec::new(),
        )
        .await;
        if allowed && exists {
            ans.expect_status(202)?;
            after
                .expect_status(404)
                .map_err(|e| format!("still there after the delete: {e}"))?;
        } else if allowed {
            let codes: &[&str] = if verb == "delete blob" {
                &["BLOB_UNKNOWN", "NAME_UNKNOWN"]
            } else {
                &["MANIFEST_UNKNOWN", "NAME_UNKNOWN"]
            };
            one_of(&ans, 404, codes)?;
        } else {
            self.denied(who, &ans, &scope)?;
            if exists {
                after
                    .expect_status(200)
                    .map_err(|e| format!("a denied delete deleted it: {e}"))?;
            }
        }
        // The same on a missing repository.
        let mscope = format!("repository:{missing}:delete");
        let cred = self.cred(who, mode, &[mscope]).await;
        let miss = self
            .send(
                &cred,
                Method::DELETE,
                &format!("/v2/{missing}/{reference}"),
                &[],
                Vec::new(),
            )
            .await;
        if allowed {
            let codes: &[&str] = if verb == "delete blob" {
                &["BLOB_UNKNOWN", "NAME_UNKNOWN"]
            } else {
                &["MANIFEST_UNKNOWN", "NAME_UNKNOWN"]
            };
            one_of(&miss, 404, codes).map_err(|e| format!("missing repository: {e}"))
        } else {
            Self::same_denial(&ans, repo, &miss, missing)
        }
    }

    /// `POST /v2/<own>/blobs/uploads/?mount=<layer>[&from=<repo>]`: mounts (201) only when
    /// the caller may pull the source; otherwise an ordinary upload session (202) and the
    /// blob stays unreadable in the target.
    #[allow(clippy::too_many_arguments)]
    async fn mount(
        &self,
        who: &str,
        mode: Mode,
        ns: &str,
        mountable: bool,
        source: &str,
        layer: &[u8],
        layer_digest: &str,
        with_from: bool,
    ) -> Result<(), String> {
        let own = if who == "anonymous" { ns } else { who };
        let target = format!(
            "{own}/mnt-{ns}-{}-{mode:?}",
            if with_from { "from" } else { "any" }
        )
        .to_lowercase();
        let tscope = format!("repository:{target}:pull,push");
        let mut scopes = vec![tscope.clone()];
        if with_from {
            scopes.push(format!("repository:{source}:pull"));
        } else if let Some(f) = self
            .fixtures
            .iter()
            .find(|(_, f)| f.layer_digest == layer_digest)
        {
            // A client asks for every repository it knows the blob in.
            scopes.push(format!("repository:{}/app:pull", f.0));
        }
        let cred = self.cred(who, mode, &scopes).await;
        let mut path = format!("/v2/{target}/blobs/uploads/?mount={layer_digest}");
        if with_from {
            path.push_str(&format!("&from={source}"));
        }
        let ans = self.send(&cred, Method::POST, &path, &[], Vec::new()).await;
        if who == "anonymous" {
            return self.denied(who, &ans, &tscope);
        }
        let read_cred = self
            .cred(who, mode, &[format!("repository:{target}:pull")])
            .await;
        let got = self
            .send(
                &read_cred,
                Method::GET,
                &format!("/v2/{target}/blobs/{layer_digest}"),
                &[],
                Vec::new(),
            )
            .await;
        if mountable {
            ans.expect_status(201)?;
            ans.location(&self.app.base)?;
            got.expect_status(200)?;
            if got.body != layer {
                return Err("mounted blob content differs".into());
            }
        } else {
            ans.expect_status(202)
                .map_err(|e| format!("must fall back to an upload session: {e}"))?;
            ans.location(&self.app.base)?;
            got.expect_error(404, "BLOB_UNKNOWN")
                .map_err(|e| format!("the blob leaked into {target}: {e}"))?;
        }
        Ok(())
    }

    /// `_catalog` for each caller: exactly the repositories of the namespaces they may
    /// pull (compared with the admin's full list), across pages.
    async fn catalogs(&mut self) {
        let everything = catalog_all(&self.app, &Cred::basic("admin", ADMIN_PASSWORD), 10_000)
            .await
            .expect("admin catalog");
        for ns in ["alice", "web", "bob", "ops"] {
            assert!(
                everything.contains(&format!("{ns}/app")),
                "admin catalog lacks {ns}/app: {everything:?}"
            );
        }
        for who in CALLERS {
            for mode in [Mode::Basic, Mode::Bearer] {
                if *who == "anonymous" && mode == Mode::Bearer {
                    continue;
                }
                let cell = format!("{who} catalog via {mode:?}");
                let cred = self
                    .cred(who, mode, &["registry:catalog:*".to_string()])
                    .await;
                if *who == "anonymous" {
                    let ans = get(&self.app, &cred, "/v2/_catalog").await;
                    let r = self.denied(who, &ans, "registry:catalog:*");
                    self.record(&cell, "catalog", r);
                    continue;
                }
                let want: Vec<String> = everything
                    .iter()
                    .filter(|r| may(who, namespace(r)))
                    .cloned()
                    .collect();
                let r = match catalog_all(&self.app, &cred, 3).await {
                    Ok(got) if got == want => Ok(()),
                    Ok(got) => Err(format!(
                        "lists {:?}, should list {:?}",
                        got.iter().filter(|r| !want.contains(r)).collect::<Vec<_>>(),
                        want.iter().filter(|r| !got.contains(r)).collect::<Vec<_>>()
                    )),
                    Err(e) => Err(e),
                };
                self.record(&cell, "catalog (paginated, n=3)", r);
            }
        }
    }
}

fn one_of(ans: &Answer, status: u16, codes: &[&str]) -> Result<(), String> {
    let errs: Vec<String> = codes
        .iter()
        .filter_map(|c| ans.expect_error(status, c).err())
        .collect();
    if errs.len() == codes.len() {
        return Err(format!(
            "expected {status} with one of {codes:?}, got {}",
            ans.describe()
        ));
    }
    Ok(())
}

/// What an allowed caller gets reading a missing repository.
fn read_missing(verb: &str, ans: &Answer) -> Result<(), String> {
    match verb {
        "referrers" => {
            // Referrers of an unknown subject: 200 with an empty index (spec).
            ans.expect_status(200)?;
            let v = ans.json();
            (v["manifests"] == json!([]))
                .then_some(())
                .ok_or_else(|| format!("expected no referrers: {}", ans.describe()))
        }
        "tags list" => ans.expect_error(404, "NAME_UNKNOWN"),
        "HEAD blob" | "GET blob" => one_of(ans, 404, &["BLOB_UNKNOWN", "NAME_UNKNOWN"]),
        _ => one_of(ans, 404, &["MANIFEST_UNKNOWN", "NAME_UNKNOWN"]),
    }
}

#[tokio::test]
async fn permission_matrix() {
    let Some(mut app) = start_auth("permission_matrix").await else {
        return;
    };
    for u in USERS {
        add_user(&app, u);
    }
    for (team, members) in TEAMS {
        add_team(&app, team, members);
    }
    app.client = app.basic_client("admin", ADMIN_PASSWORD);

    // Sanity of the table itself.
    assert!(may("alice", "alice") && may("alice", "web") && !may("alice", "ops"));
    assert!(!may("carol", "web") && may("carol", "ops") && !may("bob", "alice"));
    assert!(!may("anonymous", "anonymous") && may("admin", "ghost"));

    let mut fixtures = Vec::new();
    for ns in ["alice", "web", "bob", "ops"] {
        let repo = format!("{ns}/app");
        let img = push_image(&app, &repo, "v1").await;
        let (art, art_digest) = make_artifact(
            &app,
            &repo,
            "application/vnd.example.sbom",
            json!({"subject": subject(OCI_MANIFEST, &img.manifest)}),
        )
        .await;
        put_manifest_ok(&app, &repo, &art_digest, OCI_MANIFEST, &art).await;
        let (layer, layer_digest) = img.layers[0].clone();
        fixtures.push((
            ns.to_string(),
            Fixture {
                manifest: img.manifest,
                digest: img.digest,
                layer,
                layer_digest,
                referrer: art_digest,
            },
        ));
    }
    let mut m = Matrix {
        app,
        plain: plain_client(),
        fixtures,
        failures: Vec::new(),
        checks: 0,
        tokens: Default::default(),
    };
    for who in CALLERS {
        for ns in NAMESPACES {
            m.cell(who, ns, Mode::Basic).await;
            if *who != "anonymous" {
                m.cell(who, ns, Mode::Bearer).await;
            }
        }
    }
    m.catalogs().await;
    eprintln!(
        "permission matrix: {} checks, {} failed",
        m.checks,
        m.failures.len()
    );
    assert!(
        m.failures.is_empty(),
        "{} of {} permission checks failed:\n{}",
        m.failures.len(),
        m.checks,
        m.failures.join("\n")
    );
}

// ---------------------------------------------------------------------------------
// The token flow

#[tokio::test]
async fn token_grants_are_downgraded_to_the_rule_and_star_means_everything() {
    let Some(app) = start_auth("token_grants_are_downgraded").await else {
        return;
    };
    add_user(&app, "alice");
    add_user(&app, "carol");
    add_team(&app, "web", &["alice"]);
    let pw = password("alice");

    // One scope per parameter, and several in one parameter separated by spaces.
    let t = bearer(
        &app,
        "alice",
        &pw,
        &[
            "repository:alice/app:pull,push,delete",
            "repository:bob/app:pull,push repository:web/site:pull",
            "repository:alice/other:*",
            "registry:catalog:*",
        ],
    )
    .await;
    assert_eq!(
        access(&t),
        vec![
            grant("registry", "catalog", &["*"]),
            grant("repository", "alice/app", &["pull", "push", "delete"]),
            grant(
                "repository",
                "alice/other",
                &["pull", "push", "delete", "*"]
            ),
            grant("repository", "web/site", &["pull"]),
        ],
        "bob/app is left out (not an error), the rest granted as asked"
    );
    let (header, claims) = jwt_parts(&t);
    assert_eq!(header["alg"], "EdDSA", "{header}");
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["aud"], SERVICE);
    let (iat, exp) = (
        claims["iat"].as_u64().unwrap(),
        claims["exp"].as_u64().unwrap(),
    );
    assert!(exp > iat && exp - iat <= 3600, "{claims}");

    // Nothing allowed: 200 with an empty grant.
    let t = bearer(
        &app,
        "carol",
        &password("carol"),
        &["repository:web/site:pull,push"],
    )
    .await;
    assert_eq!(access(&t), vec![]);
    // `*` is granted only when every action is allowed: carol asking `*` elsewhere gets
    // nothing, the admin gets `*` anywhere.
    let t = bearer(
        &app,
        "carol",
        &password("carol"),
        &["repository:alice/app:*"],
    )
    .await;
    assert_eq!(access(&t), vec![]);
    let t = bearer(&app, "admin", ADMIN_PASSWORD, &["repository:carol/x:*"]).await;
    assert_eq!(
        access(&t),
        vec![grant(
            "repository",
            "carol/x",
            &["pull", "push", "delete", "*"]
        )]
    );

    // The OAuth2 form POST (containerd) grants the same.
    let resp = plain_client()
        .post(app.url("/auth/token"))
        .form(&[
            ("grant_type", "password"),
            ("username", "alice"),
            ("password", pw.as_str()),
            ("service", SERVICE),
            ("scope", "repository:alice/app:pull repository:bob/app:pull"),
        ])
        .send()
        .await
        .unwrap();
    let ans = Answer::read("POST /auth/token".into(), resp).await;
    assert_eq!(ans.status, 200, "{}", ans.describe());
    let token = ans.json()["access_token"].as_str().unwrap().to_string();
    assert_eq!(
        access(&token),
        vec![grant("repository", "alice/app", &["pull"])]
    );

    // Without credentials: 401.
    let resp = plain_client()
        .get(app.url("/auth/token?service=berth&scope=repository:alice/app:pull"))
        .send()
        .await
        .unwrap();
    let ans = Answer::read("GET /auth/token anonymously".into(), resp).await;
    ans.expect_error(401, "UNAUTHORIZED")
        .unwrap_or_else(|e| panic!("{e}"));

    // Wrong password (GET and POST): 401 (2 failures, under the throttle).
    let ans = token_request(&app, &plain_client(), "alice", "wrong-password", &[]).await;
    ans.expect_error(401, "UNAUTHORIZED")
        .unwrap_or_else(|e| panic!("{e}"));
    let resp = plain_client()
        .post(app.url("/auth/token"))
        .form(&[
            ("grant_type", "password"),
            ("username", "alice"),
            ("password", "wrong-password"),
            ("service", SERVICE),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);

    // The base endpoint: challenge without scope when anonymous; 200 with Basic or Bearer.
    let ans = get(&app, &Cred::Anonymous, "/v2/").await;
    ans.expect_error(401, "UNAUTHORIZED")
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        ans.header("www-authenticate"),
        Some(format!(
            "Bearer realm=\"{}/auth/token\",service=\"{SERVICE}\"",
            app.base
        ))
    );
    assert_eq!(
        get(&app, &Cred::basic("alice", &pw), "/v2/").await.status,
        200
    );
    let t = bearer(&app, "alice", &pw, &[]).await;
    assert_eq!(get(&app, &Cred::Bearer(t), "/v2/").await.status, 200);
}

#[tokio::test]
async fn a_token_lacking_a_scope_the_rule_allows_gets_insufficient_scope() {
    let Some(app) = start_auth("insufficient_scope").await else {
        return;
    };
    add_user(&app, "alice");
    let pw = password("alice");
    let alice = Cred::basic("alice", &pw);
    let repo = "alice/app";
    let pull_only = Cred::Bearer(bearer(&app, "alice", &pw, &["repository:alice/app:pull"]).await);

    // Push with a pull-only token.
    let ans = send(
        &app,
        &plain_client(),
        &pull_only,
        Method::POST,
        &format!("/v2/{repo}/blobs/uploads/"),
        &[],
        Vec::new(),
    )
    .await;
    assert_challenge(&app, &ans, "repository:alice/app:pull,push", true);
    // Delete with a pull-only token.
    let ans = send(
        &app,
        &plain_client(),
        &pull_only,
        Method::DELETE,
        &format!("/v2/{repo}/manifests/v1"),
        &[],
        Vec::new(),
    )
    .await;
    assert_challenge(&app, &ans, "repository:alice/app:delete", true);
    // Another repository of her own namespace: the token names only alice/app.
    let ans = get(&app, &pull_only, "/v2/alice/other/tags/list").await;
    assert_challenge(&app, &ans, "repository:alice/other:pull", true);
    // Where the rule denies, a token changes nothing: 403, not a challenge.
    let ans = get(&app, &pull_only, "/v2/bob/app/tags/list").await;
    ans.expect_error(403, "DENIED")
        .unwrap_or_else(|e| panic!("{e}"));

    // Following the challenge (as docker does) gets a token that works.
    let scope = "repository:alice/app:pull,push";
    let t = bearer(&app, "alice", &pw, &[scope]).await;
    assert_eq!(
        access(&t),
        vec![grant("repository", repo, &["pull", "push"])]
    );
    let ans = send(
        &app,
        &plain_client(),
        &Cred::Bearer(t),
        Method::POST,
        &format!("/v2/{repo}/blobs/uploads/"),
        &[],
        Vec::new(),
    )
    .await;
    assert_eq!(ans.status, 202, "{}", ans.describe());
    // Basic credentials are not limited by scopes.
    assert_eq!(
        get(&app, &alice, "/v2/alice/other/tags/list").await.status,
        404
    );
}

#[tokio::test]
async fn tampered_and_unsigned_jwts_are_refused() {
    let Some(mut app) = start_auth("tampered_jwts").await else {
        return;
    };
    add_user(&app, "alice");
    app.client = app.basic_client("alice", &password("alice"));
    push_image(&app, "alice/app", "v1").await;
    let t = bearer(
        &app,
        "alice",
        &password("alice"),
        &["repository:alice/app:pull"],
    )
    .await;
    assert_eq!(
        get(&app, &Cred::Bearer(t.clone()), "/v2/alice/app/tags/list")
            .await
            .status,
        200
    );
    let parts: Vec<&str> = t.split('.').collect();
    let (header, claims) = jwt_parts(&t);

    let forge = |header: &Value, claims: &Value, sig: &str| {
        format!(
            "{}.{}.{sig}",
            b64().encode(header.to_string()),
            b64().encode(claims.to_string())
        )
    };
    // The admin's real uid, from a token of theirs.
    let admin_uid = jwt_parts(&bearer(&app, "admin", ADMIN_PASSWORD, &[]).await).1["uid"].clone();
    assert!(admin_uid.is_i64(), "no uid claim");
    let mut as_admin = claims.clone();
    as_admin["sub"] = "admin".into();
    as_admin["uid"] = admin_uid;
    as_admin["access"] = json!([{"type": "repository", "name": "bob/app", "actions": ["*"]}]);
    let mut sub_only = claims.clone();
    sub_only["sub"] = "bob".into();
    let none = json!({"alg": "none", "typ": "JWT"});
    let hs = json!({"alg": "HS256", "typ": "JWT"});
    let mut later = claims.clone();
    later["exp"] = (claims["exp"].as_u64().unwrap() + 3600).into();

    let forged = [
        (
            "sub changed, signature kept",
            forge(&header, &sub_only, parts[2]),
        ),
        (
            "claims of the admin, signature kept",
            forge(&header, &as_admin, parts[2]),
        ),
        (
            "exp extended, signature kept",
            forge(&header, &later, parts[2]),
        ),
        ("alg none, no signature", forge(&none, &as_admin, "")),
        ("alg none, original claims", forge(&none, &claims, "")),
        ("alg none, signature kept", forge(&none, &claims, parts[2])),
        ("alg HS256, signature kept", forge(&hs, &claims, parts[2])),
        (
            "signature of another token",
            format!("{}.{}.{}", parts[0], parts[1], "A".repeat(86)),
        ),
        ("garbage", "not.a.jwt".to_string()),
    ];
    for (what, token) in forged {
        for path in [
            "/v2/alice/app/tags/list",
            "/v2/bob/app/tags/list",
            "/v2/_catalog",
            "/v2/",
        ] {
            let ans = get(&app, &Cred::Bearer(token.clone()), path).await;
            assert_eq!(ans.status, 401, "{what}: {}", ans.describe());
            ans.expect_error(401, "UNAUTHORIZED")
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            assert!(
                ans.header("www-authenticate")
                    .is_some_and(|w| w.starts_with("Bearer realm=")),
                "{what}: a refused token must send the client back to the token service: {}",
                ans.describe()
            );
        }
    }
    // The genuine token still works.
    assert_eq!(
        get(&app, &Cred::Bearer(t), "/v2/alice/app/tags/list")
            .await
            .status,
        200
    );
}

// ---------------------------------------------------------------------------------
// Access tokens

/// Whether any file of the data directory contains `needle` (the database, its WAL, …).
fn data_dir_contains(app: &TestApp, needle: &str) -> Option<String> {
    fn walk(dir: &std::path::Path, needle: &[u8]) -> Option<String> {
        for entry in std::fs::read_dir(dir).ok()?.flatten() {
            let path = entry.path();
            if path.is_dir() {
                if let Some(found) = walk(&path, needle) {
                    return Some(found);
                }
            } else if let Ok(bytes) = std::fs::read(&path) {
                if bytes.windows(needle.len()).any(|w| w == needle) {
                    return Some(path.display().to_string());
                }
            }
        }
        None
    }
    walk(app.data_dir(), needle.as_bytes())
}

#[tokio::test]
async fn access_tokens_work_as_a_basic_password_and_through_the_token_service() {
    let Some(mut app) = start_auth("access_tokens").await else {
        return;
    };
    add_user(&app, "alice");
    add_user(&app, "bob");
    let secret = create_token(&app, "alice", "ci", Some("30d"));
    let repo = "alice/ci";

    // HTTP Basic with the token as the password: the whole push and pull.
    app.client = app.basic_client("alice", &secret);
    let img = push_image(&app, repo, "v1").await;
    assert_manifest(&app, repo, "v1", OCI_MANIFEST, &img.manifest).await;
    let basic = Cred::basic("alice", &secret);
    // The token is alice: her rule, no more.
    get(&app, &basic, "/v2/bob/app/tags/list")
        .await
        .expect_error(403, "DENIED")
        .unwrap();

    // Through /auth/token: GET with Basic, and the OAuth2 form POST.
    let t = bearer(
        &app,
        "alice",
        &secret,
        &["repository:alice/ci:pull,push", "repository:bob/app:pull"],
    )
    .await;
    assert_eq!(
        access(&t),
        vec![grant("repository", repo, &["pull", "push"])]
    );
    assert_eq!(jwt_parts(&t).1["sub"], "alice");
    let ans = get(&app, &Cred::Bearer(t), &format!("/v2/{repo}/manifests/v1")).await;
    assert_eq!(ans.status, 200, "{}", ans.describe());
    let resp = plain_client()
        .post(app.url("/auth/token"))
        .form(&[
            ("grant_type", "password"),
            ("username", "alice"),
            ("password", secret.as_str()),
            ("service", SERVICE),
            ("scope", "repository:alice/ci:pull"),
        ])
        .send()
        .await
        .unwrap();
    let ans = Answer::read("POST /auth/token with an access token".into(), resp).await;
    assert_eq!(ans.status, 200, "{}", ans.describe());
    let t = ans.json()["token"].as_str().unwrap().to_string();
    assert_eq!(
        get(&app, &Cred::Bearer(t), &format!("/v2/{repo}/tags/list"))
            .await
            .status,
        200
    );

    // alice's token under another user name: refused (1 failed login).
    get(&app, &Cred::basic("bob", &secret), "/v2/")
        .await
        .expect_error(401, "UNAUTHORIZED")
        .unwrap();

    // Listed (never with its secret); stored only as a hash, like passwords.
    let out = app.cli_ok(&["token", "ls", "--user", "alice"], None);
    assert!(out.contains("ci") && !out.contains(&secret), "{out}");
    assert_eq!(
        data_dir_contains(&app, &secret),
        None,
        "the token secret is stored in clear"
    );
    let secret_hex = secret.trim_start_matches("berth_");
    assert_eq!(
        data_dir_contains(&app, secret_hex),
        None,
        "the token secret is stored in clear"
    );
    assert_eq!(
        data_dir_contains(&app, &password("alice")),
        None,
        "a password is stored in clear"
    );
    assert_eq!(
        data_dir_contains(&app, ADMIN_PASSWORD),
        None,
        "the admin password is stored in clear"
    );
}

#[tokio::test]
async fn a_revoked_access_token_stops_working_at_once() {
    let Some(app) = start_auth("revoked_token").await else {
        return;
    };
    add_user(&app, "alice");
    let secret = create_token(&app, "alice", "ci", None);
    let other = create_token(&app, "alice", "other", None);
    let repo = "alice/app";
    let basic = Cred::basic("alice", &secret);
    let jwt =
        Cred::Bearer(bearer(&app, "alice", &secret, &["repository:alice/app:pull,push"]).await);
    let uploads = format!("/v2/{repo}/blobs/uploads/");
    let client = plain_client();
    for cred in [&basic, &jwt] {
        let ans = send(&app, &client, cred, Method::POST, &uploads, &[], Vec::new()).await;
        assert_eq!(ans.status, 202, "before revoking: {}", ans.describe());
    }

    app.cli_ok(
        &["token", "revoke", "--user", "alice", "--name", "ci"],
        None,
    );

    // No wait: the very next request.
    for (what, cred) in [("Basic", &basic), ("JWT issued before", &jwt)] {
        let ans = send(&app, &client, cred, Method::POST, &uploads, &[], Vec::new()).await;
        ans.expect_error(401, "UNAUTHORIZED")
            .unwrap_or_else(|e| panic!("revoked token via {what}: {e}"));
        let ans = get(&app, cred, "/v2/").await;
        assert_eq!(
            ans.status,
            401,
            "revoked token via {what}: {}",
            ans.describe()
        );
    }
    let ans = token_request(
        &app,
        &client,
        "alice",
        &secret,
        &["repository:alice/app:pull"],
    )
    .await;
    ans.expect_error(401, "UNAUTHORIZED")
        .unwrap_or_else(|e| panic!("/auth/token with a revoked token: {e}"));

    // Her other token and her password still work.
    assert_eq!(
        get(&app, &Cred::basic("alice", &other), "/v2/")
            .await
            .status,
        200
    );
    bearer(&app, "alice", &password("alice"), &[]).await;
    let out = app.cli_ok(&["token", "ls"], None);
    assert!(
        out.contains("other")
            && !out
                .lines()
                .any(|l| l.split_whitespace().nth(1) == Some("ci")),
        "{out}"
    );
    let again = app.cli(
        &["token", "revoke", "--user", "alice", "--name", "ci"],
        None,
    );
    assert!(!again.status.success(), "revoking twice must fail");
}

#[tokio::test]
async fn an_expired_access_token_is_refused() {
    let Some(app) = start_auth("expired_token").await else {
        return;
    };
    add_user(&app, "alice");
    let created = std::time::Instant::now();
    let secret = create_token(&app, "alice", "short", Some("2s"));
    let basic = Cred::basic("alice", &secret);
    assert_eq!(
        get(&app, &basic, "/v2/").await.status,
        200,
        "before it expires"
    );
    let jwt = Cred::Bearer(bearer(&app, "alice", &secret, &["repository:alice/app:pull"]).await);
    assert_eq!(
        get(&app, &jwt, "/v2/alice/app/tags/list").await.status,
        404,
        "before it expires"
    );

    tokio::time::sleep(Duration::from_millis(2300).saturating_sub(created.elapsed())).await;

    get(&app, &basic, "/v2/")
        .await
        .expect_error(401, "UNAUTHORIZED")
        .unwrap_or_else(|e| panic!("expired token as Basic password: {e}"));
    get(&app, &jwt, "/v2/alice/app/tags/list")
        .await
        .expect_error(401, "UNAUTHORIZED")
        .unwrap_or_else(|e| panic!("JWT of an expired access token: {e}"));
    token_request(&app, &plain_client(), "alice", &secret, &[])
        .await
        .expect_error(401, "UNAUTHORIZED")
        .unwrap_or_else(|e| panic!("/auth/token with an expired token: {e}"));
}

// ---------------------------------------------------------------------------------
// Account changes take effect at once

#[tokio::test]
async fn deleting_a_user_deletes_their_namespace_and_credentials_at_once() {
    let Some(mut app) = start_auth("deleting_a_user").await else {
        return;
    };
    add_user(&app, "dave");
    add_user(&app, "alice");
    let admin = Cred::basic("admin", ADMIN_PASSWORD);
    app.client = app.basic_client("dave", &password("dave"));
    for repo in ["dave", "dave/app", "dave/tools/cli"] {
        push_image(&app, repo, "v1").await;
    }
    app.client = app.basic_client("alice", &password("alice"));
    push_image(&app, "alice/app", "v1").await;
    // Neighbours whose names start like dave's namespace.
    app.client = app.basic_client("admin", ADMIN_PASSWORD);
    for repo in ["davey/app", "dave-x/app", "dave.x/app", "dave_x/app"] {
        push_image(&app, repo, "v1").await;
    }
    let jwt = Cred::Bearer(
        bearer(
            &app,
            "dave",
            &password("dave"),
            &["repository:dave/app:pull"],
        )
        .await,
    );
    let token = create_token(&app, "dave", "ci", None);
    assert_eq!(get(&app, &jwt, "/v2/dave/app/tags/list").await.status, 200);
    let before = catalog_all(&app, &admin, 100).await.unwrap();
    for r in ["dave", "dave/app", "dave/tools/cli", "davey/app"] {
        assert!(before.contains(&r.to_string()), "{before:?}");
    }

    app.cli_ok(&["user", "rm", "dave"], None);

    let after = catalog_all(&app, &admin, 100).await.unwrap();
    let expect: Vec<String> = before
        .iter()
        .filter(|r| *r != "dave" && !r.starts_with("dave/"))
        .cloned()
        .collect();
    assert_eq!(after, expect, "admin's catalog after deleting dave");
    for repo in ["dave", "dave/app", "dave/tools/cli"] {
        get(&app, &admin, &format!("/v2/{repo}/tags/list"))
            .await
            .expect_error(404, "NAME_UNKNOWN")
            .unwrap_or_else(|e| panic!("{repo} after deleting dave: {e}"));
        let ans = get(&app, &admin, &format!("/v2/{repo}/manifests/v1")).await;
        assert_eq!(ans.status, 404, "{}", ans.describe());
    }
    // His credentials are gone at once (2 failed logins).
    get(&app, &jwt, "/v2/dave/app/tags/list")
        .await
        .expect_error(401, "UNAUTHORIZED")
        .unwrap_or_else(|e| panic!("JWT of a deleted user: {e}"));
    assert_eq!(get(&app, &jwt, "/v2/").await.status, 401);
    for secret in [password("dave"), token.clone()] {
        get(&app, &Cred::basic("dave", &secret), "/v2/")
            .await
            .expect_error(401, "UNAUTHORIZED")
            .unwrap_or_else(|e| panic!("Basic of a deleted user: {e}"));
    }

    // A new user of the same name is a new account: nothing of the old one works or shows
    // (1 more failed login).
    let new_pw = "the-new-dave-password";
    app.cli_ok(&["user", "add", "dave", "--password-stdin"], Some(new_pw));
    assert_eq!(
        get(&app, &jwt, "/v2/dave/app/tags/list").await.status,
        401,
        "an old JWT of a deleted user works for the new user of that name"
    );
    assert_eq!(
        get(&app, &Cred::basic("dave", &token), "/v2/").await.status,
        401,
        "an old access token works for the new user of that name"
    );
    let new_dave = Cred::basic("dave", new_pw);
    assert_eq!(
        catalog_all(&app, &new_dave, 100).await.unwrap(),
        Vec::<String>::new()
    );
    get(&app, &new_dave, "/v2/dave/app/tags/list")
        .await
        .expect_error(404, "NAME_UNKNOWN")
        .unwrap();
}

#[tokio::test]
async fn leaving_or_deleting_a_team_denies_its_namespace_at_once() {
    let Some(mut app) = start_auth("leaving_a_team").await else {
        return;
    };
    add_user(&app, "alice");
    add_user(&app, "bob");
    add_team(&app, "web", &["alice", "bob"]);
    let repo = "web/site";
    app.client = app.basic_client("alice", &password("alice"));
    push_image(&app, repo, "v1").await;
    let basic = Cred::basic("alice", &password("alice"));
    let scope = "repository:web/site:pull,push,delete";
    let jwt = Cred::Bearer(bearer(&app, "alice", &password("alice"), &[scope]).await);
    for cred in [&basic, &jwt] {
        assert_eq!(
            get(&app, cred, "/v2/web/site/manifests/v1").await.status,
            200
        );
    }
    assert!(catalog_all(&app, &basic, 100)
        .await
        .unwrap()
        .contains(&repo.to_string()));

    app.cli_ok(&["team", "member", "rm", "web", "alice"], None);

    for (what, cred) in [("Basic", &basic), ("JWT issued before", &jwt)] {
        get(&app, cred, "/v2/web/site/manifests/v1")
            .await
            .expect_error(403, "DENIED")
            .unwrap_or_else(|e| panic!("{what} after leaving web: {e}"));
        let ans = send(
            &app,
            &plain_client(),
            cred,
            Method::POST,
            "/v2/web/site/blobs/uploads/",
            &[],
            Vec::new(),
        )
        .await;
        ans.expect_error(403, "DENIED")
            .unwrap_or_else(|e| panic!("{what} push after leaving web: {e}"));
        let ans = send(
            &app,
            &plain_client(),
            cred,
            Method::DELETE,
            "/v2/web/site/manifests/v1",
            &[],
            Vec::new(),
        )
        .await;
        ans.expect_error(403, "DENIED")
            .unwrap_or_else(|e| panic!("{what} delete after leaving web: {e}"));
    }
    assert!(!catalog_all(&app, &basic, 100)
        .await
        .unwrap()
        .contains(&repo.to_string()));
    let t = bearer(&app, "alice", &password("alice"), &[scope]).await;
    assert_eq!(access(&t), vec![], "a new token grants nothing in web/");
    let bob = Cred::basic("bob", &password("bob"));
    assert_eq!(
        get(&app, &bob, "/v2/web/site/manifests/v1").await.status,
        200
    );

    app.cli_ok(&["team", "member", "add", "web", "alice"], None);
    assert_eq!(
        get(&app, &basic, "/v2/web/site/manifests/v1").await.status,
        200
    );

    // Deleting the team deletes its namespace.
    app.cli_ok(&["team", "rm", "web"], None);
    let admin = Cred::basic("admin", ADMIN_PASSWORD);
    let all = catalog_all(&app, &admin, 100).await.unwrap();
    assert!(!all.iter().any(|r| r.starts_with("web/")), "{all:?}");
    get(&app, &admin, "/v2/web/site/tags/list")
        .await
        .expect_error(404, "NAME_UNKNOWN")
        .unwrap();
    get(&app, &bob, "/v2/web/site/tags/list")
        .await
        .expect_error(403, "DENIED")
        .unwrap();
}

#[tokio::test]
async fn admin_flag_password_and_account_rules_from_the_cli() {
    let Some(mut app) = start_auth("admin_flag_password").await else {
        return;
    };
    add_user(&app, "alice");
    add_user(&app, "bob");
    app.client = app.basic_client("bob", &password("bob"));
    push_image(&app, "bob/app", "v1").await;
    let alice = Cred::basic("alice", &password("alice"));
    get(&app, &alice, "/v2/bob/app/tags/list")
        .await
        .expect_error(403, "DENIED")
        .unwrap();

    app.cli_ok(&["user", "admin", "alice"], None);
    assert_eq!(
        get(&app, &alice, "/v2/bob/app/tags/list").await.status,
        200,
        "made admin"
    );
    assert!(catalog_all(&app, &alice, 100)
        .await
        .unwrap()
        .contains(&"bob/app".to_string()));
    app.cli_ok(&["user", "admin", "alice", "--revoke"], None);
    get(&app, &alice, "/v2/bob/app/tags/list")
        .await
        .expect_error(403, "DENIED")
        .unwrap_or_else(|e| panic!("admin revoked: {e}"));

    // A new password: the old one (verified a moment ago) is refused at once (1 failure).
    app.cli_ok(
        &["user", "passwd", "alice", "--password-stdin"],
        Some("alice-new-password\n"),
    );
    get(&app, &alice, "/v2/")
        .await
        .expect_error(401, "UNAUTHORIZED")
        .unwrap_or_else(|e| panic!("old password after passwd: {e}"));
    assert_eq!(
        get(&app, &Cred::basic("alice", "alice-new-password"), "/v2/")
            .await
            .status,
        200
    );

    // Without --password-stdin a random password is printed, and works.
    let out = app.cli_ok(&["user", "add", "erin"], None);
    let pw = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("password: "))
        .unwrap_or_else(|| panic!("no `password: …` line: {out}"))
        .trim()
        .to_string();
    assert!(pw.len() >= 8, "{out}");
    assert_eq!(
        get(&app, &Cred::basic("erin", &pw), "/v2/").await.status,
        200
    );

    let users = app.cli_ok(&["user", "ls"], None);
    for u in ["admin", "alice", "bob", "erin"] {
        assert!(users.contains(u), "{users}");
    }
    // Names are namespaces: a user and a team can't share one; names follow the grammar;
    // passwords have at least 8 characters.
    app.cli_ok(&["team", "add", "web"], None);
    assert!(
        !app.cli(&["team", "add", "alice"], None).status.success(),
        "team named like a user"
    );
    assert!(
        !app.cli(
            &["user", "add", "web", "--password-stdin"],
            Some("long-enough-password")
        )
        .status
        .success(),
        "user named like a team"
    );
    assert!(!app
        .cli(
            &["user", "add", "Bad/Name", "--password-stdin"],
            Some("long-enough-password")
        )
        .status
        .success());
    assert!(!app
        .cli(
            &["user", "add", "shorty", "--password-stdin"],
            Some("short")
        )
        .status
        .success());
    assert!(app.cli_ok(&["team", "ls"], None).contains("web"));
}

// ---------------------------------------------------------------------------------
// Throttling (its own server: failures from an address throttle that address)

#[tokio::test]
async fn failed_logins_are_throttled_per_user_and_per_address() {
    let Some(app) = start_auth("throttling").await else {
        return;
    };
    for u in ["victim", "other", "third"] {
        add_user(&app, u);
    }
    let a2 = client_from([127, 0, 0, 2]);
    let a3 = client_from([127, 0, 0, 3]);
    let wrong = |u: &str| Cred::basic(u, "wrong-password");
    let right = |u: &str| Cred::basic(u, &password(u));
    let base = "/v2/";
    let call = |client: &reqwest::Client, cred: Cred| {
        let client = client.clone();
        let app = &app;
        async move { send(app, &client, &cred, Method::GET, base, &[], Vec::new()).await }
    };

    for i in 1..=5 {
        let ans = call(&a2, wrong("victim")).await;
        assert_eq!(ans.status, 401, "failure {i}: {}", ans.describe());
    }
    // The 6th attempt waits, whatever the password.
    for cred in [wrong("victim"), right("victim")] {
        let ans = call(&a2, cred).await;
        ans.expect_error(429, "TOOMANYREQUESTS")
            .unwrap_or_else(|e| panic!("6th attempt: {e}"));
        assert_eq!(
            ans.header("retry-after").as_deref(),
            Some("1"),
            "{}",
            ans.describe()
        );
    }
    // Per user: from another address too, and through /auth/token.
    call(&a3, right("victim"))
        .await
        .expect_error(429, "TOOMANYREQUESTS")
        .unwrap_or_else(|e| panic!("the user from another address: {e}"));
    let ans = token_request(&app, &a3, "victim", &password("victim"), &[]).await;
    ans.expect_error(429, "TOOMANYREQUESTS")
        .unwrap_or_else(|e| panic!("/auth/token for the user: {e}"));
    assert!(ans.header("retry-after").is_some(), "{}", ans.describe());
    // Per address: another user from the throttled address.
    call(&a2, right("other"))
        .await
        .expect_error(429, "TOOMANYREQUESTS")
        .unwrap_or_else(|e| panic!("another user from the address: {e}"));
    // Another user from another address is not affected.
    assert_eq!(call(&a3, right("other")).await.status, 200);
    assert_eq!(call(&plain_client(), right("third")).await.status, 200);

    // After Retry-After, the right password works again.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(call(&a3, right("victim")).await.status, 200);
    // The delay doubles: one more failure from the address costs 2 s, and Retry-After
    // says so (rounded up: a client that waits as told is let in).
    // The back-off starts while the failure is answered, so by the time the next
    // request is answered up to `elapsed` of it has passed: Retry-After is the rest,
    // rounded up. On a quiet machine `elapsed` is milliseconds and Retry-After is 2;
    // on a loaded one it may be 1, and never more than 2.
    let started = std::time::Instant::now();
    assert_eq!(call(&a2, wrong("third")).await.status, 401);
    let ans = call(&a2, right("third")).await;
    let elapsed = started.elapsed();
    ans.expect_error(429, "TOOMANYREQUESTS").unwrap();
    let told: u64 = ans
        .header("retry-after")
        .and_then(|r| r.parse().ok())
        .unwrap_or_else(|| panic!("no integer Retry-After: {}", ans.describe()));
    let least = (2.0 - elapsed.as_secs_f64()).ceil().max(1.0) as u64;
    assert!(
        (least..=2).contains(&told),
        "after the 6th failure the delay is 2 s, {elapsed:?} of which had passed when \
         the client was told Retry-After: {told}"
    );
    tokio::time::sleep(Duration::from_secs(told) + Duration::from_millis(50)).await;
    let retry = call(&a2, right("third")).await;
    assert_eq!(
        retry.status,
        200,
        "the client waited Retry-After: {told} as told and its retry got {}",
        retry.describe()
    );
}

// ---------------------------------------------------------------------------------
// The conformance workflows with auth on

#[tokio::test]
async fn conformance_workflows_pass_with_a_users_basic_credentials_in_their_namespace() {
    let Some(mut app) = start_auth("conformance_with_auth").await else {
        return;
    };
    add_user(&app, "erin");
    app.client = app.basic_client("erin", &password("erin"));
    let repo = format!("erin/conformance-{}", unique());
    let other = format!("erin/other-{}", unique());

    // Monolithic POST + PUT for every blob, manifest PUT by tag, GET/HEAD by tag and digest.
    let img = push_image(&app, &repo, "v1").await;
    assert_manifest(&app, &repo, "v1", OCI_MANIFEST, &img.manifest).await;
    assert_manifest(&app, &repo, &img.digest, OCI_MANIFEST, &img.manifest).await;
    let resp = head_manifest(&app, &repo, "v1").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        header(&resp, "docker-content-digest").as_deref(),
        Some(img.digest.as_str())
    );
    for (data, digest) in &img.layers {
        assert_blob(&app, &repo, digest, data).await;
        let resp = head_blob(&app, &repo, digest).await;
        assert_eq!(resp.status(), 200);
        assert_eq!(
            header(&resp, "content-length"),
            Some(data.len().to_string())
        );
    }

    // Single POST with ?digest=.
    let data = random_bytes(1234);
    let digest = sha256_digest(&data);
    let resp = app
        .client
        .post(with_query(
            url(&app, &format!("/v2/{repo}/blobs/uploads/")),
            "digest",
            &digest,
        ))
        .header("content-type", "application/octet-stream")
        .body(data.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    assert_blob(&app, &repo, &digest, &data).await;

    // Chunked: PATCH with Content-Range, status, PATCH, PUT closing the session.
    let data = random_bytes(300);
    let digest = sha256_digest(&data);
    let upload = start_upload(&app, &repo).await;
    let resp = app
        .client
        .patch(upload)
        .header("content-type", "application/octet-stream")
        .header("content-range", "0-99")
        .body(data[..100].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    assert_eq!(upload_range_end(&resp), 99);
    let upload = location(&resp);
    let resp = app.client.get(upload.clone()).send().await.unwrap();
    assert_eq!(resp.status(), 204);
    assert_eq!(upload_range_end(&resp), 99);
    let resp = app
        .client
        .patch(upload)
        .header("content-type", "application/octet-stream")
        .header("content-range", "100-299")
        .body(data[100..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let upload = location(&resp);
    let resp = app
        .client
        .put(with_query(upload, "digest", &digest))
        .header("content-length", "0")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    assert_blob(&app, &repo, &digest, &data).await;

    // Streamed PATCH without Content-Range, then PUT.
    let data = random_bytes(5000);
    let digest = sha256_digest(&data);
    let upload = start_upload(&app, &repo).await;
    let resp = app
        .client
        .patch(upload)
        .header("content-type", "application/octet-stream")
        .body(data.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let resp = app
        .client
        .put(with_query(location(&resp), "digest", &digest))
        .header("content-length", "0")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    // Ranged read.
    let resp = app
        .client
        .get(app.url(&format!("/v2/{repo}/blobs/{digest}")))
        .header("range", "bytes=10-19")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 206);
    assert_eq!(resp.bytes().await.unwrap()[..], data[10..20]);

    // Cancel an upload.
    let upload = start_upload(&app, &repo).await;
    let resp = app.client.delete(upload.clone()).send().await.unwrap();
    assert_eq!(resp.status(), 204);
    assert_oci_error(
        app.client.get(upload).send().await.unwrap(),
        404,
        "BLOB_UPLOAD_UNKNOWN",
    )
    .await;

    // Mount within her namespace.
    let (layer, layer_digest) = &img.layers[0];
    let resp = app
        .client
        .post(with_query(
            with_query(
                url(&app, &format!("/v2/{other}/blobs/uploads/")),
                "mount",
                layer_digest,
            ),
            "from",
            &repo,
        ))
        .header("content-length", "0")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    assert_blob(&app, &other, layer_digest, layer).await;

    // Tags with pagination.
    for t in ["v2", "v3"] {
        put_manifest_ok(&app, &repo, t, OCI_MANIFEST, &img.manifest).await;
    }
    let resp = app
        .client
        .get(app.url(&format!("/v2/{repo}/tags/list")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.json::<Value>().await.unwrap()["tags"],
        json!(["v1", "v2", "v3"])
    );
    let resp = app
        .client
        .get(app.url(&format!("/v2/{repo}/tags/list?n=2")))
        .send()
        .await
        .unwrap();
    assert!(header(&resp, "link").is_some_and(|l| l.contains("last=v2")));
    assert_eq!(
        resp.json::<Value>().await.unwrap()["tags"],
        json!(["v1", "v2"])
    );
    let resp = app
        .client
        .get(app.url(&format!("/v2/{repo}/tags/list?n=2&last=v2")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.json::<Value>().await.unwrap()["tags"], json!(["v3"]));

    // Referrers.
    let (art, art_digest) = make_artifact(
        &app,
        &repo,
        "application/vnd.example.sig",
        json!({"subject": subject(OCI_MANIFEST, &img.manifest)}),
    )
    .await;
    put_manifest_ok(&app, &repo, &art_digest, OCI_MANIFEST, &art).await;
    let resp = app
        .client
        .get(app.url(&format!(
            "/v2/{repo}/referrers/{}?artifactType=application/vnd.example.sig",
            img.digest
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["manifests"][0]["digest"], json!(art_digest), "{v}");

    // Catalog: her repositories, nothing else.
    let mut cat = catalog_all(&app, &Cred::basic("erin", &password("erin")), 100)
        .await
        .unwrap();
    cat.sort();
    let mut want = vec![repo.clone(), other.clone()];
    want.sort();
    assert_eq!(cat, want);

    // Deletes: a tag, the manifest by digest, a blob.
    let resp = app
        .client
        .delete(app.url(&format!("/v2/{repo}/manifests/v3")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    assert_oci_error(
        get_manifest(&app, &repo, "v3").await,
        404,
        "MANIFEST_UNKNOWN",
    )
    .await;
    let resp = app
        .client
        .delete(app.url(&format!("/v2/{repo}/manifests/{}", img.digest)))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    assert_oci_error(
        get_manifest(&app, &repo, &img.digest).await,
        404,
        "MANIFEST_UNKNOWN",
    )
    .await;
    assert_oci_error(
        get_manifest(&app, &repo, "v1").await,
        404,
        "MANIFEST_UNKNOWN",
    )
    .await;
    let resp = app
        .client
        .delete(app.url(&format!("/v2/{repo}/blobs/{}", img.config_digest)))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    assert_oci_error(
        get_blob(&app, &repo, &img.config_digest).await,
        404,
        "BLOB_UNKNOWN",
    )
    .await;
}

// ---------------------------------------------------------------------------------
// Sessions and paths that try to get round the rule

/// `METHOD path` sent exactly as given (no URL normalisation) with `Authorization`.
async fn raw(app: &TestApp, method: &str, path: &str, authorization: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let base = Url::parse(&app.base).unwrap();
    let addr = format!("{}:{}", base.host_str().unwrap(), base.port().unwrap());
    let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: {authorization}\r\n\
         Accept: {ACCEPT_ALL_MANIFESTS}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut buf))
        .await
        .expect("raw request timed out")
        .unwrap();
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {text}"));
    (status, text)
}

#[tokio::test]
async fn another_users_upload_session_and_crafted_paths_are_refused() {
    let Some(mut app) = start_auth("upload_sessions_and_paths").await else {
        return;
    };
    add_user(&app, "alice");
    add_user(&app, "bob");
    app.client = app.basic_client("bob", &password("bob"));
    let bob_img = push_image(&app, "bob/app", "v1").await;
    let client = plain_client();
    let alice = Cred::basic("alice", &password("alice"));
    let bob = Cred::basic("bob", &password("bob"));

    // alice opens an upload session in her repository and sends a first chunk.
    let data = random_bytes(400);
    let digest = sha256_digest(&data);
    let ans = send(
        &app,
        &client,
        &alice,
        Method::POST,
        "/v2/alice/app/blobs/uploads/",
        &[],
        Vec::new(),
    )
    .await;
    assert_eq!(ans.status, 202, "{}", ans.describe());
    let upload = ans.location(&app.base).unwrap();
    let ans = send(
        &app,
        &client,
        &alice,
        Method::PATCH,
        upload.as_str(),
        &[
            ("content-range", "0-199".into()),
            ("content-type", "application/octet-stream".into()),
        ],
        data[..200].to_vec(),
    )
    .await;
    assert_eq!(ans.status, 202, "{}", ans.describe());
    let upload = ans.location(&app.base).unwrap();
    let id = upload.path().rsplit('/').next().unwrap().to_string();

    // bob knows the session's URL: in alice's repository he is denied...
    let evil = random_bytes(200);
    for (method, body) in [
        (Method::GET, Vec::new()),
        (Method::PATCH, evil.clone()),
        (Method::PUT, evil.clone()),
        (Method::DELETE, Vec::new()),
    ] {
        let ans = send(
            &app,
            &client,
            &bob,
            method.clone(),
            upload.as_str(),
            &[
                ("content-range", "200-399".into()),
                ("content-type", "application/octet-stream".into()),
            ],
            body,
        )
        .await;
        ans.expect_error(403, "DENIED")
            .unwrap_or_else(|e| panic!("bob {method} on alice's session: {e}"));
        let anon = send(
            &app,
            &client,
            &Cred::Anonymous,
            method.clone(),
            upload.as_str(),
            &[],
            Vec::new(),
        )
        .await;
        assert_eq!(anon.status, 401, "{}", anon.describe());
    }
    // ...and under his own repository the session does not exist.
    let mine = format!("/v2/bob/app/blobs/uploads/{id}");
    for (method, body) in [
        (Method::GET, Vec::new()),
        (Method::PATCH, evil.clone()),
        (Method::PUT, evil.clone()),
        (Method::DELETE, Vec::new()),
    ] {
        let target = if method == Method::PUT {
            format!("{mine}?digest={}", sha256_digest(&evil))
        } else {
            mine.clone()
        };
        let ans = send(
            &app,
            &client,
            &bob,
            method.clone(),
            &target,
            &[
                ("content-range", "200-399".into()),
                ("content-type", "application/octet-stream".into()),
            ],
            body,
        )
        .await;
        ans.expect_error(404, "BLOB_UPLOAD_UNKNOWN")
            .unwrap_or_else(|e| panic!("bob {method} on alice's session id in bob/app: {e}"));
    }
    // alice's session is intact: she finishes it.
    let ans = send(
        &app,
        &client,
        &alice,
        Method::PUT,
        with_query(upload, "digest", &digest).as_str(),
        &[
            ("content-range", "200-399".into()),
            ("content-type", "application/octet-stream".into()),
        ],
        data[200..].to_vec(),
    )
    .await;
    assert_eq!(ans.status, 201, "{}", ans.describe());
    let ans = get(&app, &alice, &format!("/v2/alice/app/blobs/{digest}")).await;
    assert_eq!(ans.body, data);

    // Paths that a normalising proxy or a sloppy parser might send to bob/app.
    let auth = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("alice:{}", password("alice")))
    );
    let bob_manifest = String::from_utf8_lossy(&bob_img.manifest).into_owned();
    for path in [
        "/v2/alice/../bob/app/tags/list",
        "/v2/alice/%2e%2e/bob/app/tags/list",
        "/v2/alice/%2E%2E/bob/app/manifests/v1",
        "/v2/alice/app/../../bob/app/manifests/v1",
        "/v2//bob/app/tags/list",
        "/v2/./bob/app/tags/list",
        "/v2/bob%2fapp/tags/list",
        "/v2/alice%2f..%2fbob/app/tags/list",
        "/v2/BOB/app/tags/list",
        "/v2/bob/app/tags/list?alice",
        "/v2/bob/app/manifests/v1#alice",
    ] {
        let (status, text) = raw(&app, "GET", path, &auth).await;
        assert!(
            matches!(status, 400 | 403 | 404),
            "alice GET {path}: expected a refusal, got {status}:\n{text}"
        );
        assert!(
            !text.contains("\"v1\"")
                && !text.contains(&bob_manifest)
                && !text.contains(&bob_img.digest),
            "alice GET {path} leaks bob/app:\n{text}"
        );
    }
}

#[tokio::test]
async fn a_bearer_token_expires_after_auth_token_ttl() {
    if skip_external("bearer_token_expiry", "sets auth.token_ttl") {
        return;
    }
    let app = TestApp::builder()
        .auth()
        .env("BERTH_AUTH__TOKEN_TTL", "10s")
        .start()
        .await;
    add_user(&app, "alice");
    let ans = token_request(
        &app,
        &plain_client(),
        "alice",
        &password("alice"),
        &["repository:alice/app:pull"],
    )
    .await;
    assert_eq!(ans.status, 200, "{}", ans.describe());
    let v = ans.json();
    assert_eq!(v["expires_in"], json!(10), "{v}");
    let token = v["token"].as_str().unwrap().to_string();
    let (_, claims) = jwt_parts(&token);
    assert_eq!(
        claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(),
        10
    );
    let jwt = Cred::Bearer(token);
    assert_eq!(get(&app, &jwt, "/v2/alice/app/tags/list").await.status, 404);
    // 10 s of life and at most a few seconds of clock leeway.
    tokio::time::sleep(Duration::from_secs(17)).await;
    get(&app, &jwt, "/v2/alice/app/tags/list")
        .await
        .expect_error(401, "UNAUTHORIZED")
        .unwrap_or_else(|e| panic!("expired JWT: {e}"));
}
