//! The shortest end-to-end path: publish, subscribe, receive, ack.

use jetway_api::windshift::events::v1alpha1::stream_pointer::Pointer;

use crate::harness::{Env, value_of};

#[tokio::test]
async fn publish_subscribe_ack() {
    let mut env = Env::start().await;
    env.stream("orders", &["orders.>"]).await;
    let id = env.publish("orders.created", "first").await;
    assert_eq!(id, 1);
    let consumer = env
        .consumer("orders")
        .named("worker")
        .subjects(&["orders.>"])
        .from(Pointer::Start(true))
        .ensure()
        .await;
    assert_eq!(consumer, "worker");
    let mut session = env.subscribe("orders", "worker").await;
    let event = session.event().await;
    assert_eq!(
        (event.id, event.delivery_attempt, event.subject.as_str()),
        (1, 1, "orders.created")
    );
    assert_eq!(value_of(&event), "first");
    let confirmation = session.ack(&[event.id]).await;
    assert_eq!(confirmation.ids, vec![1]);
    assert!(confirmation.invalid_ids.is_empty() && confirmation.temporary_failed_ids.is_empty());
}
