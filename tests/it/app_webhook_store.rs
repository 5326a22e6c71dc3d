//! One conformance suite for the app-webhook store (`src/app_webhooks/`):
//! the pending-webhook queue (hold, claim with a visibility timeout, ack,
//! retry, bound) and the cluster-wide occupancy record, run against the
//! memory store and a real Redis (`on_memory::*`, `on_redis::*`). Time is a
//! parameter of every call, so the hold and the visibility timeout are
//! tested without waiting.

use std::collections::BTreeSet;
use std::time::Duration;

use rollcall::app_webhooks::{
    Hold, MemoryWebhookStore, QueueOptions, Queued, RedisWebhookStore, WebhookStore,
};
use rollcall::channel_events::ChannelEvent;

use crate::redis_cluster::RedisCluster;
use crate::redis_server::RedisServer;
use rollcall::store::conn::{Redis, RedisTarget};

const T: i64 = 1_763_719_200_000;
const HOLD: i64 = 3_000;
const MAX_LEN: usize = 50;

fn options() -> QueueOptions {
    QueueOptions {
        hold: Duration::from_millis(HOLD as u64),
        max_len: MAX_LEN,
    }
}

pub struct Backend {
    store: WebhookStore,
    _redis: Option<RedisServer>,
    _cluster: Option<RedisCluster>,
}

impl Backend {
    fn memory() -> Self {
        Self {
            store: WebhookStore::of(MemoryWebhookStore::new(options())),
            _redis: None,
            _cluster: None,
        }
    }

    async fn redis() -> Self {
        let server = RedisServer::start().await;
        let store = redis_handle(&server);
        Self {
            store,
            _redis: Some(server),
            _cluster: None,
        }
    }

    /// On a Redis Cluster: occupancy transitions in single-slot steps.
    async fn cluster() -> Self {
        let cluster = RedisCluster::start().await;
        let target = RedisTarget::Cluster(cluster.seeds());
        let redis = Redis::open(&target, Duration::from_secs(2)).expect("a cluster handle");
        Self {
            store: WebhookStore::of(RedisWebhookStore::new(redis, options())),
            _redis: None,
            _cluster: Some(cluster),
        }
    }
}

fn redis_handle(server: &RedisServer) -> WebhookStore {
    WebhookStore::of(
        RedisWebhookStore::connect(&server.url(), Duration::from_secs(2), options())
            .expect("a Redis webhook store"),
    )
}

macro_rules! conformance {
    ($($test:ident),* $(,)?) => {
        mod on_memory {
            $(
                #[tokio::test]
                async fn $test() {
                    super::$test(super::Backend::memory()).await;
                }
            )*
        }
        mod on_redis {
            $(
                #[tokio::test]
                async fn $test() {
                    super::$test(super::Backend::redis().await).await;
                }
            )*
        }
        mod on_cluster {
            $(
                #[tokio::test]
                async fn $test() {
                    super::$test(super::Backend::cluster().await).await;
                }
            )*
        }
    };
}

conformance!(
    events_are_claimed_in_order_once_until_the_claim_runs_out,
    acknowledged_events_are_gone_and_retried_ones_come_back_later,
    a_departure_waits_the_hold_and_a_return_within_it_cancels_both,
    a_return_after_the_hold_is_reported_after_the_departure,
    members_are_held_per_user,
    a_claimed_departure_is_no_longer_cancellable,
    the_queue_is_bounded,
    occupancy_sends_occupied_for_the_first_node_and_vacated_for_the_last,
    a_dead_nodes_channels_are_vacated_where_it_was_the_last,
);

fn channel(name: &str) -> String {
    name.to_string()
}

fn occupied(c: &str) -> Queued {
    Queued::of(&ChannelEvent::Occupied {
        channel: channel(c),
    })
}

fn vacated(c: &str) -> Queued {
    Queued::of(&ChannelEvent::Vacated {
        channel: channel(c),
    })
}

fn miss(c: &str) -> Queued {
    Queued::of(&ChannelEvent::CacheMiss {
        channel: channel(c),
    })
}

/// Claims everything due at `now` and acknowledges it (as a worker that
/// delivered it); answers the event objects' JSON.
async fn claim_all(b: &Backend, now: i64) -> Vec<String> {
    let claim = b.store.queue.claim(100, now, now + 10_000).await.unwrap();
    let ids: Vec<String> = claim.events.iter().map(|e| e.id.clone()).collect();
    b.store.queue.ack(&ids).await.unwrap();
    claim.events.into_iter().map(|e| e.json).collect()
}

