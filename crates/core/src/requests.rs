//! Request/reply over NATS core messaging: the requester side ([`Requester`]) and the processors that
//! serve subjects ([`Responders`], one [`Processor`] per attached client).
//!
//! Requests and answers are plain NATS messages, so plain NATS clients interoperate both ways: a
//! request carries its payload, a `Content-Type` header, the caller's custom headers, the W3C
//! `traceparent`, and [`TIMEOUT_HEADER`] (how long a Jetway requester waits). An answer is a reply
//! message (payload, content type, headers), or an empty message with [`NO_CONTENT_HEADER`], or a
//! failure in the NATS "services" convention ([`SERVICE_ERROR`], [`SERVICE_ERROR_CODE`]) whose code
//! is a google.rpc.Code number when a Jetway processor sent it.
//!
//! The requester listens on one inbox subscription per server and matches answers to waiting calls
//! itself (rather than through async-nats's `request`), so that an answer arriving after its call
//! gave up is seen, dropped and counted. NATS answers a request nobody subscribes to with a
//! no-responders status at once; that becomes [`ErrorKind::Unavailable`].
//!
//! Processors of one queue group on this server share one NATS queue subscription per subject, so
//! NATS balances between servers and this module between the processors here: a request goes to
//! the processor with the most room, and waits (bounded, within its timeout) when all are full. A
//! processor that leaves fails every request it held at once.

use std::{
    collections::{HashMap, VecDeque},
    sync::{
        Arc, Mutex, Weak,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use async_nats::{HeaderMap, HeaderName, StatusCode, Subject, Subscriber};
use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, Span};

use crate::{
    Error, ErrorKind, Nats, format,
    inbox::Inbox,
    names,
    telemetry::{self, TraceContext},
};

/// The header that marks an answer "handled, no content".
pub const NO_CONTENT_HEADER: &str = "JW-Reply";
/// The value of [`NO_CONTENT_HEADER`].
pub const NO_CONTENT: &str = "no-content";
/// How long the requester waits, in milliseconds; processors see it and queued requests expire by it.
pub const TIMEOUT_HEADER: &str = "JW-Timeout";
/// The NATS "services" error header: the failure's message.
pub const SERVICE_ERROR: &str = "Nats-Service-Error";
/// The NATS "services" error code header; Jetway processors put a google.rpc.Code number in it.
pub const SERVICE_ERROR_CODE: &str = "Nats-Service-Error-Code";
/// Most subjects one processor serves.
pub const MAX_SUBJECTS: usize = 64;
/// Longest failure message a processor may send.
pub const MAX_ERROR_MESSAGE_LEN: usize = 1024;
/// Longest queue group name.
const MAX_QUEUE_GROUP_LEN: usize = 255;

/// The google.rpc.Code numbers Jetway itself answers requests with on the wire.
pub mod codes {
    /// RESOURCE_EXHAUSTED: every processor of the group is full and the wait queue too.
    pub const RESOURCE_EXHAUSTED: u16 = 8;
    /// UNAVAILABLE: the processor holding the request left, or the server shut down.
    pub const UNAVAILABLE: u16 = 14;
}

/// The limits of requesters: how long a request may wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestLimits {
    /// `REQUEST_DEFAULT_TIMEOUT`: the wait of a request that gives neither timeout nor deadline.
    pub default_timeout: Duration,
    /// `REQUEST_MAX_TIMEOUT`: longer timeouts and deadlines are cut to this.
    pub max_timeout: Duration,
}

/// The limits of processors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponderLimits {
    /// `RESPOND_MAX_IN_FLIGHT`: the most requests one processor may declare to hold at once.
    pub max_in_flight: u32,
    /// `RESPOND_MAX_WAITING`: the most requests waiting for a processor of one queue group on this
    /// server while all of them are full.
    pub max_waiting: usize,
    /// How long a queued request waits when its requester did not say (plain NATS requesters):
    /// `REQUEST_DEFAULT_TIMEOUT`.
    pub default_timeout: Duration,
}

/// A payload with its media type and custom headers: a request, or a reply.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Payload {
    /// The bytes.
    pub data: Bytes,
    /// The media type (`Content-Type`); empty: none.
    pub content_type: String,
    /// Custom headers, in order.
    pub headers: Vec<(String, String)>,
}

/// How a request was answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// A reply with a payload.
    Reply(Payload),
    /// Handled, nothing to send back.
    NoContent,
    /// The processor failed the request.
    Failed(Failure),
}

