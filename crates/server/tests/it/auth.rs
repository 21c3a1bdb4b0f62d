//! Authentication and authorization (AUTH_FILE): every RPC with no, wrong, insufficient and
//! sufficient credentials; the permission table against what reflection lists; two tenants
//! isolated by subject and stream prefixes.

use std::{collections::BTreeSet, path::Path};

use futures::{FutureExt, StreamExt, future::BoxFuture};
use jetway_api::{
    jetway::{
        admin::v1::{self as admin, admin_service_client::AdminServiceClient},
        events::v1::{self as jw, events_service_client::EventsServiceClient as JwEvents},
        requests::v1::{self as jr, request_service_client::RequestServiceClient},
        state::v1::{self as jws, state_service_client::StateServiceClient as JwState},
    },
    windshift::{
        events::v1alpha1::{
            self as ws, events_request, events_service_client::EventsServiceClient as WsEvents,
        },
        state::v1alpha1::{self as wss, state_service_client::StateServiceClient as WsState},
    },
};
use jetway_core::credentials::token_hash;
use jetway_server::{
    app::Security,
    auth::{
        Access,
        rpcs::{self, Need},
    },
};
use jetway_testkit::NatsServer;
use prost::Message;
use tonic::{
    Code, Request, Status,
    metadata::{Ascii, MetadataValue},
    service::Interceptor,
    transport::Channel,
};
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
use tonic_reflection::pb::v1::{
    ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
    server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
};

use crate::{
    clients::{consumer, fetch, typed},
    harness::{
        RECV_GUARD, TestServer, publish_request, raw_event, raw_stream_item, stream_request,
        with_clients_file,
    },
};

pub(crate) const ALL: &str = "token-of-the-client-allowed-everything";
pub(crate) const NONE: &str = "token-of-the-client-allowed-nothing";
pub(crate) const TENANT_A: &str = "token-of-tenant-a";
pub(crate) const TENANT_B: &str = "token-of-tenant-b";

/// A clients file with `all` (every permission), `none` (none), and tenants `a` and `b`, each
/// confined to its own prefixes.
pub(crate) fn clients_file(dir: &Path) -> std::path::PathBuf {
    let tenant = |id: &str, token: &str| {
        format!(
            r#"{{"id": "{id}", "tokens": ["{}"], "permissions": {{
                "publish": ["{id}.>"], "consume": ["{id}-*"], "read": ["{id}-*"],
                "manage": ["{id}-*"], "state_read": ["{id}-*"], "state_write": ["{id}-*"],
                "respond": ["{id}.>"]}}}}"#,
            token_hash(token)
        )
    };
    let text = format!(
        r#"{{"clients": [
            {{"id": "all", "tokens": ["{}"], "permissions": {{
                "publish": [">"], "consume": [">"], "read": [">"], "manage": [">"],
                "state_read": [">"], "state_write": [">"], "respond": [">"]}}}},
            {{"id": "none", "tokens": ["{}"]}},
            {a}, {b}
        ]}}"#,
        token_hash(ALL),
        token_hash(NONE),
        a = tenant("a", TENANT_A),
        b = tenant("b", TENANT_B),
    );
    let path = dir.join("clients.json");
    std::fs::write(&path, text).unwrap();
    path
}

pub(crate) struct Secured {
    pub(crate) nats: NatsServer,
    pub(crate) jetway: TestServer,
    _dir: tempfile::TempDir,
}

pub(crate) async fn secured() -> Secured {
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let security = Security {
        access: Access::load(&clients_file(dir.path())).unwrap(),
        reflection: true,
    };
    let jetway = TestServer::builder()
        .nats_url(nats.url())
        .security(security)
        .start()
        .await;
    Secured {
        nats,
        jetway,
        _dir: dir,
    }
}

/// Sends `authorization` on every call, if set.
#[derive(Clone)]
pub(crate) struct Auth(pub(crate) Option<MetadataValue<Ascii>>);

impl Auth {
    pub(crate) fn bearer(token: &str) -> Auth {
        Auth(Some(format!("Bearer {token}").parse().unwrap()))
    }
}

