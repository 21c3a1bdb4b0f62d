//! The one table of every RPC the gRPC port serves and every route the HTTP API serves: the
//! permission each needs and where its resource comes from. Both authentication layers (gRPC's
//! [`crate::auth::AuthLayer`], the HTTP API's [`crate::http::auth`]) refuse a call that is not here
//! (fail closed); handlers check their resource against the same entry
//! ([`crate::auth::Caller::permit`]), so a handler cannot check a permission its entry does not
//! declare.
//!
//! An RPC's key is its path, `/package.Service/Method`; an HTTP route's is its method and path
//! template as the router and `/openapi.json` spell it, `POST /v1/publish/{subject}`. A route whose
//! resource is in its path needs nothing but its line: [`Need::OnPath`] is checked (and, for a
//! change that needs manage, audited) by the HTTP layer itself.

use crate::auth::Permission::{self, *};

/// What a method needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Nothing: answered without credentials (gRPC health, for probes and load balancers).
    Open,
    /// Any authenticated client; what it lists is filtered by what the client may see.
    Authenticated,
    /// Each of these permissions, on the resource the text names; the handler checks it.
    Permissions(&'static [Permission], &'static str),
    /// HTTP routes only: each of these permissions on the resource the template builds from the
    /// route's path parameters (`{stream}`, `{stream}/{consumer}`), checked by the HTTP layer
    /// before the handler runs. A change (any method but GET) that needs [`Manage`] is audited
    /// by the layer once it succeeded, so its handler does not audit it again.
    OnPath(&'static [Permission], &'static str),
}

/// One entry: `/package.Service/Method` (gRPC) or `METHOD /path/{template}` (HTTP), and what it
/// needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    /// The RPC's path, or the HTTP route's method and path template.
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

const fn on_path(permissions: &'static [Permission], template: &'static str) -> Need {
    Need::OnPath(permissions, template)
}

/// Every method, Windshift's and Jetway's, and every HTTP route.
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
        "/jetway.requests.v1.RequestService/RequestStream",
        needs(&[Publish], "each request's `request.subject`"),
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
    // The HTTP API (crate::http): one line per route, `METHOD /path/{template}` as the router
    // spells it. docs/security.md says how to add one.
    rule(
        "POST /v1/publish/{subject}",
        on_path(&[Publish], "{subject}"),
    ),
    rule(
        "POST /v1/publish",
        needs(&[Publish], "each item's `subject`"),
    ),
    rule(
        "GET /v1/streams/{stream}/events",
        on_path(&[Read], "{stream}"),
    ),
    rule(
        "GET /v1/streams/{stream}/events/{id}",
        on_path(&[Read], "{stream}"),
    ),
    rule(
        "GET /v1/subscribe/{subject}",
        needs(
            &[Consume],
            "the `stream` parameter, else the stream that captures `{subject}`",
        ),
    ),
    rule("PUT /v1/stores/{store}", on_path(&[StateWrite], "{store}")),
    rule(
        "GET /v1/stores/{store}/keys",
        on_path(&[StateRead], "{store}"),
    ),
    rule(
        "GET /v1/stores/{store}/keys/{key}",
        on_path(&[StateRead], "{store}"),
    ),
    rule(
        "PUT /v1/stores/{store}/keys/{key}",
        on_path(&[StateWrite], "{store}"),
    ),
    rule(
        "DELETE /v1/stores/{store}/keys/{key}",
        on_path(&[StateWrite], "{store}"),
    ),
    rule(
        "GET /v1/stores/{store}/watch",
        on_path(&[StateRead], "{store}"),
    ),
    rule(
        "GET /v1/streams",
        needs(&[See], "each listed stream; the others are left out"),
    ),
    rule("GET /v1/streams/{stream}", on_path(&[See], "{stream}")),
    rule(
        "PUT /v1/streams/{stream}",
        needs(
            &[Manage, Publish, Read],
            "manage `{stream}`; publish on each of `subjects`; read the `mirror` or each of `sources`",
        ),
    ),
    rule(
        "DELETE /v1/streams/{stream}",
        on_path(&[Manage], "{stream}"),
    ),
    rule(
        "POST /v1/streams/{stream}/purge",
        on_path(&[Manage], "{stream}"),
    ),
    rule(
        "GET /v1/streams/{stream}/consumers",
        on_path(&[See], "{stream}"),
    ),
    rule(
        "GET /v1/streams/{stream}/consumers/{consumer}",
        on_path(&[See], "{stream}/{consumer}"),
    ),
    // Audited by its handler, which names the consumer too.
    rule(
        "DELETE /v1/streams/{stream}/consumers/{consumer}",
        needs(&[Manage], "`{stream}`"),
    ),
    rule(
        "POST /v1/streams/{stream}/consumers/{consumer}/fetch",
        on_path(&[Consume], "{stream}/{consumer}"),
    ),
    rule(
        "POST /v1/streams/{stream}/consumers/{consumer}/ack",
        on_path(&[Consume], "{stream}/{consumer}"),
    ),
    rule(
        "POST /v1/streams/{stream}/consumers/{consumer}/reject",
        on_path(&[Consume], "{stream}/{consumer}"),
    ),
    rule(
        "POST /v1/streams/{stream}/consumers/{consumer}/extend",
        on_path(&[Consume], "{stream}/{consumer}"),
    ),
    rule(
        "GET /v1/dead-letters/{dead_letter_stream}",
        needs(
            &[Read, See],
            "read `{dead_letter_stream}`; each dead letter's stream (the others are left out)",
        ),
    ),
    rule(
        "POST /v1/dead-letters/{dead_letter_stream}/redrive",
        on_path(&[Manage], "{dead_letter_stream}"),
    ),
    rule(
        "POST /v1/request/{subject}",
        on_path(&[Publish], "{subject}"),
    ),
    // As jetway.events.v1 EnsureConsumer; the handler checks manage on `dead_letter_stream` too.
    rule(
        "PUT /v1/streams/{stream}/consumers/{consumer}",
        on_path(&[Manage], "{stream}"),
    ),
    // As jetway.state.v1 History.
    rule(
        "GET /v1/stores/{store}/history/{key}",
        on_path(&[StateRead], "{store}"),
    ),
    // The document describes the API, the same for every server and every caller, and names no
    // stream or client: tools and browsers fetch it before they hold credentials.
    rule("GET /openapi.json", Need::Open),
];

