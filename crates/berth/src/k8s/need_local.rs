//! `berth k8s need-local REF`: is the development registry needed for this image?
//!
//! As DevSpace decides it when `localRegistry.enabled` is unset:
//! 1. `enabled: true` / `false` decides by itself;
//! 2. on a KinD context (`kind-*`) images are loaded with `kind load docker-image`, so
//!    no registry is needed;
//! 3. otherwise: may the caller push to the image's registry? The credentials come from
//!    the files Docker and Podman use (`REGISTRY_AUTH_FILE`,
//!    `$XDG_RUNTIME_DIR/containers/auth.json`, `~/.config/containers/auth.json`,
//!    `$DOCKER_CONFIG/config.json` or `~/.docker/config.json`, and the credential helpers
//!    they name). The registry is asked for real: a blob upload is opened (with a bearer
//!    token for `pull,push` when the registry wants one) and cancelled at once. Accepted:
//!    not needed; refused or unreachable: needed.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use base64::Engine;
use serde_json::Value as Json;
use tokio::io::AsyncWriteExt;

use super::reference::{ImageRef, DOCKER_HUB};

/// The answer and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub needed: bool,
    pub reason: String,
}

impl std::fmt::Display for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {}",
            if self.needed { "yes" } else { "no" },
            self.reason
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    Basic {
        username: String,
        password: String,
    },
    /// An OAuth2 refresh token (`identitytoken`, or a helper's `<token>` user).
    IdentityToken(String),
}

/// Where a credential was found, for the answer's reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub credential: Credential,
    pub source: String,
}

/// The credential files, most important first.
pub fn auth_files_from_env() -> Vec<PathBuf> {
    let env = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    let home = env("HOME");
    let mut files = Vec::new();
    if let Some(f) = env("REGISTRY_AUTH_FILE") {
        files.push(f);
    }
    if let Some(d) = env("XDG_RUNTIME_DIR") {
        files.push(d.join("containers/auth.json"));
    }
    match (env("XDG_CONFIG_HOME"), &home) {
        (Some(d), _) => files.push(d.join("containers/auth.json")),
        (None, Some(h)) => files.push(h.join(".config/containers/auth.json")),
        _ => {}
    }
    match (env("DOCKER_CONFIG"), &home) {
        (Some(d), _) => files.push(d.join("config.json")),
        (None, Some(h)) => files.push(h.join(".docker/config.json")),
        _ => {}
    }
    files
}

/// `https://index.docker.io/v1/` → `docker.io`; `http://host:5000/v2/` → `host:5000`;
/// `quay.io/org/repo` stays (Podman's per-namespace keys).
fn normalize_key(key: &str) -> String {
    let k = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let k = k.trim_end_matches('/');
    let k = k
        .strip_suffix("/v1")
        .or_else(|| k.strip_suffix("/v2"))
        .unwrap_or(k);
    let (host, rest) = k.split_once('/').unwrap_or((k, ""));
    let host = match host {
        "index.docker.io" | "registry-1.docker.io" => DOCKER_HUB,
        h => h,
    };
    if rest.is_empty() {
        host.to_string()
    } else {
        format!("{host}/{rest}")
    }
}

/// The keys to look up, most specific first: `host/a/b`, `host/a`, `host`.
fn lookup_keys(r: &ImageRef) -> Vec<String> {
    let host = r.registry();
    let path = r.full_path();
    let parts: Vec<&str> = path.split('/').collect();
    let mut keys: Vec<String> = (1..=parts.len())
        .rev()
        .map(|n| format!("{host}/{}", parts[..n].join("/")))
        .collect();
    keys.push(host.to_string());
    keys
}

/// What one auth file says about the image's registry.
enum Entry {
    Credential(Credential),
    Helper(String),
}