impl Interceptor for Auth {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

type Call = fn(Channel, Auth) -> BoxFuture<'static, Result<(), Status>>;

/// The first message of a response stream, as the call's outcome.
async fn first<T>(
    response: Result<tonic::Response<tonic::Streaming<T>>, Status>,
) -> Result<(), Status> {
    response?.into_inner().message().await.map(|_| ())
}

/// The outcome of a server-streaming call: refused or opened (its first event may never come).
async fn opened<T>(
    response: Result<tonic::Response<tonic::Streaming<T>>, Status>,
) -> Result<(), Status> {
    response.map(drop)
}

/// One call of every RPC, naming the stream `s-x`, consumer `c`, subject `s.x` and store `s-kv`.
fn calls() -> Vec<(&'static str, Call)> {
    vec![
        ("/jetway.requests.v1.RequestService/Request", |ch, a| {
            async move {
                let request = jr::RequestRequest {
                    subject: "s.x".into(),
                    ..Default::default()
                };
                // Allowed, it finds no processor: UNAVAILABLE, which is not a denial.
                RequestServiceClient::with_interceptor(ch, a)
                    .request(request)
                    .await
                    .map(drop)
            }
            .boxed()
        }),
        (
            "/jetway.requests.v1.RequestService/RequestStream",
            |ch, a| {
                async move {
                    let request = jr::RequestStreamRequest {
                        id: 1,
                        request: Some(jr::RequestRequest {
                            subject: "s.x".into(),
                            ..Default::default()
                        }),
                        ..Default::default()
                    };
                    let mut answers = RequestServiceClient::with_interceptor(ch, a)
                        .request_stream(
                            futures::stream::iter([request]).chain(futures::stream::pending()),
                        )
                        .await?
                        .into_inner();
                    // A denial fails the request, not the stream: its status comes as the answer.
                    match answers.message().await?.and_then(|answer| answer.result) {
                        Some(jr::request_stream_response::Result::Error(error)) => {
                            Err(Status::new(Code::from_i32(error.code), error.message))
                        }
                        _ => Ok(()),
                    }
                }
                .boxed()
            },
        ),
        ("/jetway.requests.v1.RequestService/Respond", |ch, a| {
            async move {
                let attach = jr::RespondRequest {
                    message: Some(jr::respond_request::Message::Attach(jr::Attach {
                        subjects: vec!["s.x".into()],
                        ..Default::default()
                    })),
                };
                first(
                    RequestServiceClient::with_interceptor(ch, a)
                        .respond(futures::stream::iter([attach]).chain(futures::stream::pending()))
                        .await,
                )
                .await
            }
            .boxed()
        }),
        (
            "/windshift.events.v1alpha1.EventsService/EnsureStream",
            |ch, a| {
                async move {
                    WsEvents::with_interceptor(ch, a)
                        .ensure_stream(stream_request("s-x", &["s.>"]))
                        .await
                        .map(drop)
                }
                .boxed()
            },
        ),
        (
            "/windshift.events.v1alpha1.EventsService/EnsureConsumer",
            |ch, a| {
                async move {
                    let request = ws::EnsureConsumerRequest {
                        stream: "s-x".into(),
                        name: Some("c".into()),
                        ..Default::default()
                    };
                    WsEvents::with_interceptor(ch, a)
                        .ensure_consumer(request)
                        .await
                        .map(drop)
                }
                .boxed()
            },
        ),
        (
            "/windshift.events.v1alpha1.EventsService/DeleteConsumer",
            |ch, a| {
                async move {
                    let request = ws::DeleteConsumerRequest {
                        stream: "s-x".into(),
                        id: "c".into(),
                    };
                    WsEvents::with_interceptor(ch, a)
                        .delete_consumer(request)
                        .await
                        .map(drop)
                }
                .boxed()
            },
        ),
        (
            "/windshift.events.v1alpha1.EventsService/PublishEvent",
            |ch, a| {
                async move {
                    WsEvents::with_interceptor(ch, a)
                        .publish_event(publish_request("s.x", "v"))
                        .await
                        .map(drop)
                }
                .boxed()
            },
        ),
        (
            "/windshift.events.v1alpha1.EventsService/Events",
            |ch, a| {
                async move {
                    let subscribe = ws::EventsRequest {
                        request: Some(events_request::Request::Subscribe(
                            events_request::Subscribe {
                                stream: "s-x".into(),
                                consumer: "c".into(),
                                ..Default::default()
                            },
                        )),
                    };
                    first(
                        WsEvents::with_interceptor(ch, a)
                            .events(
                                futures::stream::iter([subscribe])
                                    .chain(futures::stream::pending()),
                            )
                            .await,
                    )
                    .await
                }
                .boxed()
            },
        ),
        (
            "/windshift.state.v1alpha1.StateService/EnsureStore",
            |ch, a| {
                async move {
                    WsState::with_interceptor(ch, a)
                        .ensure_store(wss::EnsureStoreRequest {
                            store: "s-kv".into(),
                        })
                        .await
                        .map(drop)
                }
                .boxed()
            },
        ),
        ("/windshift.state.v1alpha1.StateService/Get", |ch, a| {
            async move {
                WsState::with_interceptor(ch, a)
                    .get(wss::GetRequest {
                        store: "s-kv".into(),
                        key: "k".into(),
                    })
                    .await
                    .map(drop)
            }
            .boxed()
        }),
        ("/windshift.state.v1alpha1.StateService/Set", |ch, a| {
            async move {
                WsState::with_interceptor(ch, a)
                    .set(wss::SetRequest {
                        store: "s-kv".into(),
                        key: "k".into(),
                        ..Default::default()
                    })
                    .await
                    .map(drop)
            }
            .boxed()
        }),
        ("/windshift.state.v1alpha1.StateService/Delete", |ch, a| {
            async move {
                WsState::with_interceptor(ch, a)
                    .delete(wss::DeleteRequest {
                        store: "s-kv".into(),
                        key: "k".into(),
                        ..Default::default()
                    })
                    .await
                    .map(drop)
            }
            .boxed()
        }),
        ("/jetway.events.v1.EventsService/EnsureConsumer", |ch, a| {
            async move {
                JwEvents::with_interceptor(ch, a)
                    .ensure_consumer(jw::EnsureConsumerRequest {
                        stream: "s-x".into(),
                        ..Default::default()
                    })
                    .await
                    .map(drop)
            }
            .boxed()
        }),
        ("/jetway.events.v1.EventsService/PublishEvent", |ch, a| {
            async move {
                JwEvents::with_interceptor(ch, a)
                    .publish_event(raw_event())
                    .await
                    .map(drop)
            }
            .boxed()
        }),
        ("/jetway.events.v1.EventsService/PublishStream", |ch, a| {
            async move {
                let request = jw::PublishStreamRequest {
                    correlation_id: 1,
                    event: Some(raw_event()),
                };
                first(
                    JwEvents::with_interceptor(ch, a)
                        .publish_stream(futures::stream::iter([request]))
                        .await,
                )
                .await
            }
            .boxed()
        }),
        ("/jetway.events.v1.EventsService/PublishBatch", |ch, a| {
            async move {
                let request = jw::PublishBatchRequest {
                    events: vec![raw_event()],
                };
                JwEvents::with_interceptor(ch, a)
                    .publish_batch(request)
                    .await
                    .map(drop)
            }
            .boxed()
        }),
        ("/jetway.events.v1.EventsService/GetEvent", |ch, a| {
            async move {
                JwEvents::with_interceptor(ch, a)
                    .get_event(jw::GetEventRequest {
                        stream: "s-x".into(),
                        id: 1,
                    })
                    .await
                    .map(drop)
            }
            .boxed()
        }),
        ("/jetway.events.v1.EventsService/ReadEvents", |ch, a| {
            async move {
                opened(
                    JwEvents::with_interceptor(ch, a)
                        .read_events(jw::ReadEventsRequest {
                            stream: "s-x".into(),
                            ..Default::default()
                        })
                        .await,
                )
                .await
            }
            .boxed()
        }),
        ("/jetway.events.v1.EventsService/Subscribe", |ch, a| {
            async move {
                opened(
                    JwEvents::with_interceptor(ch, a)
                        .subscribe(jw::SubscribeRequest {
                            stream: "s-x".into(),
                            ..Default::default()
                        })
                        .await,
                )
                .await
            }
            .boxed()
        }),
        ("/jetway.events.v1.EventsService/Fetch", |ch, a| {
            async move {
                JwEvents::with_interceptor(ch, a)
                    .fetch(jw::FetchRequest {
                        stream: "s-x".into(),
                        consumer: "c".into(),
                        max_events: 1,
                        ..Default::default()
                    })
                    .await
                    .map(drop)
            }
            .boxed()
        }),
        ("/jetway.events.v1.EventsService/Ack", |ch, a| {
            async move {
                JwEvents::with_interceptor(ch, a)
                    .ack(jw::AckRequest {
                        stream: "s-x".into(),
                        consumer: "c".into(),
                        ids: vec![1],
                    })
                    .await
                    .map(drop)
            }
            .boxed()
        }),
        ("/jetway.events.v1.EventsService/Reject", |ch, a| {
            async move {
                JwEvents::with_interceptor(ch, a)
                    .reject(jw::RejectRequest {
                        stream: "s-x".into(),
                        consumer: "c".into(),
                        ids: vec![1],
                        ..Default::default()
                    })
                    .await
                    .map(drop)
            }
            .boxed()
        }),
        ("/jetway.state.v1.StateService/EnsureStore", |ch, a| {
            async move {
                JwState::with_interceptor(ch, a)
                    .ensure_store(jws::EnsureStoreRequest {
                        store: "s-kv".into(),
                        ..Default::default()
                    })
                    .await
                    .map(drop)
            }
            .boxed()
        }),
        ("/jetway.state.v1.StateService/Watch", |ch, a| {
            async move {
                opened(
                    JwState::with_interceptor(ch, a)
                        .watch(jws::WatchRequest {
                            store: "s-kv".into(),
                            ..Default::default()
                        })
                        .await,
                )
                .await
            }
            .boxed()
        }),
        ("/jetway.state.v1.StateService/Keys", |ch, a| {
            async move {
                opened(
                    JwState::with_interceptor(ch, a)
                        .keys(jws::KeysRequest {
                            store: "s-kv".into(),
                            ..Default::default()
                        })
                        .await,
                )
                .await
            }
            .boxed()
        }),
        ("/jetway.state.v1.StateService/History", |ch, a| {
            async move {
                opened(
                    JwState::with_interceptor(ch, a)
                        .history(jws::HistoryRequest {
                            store: "s-kv".into(),
                            key: "k".into(),
                        })
                        .await,
                )
                .await
            }
            .boxed()
        }),
        ("/jetway.admin.v1.AdminService/ListStreams", |ch, a| {
            async move {
                AdminServiceClient::with_interceptor(ch, a)
                    .list_streams(admin::ListStreamsRequest::default())
                    .await
                    .map(drop)
            }
            .boxed()
        }),
        ("/jetway.admin.v1.AdminService/GetStreamInfo", |ch, a| {
            async move {
                AdminServiceClient::with_interceptor(ch, a)
                    .get_stream_info(admin::GetStreamInfoRequest {
                        stream: "s-x".into(),
                        ..Default::default()
                    })
                    .await
                    .map(drop)
            }
            .boxed()
        }),
        ("/jetway.admin.v1.AdminService/DeleteStream", |ch, a| {
            async move {
                AdminServiceClient::with_interceptor(ch, a)
                    .delete_stream(admin::DeleteStreamRequest {
                        stream: "s-gone".into(),
                        ..Default::default()
                    })
                    .await
                    .map(drop)
            }
            .boxed()
        }),
        ("/jetway.admin.v1.AdminService/PurgeStream", |ch, a| {
            async move {
                AdminServiceClient::with_interceptor(ch, a)
                    .purge_stream(admin::PurgeStreamRequest {
                        stream: "s-x".into(),
                        ..Default::default()
                    })
                    .await
                    .map(drop)
            }
            .boxed()
        }),
        ("/jetway.admin.v1.AdminService/ListConsumers", |ch, a| {
            async move {
                AdminServiceClient::with_interceptor(ch, a)
                    .list_consumers(admin::ListConsumersRequest {
                        stream: "s-x".into(),
                        ..Default::default()
                    })
                    .await
                    .map(drop)
            }
            .boxed()
        }),
        ("/jetway.admin.v1.AdminService/GetConsumerInfo", |ch, a| {
            async move {
                AdminServiceClient::with_interceptor(ch, a)
                    .get_consumer_info(admin::GetConsumerInfoRequest {
                        stream: "s-x".into(),
                        consumer: "c".into(),
                    })
                    .await
                    .map(drop)
            }
            .boxed()
        }),
        ("/jetway.admin.v1.AdminService/ListDeadLetters", |ch, a| {
            async move {
                opened(
                    AdminServiceClient::with_interceptor(ch, a)
                        .list_dead_letters(admin::ListDeadLettersRequest {
                            dead_letter_stream: "s-dlq".into(),
                            ..Default::default()
                        })
                        .await,
                )
                .await
            }
            .boxed()
        }),
        (
            "/jetway.admin.v1.AdminService/RedriveDeadLetters",
            |ch, a| {
                async move {
                    AdminServiceClient::with_interceptor(ch, a)
                        .redrive_dead_letters(admin::RedriveDeadLettersRequest {
                            dead_letter_stream: "s-dlq".into(),
                            ids: vec![1],
                            ..Default::default()
                        })
                        .await
                        .map(drop)
                }
                .boxed()
            },
        ),
        (
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            |ch, a| {
                async move {
                    first(
                        ServerReflectionClient::with_interceptor(ch, a)
                            .server_reflection_info(futures::stream::iter([list_services()]))
                            .await,
                    )
                    .await
                }
                .boxed()
            },
        ),
        (
            "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
            |ch, a| {
                async move {
                    use tonic_reflection::pb::v1alpha::{
                        self as alpha, server_reflection_client::ServerReflectionClient as Alpha,
                    };
                    let request = alpha::ServerReflectionRequest {
                        host: String::new(),
                        message_request: Some(
                            alpha::server_reflection_request::MessageRequest::ListServices(
                                String::new(),
                            ),
                        ),
                    };
                    first(
                        Alpha::with_interceptor(ch, a)
                            .server_reflection_info(futures::stream::iter([request]))
                            .await,
                    )
                    .await
                }
                .boxed()
            },
        ),
        ("/grpc.health.v1.Health/Check", |ch, a| {
            async move {
                HealthClient::with_interceptor(ch, a)
                    .check(HealthCheckRequest::default())
                    .await
                    .map(drop)
            }
            .boxed()
        }),
        ("/grpc.health.v1.Health/Watch", |ch, a| {
            async move {
                opened(
                    HealthClient::with_interceptor(ch, a)
                        .watch(HealthCheckRequest::default())
                        .await,
                )
                .await
            }
            .boxed()
        }),
    ]
}

fn list_services() -> ServerReflectionRequest {
    ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    }
}

