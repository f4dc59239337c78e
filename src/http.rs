//! The HTTP endpoint: `/metrics`, `/healthz`, `/readyz`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;

use crate::metrics::Metrics;

/// Readiness conditions, set by the engine as it starts, restores and runs.
#[derive(Debug)]
pub struct Health {
    partitions_assigned: AtomicBool,
    /// What keeps the engine from running, if anything.
    blocker: Mutex<Option<String>>,
}

impl Default for Health {
    fn default() -> Self {
        Self {
            partitions_assigned: AtomicBool::new(false),
            blocker: Mutex::new(Some("starting".to_owned())),
        }
    }
}

impl Health {
    /// Records whether the consumer currently holds partitions.
    pub fn set_partitions_assigned(&self, assigned: bool) {
        self.partitions_assigned.store(assigned, Ordering::Relaxed);
    }

    /// Records what keeps the engine from running (connecting to Kafka,
    /// restoring state), or `None` once it runs.
    pub fn set_blocker(&self, why: Option<String>) {
        *self.blocker.lock().unwrap_or_else(PoisonError::into_inner) = why;
    }

    /// `Ok` when ready, otherwise what is still missing.
    pub fn readiness(&self) -> Result<(), String> {
        if let Some(why) = &*self.blocker.lock().unwrap_or_else(PoisonError::into_inner) {
            Err(why.clone())
        } else if !self.partitions_assigned.load(Ordering::Relaxed) {
            Err("no partitions assigned yet".to_owned())
        } else {
            Ok(())
        }
    }
}

#[derive(Clone)]
struct AppState {
    metrics: Arc<Metrics>,
    health: Arc<Health>,
}

/// A bound HTTP listener, ready to serve.
pub struct HttpServer {
    listener: TcpListener,
    router: Router,
}

impl HttpServer {
    /// Binds `addr` (port 0 picks a free port).
    pub async fn bind(
        addr: SocketAddr,
        metrics: Arc<Metrics>,
        health: Arc<Health>,
    ) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let router = Router::new()
            .route("/metrics", get(metrics_handler))
            .route("/healthz", get(|| async { "ok\n" }))
            .route("/readyz", get(ready_handler))
            .with_state(AppState { metrics, health });
        Ok(Self { listener, router })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` completes.
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        axum::serve(self.listener, self.router)
            .with_graceful_shutdown(shutdown)
            .await
    }
}

async fn metrics_handler(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.encode(),
    )
}

async fn ready_handler(State(state): State<AppState>) -> impl IntoResponse {
    match state.health.readiness() {
        Ok(()) => (StatusCode::OK, "ready\n".to_owned()),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_when_running_with_partitions_assigned() {
        let health = Health::default();
        assert_eq!(health.readiness(), Err("starting".to_owned()));
        health.set_partitions_assigned(true);
        health.set_blocker(Some("restoring state".to_owned()));
        assert_eq!(health.readiness(), Err("restoring state".to_owned()));
        health.set_blocker(None);
        assert_eq!(health.readiness(), Ok(()));
        health.set_partitions_assigned(false);
        assert_eq!(
            health.readiness(),
            Err("no partitions assigned yet".to_owned())
        );
    }
}