/// A processor's failure, as it travels on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// A google.rpc.Code number from a Jetway processor; any number from other NATS services.
    pub code: u16,
    /// What went wrong.
    pub message: String,
}

/// One request to send.
#[derive(Debug, Clone)]
pub struct RequestSpec {
    /// The concrete subject.
    pub subject: String,
    /// What to send.
    pub payload: Payload,
    /// How long to wait; `None`: [`RequestLimits::default_timeout`]. Cut to the maximum.
    pub timeout: Option<Duration>,
    /// The caller's W3C trace context.
    pub trace: TraceContext,
}

/// Metric names of request/reply.
pub mod metrics {
    /// Requests sent, labelled `outcome` = `ok`, `no_content`, `error` (the processor failed it),
    /// `no_responders`, `timeout`, `invalid` or `unavailable`.
    pub const REQUESTS: &str = "jetway_requests_total";
    /// Request latency, from the call until its answer (or failure).
    pub const REQUEST_DURATION: &str = "jetway_request_duration_seconds";
    /// Answers that arrived after their request gave up, dropped.
    pub const LATE_REPLIES: &str = "jetway_request_late_replies_total";
    /// Processors attached to this server, labelled by `subject` pattern.
    pub const PROCESSORS: &str = "jetway_request_processors_active";
}

/// Sends requests and waits for their answers. Cheap to clone; one per server.
#[derive(Clone)]
pub struct Requester {
    inner: Arc<RequesterInner>,
}

struct RequesterInner {
    nats: Nats,
    limits: RequestLimits,
    /// Where the answers arrive.
    inbox: Inbox,
    meters: Meters,
}

/// The request metrics' handles, resolved once: a registry lookup per request would hash and
/// allocate its labels every time.
struct Meters {
    /// [`metrics::REQUESTS`] by outcome, in the order of [`OUTCOMES`].
    outcomes: [::metrics::Counter; OUTCOMES.len()],
    duration: ::metrics::Histogram,
}

/// The values of the `outcome` label.
const OUTCOMES: [&str; 7] = [
    "ok",
    "no_content",
    "error",
    "no_responders",
    "timeout",
    "invalid",
    "unavailable",
];

impl Meters {
    fn new() -> Self {
        Meters {
            outcomes: OUTCOMES
                .map(|outcome| ::metrics::counter!(metrics::REQUESTS, "outcome" => outcome)),
            duration: ::metrics::histogram!(metrics::REQUEST_DURATION),
        }
    }

    fn count(&self, outcome: usize, started: Instant) {
        self.outcomes[outcome].increment(1);
        self.duration.record(started.elapsed().as_secs_f64());
    }
}

impl Requester {
    /// A requester over `nats`, within `limits`. The inbox is subscribed on the first request.
    pub fn new(nats: Nats, limits: RequestLimits) -> Self {
        Requester {
            inner: Arc::new(RequesterInner {
                limits,
                inbox: Inbox::new(
                    nats.client().clone(),
                    ::metrics::counter!(metrics::LATE_REPLIES),
                ),
                nats,
                meters: Meters::new(),
            }),
        }
    }

    /// Sends `spec` and waits for its answer. Fails with [`ErrorKind::Unavailable`] "no responder
    /// for subject …" when nothing serves the subject, [`ErrorKind::TimedOut`] when no answer came
    /// in time, and [`ErrorKind::Invalid`] naming the field for a bad request.
    pub async fn request(&self, spec: RequestSpec) -> Result<Answer, Error> {
        let started = Instant::now();
        let span = telemetry::request_span(&spec.subject);
        let result = self.send(spec).instrument(span.clone()).await;
        // Indexes into OUTCOMES.
        let outcome = match &result {
            Ok(Answer::Reply(_)) => 0,
            Ok(Answer::NoContent) => 1,
            Ok(Answer::Failed(_)) => 2,
            Err((_, Unanswered::NoResponders)) => 3,
            Err((err, Unanswered::Other)) => match err.kind() {
                ErrorKind::TimedOut => 4,
                ErrorKind::Invalid => 5,
                _ => 6,
            },
        };
        let result = result.map_err(|(err, _)| err);
        match &result {
            Ok(Answer::Failed(failure)) => telemetry::error(&span, &failure.message),
            Ok(_) => telemetry::ok(&span),
            Err(err) => telemetry::error(&span, err.message()),
        }
        self.inner.meters.count(outcome, started);
        result
    }

