//! Serving HTTP until SIGTERM/SIGINT, then letting in-flight requests finish (up to
//! `server.shutdown_timeout`).

use std::future::IntoFuture;

use anyhow::{bail, Context};
use axum::serve::ListenerExt;
use tokio::net::TcpListener;

use crate::app::App;
use crate::config::Config;

pub async fn run(config: Config) -> anyhow::Result<()> {
    if !config.server.tls_cert.is_empty() {
        bail!("server.tls_cert/tls_key: TLS is not supported by this build yet; terminate TLS in front of Berth");
    }
    if !config.auth.enabled {
        tracing::warn!(
            "authentication is off: anyone who can reach this registry may pull, push and delete"
        );
    }
    let listen = config.server.listen.clone();
    let shutdown_timeout = config.server.shutdown_timeout.get();
    let data_dir = config.storage.data_dir.clone();
    let app = App::open(config).await?;
    let listener = TcpListener::bind(&listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?
        .tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
    tracing::info!(
        listen = %listen,
        data_dir = %data_dir.display(),
        version = env!("CARGO_PKG_VERSION"),
        "berth is serving"
    );
    let (stopping_tx, mut stopping) = tokio::sync::watch::channel(false);
    let service =
        crate::api::router(app).into_make_service_with_connect_info::<std::net::SocketAddr>();
    let server = axum::serve(listener, service)
        .with_graceful_shutdown(async move {
            shutdown_signal().await;
            tracing::info!("shutting down: finishing in-flight requests");
            let _ = stopping_tx.send(true);
        })
        .into_future();
    tokio::select! {
        r = server => r.context("serving HTTP")?,
        _ = async {
            let _ = stopping.wait_for(|s| *s).await;
            tokio::time::sleep(shutdown_timeout).await;
        } => {
            tracing::warn!(?shutdown_timeout, "requests still running after the shutdown timeout; closing them");
        }
    }
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing the SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
