//! Operability: health and readiness, NATS restarts, reflection, graceful shutdown, and the
//! `jetway-server` binary itself (the local default, bad configuration, SIGTERM).

use std::time::Duration;

use jetway_api::windshift::events::v1alpha1::{
    events_request, events_response::Response as Resp, events_service_client::EventsServiceClient,
    stream_pointer::Pointer,
};
use jetway_server::testing::grpc_health;
use jetway_testkit::eventually;
use tonic::{Code, transport::Channel};
use tonic_health::pb::{health_check_response::ServingStatus, health_client::HealthClient};
use tonic_reflection::pb::v1::{
    ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
    server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
};

use crate::harness::{
    Env, TestServer, http_get, http_status, jetway_server, log_lines, next_line, publish_request,
    readyz_until, stream_request, value_of,
};

/// `NATS_URL` may list several servers: Jetway connects through whichever answers.
#[tokio::test]
async fn a_nats_url_list_connects_through_the_server_that_answers() {
    let nats = jetway_testkit::NatsServer::start();
    let jetway = TestServer::builder()
        .nats_url(format!("nats://127.0.0.1:1, {}", nats.url()))
        .start()
        .await;
    publish_one(jetway.channel().await).await;
}

/// Makes a stream through a Jetway server and publishes one event to it, which gets id 1.
async fn publish_one(jetway: Channel) {
    let mut client = EventsServiceClient::new(jetway);
    client
        .ensure_stream(stream_request("orders", &["orders.>"]))
        .await
        .expect("JetStream answers");
    let published = client
        .publish_event(publish_request("orders.created", "v"))
        .await
        .expect("published");
    assert_eq!(published.into_inner().id, 1);
}

/// Credentials in `NATS_URL` authenticate: a user and password (percent-encoded, as a URL carries
/// reserved characters) or a token, given on every server of a list, the first of which is down.
#[tokio::test]
async fn credentials_in_the_nats_url_authenticate() {
    let logins: [(&[&str], &str); 2] = [
        (
            &["--user", "alice", "--pass", "p@ss/w:rd"],
            "alice:p%40ss%2Fw%3Ard",
        ),
        (&["--auth", "s3cretTOKEN"], "s3cretTOKEN"),
    ];
    for (args, userinfo) in logins {
        let nats = jetway_testkit::NatsServer::start_with_args(args);
        let anonymous = async_nats::connect(nats.url()).await;
        assert!(
            anonymous.as_ref().is_err_and(
                |err| err.kind() == async_nats::ConnectErrorKind::AuthorizationViolation
            ),
            "the server requires {args:?}: {anonymous:?}"
        );
        let url = format!(
            "nats://{userinfo}@127.0.0.1:1,nats://{userinfo}@127.0.0.1:{}",
            nats.port()
        );
        let jetway = TestServer::builder().nats_url(url).start().await;
        readyz_until(jetway.health_addr(), 200).await;
        publish_one(jetway.channel().await).await;
    }
}

/// While NATS is away, an ack is answered at once as a temporary failure (the event stays held),
/// instead of waiting for NATS; once it is back, the same ack goes through.
#[tokio::test]
async fn acks_during_a_nats_outage_fail_for_now_and_succeed_after_it() {
    let mut env = Env::start().await;
    env.stream("orders", &["orders.>"]).await;
    env.consumer("orders")
        .named("worker")
        .subjects(&["orders.>"])
        .ensure()
        .await;
    let mut session = env.subscribe("orders", "worker").await;
    let id = env.publish("orders.created", "held").await;
    assert_eq!(session.event().await.id, id);

    env.nats.stop();
    let addr = env.jetway.health_addr();
    readyz_until(addr, 503).await;
    let during = session.ack(&[id]).await;
    assert_eq!(
        (
            during.ids.as_slice(),
            during.temporary_failed_ids.as_slice()
        ),
        (&[][..], &[id][..]),
        "not settled, still held"
    );

    env.nats.restart();
    readyz_until(addr, 200).await;
    // The restarted server may redeliver the held event before the ack is read; that delivery
    // stands in for the first, and the ack settles it.
    session
        .send(events_request::Request::Ack(events_request::Ack {
            ids: vec![id],
        }))
        .await;
    let confirmation = loop {
        match session.next().await {
            Resp::AckConfirmation(confirmation) => break confirmation,
            Resp::Event(event) => assert_eq!(event.id, id, "only the held event comes again"),
            other => panic!("expected an AckConfirmation, got {other:?}"),
        }
    };
    assert_eq!(confirmation.ids, [id]);
}

