//! Request/reply (`jetway.requests.v1`): [`Client::request`] sends one request and waits for its
//! answer; [`Client::serve`] attaches a processor that answers the requests of some subjects with an
//! async handler, holding at most a given number at once, and attaches again by itself when the
//! connection breaks.

use std::{collections::HashMap, future::Future, sync::Arc, time::Duration};

use jetway_api::jetway::requests::v1::{
    self as api, answer::Result as AnswerResult, request_response::Answer as ResponseAnswer,
    respond_request::Message as Inbound, respond_response::Message as Outbound,
};
use tokio::{sync::mpsc, task::JoinSet};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;

use crate::{Client, Error, trace};

/// Reconnect backoff of a processor: the first pause, doubled after each failed attempt up to the
/// cap.
const SERVE_BACKOFF: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(5));

/// How much longer than a request's own timeout the client waits for it: the server's answer, or
/// its DEADLINE_EXCEEDED, comes within the timeout; the slack only bounds a server that stopped
/// answering.
const DEADLINE_SLACK: Duration = Duration::from_secs(1);

/// A request's payload with its media type and custom headers; also what a reply carries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Message {
    /// The bytes.
    pub data: Vec<u8>,
    /// Their media type; empty: none.
    pub content_type: String,
    /// Custom headers (not `Nats-*`, `WS-*`, `JW-*`, `Content-Type`, `traceparent`, `tracestate`).
    pub headers: HashMap<String, String>,
}

impl Message {
    /// A message of `data` without content type or headers.
    pub fn new(data: impl Into<Vec<u8>>) -> Self {
        Message {
            data: data.into(),
            ..Message::default()
        }
    }

    /// Sets the media type.
    pub fn content_type(mut self, content_type: impl Into<String>) -> Self {
        self.content_type = content_type.into();
        self
    }

    /// Adds a custom header.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.insert(name.into(), value.into());
        self
    }
}

/// How a request was answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// A reply with a payload.
    Reply(Message),
    /// Handled, nothing to send back.
    NoContent,
}

/// A request handed to a processor's handler.
#[derive(Debug, Clone)]
pub struct Request {
    /// The subject it was sent on.
    pub subject: String,
    /// What was sent.
    pub message: Message,
    /// How long the requester still waits, if it said.
    pub timeout: Option<Duration>,
    /// The requester's W3C trace context, continued by the server.
    pub trace_parent: Option<String>,
}

/// A handler's failure: the requester's call fails with this code and message. The server accepts
/// UNKNOWN, INVALID_ARGUMENT, NOT_FOUND, ALREADY_EXISTS, PERMISSION_DENIED, RESOURCE_EXHAUSTED,
/// FAILED_PRECONDITION, ABORTED, OUT_OF_RANGE, UNIMPLEMENTED, INTERNAL, UNAVAILABLE and
/// UNAUTHENTICATED; another code ends the processor's stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The gRPC code.
    pub code: Code,
    /// The message, at most 1024 bytes.
    pub message: String,
}

impl Failure {
    /// A failure with `code` and `message`.
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Failure {
            code,
            message: message.into(),
        }
    }
}

/// What a processor serves: [`Client::serve`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServeOptions {
    subjects: Vec<String>,
    queue_group: Option<String>,
    max_in_flight: u32,
}

impl ServeOptions {
    /// Serves `subjects` (`*` and a last `>` allowed), one request at a time, in the default queue
    /// group (one per subject pattern).
    pub fn new<I, S>(subjects: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        ServeOptions {
            subjects: subjects.into_iter().map(Into::into).collect(),
            queue_group: None,
            max_in_flight: 1,
        }
    }

    /// Joins the NATS queue group `group` on every subject.
    pub fn queue_group(mut self, group: impl Into<String>) -> Self {
        self.queue_group = Some(group.into());
        self
    }

    /// Handles up to `n` requests at once (0 counts as 1); the server hands no more.
    pub fn concurrency(mut self, n: u32) -> Self {
        self.max_in_flight = n.max(1);
        self
    }
}

