//! Declaring streams: [`StreamOptions`] describes a stream, [`Streams::ensure`] creates it or
//! updates it in place. Every option left unset gets the server's default, listed on its setter.
//! (Listing, inspecting, purging and deleting streams is in `admin`.)

use std::time::{Duration, SystemTime};

use jetway_api::{
    jetway::events::v1::{StreamPointer as ExtPointer, stream_pointer as ext_pointer},
    windshift::events::v1alpha1::{
        EnsureStreamRequest, StreamPointer,
        ensure_stream_request::{
            self, DiscardPolicy as PbDiscard, RetentionPolicy, Storage, StorageType as PbStorage,
        },
        stream_pointer::Pointer,
    },
};

use crate::{Client, Error};

/// Stream declarations and administration, from [`Client::streams`].
#[derive(Debug, Clone, Copy)]
pub struct Streams<'a> {
    pub(crate) client: &'a Client,
}

impl<'a> Streams<'a> {
    /// Declarations through `client`.
    pub(crate) fn new(client: &'a Client) -> Self {
        Streams { client }
    }

    /// Creates the stream, or updates it to exactly these options: an option left unset goes back
    /// to its default (a limit is removed). Idempotent, so services call it at startup.
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use jetway_client::{Client, StreamOptions};
    /// # async fn run(client: Client) -> Result<(), jetway_client::Error> {
    /// client
    ///     .streams()
    ///     .ensure(&StreamOptions::new("orders").subjects(["orders.>"]).max_age(Duration::from_secs(86_400)))
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub async fn ensure(&self, options: &StreamOptions) -> Result<(), Error> {
        let request = self.client.unary(options.to_request());
        self.client.events.clone().ensure_stream(request).await?;
        Ok(())
    }
}

/// Where a stream or consumer starts reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartPosition {
    /// The first event still stored.
    Start,
    /// Only events stored from now on.
    End,
    /// Events stored at or after this time.
    Time(SystemTime),
    /// Events from this id (stream sequence) on.
    Offset(u64),
}

impl StartPosition {
    /// The Windshift wire form.
    pub(crate) fn to_pointer(self) -> StreamPointer {
        let pointer = match self {
            StartPosition::Start => Pointer::Start(true),
            StartPosition::End => Pointer::End(true),
            StartPosition::Time(time) => Pointer::Time(time.into()),
            StartPosition::Offset(id) => Pointer::Offset(id),
        };
        StreamPointer {
            pointer: Some(pointer),
        }
    }

    /// The `jetway.events.v1` wire form, where an offset is called an id.
    pub(crate) fn to_ext_pointer(self) -> ExtPointer {
        let pointer = match self {
            StartPosition::Start => ext_pointer::Pointer::Start(true),
            StartPosition::End => ext_pointer::Pointer::End(true),
            StartPosition::Time(time) => ext_pointer::Pointer::Time(time.into()),
            StartPosition::Offset(id) => ext_pointer::Pointer::Id(id),
        };
        ExtPointer {
            pointer: Some(pointer),
        }
    }
}

/// What happens when a stream reaches a limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiscardPolicy {
    /// Remove the oldest events to make room (the default).
    Old,
    /// Refuse new events.
    New,
}

/// Where a stream keeps its events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageType {
    /// On disk (the default).
    File,
    /// In memory: faster, lost when NATS restarts.
    Memory,
}

/// Another stream that a mirror or an aggregate stream copies from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamSource {
    name: String,
    from: Option<StartPosition>,
    filter_subject: Option<String>,
}

impl StreamSource {
    /// Copies every event of stream `name`, from its start.
    pub fn new(name: impl Into<String>) -> Self {
        StreamSource {
            name: name.into(),
            from: None,
            filter_subject: None,
        }
    }

    /// Starts copying here instead of at the start of the source.
    pub fn from(mut self, position: StartPosition) -> Self {
        self.from = Some(position);
        self
    }

    /// Copies only the events on subjects matching `subject` (wildcards allowed).
    pub fn filter_subject(mut self, subject: impl Into<String>) -> Self {
        self.filter_subject = Some(subject.into());
        self
    }

    fn to_proto(&self) -> ensure_stream_request::StreamSource {
        ensure_stream_request::StreamSource {
            name: self.name.clone(),
            from: self.from.map(StartPosition::to_pointer),
            filter_subjects: self.filter_subject.iter().cloned().collect(),
        }
    }
}

/// Where a stream's events come from.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Source {
    Subjects(Vec<String>),
    Mirror(StreamSource),
    Aggregate(Vec<StreamSource>),
}

/// A stream declaration for [`Streams::ensure`].
///
/// Built with setters; what is not set gets the server's default.
///
/// ```
/// use std::time::Duration;
/// use jetway_client::{StorageType, StreamOptions};
///
/// let options = StreamOptions::new("orders")
///     .subjects(["orders.>"])
///     .max_age(Duration::from_secs(7 * 86_400))
///     .storage(StorageType::Memory);
/// assert_eq!(options.name(), "orders");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamOptions {
    name: String,
    source: Source,
    max_age: Option<Duration>,
    max_events: Option<u64>,
    max_events_per_subject: Option<u64>,
    max_bytes: Option<u64>,
    discard: Option<DiscardPolicy>,
    discard_new_per_subject: Option<bool>,
    storage: Option<StorageType>,
    replicas: Option<u32>,
    deduplication_window: Option<Duration>,
    max_event_size: Option<u32>,
}

