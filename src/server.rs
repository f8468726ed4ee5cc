//! The plain-HTTP server for Prometheus and the kubelet: `/metrics`, `/healthz`, `/readyz`, and
//! `GET|PUT /debug/loglevel` to read or change the log filter at runtime.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;

use crate::metrics::{Metrics, TEXT_CONTENT_TYPE};
use crate::shutdown::Shutdown;
use crate::telemetry::LogLevelHandle;

/// What `/readyz` reports: ready once the watches have listed, and, on the leader, once every
/// pool has been rebuilt from the cluster and EC2 (SPEC 6.3). A follower is ready with its caches
/// alone, so a rollout does not wait on an election.
#[derive(Clone, Debug, Default)]
pub struct Readiness(Arc<ReadinessFlags>);

#[derive(Debug, Default)]
struct ReadinessFlags {
    caches_synced: AtomicBool,
    leader: AtomicBool,
    pools_rebuilt: AtomicBool,
    shutting_down: AtomicBool,
}

impl Readiness {
    pub fn set_caches_synced(&self, synced: bool) {
        self.0.caches_synced.store(synced, Ordering::SeqCst);
    }

    /// Winning the lease makes the replica unready until its pools are rebuilt.
    pub fn set_leader(&self, leader: bool) {
        if leader {
            self.0.pools_rebuilt.store(false, Ordering::SeqCst);
        }
        self.0.leader.store(leader, Ordering::SeqCst);
    }

    /// Whether this process leads (as the controller last heard from its elector).
    pub fn leader(&self) -> bool {
        self.0.leader.load(Ordering::SeqCst)
    }

    pub fn set_pools_rebuilt(&self, rebuilt: bool) {
        self.0.pools_rebuilt.store(rebuilt, Ordering::SeqCst);
    }

    /// A terminating replica reports unready for the rest of its life, while it still serves
    /// the webhooks for the drain (`--shutdown-drain`).
    pub fn set_shutting_down(&self) {
        self.0.shutting_down.store(true, Ordering::SeqCst);
    }

    /// `Err` says what is missing.
    pub fn check(&self) -> Result<(), &'static str> {
        if self.0.shutting_down.load(Ordering::SeqCst) {
            return Err("shutting down");
        }
        if !self.0.caches_synced.load(Ordering::SeqCst) {
            return Err("caches not synced");
        }
        if self.0.leader.load(Ordering::SeqCst) && !self.0.pools_rebuilt.load(Ordering::SeqCst) {
            return Err("leader: pools not rebuilt yet");
        }
        Ok(())
    }
}

/// What the handlers share.
#[derive(Clone)]
pub struct ServerState {
    pub metrics: Metrics,
    pub readiness: Readiness,
    /// `None`: the log level cannot be changed (no reloadable logger installed).
    pub log_level: Option<LogLevelHandle>,
}

pub fn router(state: ServerState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/debug/loglevel", get(get_log_level).put(put_log_level))
        .with_state(state)
}

/// Serves until `shutdown` fires, then finishes the requests in progress.
pub async fn serve(
    listener: TcpListener,
    state: ServerState,
    shutdown: Shutdown,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}

async fn metrics(State(state): State<ServerState>) -> Response {
    match state.metrics.encode() {
        Ok(body) => ([(header::CONTENT_TYPE, TEXT_CONTENT_TYPE)], body).into_response(),
        Err(err) => {
            tracing::error!(error = %err, "encoding metrics failed");
            (StatusCode::INTERNAL_SERVER_ERROR, err.to_string()).into_response()
        }
    }
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(state): State<ServerState>) -> Response {
    match state.readiness.check() {
        Ok(()) => "ok\n".into_response(),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")).into_response(),
    }
}

async fn get_log_level(State(state): State<ServerState>) -> Response {
    match &state.log_level {
        Some(handle) => format!("{}\n", handle.current()).into_response(),
        None => (StatusCode::NOT_FOUND, "log level is not adjustable\n").into_response(),
    }
}

/// The body is the new filter (`debug`, `winipam=debug,kube=info`).
async fn put_log_level(State(state): State<ServerState>, body: String) -> Response {
    let Some(handle) = &state.log_level else {
        return (StatusCode::NOT_FOUND, "log level is not adjustable\n").into_response();
    };
    match handle.set(&body) {
        Ok(()) => {
            tracing::info!(filter = %handle.current(), "log filter changed");
            format!("{}\n", handle.current()).into_response()
        }
        Err(err) => (StatusCode::BAD_REQUEST, format!("{err}\n")).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shutdown::shutdown_channel;
    use crate::telemetry::{LogFormat, subscriber};
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// One HTTP/1.1 request over a fresh connection; returns (status, body).
    async fn request(
        addr: std::net::SocketAddr,
        method: &str,
        path: &str,
        body: &str,
    ) -> (u16, String) {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(req.as_bytes()).await.unwrap();
        let mut out = String::new();
        stream.read_to_string(&mut out).await.unwrap();
        let status = out[9..12].parse().unwrap();
        let body = out
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        (status, body)
    }

    #[tokio::test]
    async fn endpoints_and_graceful_shutdown() {
        let metrics = Metrics::new().unwrap();
        metrics.set_leader(true);
        let readiness = Readiness::default();
        let (_sub, handle) = subscriber(LogFormat::Text, "info", std::io::sink).unwrap();
        let state = ServerState {
            metrics,
            readiness: readiness.clone(),
            log_level: Some(handle.clone()),
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (trigger, shutdown) = shutdown_channel();
        let server = tokio::spawn(serve(listener, state, shutdown));

        assert_eq!(
            request(addr, "GET", "/healthz", "").await,
            (200, "ok\n".into())
        );
        let (status, body) = request(addr, "GET", "/metrics", "").await;
        assert_eq!(status, 200);
        assert!(body.contains("winipam_leader 1"), "{body}");

        let (status, body) = request(addr, "GET", "/readyz", "").await;
        assert_eq!((status, body.as_str()), (503, "caches not synced\n"));
        readiness.set_caches_synced(true);
        readiness.set_leader(true);
        assert_eq!(request(addr, "GET", "/readyz", "").await.0, 503);
        readiness.set_pools_rebuilt(true);
        assert_eq!(request(addr, "GET", "/readyz", "").await.0, 200);
        // Losing and winning the lease again needs a new rebuild.
        readiness.set_leader(false);
        assert_eq!(request(addr, "GET", "/readyz", "").await.0, 200);
        readiness.set_leader(true);
        assert_eq!(request(addr, "GET", "/readyz", "").await.0, 503);

        assert_eq!(
            request(addr, "GET", "/debug/loglevel", "").await,
            (200, "info\n".into())
        );
        assert_eq!(
            request(addr, "PUT", "/debug/loglevel", "winipam=debug").await,
            (200, "winipam=debug\n".into())
        );
        assert_eq!(handle.current(), "winipam=debug");
        assert_eq!(request(addr, "PUT", "/debug/loglevel", "[[").await.0, 400);
        assert_eq!(handle.current(), "winipam=debug");
        assert_eq!(request(addr, "GET", "/nope", "").await.0, 404);

        trigger.trigger();
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }
}
