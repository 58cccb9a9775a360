//! Signing in and out of the web UI, sessions, cookies and CSRF tokens.
//!
//! A session is a random 32-byte secret in a cookie (`HttpOnly`, `SameSite=Strict`,
//! `Secure` and the `__Host-` prefix under TLS); the database keeps only its SHA-256, the
//! user and a CSRF token. Signing in always starts a new session (no fixation); signing
//! out deletes it. Before sign-in, the form's CSRF token is a double-submit cookie.

use std::net::IpAddr;

use askama::Template;
use axum::extract::{FromRequestParts, Query, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Form;
use base64::Engine;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{html, redirect, Chrome, Flash, PageError, PageResult};
use crate::app::{App, AppState};
use crate::auth::{password, AuthError, Caller, TOKEN_PREFIX};
use crate::meta::accounts::{AuditEntry, User};
use crate::meta::now_ms;

const FLASH: &str = "berth_flash";
const PRE_CSRF: &str = "berth_csrf";

/// Constant-time equality of two secrets.
pub fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

fn secure(app: &App) -> bool {
    !app.config.server.tls_cert.is_empty() || app.config.server.public_url.starts_with("https://")
}

fn session_cookie_name(app: &App) -> &'static str {
    if secure(app) {
        "__Host-berth_session"
    } else {
        "berth_session"
    }
}

fn random_token() -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(password::random_bytes::<32>())
}

