//! Owns choosing the loopback ports of servers that a test stops and starts again on the same port.
//!
//! A port the kernel hands out for a bind to port 0 lies in its ephemeral range, where every
//! outgoing connection also takes its source port. While such a server is down, a connection
//! made meanwhile (a client reconnecting to it, through TCP's simultaneous open even to itself,
//! or any other test's) can be given that very port as its source, and the restart then fails
//! with "address in use". Ports below the ephemeral range are never given to outgoing
//! connections, so a server restarts on them reliably.

use std::collections::BTreeSet;
use std::hash::{BuildHasher, RandomState};
use std::net::TcpListener;
use std::sync::{Mutex, PoisonError};

/// The lowest port handed out: above the well-known and most registered service ports.
const FLOOR: u16 = 10_000;

/// The fewest ports between [`FLOOR`] and the ephemeral range worth choosing from; with fewer
/// (a machine whose ephemeral range starts low), ports come from the kernel as before.
const MIN_SPAN: u16 = 1_000;

/// Where Linux documents its ephemeral range, and its default when that cannot be read.
const EPHEMERAL_RANGE_FILE: &str = "/proc/sys/net/ipv4/ip_local_port_range";
const DEFAULT_EPHEMERAL_LOW: u16 = 32_768;

/// Ports this process has handed out, so that two servers of one test binary never get the same
/// one even when the first is down at the time.
static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

/// A port on 127.0.0.1 that is free now, below the kernel's ephemeral range, and not handed out
/// before by this process. Use it for a server that a test restarts on the same port.
pub fn free_port() -> u16 {
    let low = ephemeral_low();
    if low < FLOOR.saturating_add(MIN_SPAN) {
        return kernel_port();
    }
    let span = low - FLOOR;
    // A different start in every call and process, so that test binaries running side by side
    // rarely try the same ports.
    let start = u16::try_from(RandomState::new().hash_one(std::process::id()) % u64::from(span))
        .unwrap_or(0);
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(PoisonError::into_inner);
    for step in 0..span {
        let port = FLOOR + (start + step) % span;
        if !handed_out.contains(&port) && TcpListener::bind(("127.0.0.1", port)).is_ok() {
            handed_out.insert(port);
            return port;
        }
    }
    kernel_port()
}

/// The first port of the kernel's ephemeral range.
fn ephemeral_low() -> u16 {
    std::fs::read_to_string(EPHEMERAL_RANGE_FILE)
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse().ok())
        .unwrap_or(DEFAULT_EPHEMERAL_LOW)
}

/// A free port chosen by the kernel (in its ephemeral range).
fn kernel_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .unwrap_or_else(|e| panic!("cannot find a free port: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_free_distinct_and_below_the_ephemeral_range() {
        let ports: Vec<u16> = (0..50).map(|_| free_port()).collect();
        let distinct: BTreeSet<u16> = ports.iter().copied().collect();
        assert_eq!(distinct.len(), ports.len(), "{ports:?}");
        let low = ephemeral_low();
        if low >= FLOOR + MIN_SPAN {
            assert!(
                ports.iter().all(|&port| (FLOOR..low).contains(&port)),
                "{ports:?} against an ephemeral range from {low}"
            );
        }
        for port in ports {
            TcpListener::bind(("127.0.0.1", port)).expect("still free");
        }
    }
}
