//! The one table of every RPC the gRPC port serves: the permission each needs and where its
//! resource comes from. The authentication layer refuses a method that is not here (fail closed);
//! handlers check their resource against the same entry ([`crate::auth::Caller::check`]), so a
//! handler cannot check a permission its entry does not declare.

use crate::auth::Permission::{self, *};

/// What a method needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Nothing: answered without credentials (gRPC health, for probes and load balancers).
    Open,
    /// Any authenticated client; what it lists is filtered by what the client may see.
    Authenticated,
    /// Each of these permissions, on the resource the text names.
    Permissions(&'static [Permission], &'static str),
}

/// One entry: `/package.Service/Method` and what it needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    /// The method's path.
    pub method: &'static str,
    /// What it needs.
    pub need: Need,
}

const fn rule(method: &'static str, need: Need) -> Rule {
    Rule { method, need }
}

const fn needs(permissions: &'static [Permission], resource: &'static str) -> Need {
    Need::Permissions(permissions, resource)
}

/// Every method, Windshift's and Jetway's.
pub const RULES: &[Rule] = &[
    // windshift.events.v1alpha1: the stream's sources and subjects are checked too, so a client
    // cannot make a stream that captures or copies what it may not see.
    rule(
        "/windshift.events.v1alpha1.EventsService/EnsureStream",
        needs(
            &[Manage, Publish, Read],
            "manage `name`; publish on each of `subjects`; read each mirrored or aggregated stream",
        ),
    ),
    rule(
        "/windshift.events.v1alpha1.EventsService/EnsureConsumer",
        needs(&[Manage], "`stream`"),
    ),
    rule(
        "/windshift.events.v1alpha1.EventsService/DeleteConsumer",
        needs(&[Manage], "`stream`"),
    ),
    rule(
        "/windshift.events.v1alpha1.EventsService/PublishEvent",
        needs(&[Publish], "`subject`"),
    ),
    rule(
        "/windshift.events.v1alpha1.EventsService/Events",
        needs(&[Consume], "`subscribe.stream`/`subscribe.consumer`"),
    ),
    // windshift.state.v1alpha1
    rule(
        "/windshift.state.v1alpha1.StateService/EnsureStore",
        needs(&[StateWrite], "`store`"),
    ),
    rule(
        "/windshift.state.v1alpha1.StateService/Get",
        needs(&[StateRead], "`store`"),
    ),
    rule(
        "/windshift.state.v1alpha1.StateService/Set",
        needs(&[StateWrite], "`store`"),
    ),
    rule(
        "/windshift.state.v1alpha1.StateService/Delete",
        needs(&[StateWrite], "`store`"),
    ),
    // jetway.events.v1
    rule(
        "/jetway.events.v1.EventsService/EnsureConsumer",
        needs(&[Manage], "`stream`, and `dead_letter_stream` if set"),
    ),
    rule(
        "/jetway.events.v1.EventsService/PublishEvent",
        needs(&[Publish], "`event.subject`"),
    ),
    rule(
        "/jetway.events.v1.EventsService/PublishStream",
        needs(&[Publish], "each request's `event.subject`"),
    ),
    rule(
        "/jetway.events.v1.EventsService/PublishBatch",
        needs(&[Publish], "each `events[].subject`"),
    ),
    rule(
        "/jetway.events.v1.EventsService/GetEvent",
        needs(&[Read], "`stream`"),
    ),
    rule(
        "/jetway.events.v1.EventsService/ReadEvents",
        needs(&[Read], "`stream`"),
    ),
    rule(
        "/jetway.events.v1.EventsService/Subscribe",
        needs(&[Consume], "`stream` (a stream pattern without a consumer)"),
    ),
    rule(
        "/jetway.events.v1.EventsService/Fetch",
        needs(&[Consume], "`stream`/`consumer`"),
    ),
    rule(
        "/jetway.events.v1.EventsService/Ack",
        needs(&[Consume], "`stream`/`consumer`"),
    ),
    rule(
        "/jetway.events.v1.EventsService/Reject",
        needs(&[Consume], "`stream`/`consumer`"),
    ),
    // jetway.state.v1
    rule(
        "/jetway.state.v1.StateService/EnsureStore",
        needs(&[StateWrite], "`store`"),
    ),
    rule(
        "/jetway.state.v1.StateService/Watch",
        needs(&[StateRead], "`store`"),
    ),
    rule(
        "/jetway.state.v1.StateService/Keys",
        needs(&[StateRead], "`store`"),
    ),
    rule(
        "/jetway.state.v1.StateService/History",
        needs(&[StateRead], "`store`"),
    ),
    // jetway.admin.v1
    rule(
        "/jetway.admin.v1.AdminService/ListStreams",
        needs(&[See], "each listed stream; the others are left out"),
    ),
    rule(
        "/jetway.admin.v1.AdminService/GetStreamInfo",
        needs(&[See], "`stream`"),
    ),
    rule(
        "/jetway.admin.v1.AdminService/DeleteStream",
        needs(&[Manage], "`stream`"),
    ),
    rule(
        "/jetway.admin.v1.AdminService/PurgeStream",
        needs(&[Manage], "`stream`"),
    ),
    rule(
        "/jetway.admin.v1.AdminService/ListConsumers",
        needs(
            &[See],
            "`stream`, then each listed `stream`/consumer; the others are left out",
        ),
    ),
    rule(
        "/jetway.admin.v1.AdminService/GetConsumerInfo",
        needs(&[See], "`stream`/`consumer`"),
    ),
    rule(
        "/jetway.admin.v1.AdminService/ListDeadLetters",
        needs(
            &[Read, See],
            "read `dead_letter_stream`; each dead letter's stream (the others are left out)",
        ),
    ),
    rule(
        "/jetway.admin.v1.AdminService/RedriveDeadLetters",
        needs(&[Manage], "`dead_letter_stream`"),
    ),
    // jetway.requests.v1 (request/reply).
    rule(
        "/jetway.requests.v1.RequestService/Request",
        needs(&[Publish], "`subject`"),
    ),
    rule(
        "/jetway.requests.v1.RequestService/Respond",
        needs(&[Respond], "each subject it answers"),
    ),
    // Reflection describes the API, not anyone's data.
    rule(
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        Need::Authenticated,
    ),
    rule(
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        Need::Authenticated,
    ),
    rule("/grpc.health.v1.Health/Check", Need::Open),
    rule("/grpc.health.v1.Health/Watch", Need::Open),
];

/// The entry of `method` (`/package.Service/Method`), if it has one: one hash lookup, as every
/// call makes one.
pub fn rule_of(method: &str) -> Option<&'static Rule> {
    static BY_METHOD: std::sync::LazyLock<std::collections::HashMap<&'static str, &'static Rule>> =
        std::sync::LazyLock::new(|| RULES.iter().map(|rule| (rule.method, rule)).collect());
    BY_METHOD.get(method).copied()
}