    async fn send(&self, spec: RequestSpec) -> Result<Answer, (Error, Unanswered)> {
        let other = |err: Error| (err, Unanswered::Other);
        let RequestSpec {
            subject,
            payload,
            timeout,
            trace,
        } = spec;
        names::validate_nats_subject("subject", &subject).map_err(other)?;
        let limits = self.inner.limits;
        let asked = timeout.unwrap_or(limits.default_timeout);
        let timeout = asked.min(limits.max_timeout);
        let capped = if asked > timeout {
            " (cut to REQUEST_MAX_TIMEOUT)"
        } else {
            ""
        };
        let mut headers = message_headers(&payload, "").map_err(other)?;
        headers.insert(TIMEOUT_HEADER, timeout.as_millis().to_string());
        let trace = trace.forward(&Span::current());
        insert_trace(&mut headers, trace);
        check_size(&self.inner.nats, "data", &headers, &payload.data).map_err(other)?;
        if !self.inner.nats.is_connected() {
            return Err(other(Error::new(
                ErrorKind::Unavailable,
                "not connected to NATS",
            )));
        }
        // Leaves the inbox however this call ends (also when the caller gives up).
        let mut waiter = self.inner.inbox.wait().await.map_err(other)?;
        self.inner
            .nats
            .client()
            .publish_with_reply_and_headers(subject.clone(), waiter.reply(), headers, payload.data)
            .await
            .map_err(|err| other(Error::new(ErrorKind::Unavailable, err.to_string())))?;
        match tokio::time::timeout(timeout, waiter.answer()).await {
            Ok(Some(message)) if message.status == Some(StatusCode::NO_RESPONDERS) => Err((
                Error::new(ErrorKind::Unavailable, format!("{NO_RESPONDER} {subject}")),
                Unanswered::NoResponders,
            )),
            Ok(Some(message)) => answer(&subject, message).map_err(other),
            Ok(None) => Err(other(Error::new(
                ErrorKind::Unavailable,
                "the NATS connection closed before the answer came",
            ))),
            Err(_) => Err(other(Error::new(
                ErrorKind::TimedOut,
                format!("no answer on subject {subject} within {timeout:?}{capped}"),
            ))),
        }
    }
}

const NO_RESPONDER: &str = "no responder for subject";

/// Why a request got no answer, for the metrics: NATS said nobody serves the subject, or anything
/// else (the error's kind tells).
enum Unanswered {
    NoResponders,
    Other,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The maps stay consistent even if a holder panicked: every change is a single insert/remove.
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// What a NATS answer means.
fn answer(subject: &str, message: async_nats::Message) -> Result<Answer, Error> {
    if let Some(status) = message.status
        && !status.is_success()
    {
        return Err(Error::new(
            ErrorKind::Unavailable,
            format!(
                "NATS answered the request on {subject} with status {status}: {}",
                message.description.unwrap_or_default()
            ),
        ));
    }
    let header = |name: &str| {
        message
            .headers
            .as_ref()
            .and_then(|headers| headers.get(name))
            .map(|value| value.as_str().to_owned())
    };
    if header(NO_CONTENT_HEADER).as_deref() == Some(NO_CONTENT) {
        return Ok(Answer::NoContent);
    }
    let code = header(SERVICE_ERROR_CODE);
    let error = header(SERVICE_ERROR);
    if code.is_some() || error.is_some() {
        return Ok(Answer::Failed(Failure {
            code: code.and_then(|code| code.trim().parse().ok()).unwrap_or(0),
            message: error.unwrap_or_default(),
        }));
    }
    let (payload, _) = decode(subject, message);
    Ok(Answer::Reply(payload))
}

/// The payload, and the trace context, of a NATS message: the one decoding of requests and answers.
fn decode(subject: &str, message: async_nats::Message) -> (Payload, TraceContext) {
    let event = format::decode(
        0,
        subject.to_owned(),
        message.headers.as_ref(),
        message.payload,
        std::time::SystemTime::UNIX_EPOCH,
    );
    (
        Payload {
            data: event.body,
            content_type: event.content_type.unwrap_or_default(),
            headers: event.headers,
        },
        TraceContext {
            parent: event.trace_parent,
            state: event.trace_state,
        },
    )
}

/// The headers of an outgoing request or reply, checked; `field` prefixes the field names
/// (`""` for a request, `answer.reply.` for a reply).
fn message_headers(payload: &Payload, field: &str) -> Result<HeaderMap, Error> {
    format::validate_headers(&format!("{field}headers"), &payload.headers)?;
    format::validate_content_type(&format!("{field}content_type"), &payload.content_type)?;
    let mut headers = HeaderMap::new();
    if !payload.content_type.is_empty() {
        headers.insert(format::CONTENT_TYPE, payload.content_type.as_str());
    }
    for (name, value) in &payload.headers {
        let name = HeaderName::try_from(name.as_str())
            .map_err(|err| Error::invalid(format!("{field}headers[{name:?}]"), err))?;
        headers.insert(name, value.as_str());
    }
    Ok(headers)
}

fn insert_trace(headers: &mut HeaderMap, trace: TraceContext) {
    if let Some(parent) = trace.parent.filter(|v| format::is_header_value(v)) {
        headers.insert("traceparent", parent);
        if let Some(state) = trace.state.filter(|v| format::is_header_value(v)) {
            headers.insert("tracestate", state);
        }
    }
}

/// Refuses a message NATS would refuse: payload and headers over its max payload.
fn check_size(nats: &Nats, field: &str, headers: &HeaderMap, data: &Bytes) -> Result<(), Error> {
    let size = data.len() + format::header_size(headers);
    let max = nats.max_payload();
    if size > max {
        return Err(Error::invalid(
            field,
            format!("{size} bytes with headers is over NATS's max payload of {max} bytes"),
        ));
    }
    Ok(())
}

/// What a processor serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessorSpec {
    /// Subject patterns, at least one; wildcards allowed.
    pub subjects: Vec<String>,
    /// The queue group; `None` or empty: one group per pattern, named after it.
    pub queue_group: Option<String>,
    /// The most requests held at once; 0: 1.
    pub max_in_flight: u32,
}

