//! What the benches share: the engine in the bench's own process, the CPU
//! time a process has used ([`cpu`]), and preloading generated events
//! ([`preload`]). `benches/end_to_end` includes the last two by path.

pub mod cpu;
pub mod preload;

use std::sync::Arc;

use cxpulse::config::Config;
use cxpulse::metrics::Metrics;

/// `cxpulse::engine::run` on `config` in this process: its metrics, the
/// sender that stops it, and its task.
pub fn start_in_process(
    config: &Config,
) -> (
    Arc<Metrics>,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<Result<(), cxpulse::engine::EngineError>>,
) {
    let metrics = Arc::new(Metrics::new().expect("metrics"));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let engine = tokio::spawn(cxpulse::engine::run(
        config.clone(),
        Arc::clone(&metrics),
        async move {
            let _ = stopped.await;
        },
        |_| {},
    ));
    (metrics, stop, engine)
}