impl StreamOptions {
    /// A stream called `name` (letters, digits, `_` and `-`). Without [`StreamOptions::subjects`],
    /// [`StreamOptions::mirror`] or [`StreamOptions::aggregate`] it captures the subject `name`.
    pub fn new(name: impl Into<String>) -> Self {
        StreamOptions {
            name: name.into(),
            source: Source::Subjects(Vec::new()),
            max_age: None,
            max_events: None,
            max_events_per_subject: None,
            max_bytes: None,
            discard: None,
            discard_new_per_subject: None,
            storage: None,
            replicas: None,
            deduplication_window: None,
            max_event_size: None,
        }
    }

    /// The stream's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Captures events published on these subjects (wildcards allowed, e.g. `orders.>`).
    pub fn subjects<I, S>(mut self, subjects: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.source = Source::Subjects(subjects.into_iter().map(Into::into).collect());
        self
    }

    /// Makes the stream a read-only copy of another stream.
    pub fn mirror(mut self, source: StreamSource) -> Self {
        self.source = Source::Mirror(source);
        self
    }

    /// Makes the stream collect the events of other streams.
    pub fn aggregate(mut self, sources: impl IntoIterator<Item = StreamSource>) -> Self {
        self.source = Source::Aggregate(sources.into_iter().collect());
        self
    }

    /// Removes events older than this. Default: kept forever.
    pub fn max_age(mut self, age: Duration) -> Self {
        self.max_age = Some(age);
        self
    }

    /// Keeps at most this many events. Default: no limit.
    pub fn max_events(mut self, count: u64) -> Self {
        self.max_events = Some(count);
        self
    }

    /// Keeps at most this many events per subject. Default: no limit.
    pub fn max_events_per_subject(mut self, count: u64) -> Self {
        self.max_events_per_subject = Some(count);
        self
    }

    /// Keeps at most this many bytes. Default: no limit.
    pub fn max_bytes(mut self, bytes: u64) -> Self {
        self.max_bytes = Some(bytes);
        self
    }

    /// What to do at a limit. Default: [`DiscardPolicy::Old`].
    pub fn discard(mut self, policy: DiscardPolicy) -> Self {
        self.discard = Some(policy);
        self
    }

    /// With [`DiscardPolicy::New`] and [`StreamOptions::max_events_per_subject`], refuse new events
    /// per subject rather than for the whole stream. Default: false.
    pub fn discard_new_per_subject(mut self, enabled: bool) -> Self {
        self.discard_new_per_subject = Some(enabled);
        self
    }

    /// Disk or memory. Default: [`StorageType::File`]. It cannot change after creation.
    pub fn storage(mut self, storage: StorageType) -> Self {
        self.storage = Some(storage);
        self
    }

    /// How many NATS servers keep a copy. Default: 1.
    pub fn replicas(mut self, replicas: u32) -> Self {
        self.replicas = Some(replicas);
        self
    }

    /// How long an idempotency key is remembered. Default: 2 minutes, or
    /// [`StreamOptions::max_age`] when that is shorter.
    pub fn deduplication_window(mut self, window: Duration) -> Self {
        self.deduplication_window = Some(window);
        self
    }

    /// The largest event accepted, in bytes. Default: the NATS server's max payload (1 MiB).
    pub fn max_event_size(mut self, bytes: u32) -> Self {
        self.max_event_size = Some(bytes);
        self
    }

    fn to_request(&self) -> EnsureStreamRequest {
        let source = match &self.source {
            Source::Subjects(subjects) => {
                ensure_stream_request::Source::Subjects(ensure_stream_request::Subjects {
                    subjects: subjects.clone(),
                })
            }
            Source::Mirror(source) => ensure_stream_request::Source::Mirror(source.to_proto()),
            Source::Aggregate(sources) => {
                ensure_stream_request::Source::Aggregate(ensure_stream_request::StreamSources {
                    sources: sources.iter().map(StreamSource::to_proto).collect(),
                })
            }
        };
        let retention = RetentionPolicy {
            max_age: self.max_age.map(Into::into),
            max_events: self.max_events,
            max_events_per_subject: self.max_events_per_subject,
            max_bytes: self.max_bytes,
            discard_policy: self.discard.map(|policy| match policy {
                DiscardPolicy::Old => PbDiscard::Old as i32,
                DiscardPolicy::New => PbDiscard::New as i32,
            }),
            discard_new_per_subject: self.discard_new_per_subject,
        };
        let storage = (self.storage.is_some() || self.replicas.is_some()).then(|| Storage {
            r#type: self.storage.map(|storage| match storage {
                StorageType::File => PbStorage::File as i32,
                StorageType::Memory => PbStorage::Memory as i32,
            }),
            replicas: self.replicas,
        });
        EnsureStreamRequest {
            name: self.name.clone(),
            retention_policy: (retention != RetentionPolicy::default()).then_some(retention),
            source: Some(source),
            storage,
            deduplication_window: self.deduplication_window.map(Into::into),
            max_event_size: self.max_event_size,
        }
    }
}