#[tokio::test]
async fn readiness_follows_nats_and_everything_resumes_after_a_restart() {
    let mut env = Env::start().await;
    env.stream("orders", &["orders.>"]).await;
    env.consumer("orders")
        .named("worker")
        .subjects(&["orders.>"])
        .ensure()
        .await;
    let mut session = env.subscribe("orders", "worker").await;
    let mut health = HealthClient::new(env.jetway.channel().await);
    let addr = env.jetway.health_addr();
    assert_eq!(http_status(addr, "/healthz").await, 200);
    assert_eq!(http_status(addr, "/readyz").await, 200);
    assert_eq!(grpc_health(&mut health).await, Some(ServingStatus::Serving));

    env.nats.stop();
    readyz_until(addr, 503).await;
    eventually("gRPC health turns NOT_SERVING", || {
        let mut health = health.clone();
        async move { (grpc_health(&mut health).await == Some(ServingStatus::NotServing)).then_some(()) }
    })
    .await;
    assert_eq!(
        http_status(addr, "/healthz").await,
        200,
        "liveness does not depend on NATS"
    );
    let down = env
        .client
        .publish_event(publish_request("orders.created", "lost"))
        .await;
    assert_eq!(down.unwrap_err().code(), Code::Unavailable);

    env.nats.restart();
    readyz_until(addr, 200).await;
    let id = eventually("publishing resumes", || {
        let mut client = env.client.clone();
        async move {
            client
                .publish_event(publish_request("orders.created", "after"))
                .await
                .ok()
        }
    })
    .await
    .into_inner()
    .id;
    // The subscription opened before the restart resumes pulling on its own.
    let event = session.event().await;
    assert_eq!((event.id, value_of(&event).as_str()), (id, "after"));
    assert_eq!(session.ack(&[id]).await.ids, vec![id]);
}

#[tokio::test]
async fn shutdown_naks_what_subscribers_hold_and_ends_their_streams() {
    let mut env = Env::start().await;
    env.stream("orders", &["orders.>"]).await;
    // A 30 s timeout: a redelivery within the test can only come from the nak at shutdown.
    let timeout = Duration::from_secs(30);
    env.consumer("orders")
        .named("worker")
        .subjects(&["orders.>"])
        .from(Pointer::Start(true))
        .timeout(timeout)
        .ensure()
        .await;
    let id = env.publish("orders.created", "held").await;
    let mut session = env.subscribe("orders", "worker").await;
    assert_eq!(session.event().await.id, id);

    env.jetway.begin_shutdown();
    let status = session.expect_error().await;
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    // Within its guard time, without a panic, and cleanly.
    env.jetway.stop().await;

    env.jetway.start_again().await;
    env.client =
        jetway_api::windshift::events::v1alpha1::events_service_client::EventsServiceClient::new(
            env.jetway.channel().await,
        );
    let mut session = env.subscribe("orders", "worker").await;
    // Within the receive guard (10 s), well before the 30 s timeout: the shutdown nak'ed it.
    let event = session.event().await;
    assert_eq!((event.id, event.delivery_attempt), (id, 2));
}

#[tokio::test]
async fn reflection_lists_the_services() {
    let env = Env::start().await;
    let mut reflection = ServerReflectionClient::new(env.jetway.channel().await);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = reflection
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let response = responses.message().await.unwrap().expect("one response");
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("expected a service list, got {response:?}");
    };
    let names: Vec<_> = list.service.into_iter().map(|s| s.name).collect();
    for expected in [
        "windshift.events.v1alpha1.EventsService",
        "grpc.health.v1.Health",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} missing from {names:?}"
        );
    }
}

