//! A local Kafka-compatible broker (noida-db) on a free 127.0.0.1 port, for
//! tests and the demo. The process is stopped when the handle is dropped.

use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The pinned broker version; `pip install noida-db==` this.
pub const NOIDA_DB_VERSION: &str = "0.2.3";

/// Why the local broker could not start.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// The broker binary was not found.
    #[error(
        "the noida-db broker is not installed ({0}); install it with: scripts/broker.sh install (or pip install noida-db==0.2.3), or name its executable in NOIDA_DB_BIN"
    )]
    NotInstalled(String),
    /// Spawning or preparing failed.
    #[error("starting noida-db: {0}")]
    Io(#[from] std::io::Error),
    /// The broker did not accept connections in time.
    #[error("noida-db did not accept connections on 127.0.0.1:{port} within {secs} s")]
    NotReady {
        /// Port it was started on.
        port: u16,
        /// Seconds waited.
        secs: u64,
    },
}

/// A running noida-db broker with its own data directory.
pub struct LocalBroker {
    child: Child,
    port: u16,
    data_dir: tempfile::TempDir,
}

impl LocalBroker {
    /// Starts a broker on a free port with a fresh temporary data directory.
    pub fn start() -> Result<LocalBroker, BrokerError> {
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
            .local_addr()?
            .port();
        Self::start_on(port)
    }

    /// Starts a broker on `port` with a fresh temporary data directory.
    pub fn start_on(port: u16) -> Result<LocalBroker, BrokerError> {
        let data_dir = tempfile::Builder::new()
            .prefix("cxpulse-broker-")
            .tempdir()?;
        let child = spawn(port, data_dir.path())?;
        let mut broker = LocalBroker {
            child,
            port,
            data_dir,
        };
        broker.wait_ready(Duration::from_secs(20))?;
        Ok(broker)
    }

    /// Kills the broker (SIGKILL), as a crash would; its data directory
    /// stays. noida-db writes its data about once a second, so the last
    /// second of acknowledged writes is lost (measured: 112 of 5,000
    /// records produced just before the kill), and not always consistently
    /// across topics and group offsets.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Stops the broker with SIGTERM, as an orderly shutdown or a node
    /// drain would. noida-db keeps what it acknowledged before the signal,
    /// but it goes on acknowledging writes and transaction commits for the
    /// ~0.2 s it takes to exit and loses the last of them (measured: 65 of
    /// 87 transactions committed in that window were gone after the
    /// restart, their records too). Clients that want exact results must
    /// send nothing while it stops. After `timeout` it is killed.
    pub fn stop(&mut self, timeout: Duration) {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let began = std::time::Instant::now();
        while began.elapsed() < timeout {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill();
    }

    /// Starts the broker again on the same port and data directory.
    pub fn restart(&mut self) -> Result<(), BrokerError> {
        self.kill();
        self.child = spawn(self.port, self.data_dir.path())?;
        self.wait_ready(Duration::from_secs(20))
    }

    /// The broker's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `host:port` to use as `bootstrap.servers`.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn wait_ready(&mut self, timeout: Duration) -> Result<(), BrokerError> {
        let started = Instant::now();
        while started.elapsed() < timeout {
            if let Some(status) = self.child.try_wait()? {
                return Err(BrokerError::Io(std::io::Error::other(format!(
                    "noida-db exited at start with {status}"
                ))));
            }
            if TcpStream::connect((Ipv4Addr::LOCALHOST, self.port)).is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(BrokerError::NotReady {
            port: self.port,
            secs: timeout.as_secs(),
        })
    }
}

/// Spawns noida-db on `port`, keeping its data in `data_dir`.
fn spawn(port: u16, data_dir: &Path) -> Result<Child, BrokerError> {
    let mut command = Command::new(broker_binary()?);
    command
        .args([
            "start",
            "--only",
            "kafka",
            "--host",
            "127.0.0.1",
            "--kafka-port",
        ])
        .arg(port.to_string())
        .arg("--data-dir")
        .arg(data_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // A process group of its own: ctrl-c in a terminal signals the
    // foreground group, and the broker must outlive cxpulse's drain (it is
    // stopped afterwards, when its handle is dropped).
    #[cfg(unix)]
    std::os::unix::process::CommandExt::process_group(&mut command, 0);
    Ok(command.spawn()?)
}

impl Drop for LocalBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The noida-db executable itself (not its Python wrapper, which would
/// leave the broker running when killed): `$NOIDA_DB_BIN`, or the binary
/// inside the installed Python package.
pub fn broker_binary() -> Result<PathBuf, BrokerError> {
    if let Some(path) = std::env::var_os("NOIDA_DB_BIN") {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(BrokerError::NotInstalled(format!(
                "NOIDA_DB_BIN names {}, which does not exist",
                path.display()
            )))
        };
    }
    let output = Command::new("python3")
        .args([
            "-c",
            "import os, noida_db; print(os.path.join(os.path.dirname(noida_db.__file__), 'noida-db'))",
        ])
        .stderr(Stdio::null())
        .output()
        .map_err(|e| BrokerError::NotInstalled(format!("python3 not runnable: {e}")))?;
    if !output.status.success() {
        return Err(BrokerError::NotInstalled(
            "python3 cannot import noida_db".to_owned(),
        ));
    }
    let path = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
    if path.is_file() {
        Ok(path)
    } else {
        Err(BrokerError::NotInstalled(format!(
            "{} is missing",
            path.display()
        )))
    }
}
