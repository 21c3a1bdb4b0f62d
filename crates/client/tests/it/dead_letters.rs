//! Unary consuming with a Fetcher (fetch, ack, reject), and dead letters: listed, and redriven
//! once.

use std::{collections::HashSet, time::Duration};

use futures::TryStreamExt;
use jetway_client::{
    Client, ConsumerOptions, DeadLetter, DeadLetterListOptions, DeadLetterReason, FetchOptions,
    PublishOptions, RedriveOptions, StartPosition, StoredEvent, StreamOptions, tonic::Code,
};
use jetway_testkit::eventually;

use crate::{TestServer, text};

/// Fetching waits this long for a first event that is known to be there: a hang guard.
const FETCH_WAIT: Duration = Duration::from_secs(5);

async fn orders_with_worker(server: &TestServer, worker: ConsumerOptions) -> Client {
    let client = Client::connect(server.url()).await.unwrap();
    client
        .streams()
        .ensure(&StreamOptions::new("orders").subjects(["orders.>"]))
        .await
        .unwrap();
    let worker = worker.subject("orders.>").from(StartPosition::Start);
    client.consumers().ensure("orders", &worker).await.unwrap();
    client
}

async fn dead_letters(client: &Client, options: &DeadLetterListOptions) -> Vec<DeadLetter> {
    client
        .dead_letters("orders-dead")
        .list_with(options)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap()
}

fn ids(events: &[StoredEvent]) -> HashSet<u64> {
    events.iter().map(StoredEvent::id).collect()
}

#[tokio::test]
async fn fetched_events_are_acked_or_rejected_by_id() {
    let server = TestServer::start().await;
    let worker = ConsumerOptions::durable("worker").processing_timeout(Duration::from_secs(10));
    let client = orders_with_worker(&server, worker).await;
    for value in ["1", "2", "3"] {
        client
            .publish("orders.created", &text(value))
            .await
            .unwrap();
    }
    let fetcher = client.fetcher("orders", "worker");

    let fetched = fetcher
        .fetch_with(&FetchOptions::new().max_events(3).wait(FETCH_WAIT))
        .await
        .unwrap();
    assert_eq!(fetched.processing_timeout, Duration::from_secs(10));
    let first: Vec<u64> = fetched.events.iter().map(StoredEvent::id).collect();
    assert_eq!(first, [1, 2, 3]);
    assert!(fetched.events.iter().all(|e| e.delivery_attempt() == 1));

    let acked = fetcher.ack(&[1, 99]).await.unwrap();
    assert_eq!((acked.ids, acked.invalid_ids), (vec![1], vec![99]));
    let rejected = fetcher.reject(&[2]).await.unwrap();
    assert_eq!(rejected.ids, [2]);

    // 3 is still in flight, so the only event to fetch is 2, back at once.
    let again = fetcher
        .fetch_with(&FetchOptions::new().wait(FETCH_WAIT))
        .await
        .unwrap();
    assert_eq!(again.events.len(), 1);
    assert_eq!(
        (again.events[0].id(), again.events[0].delivery_attempt()),
        (2, 2)
    );
    let later = fetcher
        .reject_after(&[2], Duration::from_millis(100))
        .await
        .unwrap();
    assert_eq!(later.ids, [2]);
    let dropped = fetcher.reject_permanently(&[3]).await.unwrap();
    assert_eq!(dropped.ids, [3]);
    assert_eq!(fetcher.ack(&[3]).await.unwrap().invalid_ids, [3]);

    let unknown = client
        .fetcher("orders", "nobody")
        .fetch()
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Some(Code::NotFound), "{unknown}");
}

#[tokio::test]
async fn rejected_events_are_dead_lettered_listed_and_redriven_once() {
    let server = TestServer::start().await;
    let worker = ConsumerOptions::durable("worker")
        .max_deliveries(3)
        .dead_letter_stream("orders-dead");
    let client = orders_with_worker(&server, worker).await;
    let options = PublishOptions::new().header("published-by", "checkout");
    let first = client
        .publish_bytes("orders.created", "{}", "application/json", &options)
        .await
        .unwrap();
    let second = client.publish("orders.paid", &text("paid")).await.unwrap();
    let fetcher = client.fetcher("orders", "worker");
    let fetched = fetcher
        .fetch_with(&FetchOptions::new().wait(FETCH_WAIT))
        .await
        .unwrap();
    assert_eq!(ids(&fetched.events), HashSet::from([first, second]));
    fetcher.reject_permanently(&[first]).await.unwrap();
    fetcher.reject_permanently(&[second]).await.unwrap();

    let found = eventually("two dead letters", || async {
        let found = dead_letters(&client, &DeadLetterListOptions::new()).await;
        (found.len() == 2).then_some(found)
    })
    .await;
    let letter = &found[0];
    assert_eq!(
        (letter.stream.as_str(), letter.consumer.as_str()),
        ("orders", "worker")
    );
    assert_eq!(
        (letter.reason, letter.attempts),
        (DeadLetterReason::Rejected, 1)
    );
    assert!(letter.time.is_some());
    assert_eq!(
        (letter.event.id(), letter.event.subject()),
        (first, "orders.created")
    );
    assert_eq!(letter.event.headers()["published-by"], "checkout");

    let narrowed = DeadLetterListOptions::new()
        .stream("orders")
        .consumer("worker")
        .from_id(found[1].id)
        .limit(5);
    let narrowed = dead_letters(&client, &narrowed).await;
    assert_eq!(narrowed.len(), 1);
    assert_eq!(narrowed[0].event.id(), second);
    let limited = dead_letters(&client, &DeadLetterListOptions::new().limit(1)).await;
    assert_eq!(limited.len(), 1);
    let other = dead_letters(&client, &DeadLetterListOptions::new().consumer("other")).await;
    assert!(other.is_empty());

    let dead = client.dead_letters("orders-dead");
    assert_eq!(dead.name(), "orders-dead");
    let outcome = dead.redrive(&[letter.id, 999]).await.unwrap();
    assert_eq!(outcome.redriven.len(), 1);
    assert_eq!(outcome.redriven[0].id, letter.id);
    assert_eq!(outcome.invalid_ids, [999]);
    let redriven = client
        .get_event("orders", outcome.redriven[0].event_id)
        .await
        .unwrap();
    assert_eq!(redriven.subject(), "orders.created");
    assert_eq!(redriven.payload(), letter.event.payload());
    assert_eq!(redriven.headers()["published-by"], "checkout");
    // A retry publishes nothing twice.
    let retried = dead.redrive(&[letter.id]).await.unwrap();
    assert!(retried.redriven.is_empty());
    assert_eq!(retried.invalid_ids, [letter.id]);

    let rest = dead
        .redrive_all(
            &RedriveOptions::new()
                .stream("orders")
                .consumer("worker")
                .limit(10),
        )
        .await
        .unwrap();
    assert_eq!(rest.redriven.len(), 1);
    assert_eq!(rest.redriven[0].id, found[1].id);
    assert!(
        dead_letters(&client, &DeadLetterListOptions::new())
            .await
            .is_empty()
    );

    let missing = client.dead_letters("nope").list().await.unwrap_err();
    assert_eq!(missing.code(), Some(Code::NotFound), "{missing}");
}
