//! Server-streaming responses fed by a core stream: a task per call reads items, encodes them, and
//! sends them through a bounded channel that tonic drains. When a send fails or the channel closes,
//! the client has gone: the task ends and drops the core stream (and the JetStream consumer behind
//! it). Server shutdown ends the stream with the status the caller chose, and a reload of the
//! clients file that takes away what the call was allowed ends it with that refusal.

use std::pin::Pin;

use futures::{Stream, StreamExt, stream::BoxStream};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::Status;

use crate::{
    auth::Grant,
    grpc::status::{self, ToStatus},
};

/// Responses buffered per stream before the task waits for the client to read. With what the core
/// stream behind it holds (a reader: at most a pull and a half, see `jetway_core::reads::READ_BATCH`),
/// this is what one slow client costs the server, so it stays small.
const STREAM_BUFFER: usize = 64;

/// Responses buffered per bidirectional session (Events, PublishStream), whose contents are already
/// bounded by the session's own window (`maxProcessingEvents`, or the requests in flight). 256 lets
/// tonic pack more responses into each HTTP/2 write than 64 did (Events: jetway-server's CPU per
/// delivered event fell by about a tenth); 1,024 measured worse again.
pub const SESSION_BUFFER: usize = 256;

/// The response stream of a streaming call.
pub type Responses<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// Spawns the task that sends `items`, encoded, to the client until they end or fail, the client
/// leaves, `grant` is revoked (then the stream ends with UNAUTHENTICATED or PERMISSION_DENIED), or
/// `shutdown` is cancelled (then the stream ends with UNAVAILABLE, telling the client
/// `on_shutdown`: how to carry on); returns the stream tonic sends from.
pub fn forward<T, E, R>(
    mut items: BoxStream<'static, Result<T, E>>,
    encode: impl Fn(T) -> Result<R, Status> + Send + 'static,
    grant: Grant,
    shutdown: CancellationToken,
    on_shutdown: &'static str,
) -> Responses<R>
where
    T: Send + 'static,
    E: ToStatus + Send + 'static,
    R: Send + 'static,
{
    let (tx, rx) = mpsc::channel(STREAM_BUFFER);
    crate::grpc::panic::spawn_guarded(tx.clone(), async move {
        let shutting_down = || status::shutting_down(on_shutdown);
        let mut grant = grant;
        let revoked = grant.revoked();
        tokio::pin!(revoked);
        let end = loop {
            let next = tokio::select! {
                biased;
                () = shutdown.cancelled() => break Some(shutting_down()),
                () = tx.closed() => break None,
                revoked = &mut revoked => break Some(revoked.to_status()),
                next = items.next() => next,
            };
            let response = match next {
                None => break None,
                Some(Ok(item)) => encode(item),
                Some(Err(err)) => Err(err.to_status()),
            };
            let response = match response {
                Ok(response) => response,
                Err(status) => break Some(status),
            };
            tokio::select! {
                sent = tx.send(Ok(response)) => if sent.is_err() {
                    break None;
                },
                () = shutdown.cancelled() => break Some(shutting_down()),
            }
        };
        // The core stream goes first, so its cleanup does not wait for a slow client.
        drop(items);
        if let Some(status) = end {
            finish(&tx, status).await;
        }
    });
    Box::pin(ReceiverStream::new(rx))
}

/// Ends a stream with `status`, waiting while the client is slow to read, even at shutdown: a stream
/// that ended without it would end OK once the client read what was buffered, which tells it that
/// the call completed. The wait is bounded all the same: the client reads, leaves, or has its
/// connection cut at the end of the shutdown grace, and then there is no one to tell.
pub async fn finish<R>(tx: &mpsc::Sender<Result<R, Status>>, status: Status) {
    tx.send(Err(status)).await.ok();
}