/// A request handed to a processor.
#[derive(Debug, Clone)]
pub struct Incoming {
    /// The id the processor answers with.
    pub id: u64,
    /// The subject it was sent on.
    pub subject: String,
    /// What was sent.
    pub payload: Payload,
    /// How long the requester still waits, if it said.
    pub timeout: Option<Duration>,
    /// The trace context to continue: the processing span's, or the requester's.
    pub trace: TraceContext,
}

/// The processors attached to this server and the queue subscriptions they share. Cheap to clone.
#[derive(Clone)]
pub struct Responders {
    inner: Arc<Registry>,
}

struct Registry {
    nats: Nats,
    limits: ResponderLimits,
    state: Mutex<State>,
    /// Serializes attaching, so that one queue subscription serves each group.
    attaching: tokio::sync::Mutex<()>,
    next_member: AtomicU64,
}

/// A queue group on one subject pattern.
type GroupKey = (String, String);

#[derive(Default)]
struct State {
    groups: HashMap<GroupKey, Group>,
    members: HashMap<u64, Member>,
}

struct Group {
    members: Vec<u64>,
    waiting: VecDeque<Waiting>,
    /// Ends the queue subscription when the group goes.
    stop: CancellationToken,
}

struct Waiting {
    message: async_nats::Message,
    deadline: Instant,
    /// Whether the requester said how long it waits (else the deadline is the default).
    told: bool,
}

struct Member {
    groups: Vec<GroupKey>,
    /// Requests sent and not answered, by id: their reply subjects and processing spans.
    held: HashMap<u64, (Subject, Span)>,
    max: usize,
    tx: mpsc::Sender<Incoming>,
    next_id: u64,
    /// False once the processor stopped taking requests (shutdown).
    taking: bool,
}

/// A reply to publish once the state lock is released.
type Outgoing = (Subject, HeaderMap, Bytes);

impl Responders {
    /// A registry over `nats`, within `limits`.
    pub fn new(nats: Nats, limits: ResponderLimits) -> Self {
        Responders {
            inner: Arc::new(Registry {
                nats,
                limits,
                state: Mutex::new(State::default()),
                attaching: tokio::sync::Mutex::new(()),
                next_member: AtomicU64::new(1),
            }),
        }
    }