fn session_id(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// The value of cookie `name` in the request.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// A `Set-Cookie` value; `max_age` 0 deletes the cookie.
fn set_cookie(app: &App, name: &str, value: &str, max_age: Option<u64>) -> HeaderValue {
    let mut c = format!("{name}={value}; Path=/; HttpOnly; SameSite=Strict");
    if let Some(age) = max_age {
        c.push_str(&format!("; Max-Age={age}"));
    }
    if secure(app) {
        c.push_str("; Secure");
    }
    HeaderValue::from_str(&c).unwrap_or(HeaderValue::from_static("berth=; Max-Age=0"))
}

/// A signed-in browser.
pub struct SessionInfo {
    pub caller: Caller,
    pub user: User,
    pub csrf: String,
    /// The database key of the session.
    pub id: String,
}

/// The session a request's cookie names, if it is valid.
pub async fn from_cookies(app: &App, headers: &HeaderMap) -> anyhow::Result<Option<SessionInfo>> {
    let Some(secret) = cookie(headers, session_cookie_name(app)) else {
        return Ok(None);
    };
    let id = session_id(secret);
    let Some((user, csrf)) = app.accounts.session_get(&id).await? else {
        return Ok(None);
    };
    let principal = crate::auth::principal(app, &user).await?;
    Ok(Some(SessionInfo {
        caller: Caller::User {
            principal,
            granted: None,
        },
        user,
        csrf,
        id,
    }))
}

/// Everything a UI handler needs about the request: who, their CSRF token, a pending
/// flash message, and the cookies to set on the answer.
pub struct Web {
    pub app: AppState,
    pub caller: Caller,
    pub user: Option<User>,
    /// The session's database key, when signed in.
    pub session: Option<String>,
    pub csrf: String,
    pub client: Option<IpAddr>,
    pub flash: Option<Flash>,
    /// The request's path and query, to come back to after signing in.
    pub here: String,
    /// `https://host` (or as configured), for pull commands.
    pub base: String,
    origin_ok: bool,
    cookies: Vec<HeaderValue>,
}

impl FromRequestParts<AppState> for Web {
    type Rejection = PageError;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, PageError> {
        let client = crate::api::client_ip(parts);
        let mut cookies = Vec::new();
        let (caller, user, session, csrf) = if !app.config.auth.enabled {
            (Caller::Open, None, None, None)
        } else {
            match from_cookies(app, &parts.headers).await? {
                Some(s) => (s.caller, Some(s.user), Some(s.id), Some(s.csrf)),
                None => (Caller::Anonymous, None, None, None),
            }
        };
        let csrf = match csrf {
            Some(c) => c,
            None => match cookie(&parts.headers, PRE_CSRF).filter(|c| c.len() == 43) {
                Some(c) => c.to_string(),
                None => {
                    let c = random_token();
                    cookies.push(set_cookie(app, PRE_CSRF, &c, None));
                    c
                }
            },
        };
        let flash = cookie(&parts.headers, FLASH).and_then(|v| {
            let text: String = serde_urlencoded::from_str::<Vec<(String, String)>>(v)
                .ok()?
                .into_iter()
                .find(|(k, _)| k == "ok" || k == "err")
                .map(|(k, t)| format!("{}{t}", if k == "ok" { "+" } else { "-" }))?;
            let (kind, t) = text.split_at(1);
            Some(Flash {
                ok: kind == "+",
                text: t.chars().take(500).collect(),
            })
        });
        if flash.is_some() {
            cookies.push(set_cookie(app, FLASH, "", Some(0)));
        }
        let base = crate::api::public_base(app, parts);
        // A browser names the page a form came from; it must be ours. (SameSite=Strict
        // already keeps the session cookie off cross-site posts; this is the second lock.)
        let origin_ok = match parts
            .headers
            .get(header::ORIGIN)
            .and_then(|o| o.to_str().ok())
        {
            None => true,
            Some(o) => {
                let host = parts
                    .headers
                    .get(header::HOST)
                    .and_then(|h| h.to_str().ok());
                let o_host = o.split_once("://").map(|(_, h)| h);
                o_host.is_some() && o_host == host
                    || o == app.config.server.public_url.trim_end_matches('/')
            }
        };
        Ok(Web {
            app: app.clone(),
            caller,
            user,
            session,
            csrf,
            client,
            flash,
            here: parts
                .uri
                .path_and_query()
                .map(|p| p.as_str().to_string())
                .unwrap_or_else(|| "/".into()),
            base,
            origin_ok,
            cookies,
        })
    }
}

impl Web {
    /// Pages need a signed-in user (or authentication off).
    pub fn require_user(&self) -> Result<(), PageError> {
        match self.caller {
            Caller::Anonymous => Err(PageError::SignIn(self.here.clone())),
            _ => Ok(()),
        }
    }

    pub fn require_admin(&self) -> Result<(), PageError> {
        self.require_user()?;
        if self.caller.is_admin() {
            Ok(())
        } else {
            Err(PageError::Status(
                StatusCode::FORBIDDEN,
                "This page is for administrators.".into(),
            ))
        }
    }

    /// A form post must carry this session's CSRF token and come from our own pages.
    pub fn check_form(&self, token: &str) -> Result<(), PageError> {
        self.require_user()?;
        if self.origin_ok && same(token.as_bytes(), self.csrf.as_bytes()) {
            Ok(())
        } else {
            Err(crate::api::v1::Error::Csrf.into())
        }
    }

    /// The caller as the management API sees it.
    pub fn api(&self) -> crate::api::v1::Auth {
        // The UI's own handlers ask for what they need (the current password before
        // changing it), so they call the API as a credentialed caller.
        crate::api::v1::Auth(self.caller.clone(), self.client, false)
    }

    pub fn chrome(&self, section: &'static str, title: impl Into<String>) -> Chrome {
        Chrome {
            user: self
                .user
                .as_ref()
                .map(|u| u.name.clone())
                .unwrap_or_default(),
            admin: self.caller.is_admin(),
            auth: self.app.config.auth.enabled,
            nav: !matches!(self.caller, Caller::Anonymous),
            csrf: self.csrf.clone(),
            flash: self.flash.clone(),
            section,
            title: title.into(),
        }
    }

    /// The host part of pull references (`registry.example.com` or `localhost:5000`).
    pub fn registry_host(&self) -> &str {
        self.base
            .split_once("://")
            .map(|(_, h)| h)
            .unwrap_or(&self.base)
    }

    fn finish(self, mut r: Response) -> Response {
        for c in self.cookies {
            r.headers_mut().append(header::SET_COOKIE, c);
        }
        r
    }

    /// A rendered page.
    pub fn page(self, t: &impl Template) -> Response {
        self.finish(html(t))
    }

    /// After a form: go to `to` and show a message there.
    pub fn done(self, to: &str, ok: bool, message: impl AsRef<str>) -> Response {
        let value =
            serde_urlencoded::to_string([(if ok { "ok" } else { "err" }, message.as_ref())])
                .unwrap_or_default();
        let flash = set_cookie(&self.app, FLASH, &value, Some(60));
        let mut r = self.finish(redirect(to));
        r.headers_mut().append(header::SET_COOKIE, flash);
        r
    }

    /// After a form whose API call may fail on the user's input: success goes to `to`
    /// with `ok`; a refusal the user can fix (bad input, conflict) goes back to `back`
    /// with the reason; anything else is an error page.
    pub fn outcome<T>(
        self,
        r: Result<T, crate::api::v1::Error>,
        to: &str,
        back: &str,
        ok: impl AsRef<str>,
    ) -> PageResult {
        use crate::api::v1::Error as E;
        match r {
            Ok(_) => Ok(self.done(to, true, ok)),
            Err(e @ (E::BadRequest(_) | E::Conflict(_))) => {
                Ok(self.done(back, false, super::sentence(&e.message())))
            }
            Err(e) => Err(e.into()),
        }
    }
}

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    chrome: Chrome,
    next: String,
    username: String,
    error: Option<String>,
}