async fn events_are_claimed_in_order_once_until_the_claim_runs_out(b: Backend) {
    let q = &b.store.queue;
    assert_eq!(q.enqueue(vec![miss("a"), miss("b")], T).await.unwrap(), 0);
    assert_eq!(q.enqueue(vec![miss("c")], T + 1).await.unwrap(), 0);
    let claim = q.claim(2, T + 1, T + 1_000).await.unwrap();
    let got: Vec<&str> = claim.events.iter().map(|e| e.json.as_str()).collect();
    assert_eq!(got, [miss("a").json, miss("b").json]);
    assert!(
        claim
            .events
            .iter()
            .all(|e| e.tries == 0 && e.queued_at == T)
    );
    // The rest, then nothing: claimed events are invisible to others …
    let rest = q.claim(10, T + 2, T + 2_000).await.unwrap();
    assert_eq!(rest.events.len(), 1);
    assert_eq!(rest.events[0].json, miss("c").json);
    let none = q.claim(10, T + 3, T + 3_000).await.unwrap();
    assert!(none.events.is_empty());
    assert_eq!(
        none.next_due,
        Some(T + 1_000),
        "when the first claim runs out"
    );
    // … until their claim runs out (the claimer died): claimed again.
    let again = claim_all(&b, T + 1_000).await;
    assert_eq!(again, [miss("a").json, miss("b").json]);
}

async fn acknowledged_events_are_gone_and_retried_ones_come_back_later(b: Backend) {
    let q = &b.store.queue;
    q.enqueue(vec![miss("a"), miss("b")], T).await.unwrap();
    let claim = q.claim(10, T, T + 60_000).await.unwrap();
    let ids: Vec<String> = claim.events.iter().map(|e| e.id.clone()).collect();
    q.ack(&ids[..1]).await.unwrap();
    q.retry(&ids[1..], T + 5_000).await.unwrap();
    assert!(claim_all(&b, T + 4_999).await.is_empty());
    let back = q.claim(10, T + 5_000, T + 6_000).await.unwrap();
    assert_eq!(back.events.len(), 1);
    assert_eq!(back.events[0].json, miss("b").json);
    assert_eq!(back.events[0].tries, 1);
    // A retry of an acknowledged event does not bring it back.
    q.ack(&ids).await.unwrap();
    q.retry(&ids, T + 7_000).await.unwrap();
    let empty = q.claim(10, T + 100_000, T + 200_000).await.unwrap();
    assert!(empty.events.is_empty());
    assert_eq!(empty.next_due, None);
}

async fn a_departure_waits_the_hold_and_a_return_within_it_cancels_both(b: Backend) {
    let q = &b.store.queue;
    q.enqueue(vec![vacated("a"), vacated("b")], T)
        .await
        .unwrap();
    assert!(claim_all(&b, T + HOLD - 1).await.is_empty(), "held");
    // "a" comes back within the hold (a page reload): neither is sent.
    q.enqueue(vec![occupied("a")], T + HOLD - 1).await.unwrap();
    assert_eq!(claim_all(&b, T + HOLD).await, [vacated("b").json]);
    assert!(claim_all(&b, T + 10 * HOLD).await.is_empty());
}

async fn a_return_after_the_hold_is_reported_after_the_departure(b: Backend) {
    let q = &b.store.queue;
    q.enqueue(vec![vacated("a")], T).await.unwrap();
    // Due but not yet claimed: too late to cancel.
    q.enqueue(vec![occupied("a")], T + HOLD).await.unwrap();
    assert_eq!(
        claim_all(&b, T + HOLD).await,
        [vacated("a").json, occupied("a").json]
    );
}

async fn members_are_held_per_user(b: Backend) {
    let q = &b.store.queue;
    let member = |added: bool, user: &str| {
        let (channel, user_id) = (channel("presence-a"), user.to_string());
        Queued::of(&if added {
            ChannelEvent::MemberAdded { channel, user_id }
        } else {
            ChannelEvent::MemberRemoved { channel, user_id }
        })
    };
    q.enqueue(vec![member(false, "1"), member(false, "2")], T)
        .await
        .unwrap();
    // User 1 reloads; user 3 is new; the channel's occupancy is unrelated.
    q.enqueue(
        vec![member(true, "1"), member(true, "3"), occupied("presence-a")],
        T + 10,
    )
    .await
    .unwrap();
    let now = claim_all(&b, T + 10).await;
    assert_eq!(now, [member(true, "3").json, occupied("presence-a").json]);
    assert_eq!(claim_all(&b, T + HOLD).await, [member(false, "2").json]);
}

async fn a_claimed_departure_is_no_longer_cancellable(b: Backend) {
    let q = &b.store.queue;
    q.enqueue(vec![vacated("a")], T).await.unwrap();
    assert_eq!(claim_all(&b, T + HOLD).await, [vacated("a").json]);
    // Being reported (or retried): the return is reported too.
    q.enqueue(vec![occupied("a")], T + HOLD + 1).await.unwrap();
    assert_eq!(claim_all(&b, T + HOLD + 1).await, [occupied("a").json]);
    // A second departure is held afresh, and cancellable.
    q.enqueue(vec![vacated("a")], T + HOLD + 2).await.unwrap();
    q.enqueue(vec![occupied("a")], T + HOLD + 3).await.unwrap();
    assert!(claim_all(&b, T + 100 * HOLD).await.is_empty());
}