    /// Attaches a processor: checks `spec`, joins (or creates) its queue groups, and returns once
    /// NATS routes requests to it.
    pub async fn attach(&self, spec: ProcessorSpec) -> Result<Processor, Error> {
        let registry = &self.inner;
        let keys = validate_processor(&spec)?;
        let max = match spec.max_in_flight {
            0 => 1,
            n if n > registry.limits.max_in_flight => {
                return Err(Error::limit_reached(
                    "RESPOND_MAX_IN_FLIGHT",
                    format!(
                        "attach.max_in_flight: {n} is over the most a processor may hold, {}",
                        registry.limits.max_in_flight
                    ),
                ));
            }
            n => n,
        };
        let queue_group = keys[0].1.clone();
        let (tx, requests) = mpsc::channel(max as usize);
        let id = registry.next_member.fetch_add(1, Ordering::Relaxed);
        let _attaching = registry.attaching.lock().await;
        // Groups are only created here, one attach at a time, but a processor leaving may remove
        // one meanwhile: subscribe to what is missing until nothing is.
        let mut subscriptions: HashMap<GroupKey, Subscriber> = HashMap::new();
        let mut member = Some(Member {
            groups: keys.clone(),
            held: HashMap::new(),
            max: max as usize,
            tx,
            next_id: 1,
            taking: true,
        });
        loop {
            let missing: Vec<GroupKey> = {
                let mut state = lock(&registry.state);
                let missing: Vec<GroupKey> = keys
                    .iter()
                    .filter(|key| {
                        !state.groups.contains_key(*key) && !subscriptions.contains_key(*key)
                    })
                    .cloned()
                    .collect();
                if missing.is_empty() {
                    for (key, subscriber) in subscriptions.drain() {
                        let stop = CancellationToken::new();
                        tokio::spawn(serve_group(
                            Arc::downgrade(registry),
                            key.clone(),
                            subscriber,
                            stop.clone(),
                        ));
                        state.groups.insert(
                            key,
                            Group {
                                members: Vec::new(),
                                waiting: VecDeque::new(),
                                stop,
                            },
                        );
                    }
                    for key in &keys {
                        if let Some(group) = state.groups.get_mut(key) {
                            group.members.push(id);
                        }
                    }
                    if let Some(member) = member.take() {
                        state.members.insert(id, member);
                    }
                    for key in &keys {
                        count_processors(&state, &key.0);
                    }
                    break;
                }
                missing
            };
            for (subject, queue) in missing {
                let subscriber = registry
                    .nats
                    .client()
                    .queue_subscribe(subject.clone(), queue.clone())
                    .await
                    .map_err(|err| Error::new(ErrorKind::Unavailable, err.to_string()))?;
                subscriptions.insert((subject, queue), subscriber);
            }
            // A round trip: NATS answers (no responders) only after it has handled the
            // subscriptions sent before, so requests reach this processor once attach returns.
            let client = registry.nats.client();
            let probe = format!("_JW.attach.{}", client.new_inbox());
            client.request(probe, Bytes::new()).await.ok();
        }
        Ok(Processor {
            registry: Arc::clone(registry),
            id,
            requests,
            queue_group,
            max_in_flight: max,
        })
    }
}

fn validate_processor(spec: &ProcessorSpec) -> Result<Vec<GroupKey>, Error> {
    if spec.subjects.is_empty() {
        return Err(Error::invalid(
            "attach.subjects",
            "at least one subject is required",
        ));
    }
    if spec.subjects.len() > MAX_SUBJECTS {
        return Err(Error::invalid(
            "attach.subjects",
            format!("at most {MAX_SUBJECTS} subjects are allowed"),
        ));
    }
    let queue = spec.queue_group.as_deref().filter(|q| !q.is_empty());
    if let Some(queue) = queue
        && (queue.len() > MAX_QUEUE_GROUP_LEN
            || queue.chars().any(|c| c.is_whitespace() || c.is_control()))
    {
        return Err(Error::invalid(
            "attach.queue_group",
            format!("must be at most {MAX_QUEUE_GROUP_LEN} characters without whitespace"),
        ));
    }
    let mut keys: Vec<GroupKey> = Vec::with_capacity(spec.subjects.len());
    for (i, subject) in spec.subjects.iter().enumerate() {
        names::validate_existing_filter(&format!("attach.subjects[{i}]"), subject)?;
        let key = (
            subject.clone(),
            queue.unwrap_or(subject.as_str()).to_owned(),
        );
        if keys.contains(&key) {
            return Err(Error::invalid(
                format!("attach.subjects[{i}]"),
                format!("{subject:?} is listed twice"),
            ));
        }
        keys.push(key);
    }
    Ok(keys)
}

fn count_processors(state: &State, subject: &str) {
    let n: usize = state
        .groups
        .iter()
        .filter(|((pattern, _), _)| pattern == subject)
        .map(|(_, group)| group.members.len())
        .sum();
    ::metrics::gauge!(metrics::PROCESSORS, "subject" => subject.to_owned()).set(n as f64);
}