fn entry_in_file(doc: &Json, r: &ImageRef) -> Option<Entry> {
    let keys = lookup_keys(r);
    if let Some(auths) = doc.get("auths").and_then(Json::as_object) {
        let normalized: Vec<(String, &Json)> =
            auths.iter().map(|(k, v)| (normalize_key(k), v)).collect();
        for key in &keys {
            for (k, v) in &normalized {
                if k != key {
                    continue;
                }
                if let Some(token) = v
                    .get("identitytoken")
                    .and_then(Json::as_str)
                    .filter(|t| !t.is_empty())
                {
                    return Some(Entry::Credential(Credential::IdentityToken(
                        token.to_string(),
                    )));
                }
                if let Some(auth) = v
                    .get("auth")
                    .and_then(Json::as_str)
                    .filter(|a| !a.is_empty())
                {
                    let decoded = base64::engine::general_purpose::STANDARD
                        .decode(auth.trim())
                        .ok()?;
                    let text = String::from_utf8(decoded).ok()?;
                    let (u, p) = text.split_once(':')?;
                    return Some(Entry::Credential(Credential::Basic {
                        username: u.to_string(),
                        password: p.to_string(),
                    }));
                }
            }
        }
    }
    if let Some(helpers) = doc.get("credHelpers").and_then(Json::as_object) {
        for key in &keys {
            for (k, v) in helpers {
                if normalize_key(k) == *key {
                    if let Some(h) = v.as_str() {
                        return Some(Entry::Helper(h.to_string()));
                    }
                }
            }
        }
    }
    doc.get("credsStore")
        .and_then(Json::as_str)
        .filter(|s| !s.is_empty())
        .map(|s| Entry::Helper(s.to_string()))
}

/// Runs `docker-credential-HELPER get` for the registry.
async fn from_helper(helper: &str, r: &ImageRef) -> Result<Option<Credential>, String> {
    let program = format!("docker-credential-{helper}");
    let server = if r.registry() == DOCKER_HUB {
        "https://index.docker.io/v1/".to_string()
    } else {
        r.registry().to_string()
    };
    let mut child = tokio::process::Command::new(&program)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run the credential helper {program}: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(server.as_bytes()).await;
    }
    let out = tokio::time::timeout(Duration::from_secs(20), child.wait_with_output())
        .await
        .map_err(|_| format!("the credential helper {program} did not answer within 20s"))?
        .map_err(|e| format!("running {program}: {e}"))?;
    if !out.status.success() {
        // "credentials not found in native keychain" and the like.
        return Ok(None);
    }
    let json: Json = serde_json::from_slice(&out.stdout)
        .map_err(|e| format!("{program} printed something that is not JSON: {e}"))?;
    let user = json
        .get("Username")
        .and_then(Json::as_str)
        .unwrap_or_default();
    let secret = json
        .get("Secret")
        .and_then(Json::as_str)
        .unwrap_or_default();
    if secret.is_empty() {
        return Ok(None);
    }
    Ok(Some(if user == "<token>" {
        Credential::IdentityToken(secret.to_string())
    } else {
        Credential::Basic {
            username: user.to_string(),
            password: secret.to_string(),
        }
    }))
}

/// The first credential for the image's registry in `files` (missing files are skipped;
/// unreadable or malformed ones are errors).
pub async fn find_credential(files: &[PathBuf], r: &ImageRef) -> Result<Option<Found>, String> {
    for f in files {
        let text = match std::fs::read_to_string(f) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(format!("reading {}: {e}", f.display())),
        };
        let doc: Json = serde_json::from_str(&text)
            .map_err(|e| format!("{}: invalid JSON: {e}", f.display()))?;
        match entry_in_file(&doc, r) {
            None => continue,
            Some(Entry::Credential(c)) => {
                return Ok(Some(Found {
                    credential: c,
                    source: f.display().to_string(),
                }))
            }
            Some(Entry::Helper(h)) => {
                if let Some(c) = from_helper(&h, r).await? {
                    return Ok(Some(Found {
                        credential: c,
                        source: format!(
                            "credential helper docker-credential-{h} (from {})",
                            f.display()
                        ),
                    }));
                }
            }
        }
    }
    Ok(None)
}

pub struct Inputs<'a> {
    pub reference: &'a str,
    /// `localRegistry.enabled`
    pub enabled: Option<bool>,
    /// The current kube context's name.
    pub context: Option<&'a str>,
    pub auth_files: &'a [PathBuf],
    pub timeout: Duration,
}

