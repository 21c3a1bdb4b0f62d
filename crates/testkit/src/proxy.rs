//! A TCP proxy on a free loopback port that can cut every connection through it, or hold the link
//! down for a while: for tests of what a client does when its connection drops while the server
//! behind it stays up (a network blip, a broken link), which stopping the server cannot show.

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
};

use tokio::{
    net::{TcpListener, TcpStream},
    task::{AbortHandle, JoinHandle},
};

/// Forwards every connection it accepts to `target` until [`TcpProxy::cut`] or drop.
pub struct TcpProxy {
    addr: SocketAddr,
    connections: Arc<Mutex<Vec<AbortHandle>>>,
    accepted: Arc<AtomicUsize>,
    /// While set, connections are closed as soon as they are accepted.
    blocked: Arc<AtomicBool>,
    accept: JoinHandle<()>,
}

impl TcpProxy {
    /// Listens on a free loopback port and forwards to `127.0.0.1:target_port`.
    #[expect(
        clippy::expect_used,
        reason = "test support: a proxy that cannot start fails the test that asked for it, with the reason"
    )]
    pub async fn start(target_port: u16) -> TcpProxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy");
        let addr = listener.local_addr().expect("the proxy's address");
        let connections: Arc<Mutex<Vec<AbortHandle>>> = Arc::default();
        let accepted = Arc::new(AtomicUsize::new(0));
        let blocked = Arc::new(AtomicBool::new(false));
        let accept = tokio::spawn({
            let connections = Arc::clone(&connections);
            let accepted = Arc::clone(&accepted);
            let blocked = Arc::clone(&blocked);
            async move {
                while let Ok((mut inbound, _)) = listener.accept().await {
                    if blocked.load(Ordering::SeqCst) {
                        continue;
                    }
                    accepted.fetch_add(1, Ordering::SeqCst);
                    let forward = tokio::spawn(async move {
                        if let Ok(mut outbound) =
                            TcpStream::connect(("127.0.0.1", target_port)).await
                        {
                            // Ends when either side closes; the error is the cut itself.
                            tokio::io::copy_bidirectional(&mut inbound, &mut outbound)
                                .await
                                .ok();
                        }
                    });
                    connections
                        .lock()
                        .expect("the proxy's lock is never poisoned")
                        .push(forward.abort_handle());
                }
            }
        });
        TcpProxy {
            addr,
            connections,
            accepted,
            blocked,
            accept,
        }
    }

    /// The proxy as a NATS URL.
    pub fn url(&self) -> String {
        format!("nats://{}", self.addr)
    }

    /// How many connections the proxy has accepted so far (a client that reconnects after
    /// [`TcpProxy::cut`] adds one).
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Closes every connection through the proxy; new ones are still accepted.
    #[expect(
        clippy::expect_used,
        reason = "no code panics while holding the proxy's lock, so it is never poisoned"
    )]
    pub fn cut(&self) {
        for connection in self
            .connections
            .lock()
            .expect("the proxy's lock is never poisoned")
            .drain(..)
        {
            connection.abort();
        }
    }
}

impl TcpProxy {
    /// Takes the link down: cuts every connection through the proxy and closes new ones at once
    /// (they are not counted as accepted), until [`TcpProxy::unblock`].
    pub fn block(&self) {
        self.blocked.store(true, Ordering::SeqCst);
        self.cut();
    }

    /// Brings the link back up after [`TcpProxy::block`].
    pub fn unblock(&self) {
        self.blocked.store(false, Ordering::SeqCst);
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}