/// Reads one group's queue subscription and dispatches each request. When the group goes, it
/// unsubscribes and answers what was already received with UNAVAILABLE, so that no request is left
/// to wait out its timeout.
async fn serve_group(
    registry: Weak<Registry>,
    key: GroupKey,
    mut subscriber: Subscriber,
    stop: CancellationToken,
) {
    let mut stopping = false;
    loop {
        let message = tokio::select! {
            biased;
            () = stop.cancelled(), if !stopping => {
                stopping = true;
                // Buffered messages are still read below; then the stream ends.
                subscriber.unsubscribe().await.ok();
                continue;
            }
            message = subscriber.next() => message,
        };
        let Some(message) = message else { return };
        let Some(registry) = registry.upgrade() else {
            return;
        };
        if let Some(rejected) = registry.dispatch(&key, message) {
            registry.publish(rejected).await;
        }
    }
}

impl Registry {
    /// Hands a request to the member of `key` with the most room, or queues it; returns the
    /// refusal to send when the queue is full too.
    fn dispatch(&self, key: &GroupKey, message: async_nats::Message) -> Option<Outgoing> {
        let reply = message.reply.clone()?;
        let now = Instant::now();
        let told = requested_timeout(&message);
        let waiting = Waiting {
            deadline: now + told.unwrap_or(self.limits.default_timeout),
            told: told.is_some(),
            message,
        };
        let mut state = lock(&self.state);
        let State { groups, members } = &mut *state;
        let Some(group) = groups.get_mut(key) else {
            // The group's processors left after NATS routed this request here.
            return Some(failure(
                reply,
                codes::UNAVAILABLE,
                &format!(
                    "{NO_RESPONDER} {}: its processors left",
                    message_subject(&waiting)
                ),
            ));
        };
        let roomiest = group
            .members
            .iter()
            .filter_map(|id| members.get(id).map(|m| (*id, m)))
            .filter(|(_, m)| m.taking && m.held.len() < m.max)
            .max_by_key(|(_, m)| m.max - m.held.len())
            .map(|(id, _)| id);
        if let Some(id) = roomiest
            && let Some(member) = members.get_mut(&id)
        {
            hand(member, waiting);
            return None;
        }
        if group.waiting.len() >= self.limits.max_waiting {
            // Expired requests make room first.
            group.waiting.retain(|w| w.deadline > now);
        }
        if group.waiting.len() >= self.limits.max_waiting {
            return Some(failure(
                reply,
                codes::RESOURCE_EXHAUSTED,
                &format!(
                    "every processor of queue group {} on {} is busy and {} requests wait \
                     already (RESPOND_MAX_WAITING)",
                    key.1, key.0, self.limits.max_waiting
                ),
            ));
        }
        group.waiting.push_back(waiting);
        None
    }

    async fn publish(&self, (subject, headers, data): Outgoing) {
        if let Err(err) = self
            .nats
            .client()
            .publish_with_headers(subject, headers, data)
            .await
        {
            tracing::debug!(%err, "an answer could not be sent");
        }
    }

    /// Takes `member` out of every group; its held requests stay with it. Returns the refusals for
    /// requests left waiting in groups that no longer have anyone.
    fn leave_groups(state: &mut State, id: u64) -> Vec<Outgoing> {
        let mut refused = Vec::new();
        let Some(member) = state.members.get_mut(&id) else {
            return refused;
        };
        member.taking = false;
        let keys = std::mem::take(&mut member.groups);
        for key in keys {
            let Some(group) = state.groups.get_mut(&key) else {
                continue;
            };
            group.members.retain(|m| *m != id);
            if group.members.is_empty()
                && let Some(group) = state.groups.remove(&key)
            {
                group.stop.cancel();
                refused.extend(group.waiting.into_iter().filter_map(|w| {
                    let message =
                        format!("{NO_RESPONDER} {}: its processors left", w.message.subject);
                    Some(failure(w.message.reply?, codes::UNAVAILABLE, &message))
                }));
            }
            count_processors(state, &key.0);
        }
        refused
    }
}

/// Sends a request to a member with room, now holding it.
fn hand(member: &mut Member, waiting: Waiting) {
    let Waiting {
        message,
        deadline,
        told,
    } = waiting;
    let Some(reply) = message.reply.clone() else {
        return;
    };
    let id = member.next_id;
    member.next_id += 1;
    let subject = message.subject.to_string();
    let span = telemetry::process_span(&subject);
    let (payload, requester) = decode(&subject, message);
    requester.adopt(&span);
    let trace = requester.forward(&span);
    let timeout = told
        .then(|| deadline.checked_duration_since(Instant::now()))
        .flatten();
    if member
        .tx
        .try_send(Incoming {
            id,
            subject,
            payload,
            timeout,
            trace,
        })
        .is_ok()
    {
        member.held.insert(id, (reply, span));
    }
}

fn message_subject(waiting: &Waiting) -> &str {
    waiting.message.subject.as_str()
}