impl Client {
    /// Sends `data` on `subject` and waits for the answer, at most the client's request timeout.
    /// Fails with UNAVAILABLE at once when nothing serves the subject, with DEADLINE_EXCEEDED when
    /// no answer came in time, and with the processor's status when it failed the request.
    ///
    /// Concurrent requests share one stream (see
    /// [`ClientBuilder::shared_request_stream`](crate::ClientBuilder::shared_request_stream)):
    /// each gets its own answer or status; if the stream breaks, the requests waiting on it fail
    /// with UNAVAILABLE and the next request opens a new one.
    ///
    /// ```no_run
    /// # async fn run(client: jetway_client::Client) -> Result<(), jetway_client::Error> {
    /// let answer = client.request("greet.alice", "hi").await?;
    /// println!("{answer:?}");
    /// # Ok(()) }
    /// ```
    pub async fn request(
        &self,
        subject: impl Into<String>,
        data: impl Into<Vec<u8>>,
    ) -> Result<Answer, Error> {
        self.request_with(subject, Message::new(data), None).await
    }

    /// [`Client::request`] with a content type and headers, waiting at most `timeout` (`None`: the
    /// client's request timeout).
    pub async fn request_with(
        &self,
        subject: impl Into<String>,
        message: Message,
        timeout: Option<Duration>,
    ) -> Result<Answer, Error> {
        let mut request = api::RequestRequest {
            subject: subject.into(),
            data: message.data.into(),
            content_type: message.content_type,
            headers: message.headers,
            timeout: timeout.map(Into::into),
        };
        let response = match self.request_stream.as_deref() {
            Some(stream) => {
                // A stream has no deadline per request: the request says how long it waits, and
                // the server answers DEADLINE_EXCEEDED itself when that passes.
                let timeout = timeout.or(self.request_timeout());
                request.timeout = timeout.map(Into::into);
                let (trace_parent, trace_state) = trace::headers();
                let request = api::RequestStreamRequest {
                    id: 0,
                    request: Some(request),
                    trace_parent,
                    trace_state,
                };
                let left = timeout.map(|timeout| timeout + DEADLINE_SLACK);
                stream.call(&self.requests, request, left).await?
            }
            None => {
                // With a timeout, the call's deadline leaves the server time to say
                // DEADLINE_EXCEEDED itself; without one, the server waits as long as the call's
                // deadline allows.
                let deadline = timeout
                    .map(|timeout| timeout + DEADLINE_SLACK)
                    .or(self.request_timeout());
                self.requests
                    .clone()
                    .request(self.request_within(request, deadline))
                    .await?
                    .into_inner()
            }
        };
        match response.answer {
            Some(ResponseAnswer::Reply(reply)) => Ok(Answer::Reply(message_of(reply))),
            Some(ResponseAnswer::NoContent(_)) => Ok(Answer::NoContent),
            None => Err(Error::Protocol("a Request answered with nothing".into())),
        }
    }

