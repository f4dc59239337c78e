//! The HTTP endpoint: `/metrics`, `/healthz`, `/readyz`, and `POST
//! /jobs/{job}/backfill` (what `cxpulse backfill` calls).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::Path;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};

use crate::control::{BackfillRequest, Refusal};
use crate::health::Health;
use crate::metrics::Metrics;
use crate::query::BackfillFrom;

#[derive(Clone)]
struct AppState {
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    backfills: Option<mpsc::Sender<BackfillRequest>>,
    /// The bearer token of the admin endpoints; `None`: they are off.
    admin_token: Option<Arc<str>>,
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
            admin_token: None,
        };
        Ok(Self { listener, state })
    }

    /// Accepts backfill requests bearing `token` (none: the admin endpoints
    /// are off) and hands them to `engine`.
    pub fn with_backfills(
        mut self,
        engine: mpsc::Sender<BackfillRequest>,
        token: Option<&str>,
    ) -> Self {
        self.state.backfills = Some(engine);
        self.state.admin_token = token.filter(|t| !t.is_empty()).map(Arc::from);
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
        axum::serve(self.listener, router.into_make_service())
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
/// 3339 time) as the body and `Authorization: Bearer <http.admin_token>`:
/// 202 once the backfill has started, 400 for a bad start (or one in the
/// future), 401 without the token, 403 when no token is configured (the
/// admin endpoints are off), 404 for an unknown job, 409 when the job
/// cannot be backfilled now, 503 when no engine answers.
async fn backfill_handler(
    State(state): State<AppState>,
    Path(job): Path<String>,
    headers: HeaderMap,
    body: String,
) -> (StatusCode, HeaderMap, String) {
    let plain = |status, text: String| (status, HeaderMap::new(), text);
    let Some(token) = &state.admin_token else {
        return plain(
            StatusCode::FORBIDDEN,
            "the admin endpoints are off: set http.admin_token (CXPULSE__HTTP__ADMIN_TOKEN) on the engine, and give cxpulse backfill the same\n".to_owned(),
        );
    };
    if !bearer_matches(&headers, token) {
        let mut challenge = HeaderMap::new();
        challenge.insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer realm=\"cxpulse admin\""),
        );
        return (
            StatusCode::UNAUTHORIZED,
            challenge,
            "a backfill deletes a job's state: send Authorization: Bearer <http.admin_token> (cxpulse backfill does, from CXPULSE__HTTP__ADMIN_TOKEN)\n".to_owned(),
        );
    }
    let now = chrono::Utc::now().timestamp_millis();
    let from = match BackfillFrom::parse(body.trim()).and_then(|f| f.not_after(now)) {
        Ok(from) => from,
        Err(e) => return plain(StatusCode::BAD_REQUEST, format!("--from {e}\n")),
    };
    let Some(engine) = state.backfills else {
        return plain(
            StatusCode::SERVICE_UNAVAILABLE,
            "this server runs no engine\n".to_owned(),
        );
    };
    let (reply, answer) = oneshot::channel();
    let request = BackfillRequest { job, from, reply };
    let unavailable = || {
        plain(
            StatusCode::SERVICE_UNAVAILABLE,
            "the engine did not answer (it may be restarting); try again\n".to_owned(),
        )
    };
    if engine.send(request).await.is_err() {
        return unavailable();
    }
    match tokio::time::timeout(REQUEST_TIMEOUT, answer).await {
        Ok(Ok(Ok(started))) => plain(StatusCode::ACCEPTED, started),
        Ok(Ok(Err(refusal))) => {
            let status = match refusal {
                Refusal::UnknownJob(_) => StatusCode::NOT_FOUND,
                Refusal::Conflict(_) => StatusCode::CONFLICT,
            };
            plain(status, format!("{refusal}\n"))
        }
        _ => unavailable(),
    }
}