fn requested_timeout(message: &async_nats::Message) -> Option<Duration> {
    let value = message.headers.as_ref()?.get(TIMEOUT_HEADER)?;
    value.as_str().parse().ok().map(Duration::from_millis)
}

/// A failure answer on the wire.
fn failure(reply: Subject, code: u16, message: &str) -> Outgoing {
    let mut headers = HeaderMap::new();
    headers.insert(SERVICE_ERROR_CODE, code.to_string());
    headers.insert(SERVICE_ERROR, message);
    (reply, headers, Bytes::new())
}

/// One attached processor: the requests handed to it, and its answers. Dropping it detaches it:
/// every request it held and had not answered fails at once with UNAVAILABLE.
pub struct Processor {
    registry: Arc<Registry>,
    id: u64,
    requests: mpsc::Receiver<Incoming>,
    queue_group: String,
    max_in_flight: u32,
}

impl Processor {
    /// The queue group joined: the one declared, or the first subject pattern's.
    pub fn queue_group(&self) -> &str {
        &self.queue_group
    }

    /// The most requests held at once.
    pub fn max_in_flight(&self) -> u32 {
        self.max_in_flight
    }

    /// The next request to answer. After [`Processor::stop_taking`] no more come, but this still
    /// waits: select it against the end of the session.
    pub async fn next(&mut self) -> Option<Incoming> {
        self.requests.recv().await
    }

    /// How many requests the processor holds unanswered.
    pub fn held(&self) -> usize {
        lock(&self.registry.state)
            .members
            .get(&self.id)
            .map_or(0, |m| m.held.len())
    }

    /// Answers request `id`. An id the processor does not hold (answered already) is ignored and
    /// counted as a late reply. Fails with [`ErrorKind::Invalid`] for an answer NATS cannot carry.
    pub async fn answer(&self, id: u64, answer: Answer) -> Result<(), Error> {
        // The processing span's error message, if the processor failed the request.
        let outcome = match &answer {
            Answer::Failed(failure) => Some(failure.message.clone()),
            _ => None,
        };
        let (headers, data) = match answer {
            Answer::Reply(payload) => {
                let headers = message_headers(&payload, "answer.reply.")?;
                check_size(
                    &self.registry.nats,
                    "answer.reply.data",
                    &headers,
                    &payload.data,
                )?;
                (headers, payload.data)
            }
            Answer::NoContent => {
                let mut headers = HeaderMap::new();
                headers.insert(NO_CONTENT_HEADER, NO_CONTENT);
                (headers, Bytes::new())
            }
            Answer::Failed(failure) => {
                if failure.message.len() > MAX_ERROR_MESSAGE_LEN
                    || !format::is_header_value(&failure.message)
                {
                    return Err(Error::invalid(
                        "answer.error.message",
                        format!(
                            "must be at most {MAX_ERROR_MESSAGE_LEN} bytes without control \
                             characters"
                        ),
                    ));
                }
                let mut headers = HeaderMap::new();
                headers.insert(SERVICE_ERROR_CODE, failure.code.to_string());
                headers.insert(SERVICE_ERROR, failure.message);
                (headers, Bytes::new())
            }
        };
        let held = {
            let mut state = lock(&self.registry.state);
            let held = state
                .members
                .get_mut(&self.id)
                .and_then(|m| m.held.remove(&id));
            self.refill(&mut state);
            held
        };
        match held {
            Some((reply, span)) => {
                match &outcome {
                    Some(message) => telemetry::error(&span, message),
                    None => telemetry::ok(&span),
                }
                self.registry.publish((reply, headers, data)).await;
            }
            None => ::metrics::counter!(metrics::LATE_REPLIES).increment(1),
        }
        Ok(())
    }

    /// Fills the processor's free room from the requests waiting in its groups, oldest first,
    /// dropping those whose requester gave up.
    fn refill(&self, state: &mut State) {
        let State { groups, members } = state;
        let Some(member) = members.get_mut(&self.id) else {
            return;
        };
        let now = Instant::now();
        // Taken out for the loop (hand-over needs the member), put back after.
        let keys = std::mem::take(&mut member.groups);
        for key in &keys {
            let Some(group) = groups.get_mut(key) else {
                continue;
            };
            while member.taking && member.held.len() < member.max {
                let Some(waiting) = group.waiting.pop_front() else {
                    break;
                };
                if waiting.deadline > now {
                    hand(member, waiting);
                }
            }
        }
        member.groups = keys;
    }

