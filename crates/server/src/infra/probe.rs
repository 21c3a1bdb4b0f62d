//! `jetway-server healthcheck`: asks a running server on this host whether it is ready, for container
//! healthchecks. The runtime image has no shell, curl or wget, so the binary probes itself: it sends
//! `GET /readyz` to the health port from the same configuration the server reads, and exits 0 only on
//! `200 OK`.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::time::Duration;

use crate::infra::config::Config;

/// How long the probe waits to connect, and then for the answer. A container runtime has its own
/// timeout; this one keeps a wedged server from holding the probe until then.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// The most of the answer read: the status line is all the probe needs.
const MAX_ANSWER: u64 = 1024;

/// Why the server is not ready, as the probe saw it.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// Nothing answered on the health port, or the answer did not arrive in time.
    #[error("cannot reach {addr}: {source}")]
    Unreachable {
        /// The health address probed.
        addr: SocketAddr,
        /// The I/O failure.
        source: std::io::Error,
    },
    /// The server answered, but not with `200 OK`.
    #[error("{addr}/readyz answered {status_line:?}")]
    NotReady {
        /// The health address probed.
        addr: SocketAddr,
        /// The first line of the answer.
        status_line: String,
    },
}

/// The address a probe on this host uses to reach the health port: the listen address, or loopback
/// when the server listens on every interface.
pub fn health_addr(config: &Config) -> SocketAddr {
    let host = match config.listen_host {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        host => host,
    };
    SocketAddr::new(host, config.health_port)
}

/// Asks `addr` for `/readyz` and succeeds only on `200 OK`.
pub fn check(addr: SocketAddr) -> Result<(), ProbeError> {
    let unreachable = |source| ProbeError::Unreachable { addr, source };
    let mut stream = TcpStream::connect_timeout(&addr, PROBE_TIMEOUT).map_err(unreachable)?;
    stream
        .set_read_timeout(Some(PROBE_TIMEOUT))
        .and_then(|()| stream.set_write_timeout(Some(PROBE_TIMEOUT)))
        .map_err(unreachable)?;
    stream
        .write_all(b"GET /readyz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .map_err(unreachable)?;
    let mut answer = Vec::new();
    stream
        .take(MAX_ANSWER)
        .read_to_end(&mut answer)
        .map_err(unreachable)?;
    let status_line = String::from_utf8_lossy(&answer)
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned();
    // "HTTP/1.1 200 OK": the version varies with the server, the code is the second word.
    if status_line.split_whitespace().nth(1) == Some("200") {
        Ok(())
    } else {
        Err(ProbeError::NotReady { addr, status_line })
    }
}