pub async fn decide(i: &Inputs<'_>) -> anyhow::Result<Answer> {
    let r = ImageRef::parse(i.reference).map_err(|e| anyhow::anyhow!("{e}"))?;
    match i.enabled {
        Some(true) => {
            return Ok(Answer {
                needed: true,
                reason: "localRegistry.enabled is true".into(),
            })
        }
        Some(false) => {
            return Ok(Answer {
                needed: false,
                reason: "localRegistry.enabled is false".into(),
            })
        }
        None => {}
    }
    if let Some(cluster) = i.context.and_then(|c| c.strip_prefix("kind-")) {
        return Ok(Answer {
            needed: false,
            reason: format!(
                "the current kube context kind-{cluster} is a KinD cluster: load the image into \
                 it with `kind load docker-image {} --name {cluster}` instead of pushing it",
                i.reference
            ),
        });
    }
    let found = find_credential(i.auth_files, &r)
        .await
        .map_err(|e| anyhow::anyhow!(e))?;
    let who = match &found {
        Some(f) => format!("with the credentials from {}", f.source),
        None => "without credentials".to_string(),
    };
    let checked = if found.is_none() {
        let looked: Vec<String> = i
            .auth_files
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        format!(
            " (no credentials for {} in {})",
            r.registry(),
            looked.join(", ")
        )
    } else {
        String::new()
    };
    let target = format!("{}/{}", r.registry(), r.full_path());
    Ok(
        match try_push(&r, found.as_ref().map(|f| &f.credential), i.timeout).await {
            Ok(()) => Answer {
                needed: false,
                reason: format!("{target} accepts a push {who}"),
            },
            Err(why) => Answer {
                needed: true,
                reason: format!(
                "cannot push to {target} {who}: {why}{checked}; deploy the development registry \
                 with `berth k8s deploy` and push to localhost:NODE_PORT/{} instead",
                r.short_path()
            ),
            },
        },
    )
}

fn is_loopback(host: &str) -> bool {
    let h = host
        .rsplit_once(':')
        .map(|(h, p)| {
            if p.bytes().all(|b| b.is_ascii_digit()) {
                h
            } else {
                host
            }
        })
        .unwrap_or(host);
    h == "localhost" || h.starts_with("127.") || h == "[::1]"
}

/// Opens a blob upload and cancels it: `Ok` if the registry accepted it.
async fn try_push(
    r: &ImageRef,
    cred: Option<&Credential>,
    timeout: Duration,
) -> Result<(), String> {
    let http = reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(10)))
        .redirect(reqwest::redirect::Policy::limited(5))
        .build()
        .map_err(|e| e.to_string())?;
    let host = match r.registry() {
        DOCKER_HUB => "registry-1.docker.io",
        h => h,
    };
    let mut base = format!("https://{host}");
    let path = r.full_path();
    let url = |base: &str| format!("{base}/v2/{path}/blobs/uploads/");
    let basic = |req: reqwest::RequestBuilder| match cred {
        Some(Credential::Basic { username, password }) => req.basic_auth(username, Some(password)),
        _ => req,
    };
    let first = match basic(http.post(url(&base))).send().await {
        Ok(resp) => resp,
        // Like Docker, plain HTTP is tried for registries on this machine.
        Err(_) if is_loopback(host) => {
            base = format!("http://{host}");
            basic(http.post(url(&base)))
                .send()
                .await
                .map_err(|e| format!("cannot reach {host}: {}", error_chain(&e)))?
        }
        Err(e) => return Err(format!("cannot reach {host}: {}", error_chain(&e))),
    };
    let resp = if first.status() == reqwest::StatusCode::UNAUTHORIZED {
        let challenge = first
            .headers()
            .get(reqwest::header::WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        if !challenge.to_ascii_lowercase().starts_with("bearer") {
            return Err(match cred {
                Some(_) => format!("{host} refused the credentials (HTTP 401)"),
                None => format!("{host} wants a login (HTTP 401)"),
            });
        }
        let token = bearer_token(&http, &challenge, &path, cred).await?;
        http.post(url(&base))
            .bearer_auth(token)
            .send()
            .await
            .map_err(|e| format!("cannot reach {host}: {}", error_chain(&e)))?
    } else {
        first
    };
    let status = resp.status();
    if status == reqwest::StatusCode::ACCEPTED || status.is_success() {
        // Cancel the session we opened (a registry that cannot will expire it).
        if let Some(loc) = resp
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
        {
            let loc = if loc.starts_with("http://") || loc.starts_with("https://") {
                loc.to_string()
            } else {
                format!("{base}{loc}")
            };
            let _ = http.delete(loc).send().await;
        }
        return Ok(());
    }
    let body = resp.text().await.unwrap_or_default();
    Err(format!(
        "{host} answered HTTP {}{}",
        status.as_u16(),
        oci_message(&body)
    ))
}