/// Every method the server lists by reflection, as `/package.Service/Method`.
async fn reflected_methods(channel: Channel, auth: Auth) -> BTreeSet<String> {
    let mut reflection = ServerReflectionClient::with_interceptor(channel, auth);
    let ask = |request| {
        let mut reflection = reflection.clone();
        async move {
            let mut responses = reflection
                .server_reflection_info(futures::stream::iter([request]))
                .await
                .unwrap()
                .into_inner();
            responses.message().await.unwrap().unwrap().message_response
        }
    };
    let Some(MessageResponse::ListServicesResponse(list)) = ask(list_services()).await else {
        panic!("no service list");
    };
    let mut methods = BTreeSet::new();
    for service in list.service {
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::FileContainingSymbol(service.name.clone())),
        };
        let Some(MessageResponse::FileDescriptorResponse(files)) = ask(request).await else {
            panic!("no descriptor of {}", service.name);
        };
        for bytes in files.file_descriptor_proto {
            let file = prost_types::FileDescriptorProto::decode(bytes.as_slice()).unwrap();
            for described in &file.service {
                let full = format!("{}.{}", file.package(), described.name());
                if full == service.name {
                    for method in &described.method {
                        methods.insert(format!("/{full}/{}", method.name()));
                    }
                }
            }
        }
    }
    let _ = &mut reflection;
    methods
}

