//! A pretend Kafka broker from before transactions: it answers ApiVersions
//! with only ApiVersions and Metadata (no InitProducerId, no transactions)
//! and Metadata with itself and no topics. Enough for a client to connect
//! and find out that the cluster cannot run transactions.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

const API_VERSIONS: i16 = 18;
const METADATA: i16 = 3;
const UNSUPPORTED_VERSION: i16 = 35;

/// The broker, listening until dropped.
pub struct OldBroker {
    port: u16,
    stop: Arc<AtomicBool>,
}

impl OldBroker {
    /// Listens on a free 127.0.0.1 port.
    pub fn start() -> OldBroker {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
        let port = listener.local_addr().expect("addr").port();
        listener.set_nonblocking(true).expect("nonblocking");
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        std::thread::spawn(move || {
            while !stopped.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        std::thread::spawn(move || serve(stream, port));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        OldBroker { port, stop }
    }

    /// `host:port` to use as `bootstrap.servers`.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for OldBroker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Answers requests on one connection until the client goes away.
fn serve(mut stream: TcpStream, port: u16) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(60)));
    loop {
        let mut size = [0u8; 4];
        if stream.read_exact(&mut size).is_err() {
            return;
        }
        let mut request = vec![0u8; i32::from_be_bytes(size).max(0) as usize];
        if stream.read_exact(&mut request).is_err() || request.len() < 8 {
            return;
        }
        let api_key = i16::from_be_bytes([request[0], request[1]]);
        let version = i16::from_be_bytes([request[2], request[3]]);
        let correlation = &request[4..8];
        let body = match api_key {
            // Version 0 only: a newer request gets UNSUPPORTED_VERSION and
            // the version list, and the client asks again with version 0.
            API_VERSIONS => {
                let error = if version == 0 { 0 } else { UNSUPPORTED_VERSION };
                let mut b = error.to_be_bytes().to_vec();
                b.extend(2i32.to_be_bytes());
                for key in [API_VERSIONS, METADATA] {
                    b.extend(key.to_be_bytes());
                    b.extend(0i16.to_be_bytes());
                    b.extend(0i16.to_be_bytes());
                }
                b
            }
            METADATA => {
                let host = b"127.0.0.1";
                let mut b = 1i32.to_be_bytes().to_vec();
                b.extend(1i32.to_be_bytes());
                b.extend((host.len() as i16).to_be_bytes());
                b.extend(host);
                b.extend(i32::from(port).to_be_bytes());
                b.extend(0i32.to_be_bytes());
                b
            }
            _ => return,
        };
        let mut response = ((body.len() + 4) as i32).to_be_bytes().to_vec();
        response.extend(correlation);
        response.extend(body);
        if stream.write_all(&response).is_err() {
            return;
        }
    }
}
