//! The HTTP endpoint: `/metrics`, `/healthz`, `/readyz`, and `POST
//! /jobs/{job}/backfill` (what `cxpulse backfill` calls).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use axum::Router;
use axum::extract::State;
use axum::extract::{ConnectInfo, Path};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};

use crate::engine::{BackfillRequest, Refusal};
use crate::metrics::Metrics;
use crate::query::BackfillFrom;

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
    backfills: Option<mpsc::Sender<BackfillRequest>>,
}

/// How long a backfill request waits for the engine (which may be
/// restarting) to answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// A bound HTTP listener, ready to serve.
pub struct HttpServer {
    listener: TcpListener,
    state: AppState,
}

impl HttpServer {
    /// Binds `addr` (port 0 picks a free port).
    pub async fn bind(
        addr: SocketAddr,
        metrics: Arc<Metrics>,
        health: Arc<Health>,
    ) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let state = AppState {
            metrics,
            health,
            backfills: None,
        };
        Ok(Self { listener, state })
    }

    /// Accepts backfill requests and hands them to `engine`.
    pub fn with_backfills(mut self, engine: mpsc::Sender<BackfillRequest>) -> Self {
        self.state.backfills = Some(engine);
        self
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
        let router = Router::new()
            .route("/metrics", get(metrics_handler))
            .route("/healthz", get(|| async { "ok\n" }))
            .route("/readyz", get(ready_handler))
            .route("/jobs/{job}/backfill", post(backfill_handler))
            .with_state(self.state);
        axum::serve(
            self.listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
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

/// `POST /jobs/{job}/backfill` with the start (`earliest`, `90d`, an RFC
/// 3339 time) as the body: 202 once the backfill has started, 400 for a bad
/// start, 403 from another host (it deletes state: run `cxpulse backfill`
/// on the engine's host), 404 for an unknown job, 409 when the job cannot
/// be backfilled now, 503 when no engine answers.
async fn backfill_handler(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(job): Path<String>,
    body: String,
) -> (StatusCode, String) {
    if !peer.ip().to_canonical().is_loopback() {
        return (
            StatusCode::FORBIDDEN,
            "backfill requests are accepted from the engine's own host only: run `cxpulse backfill` there (e.g. with kubectl exec)\n".to_owned(),
        );
    }
    let from = match BackfillFrom::parse(body.trim()) {
        Ok(from) => from,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("--from {e}\n")),
    };
    let Some(engine) = state.backfills else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "this server runs no engine\n".to_owned(),
        );
    };
    let (reply, answer) = oneshot::channel();
    let request = BackfillRequest { job, from, reply };
    let unavailable = || {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "the engine did not answer (it may be restarting); try again\n".to_owned(),
        )
    };
    if engine.send(request).await.is_err() {
        return unavailable();
    }
    match tokio::time::timeout(REQUEST_TIMEOUT, answer).await {
        Ok(Ok(Ok(started))) => (StatusCode::ACCEPTED, started),
        Ok(Ok(Err(refusal))) => {
            let status = match refusal {
                Refusal::UnknownJob(_) => StatusCode::NOT_FOUND,
                Refusal::Conflict(_) => StatusCode::CONFLICT,
            };
            (status, format!("{refusal}\n"))
        }
        _ => unavailable(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn backfill_requests_come_from_this_host_with_a_valid_start() {
        let (engine, mut requests) = mpsc::channel(1);
        let state = AppState {
            metrics: Arc::new(Metrics::new().expect("metrics")),
            health: Arc::new(Health::default()),
            backfills: Some(engine),
        };
        let ask = |peer: &str, body: &str| {
            backfill_handler(
                State(state.clone()),
                ConnectInfo(peer.parse().expect("address")),
                Path("revenue".to_owned()),
                body.to_owned(),
            )
        };
        let (status, answer) = ask("10.1.2.3:5000", "earliest").await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{answer}");
        let (status, answer) = ask("127.0.0.1:5000", "last week").await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
        assert!(answer.contains("is not a start"), "{answer}");
        assert!(requests.try_recv().is_err(), "nothing reached the engine");

        let engine = tokio::spawn(async move {
            let request = requests.recv().await.expect("a request");
            assert_eq!(
                (request.job.as_str(), request.from),
                ("revenue", BackfillFrom::Earliest)
            );
            let _ = request
                .reply
                .send(Err(Refusal::Conflict("busy".to_owned())));
        });
        let (status, answer) = ask("127.0.0.1:5000", " earliest\n").await;
        assert_eq!((status, answer.as_str()), (StatusCode::CONFLICT, "busy\n"));
        engine.await.expect("engine task");
    }

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
