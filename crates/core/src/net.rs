//! The accept loop every TCP role shares: a connection limit, one tracked task per
//! connection, and shutdown that reaches every connection.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::BytesMut;
use futures::{FutureExt, StreamExt};
use tokio::io::{AsyncRead, DuplexStream};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::codec::{Decoder, Framed};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Accept connections until `shutdown` is cancelled, then wait for every connection task
/// to finish. Each handler gets (a clone of) `shutdown`: when it fires the handler says
/// goodbye in its protocol and returns. A clone, not a child token: a child costs an
/// allocation per connection, and no connection is cancelled on its own from outside. At most `max_connections` run at once;
/// further clients wait in the kernel's backlog rather than costing us memory.
pub async fn serve<H, F>(
    listener: TcpListener,
    max_connections: usize,
    shutdown: CancellationToken,
    handler: H,
) where
    H: Fn(TcpStream, SocketAddr, CancellationToken) -> F + Send + Sync + 'static,
    F: Future<Output = ()> + Send + 'static,
{
    let permits = Arc::new(Semaphore::new(max_connections.max(1)));
    let tracker = TaskTracker::new();
    loop {
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break,
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off briefly instead of spinning.
                    tracing::warn!(error = %e, "Accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        // `map`, not an async block around `fut.await`: a block would hold the future
        // twice (before and while awaiting it), doubling every connection's task.
        let fut = handler(stream, peer, shutdown.clone());
        tracker.spawn(fut.map(move |()| drop(permit)));
    }
    drop(listener);
    tracker.close();
    tracker.wait().await;
}

/// Bytes reserved for a read once a quiet connection has data again: a whole typical
/// command line, so most lines take one read.
const READ_CHUNK: usize = 1024;

/// A byte stream a session runs over: a TCP connection, or the in-memory pipe through
/// which the HTTP gateway carries a session.
pub trait Readiness {
    /// Wait until a read would find data (or the end), without reading. A stream that
    /// cannot tell returns at once; its session then waits with a read buffer.
    fn readable(&self) -> impl Future<Output = std::io::Result<()>> + Send;
}

impl Readiness for TcpStream {
    fn readable(&self) -> impl Future<Output = std::io::Result<()>> + Send {
        TcpStream::readable(self)
    }
}

impl Readiness for DuplexStream {
    /// Gateway sessions are few; they keep a read buffer while quiet.
    async fn readable(&self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The next frame from a framed connection, holding no read buffer while the
/// connection is quiet (where the stream can tell, as TCP can).
///
/// Most connections are idle most of the time; an 8 KiB buffer each would dominate the
/// memory per connection. So when nothing is buffered, the buffer is released and the
/// task waits for readability with no buffer at all; a chunk is reserved only when bytes
/// are there to read. Cancel-safe (both waits are).
pub async fn next_frame<T: AsyncRead + Readiness + Unpin, C: Decoder>(
    framed: &mut Framed<T, C>,
) -> Option<Result<C::Item, C::Error>> {
    if framed.read_buffer().is_empty() {
        if framed.read_buffer().capacity() > 0 {
            *framed.read_buffer_mut() = BytesMut::new();
        }
        if let Err(e) = framed.get_ref().readable().await {
            return Some(Err(e.into()));
        }
        framed.read_buffer_mut().reserve(READ_CHUNK);
    }
    framed.next().await
}

/// After a flush: give back the write buffer's memory (it is empty now).
pub fn release_write_buffer<T, C>(framed: &mut Framed<T, C>) {
    if framed.write_buffer().is_empty() && framed.write_buffer().capacity() > 0 {
        *framed.write_buffer_mut() = BytesMut::new();
    }
}
