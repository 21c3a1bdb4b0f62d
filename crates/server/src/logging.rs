//! Process-wide logging: installs the global tracing subscriber that writes Jetway's logs to
//! stderr.
//!
//! Production output is JSON lines (one event per line, for log shippers); development output is
//! compact human-readable text, coloured when stderr is a terminal.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::{SubscriberInitExt, TryInitError};

/// Why logging could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum LoggingError {
    /// The filter is not valid `EnvFilter` syntax. [`crate::config::Config`] already validates
    /// `RUST_LOG`, so this only happens with a filter from elsewhere.
    #[error("invalid log filter {filter:?}: {source}")]
    InvalidFilter {
        /// The rejected filter.
        filter: String,
        /// The parser's explanation.
        source: tracing_subscriber::filter::ParseError,
    },
    /// A global subscriber is already installed (`init` was called before, or something else set
    /// one).
    #[error("logging is already initialised: {0}")]
    AlreadyInitialized(#[from] TryInitError),
}

/// Installs the global subscriber: events passing `filter` (tracing `EnvFilter` syntax, e.g.
/// `info,jetway_core=debug`) go to stderr as JSON lines, or as human-readable text when
/// `development` is true.
///
/// Call it once, at startup, before anything logs: the global subscriber can be set only once per
/// process, so a second call returns [`LoggingError::AlreadyInitialized`] and changes nothing.
/// Events from the `log` crate are forwarded too.
pub fn init(development: bool, filter: &str) -> Result<(), LoggingError> {
    let env_filter =
        EnvFilter::builder()
            .parse(filter)
            .map_err(|source| LoggingError::InvalidFilter {
                filter: filter.to_owned(),
                source,
            })?;
    let registry = tracing_subscriber::registry().with(env_filter);
    if development {
        let human = tracing_subscriber::fmt::layer()
            .compact()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal());
        registry.with(human).try_init()?;
    } else {
        // Flattened events put the message and fields at the top level, which is what log
        // pipelines index; the current span still rides along for request context.
        let json = tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(std::io::stderr);
        registry.with(json).try_init()?;
    }
    Ok(())
}