/// `: DENIED: requested access to the resource is denied` from an OCI error body.
fn oci_message(body: &str) -> String {
    let Ok(json) = serde_json::from_str::<Json>(body) else {
        return String::new();
    };
    let Some(e) = json.get("errors").and_then(|e| e.get(0)) else {
        return String::new();
    };
    let code = e.get("code").and_then(Json::as_str).unwrap_or_default();
    let msg = e.get("message").and_then(Json::as_str).unwrap_or_default();
    format!(" ({code}: {msg})")
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}

/// `Bearer realm="…",service="…",scope="…"` → its parameters.
fn challenge_params(challenge: &str) -> Vec<(String, String)> {
    let rest = challenge
        .split_once(' ')
        .map(|(_, r)| r)
        .unwrap_or_default();
    let mut out = Vec::new();
    let mut s = rest.trim();
    while !s.is_empty() {
        let Some((k, after)) = s.split_once('=') else {
            break;
        };
        let k = k.trim().trim_start_matches(',').trim().to_ascii_lowercase();
        let (v, next) = if let Some(q) = after.strip_prefix('"') {
            match q.find('"') {
                Some(end) => (q[..end].to_string(), &q[end + 1..]),
                None => (q.to_string(), ""),
            }
        } else {
            match after.find(',') {
                Some(end) => (after[..end].to_string(), &after[end..]),
                None => (after.to_string(), ""),
            }
        };
        out.push((k, v));
        s = next.trim_start_matches(',').trim();
    }
    out
}