#[derive(Deserialize)]
pub struct NextQuery {
    next: Option<String>,
}

/// Only paths of this site: never `//evil.example`, `https://…`, nor anything a
/// browser would turn into one (it drops tabs and newlines, and reads `\` as `/`), so
/// only plain URL characters pass.
fn safe_next(next: Option<&str>) -> String {
    let plain = |n: &str| {
        n.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._~%?=&:+-".contains(c))
    };
    match next {
        Some(n) if n.starts_with('/') && !n.starts_with("//") && plain(n) => n.into(),
        _ => "/".into(),
    }
}

pub async fn login_page(web: Web, Query(q): Query<NextQuery>) -> PageResult {
    let next = safe_next(q.next.as_deref());
    if !matches!(web.caller, Caller::Anonymous) {
        return Ok(redirect(&next));
    }
    let page = LoginPage {
        chrome: web.chrome("", "Sign in"),
        next,
        username: String::new(),
        error: None,
    };
    Ok(web.page(&page))
}

#[derive(Deserialize)]
pub struct LoginForm {
    username: String,
    password: String,
    csrf: String,
    next: Option<String>,
}

/// Starts a new session for `user_id`: its cookie, to set on the answer.
pub(crate) async fn start_session(app: &App, user_id: i64) -> anyhow::Result<HeaderValue> {
    let secret = random_token();
    let ttl = app.config.auth.session_ttl.get();
    app.accounts
        .session_create(
            &session_id(&secret),
            user_id,
            &random_token(),
            now_ms() + ttl.as_millis() as i64,
        )
        .await?;
    Ok(set_cookie(
        app,
        session_cookie_name(app),
        &secret,
        Some(ttl.as_secs()),
    ))
}

pub async fn login(web: Web, State(app): State<AppState>, Form(f): Form<LoginForm>) -> PageResult {
    let next = safe_next(f.next.as_deref());
    if !web.origin_ok || !same(f.csrf.as_bytes(), web.csrf.as_bytes()) {
        return Err(crate::api::v1::Error::Csrf.into());
    }
    if !app.config.auth.enabled {
        return Ok(redirect(&next));
    }
    let fail = |web: Web, status: StatusCode, msg: String| {
        let page = LoginPage {
            chrome: web.chrome("", "Sign in"),
            next: next.clone(),
            username: f.username.clone(),
            error: Some(msg),
        };
        let mut r = web.page(&page);
        *r.status_mut() = status;
        Ok(r)
    };
    if f.password.starts_with(TOKEN_PREFIX) {
        return fail(
            web,
            StatusCode::UNAUTHORIZED,
            "Sign in with your password. Access tokens are for docker login and scripts.".into(),
        );
    }
    let user = f.username.trim();
    match crate::auth::login(&app, user, &f.password, web.client).await {
        Ok(login) => {
            let cookie = start_session(&app, login.principal.id).await?;
            app.accounts.user_logged_in(login.principal.id).await?;
            let _ = app
                .accounts
                .audit(AuditEntry {
                    at: now_ms(),
                    actor: Some(login.principal.name.clone()),
                    action: "login".into(),
                    target: None,
                    detail: Some("web".into()),
                    client: web.client.map(|c| c.to_string()),
                })
                .await;
            let mut r = web.finish(redirect(&next));
            r.headers_mut().append(header::SET_COOKIE, cookie);
            Ok(r)
        }
        Err(AuthError::BadCredentials) => fail(
            web,
            StatusCode::UNAUTHORIZED,
            "That user name and password do not match.".into(),
        ),
        Err(AuthError::Throttled(d)) => fail(
            web,
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "Too many failed sign-ins. Try again in {} seconds.",
                crate::api::authz::retry_after_secs(d)
            ),
        ),
        Err(AuthError::Internal(e)) => Err(e.into()),
    }
}

#[derive(Deserialize)]
pub struct CsrfForm {
    pub csrf: String,
}

pub async fn logout(web: Web, Form(f): Form<CsrfForm>) -> PageResult {
    web.check_form(&f.csrf)?;
    if let Some(id) = &web.session {
        web.app.accounts.session_delete(id).await?;
    }
    let clear = set_cookie(&web.app, session_cookie_name(&web.app), "", Some(0));
    let mut r = web.done("/login", true, "You are signed out.");
    r.headers_mut().append(header::SET_COOKIE, clear);
    Ok(r.into_response())
}