async fn the_queue_is_bounded(b: Backend) {
    let q = &b.store.queue;
    let many: Vec<Queued> = (0..MAX_LEN + 5).map(|i| miss(&format!("c{i}"))).collect();
    assert_eq!(
        q.enqueue(many, T).await.unwrap(),
        5,
        "refused past the bound"
    );
    let claim = q.claim(1_000, T, T + 1).await.unwrap();
    assert_eq!(claim.events.len(), MAX_LEN);
    assert_eq!(
        claim.events[MAX_LEN - 1].json,
        miss(&format!("c{}", MAX_LEN - 1)).json
    );
    assert_eq!(
        q.enqueue(vec![miss("x")], T).await.unwrap(),
        1,
        "claimed events still count"
    );
    let ids: Vec<String> = claim.events.iter().map(|e| e.id.clone()).collect();
    q.ack(&ids).await.unwrap();
    assert_eq!(q.enqueue(vec![miss("x")], T).await.unwrap(), 0);
    assert!(matches!(occupied("a").hold, Hold::Cancels(_)));
}

async fn occupancy_sends_occupied_for_the_first_node_and_vacated_for_the_last(b: Backend) {
    let o = &b.store.occupancy;
    assert!(o.occupy("a", "n1", T).await.unwrap());
    assert!(!o.occupy("a", "n2", T).await.unwrap());
    assert!(!o.occupy("a", "n1", T).await.unwrap(), "idempotent");
    assert_eq!(claim_all(&b, T).await, [occupied("a").json]);
    assert!(!o.vacate("a", "n1", T + 1).await.unwrap());
    assert!(!o.vacate("a", "n1", T + 1).await.unwrap(), "idempotent");
    assert!(o.vacate("a", "n2", T + 2).await.unwrap());
    assert!(!o.vacate("a", "n2", T + 2).await.unwrap());
    assert!(claim_all(&b, T + 2).await.is_empty(), "vacated is held");
    assert_eq!(claim_all(&b, T + 2 + HOLD).await, [vacated("a").json]);
    // Back within the hold: neither vacated nor occupied.
    assert!(
        o.vacate("b", "n1", T).await.is_ok_and(|v| !v),
        "never occupied"
    );
    assert!(o.occupy("b", "n1", T).await.unwrap());
    assert_eq!(claim_all(&b, T + 3 * HOLD).await, [occupied("b").json]);
    assert!(o.vacate("b", "n1", T + 3 * HOLD).await.unwrap());
    assert!(o.occupy("b", "n2", T + 3 * HOLD + 10).await.unwrap());
    assert!(claim_all(&b, T + 10 * HOLD).await.is_empty());
}

async fn a_dead_nodes_channels_are_vacated_where_it_was_the_last(b: Backend) {
    let o = &b.store.occupancy;
    for c in ["a", "b", "c"] {
        o.occupy(c, "dead", T).await.unwrap();
    }
    o.occupy("b", "alive", T).await.unwrap();
    o.vacate("c", "dead", T).await.unwrap();
    claim_all(&b, T + HOLD).await;
    assert_eq!(o.vacate_node("dead", T + HOLD).await.unwrap(), ["a"]);
    assert!(
        o.vacate_node("dead", T + HOLD).await.unwrap().is_empty(),
        "once"
    );
    assert_eq!(claim_all(&b, T + 2 * HOLD).await, [vacated("a").json]);
    // The dead node is gone from "b": the live one is its last.
    assert!(o.vacate("b", "alive", T + 2 * HOLD).await.unwrap());
    // Its old channel can be occupied afresh.
    assert!(o.occupy("a", "alive", T + 3 * HOLD).await.unwrap());
}

/// Several nodes' workers on one Redis: each event is claimed by exactly one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_claims_on_one_redis_share_the_events_out() {
    let server = RedisServer::start().await;
    let nodes: Vec<WebhookStore> = (0..4).map(|_| redis_handle(&server)).collect();
    let events: Vec<Queued> = (0..40).map(|i| miss(&format!("c{i}"))).collect();
    nodes[0].queue.enqueue(events.clone(), T).await.unwrap();
    let claims = nodes.iter().map(|n| {
        let q = n.queue.clone();
        tokio::spawn(async move {
            let mut got = Vec::new();
            loop {
                let c = q.claim(3, T, T + 60_000).await.unwrap();
                if c.events.is_empty() {
                    return got;
                }
                got.extend(c.events.into_iter().map(|e| e.json));
            }
        })
    });
    let mut all = Vec::new();
    for c in claims {
        all.extend(c.await.unwrap());
    }
    assert_eq!(all.len(), 40, "none twice");
    let distinct: BTreeSet<&String> = all.iter().collect();
    let expected: BTreeSet<&String> = events.iter().map(|q| &q.json).collect();
    assert_eq!(distinct, expected);
}