/// The Docker token flow for `repository:PATH:pull,push`.
async fn bearer_token(
    http: &reqwest::Client,
    challenge: &str,
    path: &str,
    cred: Option<&Credential>,
) -> Result<String, String> {
    let params = challenge_params(challenge);
    let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let realm = get("realm")
        .ok_or_else(|| format!("the registry's challenge names no realm: {challenge}"))?;
    let service = get("service").unwrap_or_default();
    let scope = format!("repository:{path}:pull,push");
    let resp = match cred {
        Some(Credential::IdentityToken(t)) => {
            http.post(&realm)
                .form(&[
                    ("grant_type", "refresh_token"),
                    ("refresh_token", t.as_str()),
                    ("service", service.as_str()),
                    ("scope", scope.as_str()),
                    ("client_id", "berth"),
                ])
                .send()
                .await
        }
        Some(Credential::Basic { username, password }) => {
            http.get(&realm)
                .query(&[("service", service.as_str()), ("scope", scope.as_str())])
                .basic_auth(username, Some(password))
                .send()
                .await
        }
        None => {
            http.get(&realm)
                .query(&[("service", service.as_str()), ("scope", scope.as_str())])
                .send()
                .await
        }
    }
    .map_err(|e| {
        format!(
            "cannot reach the token service {realm}: {}",
            error_chain(&e)
        )
    })?;
    let status = resp.status();
    if !status.is_success() {
        let body = resp.text().await.unwrap_or_default();
        return Err(match (status.as_u16(), cred) {
            (401 | 403, Some(_)) => format!(
                "the token service {realm} refused the credentials (HTTP {status}){}",
                oci_message(&body)
            ),
            (401 | 403, None) => format!("the token service {realm} wants a login (HTTP {status})"),
            _ => format!("the token service {realm} answered HTTP {status}"),
        });
    }
    let json: Json = resp.json().await.map_err(|e| {
        format!("the token service {realm} answered something that is not JSON: {e}")
    })?;
    json.get("token")
        .or_else(|| json.get("access_token"))
        .and_then(Json::as_str)
        .map(str::to_string)
        .ok_or_else(|| format!("the token service {realm} answered no token"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str) -> ImageRef {
        ImageRef::parse(s).unwrap()
    }

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    #[test]
    fn keys_are_normalized() {
        assert_eq!(normalize_key("https://index.docker.io/v1/"), "docker.io");
        assert_eq!(normalize_key("registry-1.docker.io"), "docker.io");
        assert_eq!(normalize_key("http://localhost:5000/v2/"), "localhost:5000");
        assert_eq!(normalize_key("quay.io/org/repo"), "quay.io/org/repo");
        assert_eq!(
            lookup_keys(&r("quay.io/org/repo:1")),
            vec!["quay.io/org/repo", "quay.io/org", "quay.io"]
        );
        assert_eq!(
            lookup_keys(&r("nginx")),
            vec!["docker.io/library/nginx", "docker.io/library", "docker.io"]
        );
    }

    #[tokio::test]
    async fn finds_docker_and_podman_credentials() {
        let dir = tempfile::tempdir().unwrap();
        let podman = dir.path().join("auth.json");
        let docker = dir.path().join("config.json");
        std::fs::write(
            &podman,
            serde_json::json!({"auths": {"quay.io/org": {"auth": b64("orgbot:s3cret")}}})
                .to_string(),
        )
        .unwrap();
        std::fs::write(
            &docker,
            serde_json::json!({"auths": {
                "https://index.docker.io/v1/": {"auth": b64("alice:pw:with:colons")},
                "ghcr.io": {"identitytoken": "refresh-me"},
                "quay.io": {"auth": b64("someone:else")}
            }})
            .to_string(),
        )
        .unwrap();
        let files = vec![
            dir.path().join("missing.json"),
            podman.clone(),
            docker.clone(),
        ];

        let f = find_credential(&files, &r("alice/app"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            f.credential,
            Credential::Basic {
                username: "alice".into(),
                password: "pw:with:colons".into()
            }
        );
        assert_eq!(f.source, docker.display().to_string());
        let f = find_credential(&files, &r("quay.io/org/app"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            f.credential,
            Credential::Basic {
                username: "orgbot".into(),
                password: "s3cret".into()
            }
        );
        let f = find_credential(&files, &r("quay.io/other/app"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            f.credential,
            Credential::Basic {
                username: "someone".into(),
                password: "else".into()
            }
        );
        let f = find_credential(&files, &r("ghcr.io/o/app"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(f.credential, Credential::IdentityToken("refresh-me".into()));
        assert_eq!(
            find_credential(&files, &r("registry.example.com/app"))
                .await
                .unwrap(),
            None
        );

        std::fs::write(&podman, "{not json").unwrap();
        assert!(find_credential(&files, &r("x.io/a"))
            .await
            .unwrap_err()
            .contains("invalid JSON"));
    }

    #[tokio::test]
    async fn a_missing_credential_helper_is_explained() {
        let dir = tempfile::tempdir().unwrap();
        let docker = dir.path().join("config.json");
        std::fs::write(
            &docker,
            r#"{"credHelpers": {"gcr.io": "berth-test-no-such-helper"}}"#,
        )
        .unwrap();
        let e = find_credential(&[docker], &r("gcr.io/p/app"))
            .await
            .unwrap_err();
        assert!(
            e.contains("docker-credential-berth-test-no-such-helper"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn settings_and_kind_decide_first() {
        let base = Inputs {
            reference: "registry.example.com/team/app:v1",
            enabled: Some(true),
            context: None,
            auth_files: &[],
            timeout: Duration::from_secs(1),
        };
        let a = decide(&base).await.unwrap();
        assert_eq!(a.to_string(), "yes: localRegistry.enabled is true");
        let a = decide(&Inputs {
            enabled: Some(false),
            ..base
        })
        .await
        .unwrap();
        assert_eq!(a.to_string(), "no: localRegistry.enabled is false");
        let base = Inputs {
            reference: "registry.example.com/team/app:v1",
            enabled: None,
            context: Some("kind-dev"),
            auth_files: &[],
            timeout: Duration::from_secs(1),
        };
        let a = decide(&base).await.unwrap();
        assert!(!a.needed);
        assert!(
            a.reason
                .contains("kind load docker-image registry.example.com/team/app:v1 --name dev"),
            "{a}"
        );
        assert!(decide(&Inputs {
            reference: "Bad Ref",
            ..base
        })
        .await
        .is_err());
    }

    #[test]
    fn parses_challenges() {
        let p = challenge_params(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:a/b:pull""#,
        );
        assert_eq!(
            p,
            vec![
                (
                    "realm".to_string(),
                    "https://auth.docker.io/token".to_string()
                ),
                ("service".to_string(), "registry.docker.io".to_string()),
                ("scope".to_string(), "repository:a/b:pull".to_string()),
            ]
        );
        assert!(is_loopback("localhost:5000"));
        assert!(is_loopback("127.0.0.1:5000"));
        assert!(is_loopback("[::1]:5000"));
        assert!(!is_loopback("registry.example.com:5000"));
    }
}
