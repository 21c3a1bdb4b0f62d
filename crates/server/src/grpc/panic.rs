//! Turns a panic inside a gRPC handler into an INTERNAL status with the fixed message, and logs the
//! panic. Without this, a panic would abort the HTTP/2 connection and fail every other call on it.

use std::{
    any::Any,
    future::Future,
    panic::AssertUnwindSafe,
    pin::Pin,
    task::{Context, Poll},
};

use futures::FutureExt;
use tonic::{Status, body::Body, codegen::http};
use tracing::{Instrument, Span};

use crate::grpc::status::INTERNAL_MESSAGE;

/// The tower layer; see the module docs.
#[derive(Debug, Clone, Copy, Default)]
pub struct CatchPanicLayer;

impl<S> tower::Layer<S> for CatchPanicLayer {
    type Service = CatchPanic<S>;

    fn layer(&self, inner: S) -> CatchPanic<S> {
        CatchPanic { inner }
    }
}

/// A service that answers INTERNAL when the inner one panics.
#[derive(Debug, Clone)]
pub struct CatchPanic<S> {
    inner: S,
}

impl<S, B> tower::Service<http::Request<B>> for CatchPanic<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        // A handler may panic while building its future as well as while it runs.
        let future = match std::panic::catch_unwind(AssertUnwindSafe(|| self.inner.call(request))) {
            Ok(future) => future,
            Err(panic) => return Box::pin(std::future::ready(Ok(internal(panic)))),
        };
        Box::pin(async move {
            AssertUnwindSafe(future)
                .catch_unwind()
                .await
                .unwrap_or_else(|panic| Ok(internal(panic)))
        })
    }
}

/// Spawns the task behind a streaming response. If it panics, the client gets INTERNAL through `tx`
/// instead of a stream that just ends, which would read as complete.
///
/// The task runs inside the call's span (the current one), as the handler did: a spawned task
/// starts outside every span, and the spans it opens (a PublishStream's publish spans) would each
/// begin a trace of their own instead of continuing the caller's.
pub fn spawn_guarded<R: Send + 'static>(
    tx: tokio::sync::mpsc::Sender<Result<R, Status>>,
    task: impl Future<Output = ()> + Send + 'static,
) {
    // Chained rather than awaited in an `async` block: a block would keep the task it captured and
    // the future it awaits side by side, doubling what every streaming call's task holds (an idle
    // Events session's task measured 21.6 KB instead of 10.8).
    let guarded = AssertUnwindSafe(task.instrument(Span::current()))
        .catch_unwind()
        .then(move |result| async move {
            if let Err(panic) = result {
                tx.send(Err(log_panic(panic))).await.ok();
            }
        });
    tokio::spawn(guarded);
}

/// Logs a caught panic and returns the INTERNAL status for it.
pub fn log_panic(panic: Box<dyn Any + Send>) -> Status {
    let message = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned());
    tracing::error!(panic = %message, "a request handler panicked");
    Status::internal(INTERNAL_MESSAGE)
}

fn internal(panic: Box<dyn Any + Send>) -> http::Response<Body> {
    log_panic(panic).into_http()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::{Layer, Service, ServiceExt};

    #[tokio::test]
    async fn a_panicking_handler_answers_internal() {
        let panicking = tower::service_fn(|_: http::Request<()>| async {
            if true {
                panic!("boom");
            }
            Ok::<_, std::convert::Infallible>(http::Response::new(Body::empty()))
        });
        let mut service = CatchPanicLayer.layer(panicking);
        let response = service
            .ready()
            .await
            .unwrap()
            .call(http::Request::new(()))
            .await
            .unwrap();
        let status = Status::from_header_map(response.headers()).expect("a grpc-status header");
        assert_eq!(status.code(), tonic::Code::Internal);
        assert_eq!(status.message(), INTERNAL_MESSAGE);
    }

    #[tokio::test]
    async fn a_panicking_stream_task_ends_its_stream_with_internal() {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<(), Status>>(1);
        spawn_guarded(tx, async { panic!("boom") });
        let status = rx.recv().await.expect("a status").expect_err("an error");
        assert_eq!(status.code(), tonic::Code::Internal);
        assert!(rx.recv().await.is_none(), "then the stream ends");
    }
}