/// No NATS credential reaches the log at any level (`RUST_LOG=trace`), though async-nats logs every
/// server address it tries at debug level: neither in `NATS_URL`, with a server that needs none
/// (it takes any) or one that needs a token, through a list whose first server is down; nor in
/// `NATS_PASSWORD` or `NATS_TOKEN`.
#[tokio::test]
async fn no_nats_credential_reaches_the_log_at_any_level() {
    let open = jetway_testkit::NatsServer::start();
    let token = jetway_testkit::NatsServer::start_with_args(&["--auth", "t0kenSECRET"]);
    let user = jetway_testkit::NatsServer::start_with_args(&["--user", "bob", "--pass", "pa55VAR"]);
    // Each server takes one publish: a stream of its own.
    let token_var = jetway_testkit::NatsServer::start_with_args(&["--auth", "t0kenSECRET"]);
    let in_url = |nats: &jetway_testkit::NatsServer, userinfo: &str| {
        vec![(
            "NATS_URL",
            format!(
                "nats://{userinfo}@127.0.0.1:1,nats://{userinfo}@127.0.0.1:{}",
                nats.port()
            ),
        )]
    };
    let logins = [
        (&open, in_url(&open, "alice:pa55SECRET"), "pa55SECRET"),
        (&token, in_url(&token, "t0kenSECRET"), "t0kenSECRET"),
        (
            &user,
            vec![
                ("NATS_URL", user.url()),
                ("NATS_USER", "bob".to_owned()),
                ("NATS_PASSWORD", "pa55VAR".to_owned()),
            ],
            "pa55VAR",
        ),
        (
            &token_var,
            vec![
                ("NATS_URL", token_var.url()),
                ("NATS_TOKEN", "t0kenSECRET".to_owned()),
            ],
            "t0kenSECRET",
        ),
    ];
    for (nats, login, secret) in logins {
        let mut vars: Vec<(&str, &str)> = vec![
            ("RUST_LOG", "trace"),
            ("GRPC_PORT", "0"),
            ("HEALTH_PORT", "0"),
            ("HTTP_PORT", "0"),
            ("LISTEN_HOST", "127.0.0.1"),
        ];
        vars.extend(login.iter().map(|(name, value)| (*name, value.as_str())));
        let mut child = jetway_server(&vars).spawn().unwrap();
        let mut lines = log_lines(&mut child);
        let mut log = Vec::new();
        let (grpc_addr, health_addr) = loop {
            let line = next_line(&mut lines).await.expect("the server runs");
            let entry: serde_json::Value = serde_json::from_str(&line).expect("JSON log lines");
            log.push(line);
            if entry["message"] == "serving" {
                let addr = |key: &str| entry[key].as_str().expect("an address").to_owned();
                break (addr("grpc_addr"), addr("health_addr"));
            }
        };
        readyz_until(health_addr.parse().unwrap(), 200).await;
        let channel = Channel::from_shared(format!("http://{grpc_addr}"))
            .unwrap()
            .connect()
            .await
            .expect("connect to jetway");
        publish_one(channel).await;
        // SAFETY: kill(2) with a pid we spawned and a valid signal number.
        assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
        while let Some(line) = next_line(&mut lines).await {
            log.push(line);
        }
        assert!(child.wait().unwrap().success());

        let port = format!(":{}", nats.port());
        assert!(
            log.iter()
                .any(|line| line.contains("async_nats") && line.contains(&port)),
            "async-nats's lines naming the server were logged"
        );
        let leaks: Vec<&String> = log.iter().filter(|line| line.contains(secret)).collect();
        assert!(leaks.is_empty(), "{secret} reached the log: {leaks:#?}");
    }
}

#[test]
fn bad_configuration_is_one_line_naming_every_bad_variable() {
    let output = jetway_server(&[("GRPC_PORT", "http"), ("NATS_SYNC_INTERVAL", "sometimes")])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("GRPC_PORT") && stderr.contains("NATS_SYNC_INTERVAL"),
        "{stderr}"
    );
}

