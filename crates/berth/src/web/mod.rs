//! The web UI at `/`: server-rendered pages from askama templates compiled into the
//! binary (`crates/berth/templates/`), one stylesheet and one small script embedded from
//! `crates/berth/assets/`. Every page works without JavaScript.
//!
//! - [`session`]: sign-in, sessions, cookies, CSRF, the [`Web`] request context;
//! - `images`: repositories, tags, manifests, deleting them;
//! - `admin`: Admin → Registry (usage, garbage collector), users, teams;
//! - `account`: one's password and access tokens.
//!
//! The UI holds no rule of its own: every action calls the management API's handler
//! (`api::v1`) with the session's caller, so a forged form meets exactly the checks an
//! API call would. Forms are POST with a per-session CSRF token; pages answer with a
//! strict Content-Security-Policy.

use askama::Template;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;

use crate::api::v1;
use crate::app::AppState;

mod account;
mod admin;
mod assets;
mod images;
pub mod session;

pub use session::Web;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(images::index))
        .route("/login", get(session::login_page).post(session::login))
        .route("/logout", post(session::logout))
        .route(
            "/repositories/{*path}",
            get(images::repository_get).post(images::repository_post),
        )
        .route("/admin", get(admin::registry))
        .route("/admin/gc", post(admin::gc))
        .route("/admin/quota", post(admin::quota))
        .route("/admin/retention", post(admin::retention_add))
        .route(
            "/admin/retention/{id}/remove",
            post(admin::retention_remove),
        )
        .route("/admin/users", get(admin::users).post(admin::user_create))
        .route("/admin/users/{name}", get(admin::user))
        .route(
            "/admin/users/{name}/delete",
            get(admin::user_delete_confirm).post(admin::user_delete),
        )
        .route("/admin/users/{name}/admin", post(admin::user_admin))
        .route("/admin/users/{name}/password", post(admin::user_password))
        .route(
            "/admin/users/{name}/tokens/{token}/revoke",
            post(admin::user_token_revoke),
        )
        .route("/admin/teams", get(admin::teams).post(admin::team_create))
        .route("/admin/teams/{name}", get(admin::team))
        .route(
            "/admin/teams/{name}/delete",
            get(admin::team_delete_confirm).post(admin::team_delete),
        )
        .route("/admin/teams/{name}/members", post(admin::member_add))
        .route(
            "/admin/teams/{name}/members/{user}/remove",
            post(admin::member_remove),
        )
        .route("/account", get(account::page))
        .route("/account/password", post(account::password))
        .route("/account/tokens", post(account::token_create))
        .route("/account/tokens/{name}/revoke", post(account::token_revoke))
        .route("/static/{file}", get(assets::get))
        .layer(axum::middleware::map_response(security_headers))
}

/// Headers every UI response carries: no framing, no sniffing, no inline script or
/// style, no caching of pages that show private data.
async fn security_headers(mut r: Response) -> Response {
    let h = r.headers_mut();
    let set = |h: &mut axum::http::HeaderMap, k: &'static str, v: &'static str| {
        h.entry(k).or_insert(HeaderValue::from_static(v));
    };
    set(
        h,
        "content-security-policy",
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
         connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    );
    set(h, "x-content-type-options", "nosniff");
    set(h, "x-frame-options", "DENY");
    set(h, "referrer-policy", "same-origin");
    set(h, "cross-origin-opener-policy", "same-origin");
    set(h, "cache-control", "no-store");
    r
}

/// What the layout needs on every page.
pub struct Chrome {
    /// The signed-in user; empty when authentication is off.
    pub user: String,
    pub admin: bool,
    /// Authentication is on (there is a sign-out button).
    pub auth: bool,
    /// Show the navigation (signed in, or authentication off).
    pub nav: bool,
    pub csrf: String,
    pub flash: Option<Flash>,
    /// The navigation entry to highlight: "images", "admin", "users", "teams", "account".
    pub section: &'static str,
    pub title: String,
}

impl Chrome {
    pub fn asset(&self, name: &str) -> &'static str {
        assets::url(name)
    }
}

#[derive(Clone, Debug)]
pub struct Flash {
    pub ok: bool,
    pub text: String,
}

/// A page that could not be shown, rendered for people.
#[derive(Debug)]
pub enum PageError {
    /// Not signed in: go to the sign-in page, then back to this path.
    SignIn(String),
    Status(StatusCode, String),
    Internal(anyhow::Error),
}

impl From<anyhow::Error> for PageError {
    fn from(e: anyhow::Error) -> Self {
        PageError::Internal(e)
    }
}

impl From<v1::Error> for PageError {
    fn from(e: v1::Error) -> Self {
        use v1::Error as E;
        match e {
            E::Unauthorized => PageError::SignIn("/".into()),
            E::Forbidden => {
                PageError::Status(StatusCode::FORBIDDEN, "This needs an administrator.".into())
            }
            E::Csrf => PageError::Status(StatusCode::FORBIDDEN, e.message()),
            E::NotFound(m) => PageError::Status(StatusCode::NOT_FOUND, sentence(&m)),
            E::Conflict(m) => PageError::Status(StatusCode::CONFLICT, sentence(&m)),
            E::BadRequest(m) => PageError::Status(StatusCode::BAD_REQUEST, sentence(&m)),
            E::TooManyRequests(_) => {
                PageError::Status(StatusCode::TOO_MANY_REQUESTS, sentence(&e.message()))
            }
            E::Internal(e) => PageError::Internal(e),
        }
    }
}

/// "no repository named x" → "No repository named x."
fn sentence(m: &str) -> String {
    let mut c = m.chars();
    let mut s: String = match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => return String::new(),
    };
    if !s.ends_with(['.', '!', '?']) {
        s.push('.');
    }
    s
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage {
    chrome: Chrome,
    status: u16,
    heading: &'static str,
    message: String,
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let (status, message) = match self {
            PageError::SignIn(next) => {
                let to = format!(
                    "/login?{}",
                    serde_urlencoded::to_string([("next", next.as_str())]).unwrap_or_default()
                );
                return redirect(&to);
            }
            PageError::Status(s, m) => (s, m),
            PageError::Internal(e) => {
                tracing::error!(error = format!("{e:#}"), "internal error in the web UI");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Something went wrong on the server. The details are in its log; try again in a moment."
                        .to_string(),
                )
            }
        };
        let heading = match status {
            StatusCode::NOT_FOUND => "Not found",
            StatusCode::FORBIDDEN => "Not allowed",
            StatusCode::CONFLICT => "Conflict",
            StatusCode::BAD_REQUEST => "That did not work",
            StatusCode::TOO_MANY_REQUESTS => "Slow down",
            _ => "Server error",
        };
        let page = ErrorPage {
            chrome: Chrome {
                user: String::new(),
                admin: false,
                auth: false,
                nav: false,
                csrf: String::new(),
                flash: None,
                section: "",
                title: heading.into(),
            },
            status: status.as_u16(),
            heading,
            message,
        };
        (status, html(&page)).into_response()
    }
}

/// A rendered template as an HTML response.
pub(crate) fn html(t: &impl Template) -> Response {
    match t.render() {
        Ok(body) => ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], body).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "rendering a page");
            (StatusCode::INTERNAL_SERVER_ERROR, "rendering failed").into_response()
        }
    }
}

/// 303 See Other: after a form post, the browser GETs `to`.
pub(crate) fn redirect(to: &str) -> Response {
    let mut r = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(to) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

pub type PageResult = Result<Response, PageError>;
