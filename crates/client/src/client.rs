//! The connection: [`Client`], how it is built ([`ClientBuilder`]), and what every call carries
//! (metadata, an auth token, trace context and a deadline).

use std::{sync::Arc, time::Duration};

use jetway_api::{
    jetway::{
        admin::v1::admin_service_client::AdminServiceClient,
        events::v1::events_service_client::EventsServiceClient as ExtEventsClient,
        requests::v1::request_service_client::RequestServiceClient,
        state::v1::state_service_client::StateServiceClient as ExtStateClient,
    },
    windshift::{
        events::v1alpha1::events_service_client::EventsServiceClient,
        state::v1alpha1::state_service_client::StateServiceClient,
    },
};
use tonic::{
    metadata::{AsciiMetadataKey, AsciiMetadataValue},
    transport::{Channel, ClientTlsConfig, Endpoint},
};

use crate::{
    DEFAULT_PUBLISH_WINDOW, Error, RetryPolicy,
    consumers::Consumers,
    dead_letters::DeadLetters,
    endpoints::Endpoints,
    fetch::Fetcher,
    interceptor::{CallInterceptor, Transport},
    shared_stream::{DEFAULT_REQUEST_WINDOW, PublishRpc, RequestRpc, SharedStream},
    state::Store,
    streams::Streams,
};

/// The URL the CLI and the examples use when none is given: a local server on the default port.
pub const DEFAULT_URL: &str = "http://localhost:8080";

/// How long connecting may take by default before it fails.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The default deadline of a unary call (publish, ensure, get, set, ...). It bounds a call to a
/// server that stopped answering; the Events and Watch streams are not bounded by it.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// HTTP/2 keep-alive: a connection whose peer died without closing it (power loss, a partition) is
/// noticed within interval + timeout, so a subscription reconnects instead of waiting forever.
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(20);
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest HTTP/2 frame the client accepts. HTTP/2 sends one frame per write, and the default
/// 16 KiB splits a busy Events stream into many small writes; with 1 MiB, whatever the server has
/// ready goes out in one.
const MAX_FRAME_SIZE: u32 = 1 << 20;

