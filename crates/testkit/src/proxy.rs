//! A TCP proxy a test can cut, to make a real dependency unreachable (the "Postgres
//! unreachable" failure case) without stopping the shared server.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

pub struct TcpProxy {
    addr: SocketAddr,
    up: Arc<AtomicBool>,
    /// Replaced on every cut: cancelling it ends the connections of that period.
    links: Arc<std::sync::Mutex<CancellationToken>>,
    stop: CancellationToken,
}

impl TcpProxy {
    /// Forward connections on a loopback port to `target`.
    pub async fn start(target: SocketAddr) -> TcpProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy address");
        let up = Arc::new(AtomicBool::new(true));
        let links = Arc::new(std::sync::Mutex::new(CancellationToken::new()));
        let stop = CancellationToken::new();
        let (up2, links2, stop2) = (up.clone(), links.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    _ = stop2.cancelled() => return,
                    a = listener.accept() => a,
                };
                let Ok((client, _)) = accepted else { continue };
                if !up2.load(Ordering::SeqCst) {
                    // Cut: accept and close at once, as a dead backend behind a
                    // load balancer looks.
                    drop(client);
                    continue;
                }
                let token = links2.lock().expect("proxy lock").clone();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(target).await else {
                        return;
                    };
                    let (mut client, mut server) = (client, server);
                    tokio::select! {
                        _ = token.cancelled() => {}
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                    }
                });
            }
        });
        TcpProxy {
            addr,
            up,
            links,
            stop,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Close every forwarded connection and refuse new ones until [`TcpProxy::restore`].
    pub fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        let mut links = self.links.lock().expect("proxy lock");
        links.cancel();
        *links = CancellationToken::new();
    }

    pub fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.stop.cancel();
        self.links.lock().expect("proxy lock").cancel();
    }
}