    /// Stops taking requests (shutdown): leaves every group, so NATS routes new requests to other
    /// servers; the requests held may still be answered.
    pub async fn stop_taking(&self) {
        let refused = Registry::leave_groups(&mut lock(&self.registry.state), self.id);
        for outgoing in refused {
            self.registry.publish(outgoing).await;
        }
    }
}

impl Processor {
    /// Detaches the processor: it leaves its groups, and every request it held, and every request
    /// left waiting in a group that now has no processor here, gets its failure (returned, to send).
    fn detach(&mut self) -> Vec<Outgoing> {
        let mut state = lock(&self.registry.state);
        let mut refused = Registry::leave_groups(&mut state, self.id);
        if let Some(member) = state.members.remove(&self.id) {
            refused.extend(member.held.into_values().map(|(reply, span)| {
                telemetry::error(&span, "the processor left");
                failure(
                    reply,
                    codes::UNAVAILABLE,
                    "the processor holding the request left before answering",
                )
            }));
        }
        refused
    }

    /// Detaches the processor and sends the failures of the requests it held before returning:
    /// callers about to drain the NATS connection use this rather than a drop.
    pub async fn leave(mut self) {
        for outgoing in self.detach() {
            self.registry.publish(outgoing).await;
        }
    }
}

impl Drop for Processor {
    fn drop(&mut self) {
        let mut outgoing = self.detach();
        if outgoing.is_empty() {
            return;
        }
        let registry = Arc::clone(&self.registry);
        // Drop cannot wait: the failures go out from a task, at once.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                for one in outgoing.drain(..) {
                    registry.publish(one).await;
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(subjects: &[&str], queue_group: Option<&str>) -> ProcessorSpec {
        ProcessorSpec {
            subjects: subjects.iter().map(|s| (*s).to_owned()).collect(),
            queue_group: queue_group.map(str::to_owned),
            max_in_flight: 1,
        }
    }

    #[test]
    fn processors_default_to_one_group_per_pattern() {
        let keys = validate_processor(&spec(&["orders.*", "billing.>"], None)).unwrap();
        assert_eq!(
            keys,
            [
                ("orders.*".to_owned(), "orders.*".to_owned()),
                ("billing.>".to_owned(), "billing.>".to_owned())
            ]
        );
        let keys = validate_processor(&spec(&["orders.*"], Some(""))).unwrap();
        assert_eq!(keys[0].1, "orders.*");
        let keys = validate_processor(&spec(&["orders.*"], Some("workers"))).unwrap();
        assert_eq!(keys[0].1, "workers");
    }

    #[test]
    fn bad_declarations_name_the_field() {
        let field = |spec| {
            validate_processor(&spec)
                .unwrap_err()
                .field()
                .map(str::to_owned)
        };
        assert_eq!(field(spec(&[], None)).as_deref(), Some("attach.subjects"));
        assert_eq!(
            field(spec(&["ok", "a..b"], None)).as_deref(),
            Some("attach.subjects[1]")
        );
        assert_eq!(
            field(spec(&["a", "a"], None)).as_deref(),
            Some("attach.subjects[1]")
        );
        assert_eq!(
            field(spec(&["a"], Some("two words"))).as_deref(),
            Some("attach.queue_group")
        );
    }

    fn message(headers: &[(&str, &str)], status: Option<StatusCode>) -> async_nats::Message {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.insert(*name, *value);
        }
        async_nats::Message {
            subject: "_INBOX.x.1".into(),
            reply: None,
            payload: Bytes::from_static(b"body"),
            headers: Some(map),
            status,
            description: None,
            length: 0,
        }
    }

    #[test]
    fn answers_are_read_from_status_and_headers() {
        let err = answer("svc", message(&[], Some(StatusCode::TIMEOUT))).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unavailable);
        assert_eq!(
            answer("svc", message(&[(NO_CONTENT_HEADER, NO_CONTENT)], None)).unwrap(),
            Answer::NoContent
        );
        assert_eq!(
            answer(
                "svc",
                message(&[(SERVICE_ERROR, "bad"), (SERVICE_ERROR_CODE, "5")], None)
            )
            .unwrap(),
            Answer::Failed(Failure {
                code: 5,
                message: "bad".into()
            })
        );
        let reply = answer(
            "svc",
            message(&[("Content-Type", "text/plain"), ("x-a", "1")], None),
        )
        .unwrap();
        assert_eq!(
            reply,
            Answer::Reply(Payload {
                data: Bytes::from_static(b"body"),
                content_type: "text/plain".into(),
                headers: vec![("x-a".into(), "1".into())],
            })
        );
    }
}