/// Every method reflection lists has an entry in the permission table and a case in
/// [`calls`]; the table names nothing that is not served.
#[tokio::test]
async fn every_served_rpc_has_an_entry_in_the_permission_table() {
    let env = secured().await;
    let served = reflected_methods(env.jetway.channel().await, Auth::bearer(ALL)).await;
    assert!(served.len() > 30, "{served:?}");
    let cases: BTreeSet<String> = calls().iter().map(|(m, _)| m.to_string()).collect();
    for method in &served {
        assert!(
            rpcs::rule_of(method).is_some(),
            "{method} has no entry in auth::rpcs::RULES"
        );
        assert!(
            cases.contains(method),
            "{method} has no case in auth::calls"
        );
    }
    // The HTTP API's routes (keyed `METHOD /path`) are checked against `/openapi.json`.
    for rule in rpcs::RULES
        .iter()
        .filter(|rule| rule.method.starts_with('/'))
    {
        assert!(
            served.contains(rule.method)
                // Served, but reflection lists the services of the descriptors it was given, and
                // the older reflection is not among them.
                || rule.method.starts_with("/grpc.reflection.v1alpha."),
            "{} is in the table but not served",
            rule.method
        );
    }
}

/// No credentials and wrong credentials: UNAUTHENTICATED; a client without the permission:
/// PERMISSION_DENIED; a client with it: anything but those two. Health answers everyone.
#[tokio::test]
async fn every_rpc_refuses_who_may_not_call_it() {
    let env = secured().await;
    let channel = env.jetway.channel().await;
    for (method, call) in calls() {
        let rule = rpcs::rule_of(method).unwrap();
        let code = |result: Result<(), Status>| result.err().map(|status| status.code());
        let anonymous = code(call(channel.clone(), Auth(None)).await);
        let wrong = code(call(channel.clone(), Auth::bearer("not-a-token")).await);
        let unprivileged = code(call(channel.clone(), Auth::bearer(NONE)).await);
        let privileged = code(call(channel.clone(), Auth::bearer(ALL)).await);
        let denied = [Some(Code::Unauthenticated), Some(Code::PermissionDenied)];
        assert!(
            !denied.contains(&privileged),
            "{method} with every permission: {privileged:?}"
        );
        if rule.need == Need::Open {
            for outcome in [anonymous, wrong, unprivileged] {
                assert!(!denied.contains(&outcome), "{method} is open: {outcome:?}");
            }
            continue;
        }
        assert_eq!(
            anonymous,
            Some(Code::Unauthenticated),
            "{method} without credentials"
        );
        assert_eq!(
            wrong,
            Some(Code::Unauthenticated),
            "{method} with a wrong token"
        );
        // ListStreams answers anyone authenticated, leaving out what the client may not see.
        let open_to_any_client = rule.need == Need::Authenticated
            || method == "/jetway.admin.v1.AdminService/ListStreams";
        if open_to_any_client {
            assert!(
                !denied.contains(&unprivileged),
                "{method}: {unprivileged:?}"
            );
        } else {
            assert_eq!(
                unprivileged,
                Some(Code::PermissionDenied),
                "{method} without the permission"
            );
        }
    }
}

