//! `cxpulse run` as a child process: started with its configuration in
//! environment variables, in a working directory of its own, logging to a
//! file; stopped with SIGTERM, or killed with SIGKILL.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use cxpulse::config::Config;

use super::{http_get, metric};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_cxpulse");

/// A running `cxpulse run`.
pub struct EngineProcess {
    child: Child,
    /// Its `/metrics`, `/healthz`, `/readyz` address.
    pub addr: SocketAddr,
    /// Its log (stdout and stderr).
    pub log: PathBuf,
    _workdir: tempfile::TempDir,
}

/// A free port on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl EngineProcess {
    /// Starts `cxpulse run` with `env`, in a new empty working directory
    /// (so no local file survives between two processes).
    pub fn start(env: &[(String, String)]) -> EngineProcess {
        Self::start_with(&[], env)
    }

    /// Starts `cxpulse run` with `args` after `run` (e.g. `--config FILE`)
    /// and `env`; a `RUST_LOG` in `env` wins over the test's own.
    pub fn start_with(args: &[&str], env: &[(String, String)]) -> EngineProcess {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()));
        let workdir = tempfile::tempdir().expect("workdir");
        let log = std::env::temp_dir().join(format!(
            "cxpulse-test-{}-{}.log",
            std::process::id(),
            addr.port()
        ));
        let file = std::fs::File::create(&log).expect("log file");
        let child = Command::new(BIN)
            .arg("run")
            .args(args)
            .current_dir(workdir.path())
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("CXPULSE__HTTP__LISTEN", addr.to_string())
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log file"))
            .stderr(file)
            .spawn()
            .expect("spawn cxpulse run");
        EngineProcess {
            child,
            addr,
            log,
            _workdir: workdir,
        }
    }

    /// Waits until the HTTP endpoint accepts connections.
    pub fn wait_listening(&mut self, timeout: Duration) {
        let started = Instant::now();
        while std::net::TcpStream::connect(self.addr).is_err() {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("cxpulse exited early with {status}:\n{}", self.log_text());
            }
            assert!(
                started.elapsed() < timeout,
                "not listening:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until `/readyz` answers 200; panics (with the log) after
    /// `timeout` or if the process exits.
    pub fn wait_ready(&mut self, timeout: Duration) {
        let started = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("cxpulse exited early with {status}:\n{}", self.log_text());
            }
            if std::net::TcpStream::connect(self.addr).is_ok()
                && http_get(self.addr, "/readyz").0 == 200
            {
                return;
            }
            assert!(
                started.elapsed() < timeout,
                "cxpulse not ready after {timeout:?}:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The current `/metrics` exposition ("" if it does not answer).
    pub fn metrics(&self) -> String {
        if std::net::TcpStream::connect(self.addr).is_err() {
            return String::new();
        }
        http_get(self.addr, "/metrics").1
    }

    /// Polls `/metrics` until every `(series, value)` holds.
    pub fn wait_for_metrics(&self, wanted: &[(&str, f64)], timeout: Duration) {
        self.wait_metrics(&format!("{wanted:?}"), timeout, |body| {
            wanted
                .iter()
                .all(|(series, value)| metric(body, series) == Some(*value))
        });
    }

    /// Polls `/metrics` until `done` holds for them; panics, saying `what`
    /// never happened (with the metrics and the log), after `timeout`.
    pub fn wait_metrics(&self, what: &str, timeout: Duration, done: impl Fn(&str) -> bool) {
        let started = Instant::now();
        loop {
            let body = self.metrics();
            if done(&body) {
                return;
            }
            assert!(
                started.elapsed() < timeout,
                "{what} never happened:\n{body}\nlog:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Sends a signal (`TERM`, `HUP`, `KILL`, …).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([format!("-{name}"), self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success(), "kill -{name}");
    }

    /// Waits for the process to exit, at most `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let started = Instant::now();
        while started.elapsed() < timeout {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// SIGTERM; returns the exit code and the log once it has exited, and
    /// panics if that takes longer than `timeout`.
    pub fn terminate(mut self, timeout: Duration) -> (Option<i32>, String) {
        self.signal("TERM");
        let started = Instant::now();
        let status = self.wait_exit(timeout);
        let log = self.log_text();
        match status {
            Some(status) => (status.code(), log),
            None => panic!(
                "cxpulse did not exit within {:?} of SIGTERM:\n{log}",
                started.elapsed()
            ),
        }
    }

    /// SIGKILL, and waits for the process to be gone.
    pub fn kill(mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.log_text()
    }
}

impl Drop for EngineProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Environment that points `cxpulse run` at `config`'s broker, group,
/// topics and engine settings, plus `extra`.
pub fn engine_env(config: &Config, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let t = &config.topics;
    let e = &config.engine;
    let queries = absolute(&e.queries_dir);
    [
        ("CXPULSE__KAFKA__BROKERS", config.kafka.brokers.clone()),
        ("CXPULSE__KAFKA__GROUP_ID", config.kafka.group_id.clone()),
        (
            "CXPULSE__CLUSTER__INSTANCES",
            config.cluster.instances.to_string(),
        ),
        ("CXPULSE__CLUSTER__INDEX", config.cluster.index.to_string()),
        (
            "CXPULSE__CLUSTER__GENERATION",
            config.cluster.generation.to_string(),
        ),
        ("CXPULSE__TOPICS__TRANSACTIONS", t.transactions.clone()),
        ("CXPULSE__TOPICS__FEEDBACK", t.feedback.clone()),
        ("CXPULSE__TOPICS__COMPLAINTS", t.complaints.clone()),
        ("CXPULSE__TOPICS__CUSTOMERS", t.customers.clone()),
        ("CXPULSE__TOPICS__DEADLETTER", t.deadletter.clone()),
        ("CXPULSE__TOPICS__OUTPUT_PREFIX", t.output_prefix.clone()),
        (
            "CXPULSE__ENGINE__QUERIES_DIR",
            queries.display().to_string(),
        ),
        (
            "CXPULSE__ENGINE__MAX_OUT_OF_ORDERNESS_MS",
            e.max_out_of_orderness_ms.to_string(),
        ),
        (
            "CXPULSE__ENGINE__IDLE_TIMEOUT_MS",
            e.idle_timeout_ms.to_string(),
        ),
        (
            "CXPULSE__ENGINE__BATCH_MAX_ROWS",
            e.batch_max_rows.to_string(),
        ),
        (
            "CXPULSE__ENGINE__BATCH_LINGER_MS",
            e.batch_linger_ms.to_string(),
        ),
        (
            "CXPULSE__ENGINE__COMMIT_INTERVAL_MS",
            e.commit_interval_ms.to_string(),
        ),
        (
            "CXPULSE__ENGINE__SHUTDOWN_DRAIN_MS",
            e.shutdown_drain_ms.to_string(),
        ),
        (
            "CXPULSE__ENGINE__RELOAD_INTERVAL_MS",
            e.reload_interval_ms.to_string(),
        ),
        (
            "CXPULSE__ENGINE__STATE_MEMORY_LIMIT",
            e.state_memory_limit.clone(),
        ),
    ]
    .into_iter()
    .chain(extra.iter().map(|(k, v)| (*k, (*v).to_owned())))
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

fn absolute(path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir().expect("cwd").join(path)
    }
}