/// A connection to a Jetway server, or to several replicas of it.
///
/// Cheap to clone: clones share one HTTP/2 connection per endpoint, which tonic re-establishes
/// when it breaks. With several endpoints ([`Client::connect_many`]) calls take turns over them
/// and avoid one whose connection failed, for a few seconds at a time.
///
/// ```no_run
/// # async fn run() -> Result<(), jetway_client::Error> {
/// let client = jetway_client::Client::connect("http://localhost:8080").await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Client {
    pub(crate) events: EventsServiceClient<Transport>,
    pub(crate) events_ext: ExtEventsClient<Transport>,
    pub(crate) admin: AdminServiceClient<Transport>,
    pub(crate) state: StateServiceClient<Transport>,
    pub(crate) state_ext: ExtStateClient<Transport>,
    pub(crate) requests: RequestServiceClient<Transport>,
    request_timeout: Option<Duration>,
    pub(crate) retry: RetryPolicy,
    /// The stream concurrent publishes share; `None` when publishes are unary
    /// ([`ClientBuilder::shared_publish_stream`]).
    pub(crate) shared_stream: Option<Arc<SharedStream<PublishRpc>>>,
    /// The stream concurrent requests share; `None` when requests are unary
    /// ([`ClientBuilder::shared_request_stream`]).
    pub(crate) request_stream: Option<Arc<SharedStream<RequestRpc>>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("request_timeout", &self.request_timeout)
            .field("retry", &self.retry)
            .field("shared_stream", &self.shared_stream)
            .field("request_stream", &self.request_stream)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Connects to the server at `url` (`http://host:port`, or `https://` for TLS with the system's
    /// root certificates) with the default settings.
    pub async fn connect(url: impl Into<String>) -> Result<Client, Error> {
        ClientBuilder::new().connect(url).await
    }

    /// Connects to several Jetway endpoints (replicas over the same NATS) with the default
    /// settings; see [`ClientBuilder::connect_many`].
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), jetway_client::Error> {
    /// let client = jetway_client::Client::connect_many([
    ///     "http://jetway-1:8080",
    ///     "http://jetway-2:8080",
    /// ])
    /// .await?;
    /// # Ok(()) }
    /// ```
    pub async fn connect_many<I, S>(urls: I) -> Result<Client, Error>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        ClientBuilder::new().connect_many(urls).await
    }

    /// A builder for a client with a token, metadata, TLS settings or other timeouts.
    pub fn builder() -> ClientBuilder {
        ClientBuilder::new()
    }

    /// A client over a channel built by the caller, with the default settings: the way to bring
    /// a transport this crate does not configure, such as TLS with a private CA and a client
    /// certificate (see [`ClientBuilder::with_channel`] to add metadata too).
    ///
    /// ```no_run
    /// use jetway_client::{Client, tonic::transport::{Certificate, Channel, ClientTlsConfig}};
    /// # async fn run(ca_pem: Vec<u8>) -> Result<(), Box<dyn std::error::Error>> {
    /// let tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca_pem));
    /// let channel = Channel::from_static("https://jetway.internal:8080")
    ///     .tls_config(tls)?
    ///     .connect()
    ///     .await?;
    /// let client = Client::from_channel(channel);
    /// # Ok(()) }
    /// ```
    pub fn from_channel(channel: Channel) -> Client {
        ClientBuilder::new().build(
            Endpoints::new(vec![(String::new(), channel, true)]),
            Vec::new(),
        )
    }

    /// Declaring, inspecting, purging and deleting streams.
    pub fn streams(&self) -> Streams<'_> {
        Streams::new(self)
    }

    /// Declaring, inspecting and deleting consumers.
    pub fn consumers(&self) -> Consumers<'_> {
        Consumers::new(self)
    }

    /// Unary access to consumer `consumer` of `stream`: fetch events, then ack or reject them by
    /// id, for code that cannot hold a [`Subscription`](crate::Subscription) open. Nothing is
    /// sent until a method is called.
    ///
    /// ```no_run
    /// # async fn run(client: jetway_client::Client) -> Result<(), jetway_client::Error> {
    /// let fetcher = client.fetcher("orders", "billing");
    /// for event in fetcher.fetch().await?.events {
    ///     fetcher.ack(&[event.id()]).await?;
    /// }
    /// # Ok(()) }
    /// ```
    pub fn fetcher(&self, stream: impl Into<String>, consumer: impl Into<String>) -> Fetcher {
        Fetcher::new(self.clone(), stream.into(), consumer.into())
    }

    /// The dead-letter stream `name`: list its dead letters and redrive them. Nothing is sent
    /// until a method is called.
    ///
    /// ```no_run
    /// use jetway_client::RedriveOptions;
    /// # async fn run(client: jetway_client::Client) -> Result<(), jetway_client::Error> {
    /// let outcome = client.dead_letters("orders-dead").redrive_all(&RedriveOptions::new()).await?;
    /// println!("{} events published again", outcome.redriven.len());
    /// # Ok(()) }
    /// ```
    pub fn dead_letters(&self, name: impl Into<String>) -> DeadLetters {
        DeadLetters::new(self.clone(), name.into())
    }

    /// The key-value store `name`. Nothing is sent until a method is called; see
    /// [`Store::ensure`] to create it.
    pub fn store(&self, name: impl Into<String>) -> Store {
        Store::new(self.clone(), name.into())
    }

    /// Wraps a unary request with the client's deadline.
    pub(crate) fn unary<T>(&self, message: T) -> tonic::Request<T> {
        self.request_within(message, self.request_timeout)
    }

    /// Wraps a unary request with `timeout` as its deadline (`None`: none).
    pub(crate) fn request_within<T>(
        &self,
        message: T,
        timeout: Option<Duration>,
    ) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        if let Some(timeout) = timeout {
            request.set_timeout(timeout);
        }
        request
    }

    /// The deadline of unary calls, which also bounds the wait for a subscription's first answer.
    pub(crate) fn request_timeout(&self) -> Option<Duration> {
        self.request_timeout
    }
}

