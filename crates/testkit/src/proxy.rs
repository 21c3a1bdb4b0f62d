//! A TCP proxy on a free loopback port that can cut every connection through it: for tests of what a
//! client does when its connection drops while the server behind it stays up (a network blip), which
//! stopping the server cannot show.

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
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
    accept: JoinHandle<()>,
}

impl TcpProxy {
    /// Listens on a free loopback port and forwards to `127.0.0.1:target_port`.
    pub async fn start(target_port: u16) -> TcpProxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy");
        let addr = listener.local_addr().expect("the proxy's address");
        let connections: Arc<Mutex<Vec<AbortHandle>>> = Arc::default();
        let accepted = Arc::new(AtomicUsize::new(0));
        let accept = tokio::spawn({
            let connections = Arc::clone(&connections);
            let accepted = Arc::clone(&accepted);
            async move {
                while let Ok((mut inbound, _)) = listener.accept().await {
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

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}
