//! Serving HTTP (or HTTPS with `server.tls_cert`/`tls_key`) until SIGTERM/SIGINT, then
//! letting in-flight requests finish (up to `server.shutdown_timeout`).
//!
//! One accept loop serves both: each connection is optionally wrapped in TLS, then
//! handed to hyper's automatic HTTP/1.1 + HTTP/2 server with the client's address
//! attached for the handlers (throttling, audit log).

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tower::ServiceExt;

use crate::app::App;
use crate::config::Config;

pub async fn run(config: Config) -> anyhow::Result<()> {
    if !config.auth.enabled {
        tracing::warn!(
            "authentication is off: anyone who can reach this registry may pull, push and delete"
        );
    }
    let tls = if config.server.tls_cert.is_empty() {
        None
    } else {
        let (cfg, reloader) = crate::tls::server_config(
            config.server.tls_cert.as_ref(),
            config.server.tls_key.as_ref(),
        )?;
        tokio::spawn(reloader.watch());
        Some(tokio_rustls::TlsAcceptor::from(cfg))
    };
    let listen = config.server.listen.clone();
    let shutdown_timeout = config.server.shutdown_timeout.get();
    let header_timeout = config.server.header_timeout.get();
    let data_dir = config.storage.data_dir.clone();
    let app = App::open(config).await?;
    let listener = TcpListener::bind(&listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    tracing::info!(
        listen = %listen,
        tls = tls.is_some(),
        data_dir = %data_dir.display(),
        version = env!("CARGO_PKG_VERSION"),
        "berth is serving"
    );
    let interval = app.config.gc.interval.get();
    if !interval.is_zero() {
        tokio::spawn(crate::gc::schedule(app.clone(), interval));
    }
    let router = crate::api::router(app);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // A timer makes hyper enforce the header deadline: a client trickling its
    // headers (slow loris) or idling on a kept-alive connection is disconnected.
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    builder.http2().timer(TokioTimer::new());
    let builder = Arc::new(builder);
    let graceful = GracefulShutdown::new();
    let signal = shutdown_signal();
    tokio::pin!(signal);
    loop {
        let (tcp, addr) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut signal => break,
        };
        let _ = tcp.set_nodelay(true);
        let svc =
            router
                .clone()
                .map_request(move |mut req: hyper::Request<hyper::body::Incoming>| {
                    req.extensions_mut().insert(ConnectInfo::<SocketAddr>(addr));
                    req
                });
        let svc = TowerToHyperService::new(svc);
        let builder = builder.clone();
        match &tls {
            None => {
                let conn = builder
                    .serve_connection_with_upgrades(TokioIo::new(tcp), svc)
                    .into_owned();
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(error = %e, %addr, "connection ended with an error");
                    }
                });
            }
            Some(acceptor) => {
                let acceptor = acceptor.clone();
                let watcher = graceful.watcher();
                tokio::spawn(async move {
                    // The handshake gets a deadline so that idle sockets can't pile up.
                    let stream = match tokio::time::timeout(
                        std::time::Duration::from_secs(10),
                        acceptor.accept(tcp),
                    )
                    .await
                    {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => {
                            return tracing::debug!(error = %e, %addr, "TLS handshake failed")
                        }
                        Err(_) => return tracing::debug!(%addr, "TLS handshake timed out"),
                    };
                    let conn = builder
                        .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                        .into_owned();
                    if let Err(e) = watcher.watch(conn).await {
                        tracing::debug!(error = %e, %addr, "connection ended with an error");
                    }
                });
            }
        }
    }
    tracing::info!("shutting down: finishing in-flight requests");
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(shutdown_timeout) => {
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