/// Settings for a [`Client`]: timeouts, TLS, an auth token and metadata sent on every call.
///
/// ```no_run
/// use std::time::Duration;
/// # async fn run() -> Result<(), jetway_client::Error> {
/// let client = jetway_client::Client::builder()
///     .auth_token("s3cret")
///     .metadata("x-tenant", "acme")
///     .connect_timeout(Duration::from_secs(3))
///     .request_timeout(Duration::from_secs(5))
///     .connect("http://localhost:8080")
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    connect_timeout: Duration,
    request_timeout: Option<Duration>,
    retry: RetryPolicy,
    publish_window: Option<usize>,
    request_window: Option<usize>,
    tls: Option<ClientTlsConfig>,
    metadata: Vec<(String, String)>,
}

impl Default for ClientBuilder {
    fn default() -> Self {
        ClientBuilder::new()
    }
}

impl ClientBuilder {
    /// The defaults: [`DEFAULT_CONNECT_TIMEOUT`], [`DEFAULT_REQUEST_TIMEOUT`], publishes retried by
    /// [`RetryPolicy::new`], publishes sharing one stream with a window of
    /// [`DEFAULT_PUBLISH_WINDOW`], TLS with the system's roots for `https://` URLs, no metadata.
    pub fn new() -> ClientBuilder {
        ClientBuilder {
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            request_timeout: Some(DEFAULT_REQUEST_TIMEOUT),
            retry: RetryPolicy::new(),
            publish_window: Some(DEFAULT_PUBLISH_WINDOW),
            request_window: Some(DEFAULT_REQUEST_WINDOW),
            tls: None,
            metadata: Vec::new(),
        }
    }