#[tokio::test]
async fn the_binary_runs_a_local_nats_server_and_stops_it_on_sigterm() {
    let data = tempfile::tempdir().unwrap();
    let data_dir = data.path().join("nats");
    let nats_bin = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tools/bin/nats-server");
    let mut child = jetway_server(&[
        ("GRPC_PORT", "0"),
        ("HEALTH_PORT", "0"),
        ("HTTP_PORT", "0"),
        ("LISTEN_HOST", "127.0.0.1"),
        ("NATS_LOCAL_PORT", "0"),
        ("NATS_DATA_DIR", data_dir.to_str().unwrap()),
        ("NATS_SERVER_BIN", nats_bin),
    ])
    .spawn()
    .unwrap();
    let server_pid = child.id();

    // Read the JSON log until the server says where it listens and which nats-server it runs.
    let mut lines = log_lines(&mut child);
    let (mut health_addr, mut nats_pid) = (None, None);
    while health_addr.is_none() || nats_pid.is_none() {
        let line = next_line(&mut lines).await.expect("server running");
        let log: serde_json::Value = serde_json::from_str(&line).expect("JSON log lines");
        match log["message"].as_str() {
            Some("serving") => health_addr = log["health_addr"].as_str().map(str::to_owned),
            Some("local nats-server started") => nats_pid = log["pid"].as_u64(),
            _ => {}
        }
    }
    let health_addr = health_addr.unwrap().parse().unwrap();
    let nats_pid = nats_pid.unwrap() as i32;
    eventually("the local default becomes ready", || async {
        (http_status(health_addr, "/readyz").await == 200).then_some(())
    })
    .await;
    assert!(
        data_dir.join("jetstream").is_dir(),
        "JetStream stores under NATS_DATA_DIR"
    );

    // SAFETY: kill(2) with a pid we spawned and a valid signal number.
    assert_eq!(unsafe { libc::kill(server_pid as i32, libc::SIGTERM) }, 0);
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status:?}");
    // SAFETY: signal 0 only checks whether the process exists.
    let alive = || unsafe { libc::kill(nats_pid, 0) } == 0;
    eventually("the supervised nats-server is gone", || async {
        (!alive()).then_some(())
    })
    .await;
}

/// The value of one series in a Prometheus text exposition, selected as `name` or
/// `name{label="value",...}` with exactly those labels, in any order.
pub(crate) fn series(metrics: &str, selector: &str) -> Option<f64> {
    fn split(series: &str) -> (&str, Vec<&str>) {
        let (name, labels) = series.split_once('{').unwrap_or((series, "}"));
        let mut labels: Vec<&str> = labels
            .trim_end_matches('}')
            .split(',')
            .filter(|label| !label.is_empty())
            .collect();
        labels.sort_unstable();
        (name, labels)
    }
    let wanted = split(selector);
    metrics.lines().find_map(|line| {
        let (series, value) = line.rsplit_once(' ')?;
        (split(series) == wanted).then(|| value.trim().parse().ok())?
    })
}

