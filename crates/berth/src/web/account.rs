//! The signed-in person's own account: password and access tokens.

use askama::Template;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::{Form, Json};
use serde::Deserialize;

use super::admin::{token_rows, TokenRow};
use super::session::CsrfForm;
use super::{Chrome, PageError, PageResult, Web};
use crate::api::v1::{tokens, users};
use crate::app::AppState;
use crate::auth::AuthError;

#[derive(Template)]
#[template(path = "account.html")]
struct AccountPage {
    chrome: Chrome,
    name: String,
    admin: bool,
    teams: Vec<String>,
    namespaces: Vec<String>,
    tokens: Vec<TokenRow>,
    host: String,
    /// A token just created: (name, secret), shown once.
    created: Option<(String, String)>,
}

fn signed_in_name(web: &Web) -> Result<String, PageError> {
    web.require_user()?;
    web.caller.name().map(str::to_string).ok_or_else(|| {
        PageError::Status(
            StatusCode::NOT_FOUND,
            "Authentication is off on this registry, so there are no accounts.".into(),
        )
    })
}

async fn account_page(web: Web, created: Option<(String, String)>) -> PageResult {
    let name = signed_in_name(&web)?;
    let list = web.app.accounts.tokens(Some(&name)).await?;
    let teams: Vec<String> = match &web.caller {
        crate::auth::Caller::User { principal, .. } => {
            principal.teams.iter().map(|(t, _)| t.clone()).collect()
        }
        _ => Vec::new(),
    };
    let mut namespaces = vec![name.clone()];
    namespaces.extend(teams.iter().cloned());
    let page = AccountPage {
        chrome: web.chrome("account", "Account"),
        admin: web.caller.is_admin(),
        tokens: token_rows(&list, "/account/tokens"),
        host: web.registry_host().to_string(),
        name,
        teams,
        namespaces,
        created,
    };
    Ok(web.page(&page))
}

pub async fn page(web: Web) -> PageResult {
    account_page(web, None).await
}

#[derive(Deserialize)]
pub struct PasswordForm {
    csrf: String,
    current: String,
    new: String,
    repeat: String,
}

pub async fn password(
    web: Web,
    State(app): State<AppState>,
    Form(f): Form<PasswordForm>,
) -> PageResult {
    web.check_form(&f.csrf)?;
    let name = signed_in_name(&web)?;
    if f.new != f.repeat {
        return Ok(web.done("/account", false, "The two new passwords differ."));
    }
    match crate::auth::login(&app, &name, &f.current, web.client).await {
        Ok(_) => {}
        Err(AuthError::BadCredentials) if !f.current.starts_with(crate::auth::TOKEN_PREFIX) => {
            return Ok(web.done("/account", false, "The current password is wrong."));
        }
        Err(AuthError::BadCredentials) => {
            return Ok(web.done(
                "/account",
                false,
                "Type your current password, not a token.",
            ));
        }
        Err(AuthError::Throttled(d)) => {
            return Err(crate::api::v1::Error::TooManyRequests(d).into());
        }
        Err(AuthError::Internal(e)) => return Err(e.into()),
    }
    let req = users::UserUpdate {
        password: Some(f.new.clone()),
        admin: None,
    };
    let r = users::update(State(app.clone()), web.api(), Path(name.clone()), Json(req)).await;
    if r.is_err() {
        return web.outcome(r, "/account", "/account", "");
    }
    // The change signed this user out everywhere, this browser included: it gets a new
    // session (a new cookie, a new CSRF token).
    let user_id = web.user.as_ref().map(|u| u.id).unwrap_or_default();
    let cookie = super::session::start_session(&app, user_id).await?;
    let mut resp = web.done(
        "/account",
        true,
        "Your password is changed; your other sign-ins are signed out.",
    );
    resp.headers_mut().append(header::SET_COOKIE, cookie);
    Ok(resp)
}

#[derive(Deserialize)]
pub struct TokenForm {
    csrf: String,
    name: String,
    #[serde(default)]
    expires_in: String,
}

pub async fn token_create(
    web: Web,
    State(app): State<AppState>,
    Form(f): Form<TokenForm>,
) -> PageResult {
    web.check_form(&f.csrf)?;
    signed_in_name(&web)?;
    let req = tokens::NewToken {
        name: f.name.trim().to_string(),
        user: None,
        expires_in: Some(f.expires_in.clone()).filter(|e| !e.is_empty() && e != "never"),
    };
    match tokens::create(State(app), web.api(), Json(req)).await {
        Ok((_, Json(t))) => {
            let mut r = account_page(web, Some((t.token.name, t.secret))).await?;
            r.headers_mut()
                .insert(header::CACHE_CONTROL, "no-store".parse().expect("static"));
            Ok(r)
        }
        Err(e) => web.outcome(Err::<(), _>(e), "/account", "/account", ""),
    }
}

pub async fn token_revoke(
    web: Web,
    State(app): State<AppState>,
    Path(token): Path<String>,
    Form(f): Form<CsrfForm>,
) -> PageResult {
    web.check_form(&f.csrf)?;
    let name = signed_in_name(&web)?;
    tokens::revoke(State(app), web.api(), Path((name, token.clone()))).await?;
    Ok(web.done(
        "/account",
        true,
        format!("Revoked the token {token:?}; it stops working now."),
    ))
}