    /// How long establishing the connection may take (each time tonic reconnects, too).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// The deadline of every unary call, sent to the server as `grpc-timeout` so it gives up too.
    /// For a publish it bounds every attempt together (see [`ClientBuilder::retry_policy`]).
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = Some(timeout);
        self
    }

    /// How publishes are retried after a transient failure (default: [`RetryPolicy::new`]; no
    /// retries: [`RetryPolicy::never`]). A publish is retried within the request timeout, which
    /// bounds all its attempts together.
    pub fn retry_policy(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// Whether publishes share one `PublishStream` (the default) or each make a unary
    /// `PublishEvent` call.
    ///
    /// Shared (the default): concurrent publishes of this client and its clones travel over one
    /// stream, opened by the first publish and again after it breaks, so many callers cost about
    /// one stream's worth of HTTP/2 work instead of one call each. Each publish still gets its own id or its own error, and is retried like a unary
    /// one (see [`ClientBuilder::retry_policy`]). A publish made inside a traced span is sent
    /// unary, so the event carries that span's trace context (the stream carries none).
    ///
    /// Unary (`false`): every publish is its own call, as in the other languages' clients.
    pub fn shared_publish_stream(mut self, shared: bool) -> Self {
        self.publish_window =
            shared.then_some(self.publish_window.unwrap_or(DEFAULT_PUBLISH_WINDOW));
        self
    }

    /// How many publishes may wait for their answer on the shared stream at once (default
    /// [`DEFAULT_PUBLISH_WINDOW`]; 0 counts as 1). A further publish waits for one of them to be
    /// answered, within its request timeout (then DEADLINE_EXCEEDED): back-pressure instead of a
    /// queue. Turns the shared stream on.
    pub fn publish_window(mut self, window: usize) -> Self {
        self.publish_window = Some(window.max(1));
        self
    }

    /// Whether requests ([`Client::request`]) share one `jetway.requests.v1.RequestStream` (the
    /// default) or each make a unary `Request` call.
    ///
    /// Shared (the default): concurrent requests of this client and its clones travel over one
    /// stream, opened by the first request and again after it breaks, so many callers cost about
    /// one stream's worth of HTTP/2 work instead of one call each. Each request still gets its own
    /// answer or its own status, exactly as a unary call would, and carries the caller's trace
    /// context. When the stream breaks, only the requests waiting on it fail, with UNAVAILABLE
    /// (they are not sent again: they may have been answered); the next request opens a new one.
    ///
    /// Unary (`false`): every request is its own call, as in the other languages' clients.
    pub fn shared_request_stream(mut self, shared: bool) -> Self {
        self.request_window =
            shared.then_some(self.request_window.unwrap_or(DEFAULT_REQUEST_WINDOW));
        self
    }

    /// How many requests may wait for their answer on the shared request stream at once (default
    /// [`DEFAULT_REQUEST_WINDOW`]; 0 counts as 1). A further request waits for one of them to be
    /// answered, within its timeout (then DEADLINE_EXCEEDED). Keep it at most the server's
    /// `REQUEST_STREAM_MAX_IN_FLIGHT`, beyond which the server answers RESOURCE_EXHAUSTED. Turns
    /// the shared stream on.
    pub fn request_window(mut self, window: usize) -> Self {
        self.request_window = Some(window.max(1));
        self
    }

    /// TLS settings, e.g. a private CA or a client certificate. Without this, `https://` URLs use
    /// the system's root certificates.
    pub fn tls(mut self, tls: ClientTlsConfig) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Sends `authorization: Bearer <token>` on every call: a token of the server's `AUTH_FILE`
    /// (made with `jetway auth token`).
    pub fn auth_token(self, token: impl AsRef<str>) -> Self {
        let value = format!("Bearer {}", token.as_ref());
        self.metadata("authorization", value)
    }

    /// Sends `authorization: Basic base64(<client id>:<secret>)` on every call: a client of the
    /// server's `AUTH_FILE` with a `secret` (made with `jetway auth secret-hash`). Use TLS: the
    /// secret itself travels with each call.
    pub fn client_secret(self, client_id: impl AsRef<str>, secret: impl AsRef<str>) -> Self {
        use base64::Engine as _;
        let pair = format!("{}:{}", client_id.as_ref(), secret.as_ref());
        let value = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(pair)
        );
        self.metadata("authorization", value)
    }

    /// Sends the gRPC metadata `key: value` on every call. Keys are lowercase ASCII; both are
    /// checked when connecting.
    pub fn metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.push((key.into(), value.into()));
        self
    }

    /// Connects to `url` and returns the client once the connection is up.
    pub async fn connect(self, url: impl Into<String>) -> Result<Client, Error> {
        self.connect_many([url]).await
    }

    /// Connects to several endpoints of the same Jetway deployment (replicas in front of the
    /// same NATS) and returns the client once at least one is up; the others are connected when
    /// they come up. Calls take turns over the endpoints; one whose connection fails is skipped
    /// for a few seconds while another is up, so calls go to the others. The call that met the
    /// failure gets UNAVAILABLE, except publishes, which are retried (see
    /// [`ClientBuilder::retry_policy`]), and subscriptions, which reconnect by themselves.
    ///
    /// Fails with [`Error::InvalidUrl`] if the list is empty or a URL is invalid, and with
    /// [`Error::Connect`] (for the first URL) if no endpoint can be reached.
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use jetway_api::windshift::test::v1::StringValue;
    /// use jetway_client::{Client, RetryPolicy};
    /// # async fn run() -> Result<(), jetway_client::Error> {
    /// let client = Client::builder()
    ///     .request_timeout(Duration::from_secs(10)) // bounds each publish, retries included
    ///     .retry_policy(
    ///         RetryPolicy::new()
    ///             .max_attempts(8)
    ///             .backoff(Duration::from_millis(50), Duration::from_secs(1)),
    ///     )
    ///     .connect_many(["http://jetway-1:8080", "http://jetway-2:8080"])
    ///     .await?;
    /// // No key given: the client generates one, so its retries store the order once.
    /// let id = client
    ///     .publish("orders.created", &StringValue { value: "order 42".into() })
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub async fn connect_many<I, S>(self, urls: I) -> Result<Client, Error>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let metadata = self.parsed_metadata()?;
        let endpoints = urls
            .into_iter()
            .map(|url| {
                let url = url.into();
                self.endpoint(&url).map(|endpoint| (url, endpoint))
            })
            .collect::<Result<Vec<_>, Error>>()?;
        if endpoints.is_empty() {
            return Err(Error::InvalidUrl {
                url: String::new(),
                reason: "no endpoint given".into(),
            });
        }
        let attempts =
            futures::future::join_all(endpoints.iter().map(|(_, endpoint)| endpoint.connect()))
                .await;
        let mut first_error = None;
        let mut channels = Vec::with_capacity(endpoints.len());
        for ((url, endpoint), attempt) in endpoints.into_iter().zip(attempts) {
            match attempt {
                Ok(channel) => channels.push((url, channel, true)),
                Err(source) => {
                    // Kept, lazily connected: the endpoint is used once it is up.
                    let channel = endpoint.connect_lazy();
                    first_error.get_or_insert(Error::Connect {
                        url: url.clone(),
                        source,
                    });
                    channels.push((url, channel, false));
                }
            }
        }
        match first_error {
            Some(error) if channels.iter().all(|(_, _, up)| !up) => Err(error),
            _ => Ok(self.build(Endpoints::new(channels), metadata)),
        }
    }

    /// The tonic endpoint of `url`, with this builder's timeouts and TLS.
    fn endpoint(&self, url: &str) -> Result<Endpoint, Error> {
        let invalid = |reason: String| Error::InvalidUrl {
            url: url.to_owned(),
            reason,
        };
        let mut endpoint =
            Endpoint::from_shared(url.to_owned()).map_err(|e| invalid(e.to_string()))?;
        endpoint = endpoint
            .connect_timeout(self.connect_timeout)
            .http2_keep_alive_interval(KEEP_ALIVE_INTERVAL)
            .keep_alive_timeout(KEEP_ALIVE_TIMEOUT)
            .keep_alive_while_idle(true)
            .max_frame_size(MAX_FRAME_SIZE);
        let tls = match (&self.tls, endpoint.uri().scheme_str()) {
            (Some(tls), _) => Some(tls.clone()),
            (None, Some("https")) => Some(ClientTlsConfig::new().with_native_roots()),
            (None, _) => None,
        };
        if let Some(tls) = tls {
            endpoint = endpoint
                .tls_config(tls)
                .map_err(|e| invalid(e.to_string()))?;
        }
        Ok(endpoint)
    }

    /// A client over a channel built by the caller (see [`Client::from_channel`]), with this
    /// builder's metadata and request timeout. The builder's TLS and connect settings do not
    /// apply: the channel has its own.
    pub fn with_channel(self, channel: Channel) -> Result<Client, Error> {
        let metadata = self.parsed_metadata()?;
        Ok(self.build(
            Endpoints::new(vec![(String::new(), channel, true)]),
            metadata,
        ))
    }

    pub(crate) fn parsed_metadata(
        &self,
    ) -> Result<Vec<(AsciiMetadataKey, AsciiMetadataValue)>, Error> {
        self.metadata
            .iter()
            .map(|(key, value)| {
                let invalid = |reason: String| Error::InvalidMetadata {
                    key: key.clone(),
                    reason,
                };
                let parsed_key = AsciiMetadataKey::from_bytes(key.as_bytes())
                    .map_err(|e| invalid(format!("bad key: {e}")))?;
                let parsed_value = AsciiMetadataValue::try_from(value.as_str())
                    .map_err(|e| invalid(format!("bad value: {e}")))?;
                Ok((parsed_key, parsed_value))
            })
            .collect()
    }

    fn build(
        self,
        channel: Endpoints,
        metadata: Vec<(AsciiMetadataKey, AsciiMetadataValue)>,
    ) -> Client {
        let interceptor = CallInterceptor {
            metadata: metadata.into(),
        };
        Client {
            events: EventsServiceClient::with_interceptor(channel.clone(), interceptor.clone()),
            events_ext: ExtEventsClient::with_interceptor(channel.clone(), interceptor.clone()),
            admin: AdminServiceClient::with_interceptor(channel.clone(), interceptor.clone()),
            state: StateServiceClient::with_interceptor(channel.clone(), interceptor.clone()),
            state_ext: ExtStateClient::with_interceptor(channel.clone(), interceptor.clone()),
            requests: RequestServiceClient::with_interceptor(channel, interceptor),
            request_timeout: self.request_timeout,
            retry: self.retry,
            shared_stream: self
                .publish_window
                .map(|window| Arc::new(SharedStream::new(window))),
            request_stream: self
                .request_window
                .map(|window| Arc::new(SharedStream::new(window))),
        }
    }
}