#[tokio::test]
async fn metrics_count_publishes_and_deliveries() {
    let mut env = Env::start().await;
    env.stream("orders", &["orders.>"]).await;
    env.consumer("orders")
        .named("worker")
        .subjects(&["orders.>"])
        .from(Pointer::Start(true))
        .ensure()
        .await;
    let mut keyed = publish_request("orders.created", "once");
    keyed.idempotency_key = Some("k".into());
    let id = env
        .client
        .publish_event(keyed.clone())
        .await
        .unwrap()
        .into_inner()
        .id;
    env.client.publish_event(keyed).await.unwrap();
    let mut conflicting = publish_request("orders.created", "late");
    conflicting.expected_last_id = Some(id + 10);
    assert_eq!(
        env.client
            .publish_event(conflicting)
            .await
            .unwrap_err()
            .code(),
        Code::FailedPrecondition
    );
    let mut session = env.subscribe("orders", "worker").await;
    let event = session.event().await;
    // Metrics are process-wide and other tests run alongside, so counts are lower bounds.
    let (_, held) = http_get(env.jetway.health_addr(), "/metrics").await;
    let in_flight = series(&held, "jetway_events_in_flight{path=\"events\"}");
    assert!(
        in_flight >= Some(1.0),
        "in flight while held: {in_flight:?}"
    );
    assert_eq!(session.ack(&[event.id]).await.ids, vec![id]);

    let (status, metrics) = http_get(env.jetway.health_addr(), "/metrics").await;
    assert_eq!(status, 200);
    for (name, at_least) in [
        ("jetway_publishes_total{result=\"ok\"}", 1.0),
        ("jetway_publishes_total{result=\"duplicate\"}", 1.0),
        ("jetway_publishes_total{result=\"conflict\"}", 1.0),
        ("jetway_publish_duration_seconds_count", 3.0),
        ("jetway_events_delivered_total{path=\"events\"}", 1.0),
        ("jetway_events_acked_total{path=\"events\"}", 1.0),
    ] {
        let value =
            series(&metrics, name).unwrap_or_else(|| panic!("{name} missing from\n{metrics}"));
        assert!(value >= at_least, "{name} is {value}");
    }
    for gauge in [
        "jetway_subscriptions_active",
        "jetway_events_in_flight{path=\"events\"}",
        "jetway_events_in_flight{path=\"fetch\"}",
        "jetway_nats_connected",
    ] {
        assert!(
            series(&metrics, gauge).is_some(),
            "{gauge} missing from\n{metrics}"
        );
    }
}

/// Fetch, Ack and Reject count in the same delivery metrics as Events streams, under
/// `path="fetch"`.
#[tokio::test]
async fn metrics_count_the_fetch_path_under_its_own_label() {
    use crate::clients::{self, publish, typed};
    use jetway_api::jetway::events::v1::{AckRequest, FetchRequest, RejectRequest};

    let mut env = Env::start().await;
    let mut client = clients::orders_worker(&mut env).await;
    for i in 0..3 {
        publish(&mut client, typed("orders.created", &i.to_string())).await;
    }
    let fetch = FetchRequest {
        stream: "orders".into(),
        consumer: "worker".into(),
        max_events: 10,
        wait: Some(Duration::from_secs(5).into()),
    };
    let fetched = client.fetch(fetch.clone()).await.unwrap().into_inner();
    assert_eq!(fetched.events.len(), 3);
    // Metrics are process-wide and other tests run alongside, so counts are lower bounds.
    let (_, held) = http_get(env.jetway.health_addr(), "/metrics").await;
    let in_flight = series(&held, "jetway_events_in_flight{path=\"fetch\"}");
    assert!(
        in_flight >= Some(3.0),
        "in flight while held: {in_flight:?}"
    );

    let settle = |id: u64| AckRequest {
        stream: "orders".into(),
        consumer: "worker".into(),
        ids: vec![id],
    };
    let reject = |id: u64, permanently: bool| RejectRequest {
        stream: "orders".into(),
        consumer: "worker".into(),
        ids: vec![id],
        permanently,
        delay: None,
    };
    client.ack(settle(1)).await.unwrap();
    client.reject(reject(2, false)).await.unwrap();
    client.reject(reject(3, true)).await.unwrap();
    // The event rejected without delay comes back as a redelivery.
    let again = client.fetch(fetch).await.unwrap().into_inner();
    assert_eq!(again.events[0].delivery_attempt, 2);

    let (_, metrics) = http_get(env.jetway.health_addr(), "/metrics").await;
    for (name, at_least) in [
        ("jetway_events_delivered_total{path=\"fetch\"}", 4.0),
        ("jetway_events_redelivered_total{path=\"fetch\"}", 1.0),
        ("jetway_events_acked_total{path=\"fetch\"}", 1.0),
        (
            "jetway_events_rejected_total{path=\"fetch\",permanently=\"false\"}",
            1.0,
        ),
        (
            "jetway_events_rejected_total{path=\"fetch\",permanently=\"true\"}",
            1.0,
        ),
        ("jetway_events_in_flight{path=\"fetch\"}", 1.0),
    ] {
        let value =
            series(&metrics, name).unwrap_or_else(|| panic!("{name} missing from\n{metrics}"));
        assert!(value >= at_least, "{name} is {value}");
    }
}