/// The entry of `method` (`/package.Service/Method`, or an HTTP route's `METHOD /path`), if it
/// has one: one hash lookup, as every call makes one.
pub fn rule_of(method: &str) -> Option<&'static Rule> {
    static BY_METHOD: std::sync::LazyLock<std::collections::HashMap<&'static str, &'static Rule>> =
        std::sync::LazyLock::new(|| RULES.iter().map(|rule| (rule.method, rule)).collect());
    BY_METHOD.get(method).copied()
}

/// The resource of an [`Need::OnPath`] `template`, each `{name}` replaced by the value of the
/// path parameter `name`; `None` if the template names a parameter `parameter` does not know.
pub fn fill<'a>(template: &str, parameter: impl Fn(&str) -> Option<&'a str>) -> Option<String> {
    let mut resource = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        resource.push_str(&rest[..open]);
        let close = open + rest[open..].find('}')?;
        resource.push_str(parameter(&rest[open + 1..close])?);
        rest = &rest[close + 1..];
    }
    resource.push_str(rest);
    Some(resource)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The HTTP routes `/openapi.json` lists (it is generated from the handlers), with the
    /// document itself: `METHOD /path`.
    fn http_routes() -> Vec<String> {
        let document = serde_json::to_value(crate::http::openapi::document()).unwrap();
        let mut routes = vec!["GET /openapi.json".to_owned()];
        for (path, item) in document["paths"].as_object().unwrap() {
            for method in [
                "get", "put", "post", "delete", "patch", "head", "options", "trace",
            ] {
                if item.get(method).is_some() {
                    routes.push(format!("{} {path}", method.to_uppercase()));
                }
            }
        }
        routes
    }

    #[test]
    fn every_http_route_has_an_entry_and_every_http_entry_is_a_route() {
        let routes = http_routes();
        assert!(routes.len() > 5, "{routes:?}");
        for route in &routes {
            assert!(
                rule_of(route).is_some(),
                "{route} has no entry in auth::rpcs::RULES: add one line (docs/security.md)"
            );
        }
        for rule in RULES.iter().filter(|rule| !rule.method.starts_with('/')) {
            assert!(
                routes.iter().any(|route| route == rule.method),
                "{} is in the table but /openapi.json does not list it",
                rule.method
            );
        }
    }

    #[test]
    fn path_templates_name_parameters_of_their_route() {
        for rule in RULES {
            let Need::OnPath(permissions, template) = rule.need else {
                continue;
            };
            let (_, path) = rule
                .method
                .split_once(' ')
                .unwrap_or_else(|| panic!("{}: OnPath is for HTTP routes", rule.method));
            assert!(!permissions.is_empty(), "{}", rule.method);
            let resource = fill(template, |name| {
                path.contains(&format!("{{{name}}}")).then_some("x")
            });
            assert!(
                resource.is_some_and(|resource| !resource.contains(['{', '}'])),
                "{}: {template} names a parameter the path does not have",
                rule.method
            );
        }
    }

    #[test]
    fn a_template_is_filled_from_the_path() {
        let parameters = [("stream", "orders"), ("consumer", "worker")];
        let lookup = |name: &str| {
            parameters
                .iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| *value)
        };
        assert_eq!(fill("{stream}", lookup).as_deref(), Some("orders"));
        assert_eq!(
            fill("{stream}/{consumer}", lookup).as_deref(),
            Some("orders/worker")
        );
        assert_eq!(fill("{store}", lookup), None);
        assert_eq!(fill("{stream", lookup), None);
    }
}
