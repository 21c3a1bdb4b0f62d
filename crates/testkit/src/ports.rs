//! Owns choosing the loopback ports of servers that a test stops and starts again on the same port.
//!
//! A port the kernel hands out for a bind to port 0 lies in its ephemeral range, where every
//! outgoing connection also takes its source port. While such a server is down, a connection
//! made meanwhile (a client reconnecting to it, through TCP's simultaneous open even to itself,
//! or any other test's) can be given that very port as its source, and the restart then fails
//! with "address in use". Ports below the ephemeral range are never given to outgoing
//! connections, so a server restarts on them reliably.
//!
//! Test binaries running side by side (two `cargo test` runs on one machine) must not hand out the
//! same port either: while one binary's server is down, the other's free-port check would find its
//! port free. Each port handed out is therefore also reserved across processes, with an exclusive
//! lock on a file named after it in the temp directory, held until the process exits.

use std::collections::BTreeMap;
use std::fs::{File, TryLockError};
use std::hash::{BuildHasher, RandomState};
use std::net::TcpListener;
use std::path::PathBuf;
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
/// one even when the first is down at the time, each with the locked file that reserves it from
/// other processes (`None` where no lock file could be made).
static HANDED_OUT: Mutex<BTreeMap<u16, Option<File>>> = Mutex::new(BTreeMap::new());

/// The directory of the files that reserve ports across processes.
const LOCK_DIR: &str = "jetway-testkit-ports";

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
    free_port_from(start, span)
}

/// The first port from `FLOOR + start` on (wrapping within `span`) that is free, not handed out
/// by this process, and not reserved by another.
fn free_port_from(start: u16, span: u16) -> u16 {
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(PoisonError::into_inner);
    for step in 0..span {
        let port = FLOOR + (start + step) % span;
        if handed_out.contains_key(&port) || TcpListener::bind(("127.0.0.1", port)).is_err() {
            continue;
        }
        match reserve(port) {
            Reservation::Taken => continue,
            Reservation::Held(lock) => {
                handed_out.insert(port, lock);
                return port;
            }
        }
    }
    kernel_port()
}

/// The outcome of reserving a port across processes.
enum Reservation {
    /// Another process holds it.
    Taken,
    /// Ours while the file stays open; `None` if no lock file could be made (the port is used
    /// unreserved, as before reservations existed).
    Held(Option<File>),
}

/// Takes the exclusive lock of `port`'s file without waiting.
fn reserve(port: u16) -> Reservation {
    let file = std::fs::create_dir_all(lock_dir()).and_then(|()| {
        File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(lock_file(port))
    });
    let Ok(file) = file else {
        return Reservation::Held(None);
    };
    match file.try_lock() {
        Ok(()) => Reservation::Held(Some(file)),
        Err(TryLockError::WouldBlock) => Reservation::Taken,
        Err(TryLockError::Error(_)) => Reservation::Held(None),
    }
}

fn lock_dir() -> PathBuf {
    std::env::temp_dir().join(LOCK_DIR)
}

fn lock_file(port: u16) -> PathBuf {
    lock_dir().join(format!("{port}.lock"))
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
    use std::collections::BTreeSet;

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

    #[test]
    fn a_port_is_reserved_from_other_processes_and_skipped_when_they_hold_it() {
        let low = ephemeral_low();
        if low < FLOOR + MIN_SPAN {
            return;
        }
        let span = low - FLOOR;
        // Another process's reservation: a lock on the file of the first free port from here
        // (flock locks of two open files conflict within one process too).
        let start = u16::try_from(std::process::id() % u32::from(span)).unwrap_or(0);
        let (theirs, held) = (0..span)
            .map(|step| FLOOR + (start + step) % span)
            .filter(|port| TcpListener::bind(("127.0.0.1", *port)).is_ok())
            .find_map(|port| match reserve(port) {
                Reservation::Held(Some(lock)) => Some((port, lock)),
                _ => None,
            })
            .expect("a port to reserve");
        let ours = free_port_from(theirs - FLOOR, span);
        assert_ne!(ours, theirs, "a port another process holds is skipped");
        drop(held);
        let again = File::options().write(true).open(lock_file(ours)).unwrap();
        assert!(
            matches!(again.try_lock(), Err(TryLockError::WouldBlock)),
            "port {ours} stays reserved while this process runs"
        );
    }
}
