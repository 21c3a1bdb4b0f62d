//! The settings a subscription is opened with ([`SubscribeOptions`]) and their defaults.

/// How many events a subscription holds at most by default (the server's default too).
pub const DEFAULT_MAX_PROCESSING_EVENTS: u64 = 50;

/// Settings of a subscription.
///
/// ```
/// use jetway_client::SubscribeOptions;
///
/// let options = SubscribeOptions::new().max_processing_events(10);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscribeOptions {
    pub(super) max_processing_events: u64,
}

impl Default for SubscribeOptions {
    fn default() -> Self {
        SubscribeOptions {
            max_processing_events: DEFAULT_MAX_PROCESSING_EVENTS,
        }
    }
}

impl SubscribeOptions {
    /// The defaults: [`DEFAULT_MAX_PROCESSING_EVENTS`].
    pub fn new() -> Self {
        SubscribeOptions::default()
    }

    /// Flow control: the most events held at once (delivered and not yet settled), 1 to 10,000.
    /// The server sends no more until one is settled.
    pub fn max_processing_events(mut self, max: u64) -> Self {
        self.max_processing_events = max;
        self
    }
}