/// The permission denial names the permission and the resource, and never the token.
#[tokio::test]
async fn a_denial_names_the_permission_and_the_resource() {
    let env = secured().await;
    let mut client = WsEvents::with_interceptor(env.jetway.channel().await, Auth::bearer(NONE));
    let status = client
        .publish_event(publish_request("s.x", "v"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    assert!(
        status.message().contains("publish") && status.message().contains("s.x"),
        "{status:?}"
    );
    assert!(!status.message().contains(NONE), "{status:?}");
}

/// Two tenants share one server: each publishes, reads and manages only under its own prefixes,
/// cannot make a stream that captures the other's subjects, and lists only its own streams.
#[tokio::test]
async fn two_tenants_are_isolated_by_their_prefixes() {
    let env = secured().await;
    let channel = env.jetway.channel().await;
    let mut a = WsEvents::with_interceptor(channel.clone(), Auth::bearer(TENANT_A));
    let mut b = WsEvents::with_interceptor(channel.clone(), Auth::bearer(TENANT_B));
    a.ensure_stream(stream_request("a-orders", &["a.orders.>"]))
        .await
        .unwrap();
    b.ensure_stream(stream_request("b-orders", &["b.orders.>"]))
        .await
        .unwrap();
    a.publish_event(publish_request("a.orders.created", "1"))
        .await
        .unwrap();

    let denied = |result: Result<tonic::Response<_>, Status>| result.unwrap_err().code();
    // A stream of its own that would capture the other tenant's subjects.
    let spy = a
        .ensure_stream(stream_request("a-spy", &["b.orders.>"]))
        .await;
    assert_eq!(denied(spy.map(|r| r.map(drop))), Code::PermissionDenied);
    let publish = a
        .publish_event(publish_request("b.orders.created", "x"))
        .await;
    assert_eq!(denied(publish.map(|r| r.map(drop))), Code::PermissionDenied);
    // A consumer of its own whose dead letters would land in the other tenant's stream.
    let dead_letters = JwEvents::with_interceptor(channel.clone(), Auth::bearer(TENANT_A))
        .ensure_consumer(jw::EnsureConsumerRequest {
            stream: "a-orders".into(),
            name: Some("billing".into()),
            subjects: vec!["a.orders.>".into()],
            max_deliveries: Some(3),
            dead_letter_stream: Some("b-dead-letters".into()),
            ..Default::default()
        })
        .await;
    let status = dead_letters.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(status.message().contains("b-dead-letters"), "{status:?}");

    let mut b_events = JwEvents::with_interceptor(channel.clone(), Auth::bearer(TENANT_B));
    let read = b_events
        .get_event(jw::GetEventRequest {
            stream: "a-orders".into(),
            id: 1,
        })
        .await;
    assert_eq!(denied(read.map(|r| r.map(drop))), Code::PermissionDenied);
    let mut a_events = JwEvents::with_interceptor(channel.clone(), Auth::bearer(TENANT_A));
    let event = a_events
        .get_event(jw::GetEventRequest {
            stream: "a-orders".into(),
            id: 1,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(event.event.unwrap().subject, "a.orders.created");

    let mut b_admin = AdminServiceClient::with_interceptor(channel.clone(), Auth::bearer(TENANT_B));
    let delete = b_admin
        .delete_stream(admin::DeleteStreamRequest {
            stream: "a-orders".into(),
            ..Default::default()
        })
        .await;
    assert_eq!(denied(delete.map(|r| r.map(drop))), Code::PermissionDenied);
    let listed = |tenant| {
        let channel = channel.clone();
        async move {
            let mut admin = AdminServiceClient::with_interceptor(channel, Auth::bearer(tenant));
            let page = admin
                .list_streams(admin::ListStreamsRequest::default())
                .await
                .unwrap();
            page.into_inner()
                .streams
                .into_iter()
                .map(|s| s.name)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(listed(TENANT_A).await, vec!["a-orders".to_owned()]);
    assert_eq!(listed(TENANT_B).await, vec!["b-orders".to_owned()]);
    let all = listed(ALL).await;
    assert!(
        all.contains(&"a-orders".to_owned()) && all.contains(&"b-orders".to_owned()),
        "{all:?}"
    );
}

/// A changed file is in force within a poll; a client added to it can call at once.
#[tokio::test]
async fn a_changed_clients_file_is_picked_up() {
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let path = clients_file(dir.path());
    let jetway = with_clients_file(&nats, &path).await;
    let channel = jetway.channel().await;
    let list = |token: &'static str| {
        let channel = channel.clone();
        async move {
            AdminServiceClient::with_interceptor(channel, Auth::bearer(token))
                .list_streams(admin::ListStreamsRequest::default())
                .await
                .map(drop)
        }
    };
    const NEW: &str = "token-of-a-client-added-later";
    assert_eq!(list(NEW).await.unwrap_err().code(), Code::Unauthenticated);
    let text = format!(
        r#"{{"clients": [{{"id": "later", "tokens": ["{}"]}}]}}"#,
        token_hash(NEW)
    );
    std::fs::write(&path, text).unwrap();
    jetway_testkit::eventually("the new client is let in", || async {
        list(NEW).await.ok()
    })
    .await;
    assert_eq!(list(ALL).await.unwrap_err().code(), Code::Unauthenticated);
}

/// Over `events_sessions`, an Events stream is refused with RESOURCE_EXHAUSTED naming it, until
/// one closes; over `publish_per_second`, a publish is refused naming that.
#[tokio::test]
async fn per_client_limits_answer_resource_exhausted_naming_the_limit() {
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("clients.json");
    let text = format!(
        r#"{{"limits": {{"events_sessions": 1}},
            "clients": [{{"id": "small", "tokens": ["{}"],
              "permissions": {{"publish": [">"], "consume": [">"], "manage": [">"]}},
              "limits": {{"publish_per_second": 1, "publish_burst": 2}}}}]}}"#,
        token_hash(ALL)
    );
    std::fs::write(&path, text).unwrap();
    let jetway = with_clients_file(&nats, &path).await;
    let mut client = WsEvents::with_interceptor(jetway.channel().await, Auth::bearer(ALL));
    client
        .ensure_stream(stream_request("orders", &["orders.>"]))
        .await
        .unwrap();

    let (hold, requests) = tokio::sync::mpsc::channel::<ws::EventsRequest>(1);
    let first = client
        .events(tokio_stream::wrappers::ReceiverStream::new(requests))
        .await
        .unwrap();
    let refused = client.events(futures::stream::pending()).await.unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(refused.message().contains("events_sessions"), "{refused:?}");
    drop((first, hold));
    jetway_testkit::eventually("the closed session's slot is free", || {
        let mut client = client.clone();
        async move { client.events(futures::stream::pending()).await.ok() }
    })
    .await;

    for _ in 0..2 {
        client
            .publish_event(publish_request("orders.created", "v"))
            .await
            .unwrap();
    }
    // The burst is spent; one more per second comes back, far later than this next call.
    let over = client
        .publish_event(publish_request("orders.created", "v"))
        .await
        .unwrap_err();
    assert_eq!(over.code(), Code::ResourceExhausted, "{over:?}");
    assert!(over.message().contains("publish_per_second"), "{over:?}");
}

/// Over `fetched_in_flight`, counted over all of a client's consumers, Fetch is refused with
/// RESOURCE_EXHAUSTED naming it; an Ack gives a slot back.
#[tokio::test]
async fn fetched_events_in_flight_are_limited_per_client() {
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("clients.json");
    let text = format!(
        r#"{{"clients": [{{"id": "small", "tokens": ["{}"],
              "permissions": {{"publish": [">"], "consume": [">"], "manage": [">"]}},
              "limits": {{"fetched_in_flight": 2}}}}]}}"#,
        token_hash(ALL)
    );
    std::fs::write(&path, text).unwrap();
    let jetway = with_clients_file(&nats, &path).await;
    let channel = jetway.channel().await;
    WsEvents::with_interceptor(channel.clone(), Auth::bearer(ALL))
        .ensure_stream(stream_request("orders", &["orders.>"]))
        .await
        .unwrap();
    let mut client = JwEvents::with_interceptor(channel, Auth::bearer(ALL));
    for name in ["worker", "other"] {
        client
            .ensure_consumer(consumer("orders", name, &["orders.>"]))
            .await
            .unwrap();
    }
    for i in 0..3 {
        client
            .publish_event(typed("orders.created", &i.to_string()))
            .await
            .unwrap();
    }
    let from = |name: &str, max| jw::FetchRequest {
        consumer: name.into(),
        ..fetch(max)
    };
    let first = client.fetch(from("worker", 1)).await.unwrap().into_inner();
    assert_eq!(first.events.len(), 1);
    // Another consumer gets what the client's limit leaves, not what it asks for.
    let other = client.fetch(from("other", 10)).await.unwrap().into_inner();
    assert_eq!(other.events.len(), 1);

    let over = client.fetch(from("worker", 1)).await.unwrap_err();
    assert_eq!(over.code(), Code::ResourceExhausted, "{over:?}");
    assert!(over.message().contains("fetched_in_flight"), "{over:?}");

    let acked = client
        .ack(jw::AckRequest {
            stream: "orders".into(),
            consumer: "worker".into(),
            ids: vec![first.events[0].id],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(acked.settled.unwrap().ids, [first.events[0].id]);
    let again = client.fetch(from("worker", 10)).await.unwrap().into_inner();
    assert_eq!(again.events.len(), 1, "{again:?}");
}

/// With every log at trace level, no token or secret appears in the log, right or wrong, over
/// gRPC or the HTTP API; the denials and the audit line are there, and `/metrics` counts the
/// failures by reason.
#[tokio::test]
async fn no_credential_reaches_the_log_and_failures_are_counted() {
    use crate::harness::{http_get, jetway_server, log_lines, next_line};
    use base64::{Engine, engine::general_purpose::STANDARD};

    const SECRET: &str = "pa55wordSECRET";
    const WRONG_TOKEN: &str = "wrongTOKENsecret";
    const WRONG_SECRET: &str = "wrongPASSWORDsecret";
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("clients.json");
    let text = format!(
        r#"{{"clients": [
            {{"id": "ops", "tokens": ["{}"], "secret": "{}", "permissions": {{"manage": [">"], "publish": [">"]}}}},
            {{"id": "none", "tokens": ["{}"]}}]}}"#,
        token_hash(ALL),
        jetway_core::credentials::secret_hash(SECRET).unwrap(),
        token_hash(NONE),
    );
    std::fs::write(&path, text).unwrap();
    let mut child = jetway_server(&[
        ("NATS_URL", &nats.url()),
        ("RUST_LOG", "trace"),
        ("GRPC_PORT", "0"),
        ("HEALTH_PORT", "0"),
        ("HTTP_PORT", "0"),
        ("LISTEN_HOST", "127.0.0.1"),
        ("AUTH_FILE", path.to_str().unwrap()),
    ])
    .spawn()
    .unwrap();
    let mut lines = log_lines(&mut child);
    let mut log = Vec::new();
    let (grpc_addr, health_addr, http_addr) = loop {
        let line = next_line(&mut lines).await.expect("the server runs");
        let entry: serde_json::Value = serde_json::from_str(&line).expect("JSON log lines");
        log.push(line);
        if entry["message"] == "serving" {
            let addr = |key: &str| entry[key].as_str().expect("an address").to_owned();
            break (addr("grpc_addr"), addr("health_addr"), addr("http_addr"));
        }
    };
    let channel = Channel::from_shared(format!("http://{grpc_addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let basic = |id: &str, secret: &str| {
        let value = format!("Basic {}", STANDARD.encode(format!("{id}:{secret}")));
        Auth(Some(value.parse().unwrap()))
    };
    for (auth, expected) in [
        (Auth::bearer(ALL), Code::NotFound),
        (basic("ops", SECRET), Code::NotFound),
        (Auth::bearer(WRONG_TOKEN), Code::Unauthenticated),
        (basic("ops", WRONG_SECRET), Code::Unauthenticated),
        (Auth::bearer(NONE), Code::PermissionDenied),
        (Auth(None), Code::Unauthenticated),
    ] {
        let status = AdminServiceClient::with_interceptor(channel.clone(), auth)
            .purge_stream(admin::PurgeStreamRequest {
                stream: "nothing-here".into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), expected, "{status:?}");
    }
    // The same credentials over the HTTP API: the same answers, counters and log lines.
    let http_addr = http_addr.parse().unwrap();
    let (bearer, none) = (format!("Bearer {ALL}"), format!("Bearer {NONE}"));
    let (wrong_token, basic_right, basic_wrong) = (
        format!("Bearer {WRONG_TOKEN}"),
        format!("Basic {}", STANDARD.encode(format!("ops:{SECRET}"))),
        format!("Basic {}", STANDARD.encode(format!("ops:{WRONG_SECRET}"))),
    );
    for (authorization, expected) in [
        (Some(bearer.as_str()), 404),
        (Some(basic_right.as_str()), 404),
        (Some(wrong_token.as_str()), 401),
        (Some(basic_wrong.as_str()), 401),
        (Some(none.as_str()), 403),
        (None, 401),
    ] {
        let mut headers = vec![("content-type", "text/plain")];
        headers.extend(authorization.map(|value| ("authorization", value)));
        let reply =
            crate::http::call(http_addr, "POST", "/v1/publish/nothing.here", &headers, "v").await;
        assert_eq!(reply.status.as_u16(), expected, "{:?}", reply.body);
    }
    // A wrong secret, an unknown client id and a client without a secret get one answer: it does
    // not tell which client ids exist.
    let mut answers = BTreeSet::new();
    for (id, secret) in [("ops", WRONG_SECRET), ("nobody", SECRET), ("none", SECRET)] {
        let status = AdminServiceClient::with_interceptor(channel.clone(), basic(id, secret))
            .purge_stream(admin::PurgeStreamRequest {
                stream: "nothing-here".into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        answers.insert((i32::from(status.code()), status.message().to_owned()));
    }
    assert_eq!(answers.len(), 1, "{answers:?}");
    WsEvents::with_interceptor(channel.clone(), Auth::bearer(ALL))
        .ensure_stream(stream_request("audited", &["audited.>"]))
        .await
        .unwrap();
    AdminServiceClient::with_interceptor(channel.clone(), Auth::bearer(ALL))
        .purge_stream(admin::PurgeStreamRequest {
            stream: "audited".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let (status, metrics) = http_get(health_addr.parse().unwrap(), "/metrics").await;
    assert_eq!(status, 200);
    for reason in ["bad_credentials", "no_credentials", "permission_denied"] {
        let line = format!("jetway_auth_failures_total{{reason=\"{reason}\"}}");
        assert!(metrics.contains(&line), "{line} in {metrics}");
    }

    // SAFETY: kill(2) with a pid we spawned and a valid signal number.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    while let Some(line) = next_line(&mut lines).await {
        log.push(line);
    }
    assert!(child.wait().unwrap().success());
    let denial = log
        .iter()
        .any(|line| line.contains("permission denied") && line.contains("\"none\""));
    assert!(denial, "the denial is logged with the client id");
    let http_denial = log.iter().any(|line| {
        line.contains("permission denied")
            && line.contains("\"none\"")
            && line.contains("nothing.here")
            && line.contains("127.0.0.1:")
    });
    assert!(
        http_denial,
        "the HTTP denial is logged with the client id and peer"
    );
    let audit = log.iter().any(|line| {
        line.contains("jetway::audit") && line.contains("purge stream") && line.contains("\"ops\"")
    });
    assert!(audit, "the purge is audited with the client id");
    let encoded = |id: &str, secret: &str| STANDARD.encode(format!("{id}:{secret}"));
    for needle in [
        ALL.to_owned(),
        NONE.to_owned(),
        SECRET.to_owned(),
        WRONG_TOKEN.to_owned(),
        WRONG_SECRET.to_owned(),
        encoded("ops", SECRET),
        encoded("ops", WRONG_SECRET),
        encoded("nobody", SECRET),
    ] {
        let leaks: Vec<&String> = log.iter().filter(|line| line.contains(&needle)).collect();
        assert!(leaks.is_empty(), "{needle} reached the log: {leaks:#?}");
    }
}

/// GRPC_REFLECTION=false: reflection is not served (UNIMPLEMENTED), the rest is.
#[tokio::test]
async fn reflection_can_be_turned_off() {
    let nats = NatsServer::start();
    let security = Security {
        access: Access::open(),
        reflection: false,
    };
    let jetway = TestServer::builder()
        .nats_url(nats.url())
        .security(security)
        .start()
        .await;
    let channel = jetway.channel().await;
    let reflection = ServerReflectionClient::new(channel.clone())
        .server_reflection_info(futures::stream::iter([list_services()]))
        .await;
    let status = match reflection {
        Ok(response) => response.into_inner().message().await.unwrap_err(),
        Err(status) => status,
    };
    assert_eq!(status.code(), Code::Unimplemented, "{status:?}");
    AdminServiceClient::new(channel)
        .list_streams(admin::ListStreamsRequest::default())
        .await
        .unwrap();
}

/// The status a response stream ends with, past the messages before it; each within the guard
/// time, so a stream that stays open fails the test instead of hanging it.
async fn ended<T>(stream: &mut tonic::Streaming<T>) -> Status {
    loop {
        let next = tokio::time::timeout(RECV_GUARD, stream.message())
            .await
            .expect("a message, or the end, within the guard time");
        match next {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("the stream ended with OK"),
            Err(status) => return status,
        }
    }
}

/// A reloaded clients file applies to streams already open: a stream whose permission is gone
/// ends with PERMISSION_DENIED, one whose client is gone with UNAUTHENTICATED (Events sessions,
/// live Subscribe and Respond at once; PublishStream at its next request).
#[tokio::test]
async fn a_reloaded_clients_file_applies_to_open_streams() {
    const ADMIN: &str = "token-of-the-admin";
    const WORKER: &str = "token-of-the-worker";
    const GONE: &str = "token-of-a-client-removed-later";
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("clients.json");
    // `worker` may consume and respond; the reload leaves it only publish (and a longer file).
    let file = |worker: &str, gone: bool| {
        let gone = if gone {
            format!(
                r#", {{"id": "gone", "tokens": ["{}"], "permissions": {{"consume": ["a-*"], "publish": ["a.>"]}}}}"#,
                token_hash(GONE)
            )
        } else {
            String::new()
        };
        format!(
            r#"{{"clients": [
                {{"id": "admin", "tokens": ["{}"], "permissions": {{"manage": [">"], "publish": [">"]}}}},
                {{"id": "worker", "tokens": ["{}"], "permissions": {worker}}}{gone}
            ]}}"#,
            token_hash(ADMIN),
            token_hash(WORKER),
        )
    };
    let everything = r#"{"consume": ["a-*"], "respond": ["a.>"], "publish": ["a.>"]}"#;
    std::fs::write(&path, file(everything, true)).unwrap();
    let jetway = with_clients_file(&nats, &path).await;
    let channel = jetway.channel().await;
    let events = |token| JwEvents::with_interceptor(channel.clone(), Auth::bearer(token));
    let mut admin = events(ADMIN);
    WsEvents::with_interceptor(channel.clone(), Auth::bearer(ADMIN))
        .ensure_stream(stream_request("a-orders", &["a.>"]))
        .await
        .unwrap();
    admin
        .ensure_consumer(consumer("a-orders", "c", &["a.>"]))
        .await
        .unwrap();

    let session = |token| {
        let subscribe = ws::EventsRequest {
            request: Some(events_request::Request::Subscribe(
                events_request::Subscribe {
                    stream: "a-orders".into(),
                    consumer: "c".into(),
                    ..Default::default()
                },
            )),
        };
        let client = WsEvents::with_interceptor(channel.clone(), Auth::bearer(token));
        async move {
            let mut client = client;
            let mut session = client
                .events(futures::stream::iter([subscribe]).chain(futures::stream::pending()))
                .await
                .unwrap()
                .into_inner();
            let subscribed = session.message().await.unwrap().unwrap();
            assert!(
                matches!(
                    subscribed.response,
                    Some(ws::events_response::Response::Subscribed(_))
                ),
                "{subscribed:?}"
            );
            session
        }
    };
    let mut worker_session = session(WORKER).await;
    let mut gone_session = session(GONE).await;
    let mut live = events(WORKER)
        .subscribe(jw::SubscribeRequest {
            stream: "a-orders".into(),
            subject: "a.>".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let attach = jr::RespondRequest {
        message: Some(jr::respond_request::Message::Attach(jr::Attach {
            subjects: vec!["a.rpc".into()],
            ..Default::default()
        })),
    };
    let mut respond = RequestServiceClient::with_interceptor(channel.clone(), Auth::bearer(WORKER))
        .respond(futures::stream::iter([attach]).chain(futures::stream::pending()))
        .await
        .unwrap()
        .into_inner();
    assert!(matches!(
        respond.message().await.unwrap().unwrap().message,
        Some(jr::respond_response::Message::Attached(_))
    ));
    let (publishes, requests) = tokio::sync::mpsc::channel(4);
    let mut publish_stream = events(GONE)
        .publish_stream(tokio_stream::wrappers::ReceiverStream::new(requests))
        .await
        .unwrap()
        .into_inner();
    let publish = |correlation_id| raw_stream_item(correlation_id, "a.created");
    publishes.send(publish(1)).await.unwrap();
    let published = publish_stream.message().await.unwrap().unwrap();
    assert_eq!(published.correlation_id, 1);

    std::fs::write(&path, file(r#"{"publish": ["a.>", "more.>"]}"#, false)).unwrap();
    jetway_testkit::eventually("the reloaded file is in force", || {
        let mut gone = events(GONE);
        async move {
            let refused = gone
                .publish_event(jw::PublishEventRequest {
                    subject: "a.created".into(),
                    ..raw_event()
                })
                .await
                .err()?;
            (refused.code() == Code::Unauthenticated).then_some(())
        }
    })
    .await;

    let denied = ended(&mut worker_session).await;
    assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");
    assert!(denied.message().contains("consume"), "{denied:?}");
    let unauthenticated = ended(&mut gone_session).await;
    assert_eq!(
        unauthenticated.code(),
        Code::Unauthenticated,
        "{unauthenticated:?}"
    );
    let denied = ended(&mut live).await;
    assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");
    let denied = ended(&mut respond).await;
    assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");
    assert!(denied.message().contains("respond"), "{denied:?}");
    publishes.send(publish(2)).await.unwrap();
    let unauthenticated = ended(&mut publish_stream).await;
    assert_eq!(
        unauthenticated.code(),
        Code::Unauthenticated,
        "{unauthenticated:?}"
    );
}
