//! `GET /metrics`: Prometheus text exposition. Request counters are kept in memory;
//! storage figures are read from the metadata at scrape time (cheap: indexed
//! aggregates), so they are exact and shared by every replica.
//!
//! Namespace names are user and team names, so with authentication on only an admin
//! may scrape (HTTP Basic or a bearer token, as Prometheus supports).

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::app::AppState;
use crate::auth::{authenticate, Caller};

/// Counters of answered requests, by status class (1xx … 5xx).
#[derive(Default)]
pub struct Counters {
    by_class: [AtomicU64; 5],
}

/// Counts every answered request.
pub async fn count(State(app): State<AppState>, req: Request, next: Next) -> Response {
    let resp = next.run(req).await;
    let class = (resp.status().as_u16() / 100).clamp(1, 5) as usize - 1;
    app.counters.by_class[class].fetch_add(1, Ordering::Relaxed);
    resp
}

fn escape(label: &str) -> String {
    label
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

pub async fn metrics(State(app): State<AppState>, req: Request) -> Response {
    let (parts, _) = req.into_parts();
    let client = super::client_ip(&parts);
    match authenticate(&app, &parts.headers, client).await {
        Ok(c @ (Caller::Open | Caller::User { .. })) if c.is_admin() => {}
        Ok(_) | Err(_) => {
            return (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Basic realm=\"berth\"")],
                "metrics are for administrators\n",
            )
                .into_response()
        }
    }
    match render(&app).await {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "rendering metrics");
            (StatusCode::INTERNAL_SERVER_ERROR, "metrics unavailable\n").into_response()
        }
    }
}

async fn render(app: &crate::app::App) -> anyhow::Result<String> {
    let mut out = String::new();
    out.push_str("# HELP berth_http_requests_total Requests answered, by status class.\n");
    out.push_str("# TYPE berth_http_requests_total counter\n");
    for (i, c) in app.counters.by_class.iter().enumerate() {
        writeln!(
            out,
            "berth_http_requests_total{{class=\"{}xx\"}} {}",
            i + 1,
            c.load(Ordering::Relaxed)
        )?;
    }
    let usage = app.gc.usage().await?;
    out.push_str(
        "# HELP berth_storage_bytes Bytes of distinct blobs stored (shared layers once).\n",
    );
    out.push_str("# TYPE berth_storage_bytes gauge\n");
    writeln!(out, "berth_storage_bytes {}", usage.total_bytes)?;
    out.push_str("# HELP berth_blobs Distinct blobs stored.\n# TYPE berth_blobs gauge\n");
    writeln!(out, "berth_blobs {}", usage.blobs)?;
    out.push_str("# HELP berth_namespace_bytes Bytes linked in a namespace (a shared layer counts in each).\n");
    out.push_str("# TYPE berth_namespace_bytes gauge\n");
    for n in &usage.namespaces {
        writeln!(
            out,
            "berth_namespace_bytes{{namespace=\"{}\"}} {}",
            escape(&n.namespace),
            n.bytes
        )?;
    }
    out.push_str("# HELP berth_namespace_repositories Repositories in a namespace.\n");
    out.push_str("# TYPE berth_namespace_repositories gauge\n");
    for n in &usage.namespaces {
        writeln!(
            out,
            "berth_namespace_repositories{{namespace=\"{}\"}} {}",
            escape(&n.namespace),
            n.repositories
        )?;
    }
    if let Some(run) = app
        .gc
        .gc_runs(1)
        .await?
        .into_iter()
        .find(|r| r.finished_at.is_some())
    {
        out.push_str("# HELP berth_gc_last_run_timestamp_seconds When the last garbage collection finished.\n");
        out.push_str("# TYPE berth_gc_last_run_timestamp_seconds gauge\n");
        writeln!(
            out,
            "berth_gc_last_run_timestamp_seconds {}",
            run.finished_at.unwrap_or(0) / 1000
        )?;
        out.push_str(
            "# HELP berth_gc_last_run_bytes_freed Bytes the last garbage collection freed.\n",
        );
        out.push_str("# TYPE berth_gc_last_run_bytes_freed gauge\n");
        writeln!(
            out,
            "berth_gc_last_run_bytes_freed {}",
            run.report.bytes_freed
        )?;
        out.push_str(
            "# HELP berth_gc_last_run_failed Whether the last garbage collection failed.\n",
        );
        out.push_str("# TYPE berth_gc_last_run_failed gauge\n");
        writeln!(
            out,
            "berth_gc_last_run_failed {}",
            run.error.is_some() as u8
        )?;
    }
    Ok(out)
}