    /// Serves the requests of `options`' subjects with `handler` until the server refuses the
    /// processor for good (a bad subject, too high a concurrency) or the returned future is
    /// dropped. Up to `options`' concurrency requests are handled at once, each in a task of its
    /// own. When the connection breaks or the server shuts down, it attaches again, with backoff;
    /// the requests held then have already failed with UNAVAILABLE at the server.
    ///
    /// ```no_run
    /// use jetway_client::{Answer, Message, ServeOptions};
    /// # async fn run(client: jetway_client::Client) -> Result<(), jetway_client::Error> {
    /// client
    ///     .serve(ServeOptions::new(["greet.*"]).concurrency(8), |request| async move {
    ///         let name = request.subject.trim_start_matches("greet.");
    ///         Ok(Answer::Reply(Message::new(format!("hello {name}"))))
    ///     })
    ///     .await
    /// # }
    /// ```
    pub async fn serve<F, Fut>(&self, options: ServeOptions, handler: F) -> Result<(), Error>
    where
        F: Fn(Request) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Answer, Failure>> + Send + 'static,
    {
        let handler = Arc::new(handler);
        let mut pause = SERVE_BACKOFF.0;
        loop {
            match self.serve_once(&options, &handler).await {
                // Attached and served until the connection broke: try again at once.
                Ok(true) => pause = SERVE_BACKOFF.0,
                Ok(false) => {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(SERVE_BACKOFF.1);
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// One Respond stream: `Ok(true)` if it attached and then broke, `Ok(false)` if it could not
    /// attach for a reason that may pass, `Err` if the server refused the processor for good.
    async fn serve_once<F, Fut>(
        &self,
        options: &ServeOptions,
        handler: &Arc<F>,
    ) -> Result<bool, Error>
    where
        F: Fn(Request) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Answer, Failure>> + Send + 'static,
    {
        let capacity = usize::try_from(options.max_in_flight).unwrap_or(1).max(1) + 1;
        let (tx, rx) = mpsc::channel(capacity);
        let attach = api::RespondRequest {
            message: Some(Inbound::Attach(api::Attach {
                subjects: options.subjects.clone(),
                queue_group: options.queue_group.clone(),
                max_in_flight: options.max_in_flight,
            })),
        };
        if tx.send(attach).await.is_err() {
            return Ok(false);
        }
        let mut responses = match self.requests.clone().respond(ReceiverStream::new(rx)).await {
            Ok(responses) => responses.into_inner(),
            Err(status) => return final_or_retry(status.into()),
        };
        let mut attached = false;
        // The handlers of this stream: dropped (aborted) with it.
        let mut handlers = JoinSet::new();
        loop {
            tokio::select! {
                Some(_) = handlers.join_next(), if !handlers.is_empty() => {}
                message = responses.message() => match message {
                    Ok(Some(api::RespondResponse { message: Some(Outbound::Attached(_)) })) => {
                        attached = true;
                    }
                    Ok(Some(api::RespondResponse { message: Some(Outbound::Request(request)) })) => {
                        let id = request.id;
                        let work = handler(request_of(request));
                        let tx = tx.clone();
                        handlers.spawn(async move {
                            let result = match work.await {
                                Ok(Answer::Reply(message)) => AnswerResult::Reply(reply_of(message)),
                                Ok(Answer::NoContent) => AnswerResult::NoContent(api::NoContent {}),
                                Err(failure) => AnswerResult::Error(api::AnswerError {
                                    code: failure.code as i32,
                                    message: failure.message,
                                }),
                            };
                            let answer = api::RespondRequest {
                                message: Some(Inbound::Answer(api::Answer { id, result: Some(result) })),
                            };
                            // A closed stream means the request already failed at the server.
                            tx.send(answer).await.ok();
                        });
                    }
                    Ok(Some(_)) => {
                        return Err(Error::Protocol("a Respond message with nothing in it".into()));
                    }
                    Ok(None) => return Ok(attached),
                    Err(status) if attached => {
                        // A broken stream after attaching is retried, unless this processor's own
                        // answer was refused (a bug the caller must see).
                        return match status.code() {
                            Code::InvalidArgument => Err(status.into()),
                            _ => Ok(true),
                        };
                    }
                    Err(status) => return final_or_retry(status.into()),
                },
            }
        }
    }
}

/// An error before attaching: retried if it may pass, else returned.
fn final_or_retry(error: Error) -> Result<bool, Error> {
    match error.code() {
        Some(Code::InvalidArgument | Code::ResourceExhausted | Code::Unimplemented) => Err(error),
        _ => Ok(false),
    }
}

fn message_of(reply: api::Reply) -> Message {
    Message {
        data: reply.data.to_vec(),
        content_type: reply.content_type,
        headers: reply.headers,
    }
}

fn reply_of(message: Message) -> api::Reply {
    api::Reply {
        data: message.data.into(),
        content_type: message.content_type,
        headers: message.headers,
    }
}

fn request_of(request: api::IncomingRequest) -> Request {
    Request {
        subject: request.subject,
        message: Message {
            data: request.data.to_vec(),
            content_type: request.content_type,
            headers: request.headers,
        },
        timeout: request
            .timeout
            .and_then(|timeout| Duration::try_from(&timeout).ok()),
        trace_parent: request.trace_parent,
    }
}
