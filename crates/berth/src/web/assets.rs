//! The stylesheet and script, compiled into the binary. Their URLs carry a hash of the
//! content, so browsers may cache them for a year and still never see a stale one.

use std::sync::LazyLock;

use axum::extract::Path;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static str,
}

const ASSETS: &[Asset] = &[
    Asset {
        name: "berth.css",
        content_type: "text/css; charset=utf-8",
        body: include_str!("../../assets/berth.css"),
    },
    Asset {
        name: "berth.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("../../assets/berth.js"),
    },
    Asset {
        name: "favicon.svg",
        content_type: "image/svg+xml",
        body: include_str!("../../assets/favicon.svg"),
    },
];

/// `name` → `/static/name?v=HASH`.
static VERSIONED: LazyLock<Vec<(&'static str, String)>> = LazyLock::new(|| {
    ASSETS
        .iter()
        .map(|a| {
            let h = hex::encode(&Sha256::digest(a.body.as_bytes())[..6]);
            (a.name, format!("/static/{}?v={h}", a.name))
        })
        .collect()
});

/// The cache-busting URL of an asset, for templates.
pub fn url(name: &str) -> &'static str {
    VERSIONED
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, u)| u.as_str())
        .unwrap_or("/static/missing")
}

pub async fn get(Path(file): Path<String>) -> Response {
    match ASSETS.iter().find(|a| a.name == file) {
        Some(a) => (
            [
                (header::CONTENT_TYPE, a.content_type),
                (header::CACHE_CONTROL, "public, max-age=31536000, immutable"),
            ],
            a.body,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "no such file").into_response(),
    }
}