/// Whether `headers` carry `Authorization: Bearer <token>`, compared in
/// constant time.
fn bearer_matches(headers: &HeaderMap, token: &str) -> bool {
    let Some(given) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
    else {
        return false;
    };
    let (given, token) = (given.trim().as_bytes(), token.as_bytes());
    let differences = given
        .iter()
        .zip(token)
        .fold(given.len() ^ token.len(), |acc, (a, b)| {
            acc | usize::from(a ^ b)
        });
    differences == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::NotReady;

    fn with_token(token: Option<&str>) -> (AppState, mpsc::Receiver<BackfillRequest>) {
        let (engine, requests) = mpsc::channel(1);
        let state = AppState {
            metrics: Arc::new(Metrics::new().expect("metrics")),
            health: Arc::new(Health::default()),
            backfills: Some(engine),
            admin_token: token.map(Arc::from),
        };
        (state, requests)
    }

    fn ask(
        state: &AppState,
        authorization: Option<&str>,
        body: &str,
    ) -> impl Future<Output = (StatusCode, HeaderMap, String)> + use<> {
        let mut headers = HeaderMap::new();
        if let Some(value) = authorization {
            headers.insert(
                header::AUTHORIZATION,
                header::HeaderValue::from_str(value).expect("header"),
            );
        }
        backfill_handler(
            State(state.clone()),
            Path("revenue".to_owned()),
            headers,
            body.to_owned(),
        )
    }

    #[tokio::test]
    async fn backfill_requests_need_the_token_and_a_start_not_in_the_future() {
        let token = "s3cret-token-0123456789";
        let (state, mut requests) = with_token(Some(token));
        let (status, challenge, _) = ask(&state, None, "earliest").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert!(challenge.contains_key(header::WWW_AUTHENTICATE));
        let (status, _, _) = ask(&state, Some("Bearer wrong-token-0123456789"), "earliest").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        let (status, _, _) = ask(&state, Some(&format!("Bearer {token}x")), "earliest").await;
        assert_eq!(
            status,
            StatusCode::UNAUTHORIZED,
            "a longer token is another token"
        );
        let bearer = format!("Bearer {token}");
        let (status, _, answer) = ask(&state, Some(&bearer), "last week").await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
        assert!(answer.contains("is not a start"), "{answer}");
        let (status, _, answer) = ask(&state, Some(&bearer), "2999-01-01T00:00:00Z").await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
        assert!(answer.contains("is in the future"), "{answer}");
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
        let (status, _, answer) = ask(&state, Some(&bearer), " earliest\n").await;
        assert_eq!((status, answer.as_str()), (StatusCode::CONFLICT, "busy\n"));
        engine.await.expect("engine task");
    }

    #[tokio::test]
    async fn without_a_token_the_admin_endpoints_are_off() {
        let (state, mut requests) = with_token(None);
        let (status, _, answer) =
            ask(&state, Some("Bearer anything-at-all-here"), "earliest").await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{answer}");
        assert!(answer.contains("http.admin_token"), "{answer}");
        assert!(requests.try_recv().is_err());
    }

    #[test]
    fn ready_only_when_running_with_partitions_assigned() {
        let health = Health::default();
        assert_eq!(
            health.readiness(),
            Err(NotReady::Blocked("starting".to_owned()))
        );
        health.set_partitions_assigned(true);
        health.set_blocker(Some("restoring state".to_owned()));
        assert_eq!(
            health.readiness(),
            Err(NotReady::Blocked("restoring state".to_owned()))
        );
        health.set_blocker(None);
        assert_eq!(health.readiness(), Ok(()));
        health.set_tables_failing(Some("reading the table sources has failed".to_owned()));
        assert_eq!(
            health.readiness(),
            Err(NotReady::TablesFailing(
                "reading the table sources has failed".to_owned()
            ))
        );
        health.set_tables_failing(None);
        assert_eq!(health.readiness(), Ok(()));
        health.set_partitions_assigned(false);
        assert_eq!(health.readiness(), Err(NotReady::NoPartitions));
    }
}
