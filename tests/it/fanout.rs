//! Subscribe-on-demand fan-out (issue 13, item 2, single Redis): a node's
//! bus hears a channel's broadcasts only while the node has local
//! subscribers of it, and never at the cost of a missed update.
//!
//! What a node's bus heard is read from its `/metrics`
//! (`rollcall_bus_broadcasts_received_total`, `rollcall_bus_subscriptions`).
//! "Nothing more arrived" is proven with a marker: a broadcast on a channel
//! the node does serve, published after the others; broadcasts reach a bus
//! in Redis's order on one connection, so once the marker is in, anything
//! published before it would have been counted already.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use rollcall::pusher::service::BroadcastFeed;
use rollcall::pusher::{ChannelName, Hub, SocketHandle, SocketId};
use rollcall::store::{Broadcast, Broker, RedisOptions, RedisStore};
use tokio_tungstenite::tungstenite::Utf8Bytes;

use crate::helpers::*;
use crate::redis_server::RedisServer;
use crate::shared_redis::Shared;
use crate::store_suite::Recorder;
use rollcall::store::redis::bus_channel;

async fn node(redis: &RedisServer) -> TestApp {
    spawn_app_with(|s| {
        s.redis_url = Some(redis.url());
        s.redis.command_timeout = Duration::from_millis(500);
    })
    .await
}

async fn node_on(shared: &Shared) -> TestApp {
    spawn_app_with(|s| {
        shared.configure(s, Duration::from_millis(500));
    })
    .await
}

/// The room whose channel carries the markers. On one Redis any other
/// channel: one bus connection receives in publish order. On a cluster the
/// marker must travel through the same shard as the watched channel
/// (`session.1`) to come after its broadcasts: a channel of the same slot.
fn marker_room(shared: &Shared) -> u32 {
    use redis::cluster_routing::Slot;
    match shared {
        Shared::One(_) => 900,
        Shared::Cluster(_) => {
            let slot = |n: u32| Slot::for_key(bus_channel(&channel(n)));
            (2..)
                .find(|n| slot(*n) == slot(1))
                .expect("a channel of that slot")
        }
    }
}

/// The room whose updates go to `session.<n>` (the default template).
fn room(n: u32) -> String {
    format!("itqan-academy-quran-session-{n}")
}

fn channel(n: u32) -> String {
    format!("session.{n}")
}

/// A join of person `p` in room `n`: one `attendance.updated` about
/// `<p>_Person_<p>` on `session.<n>`.
fn join(n: u32, p: u32) -> String {
    let now = rollcall::domain::now_millis();
    let identity = format!("{p}_Person_{p}");
    joined(
        &room(n),
        &identity,
        &format!("PA_{n}_{p}"),
        now - 60_000,
        &event_id(),
    )
}

async fn post_ok(app: &TestApp, body: &str) {
    let res = app.post_webhook(body).await;
    assert_eq!(res.status(), 200, "{:?}", res.text().await);
}

/// A gauge or counter from `/metrics` (unlabelled).
async fn metric(app: &TestApp, name: &str) -> u64 {
    let text = app.metrics().await;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("{name} in /metrics"))
}

async fn received(app: &TestApp) -> u64 {
    metric(app, "rollcall_bus_broadcasts_received_total").await
}

/// Waits until the node's bus is subscribed to exactly `n` channels.
async fn bus_subscriptions_are(app: &TestApp, n: u64) {
    let deadline = tokio::time::Instant::now() + GUARD;
    loop {
        let now = metric(app, "rollcall_bus_subscriptions").await;
        if now == n {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "rollcall_bus_subscriptions stayed at {now}, expected {n}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Reads `client` until the update about `identity` (snapshots and other
/// updates passed over).
async fn until_update_of(client: &mut PusherClient, identity: &str) {
    loop {
        let frame = client.next_event("attendance.updated").await;
        if frame.data["attendance"]["identity"] == identity {
            return;
        }
    }
}

/// A marker update on `session.<room>`, posted via `via`, awaited on B.
async fn marker(marker_on_b: &mut PusherClient, via: &TestApp, room: u32, markers: &mut u32) {
    *markers += 1;
    let p = *markers;
    post_ok(via, &join(room, p)).await;
    until_update_of(marker_on_b, &format!("{p}_Person_{p}")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_hears_a_channel_only_while_it_has_subscribers_of_it() {
    hears_only_while_subscribed(Shared::one().await).await;
}

/// The same on a Redis Cluster, where the bus subscribes by `SSUBSCRIBE`
/// on the shard that owns each channel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_cluster_a_node_hears_a_channel_only_while_it_has_subscribers_of_it() {
    hears_only_while_subscribed(Shared::cluster().await).await;
}

async fn hears_only_while_subscribed(shared: Shared) {
    let (a, b) = (node_on(&shared).await, node_on(&shared).await);
    let m = marker_room(&shared);
    // B serves only the marker channel; A serves the watched one.
    let mut marker_on_b = b.subscriber(&channel(m)).await;
    let mut on_a = a.subscriber(&channel(1)).await;
    bus_subscriptions_are(&b, 1).await;
    let mut markers = 0;
    // Updates committed on both nodes reach A's subscriber; B hears none.
    for p in 1..=6 {
        post_ok(if p % 2 == 0 { &a } else { &b }, &join(1, p)).await;
        until_update_of(&mut on_a, &format!("{p}_Person_{p}")).await;
    }
    marker(&mut marker_on_b, &a, m, &mut markers).await;
    assert_eq!(received(&b).await, 1, "B heard only its own channel");

    // A subscriber on B: B now hears the channel.
    let mut on_b = b.subscriber(&channel(1)).await;
    bus_subscriptions_are(&b, 2).await;
    post_ok(&a, &join(1, 7)).await;
    until_update_of(&mut on_b, "7_Person_7").await;
    until_update_of(&mut on_a, "7_Person_7").await;
    marker(&mut marker_on_b, &a, m, &mut markers).await;
    assert_eq!(
        received(&b).await,
        3,
        "the marker, then the update, then a marker"
    );

    // Its last subscriber leaves: B stops hearing it.
    drop(on_b);
    bus_subscriptions_are(&b, 1).await;
    for p in 8..=12 {
        post_ok(&a, &join(1, p)).await;
        until_update_of(&mut on_a, &format!("{p}_Person_{p}")).await;
    }
    marker(&mut marker_on_b, &b, m, &mut markers).await;
    assert_eq!(received(&b).await, 4, "after its last subscriber left");
    // A heard its own channel's twelve updates and none of the markers.
    assert_eq!(received(&a).await, 12);
}

/// Waits (guarded) until `socket` has `n` frames queued.
async fn queued(socket: &SocketHandle, n: usize, what: &str) {
    let deadline = tokio::time::Instant::now() + GUARD;
    while socket.outbox().len() < n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not delivered"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The bus at its narrowest: once `ready` returns for a socket registered
/// in the hub, a broadcast published by another node right after reaches
/// it, also when the channel's last subscriber just left and its
/// UNSUBSCRIBE races the new subscriber.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_means_the_very_next_broadcast_arrives_even_across_an_unsubscribe() {
    let redis = RedisServer::start().await;
    let hub = Hub::new();
    let store = RedisStore::connect(&redis.url(), Arc::new(hub.clone()), RedisOptions::default())
        .await
        .expect("a store connects");
    let other = RedisStore::connect(&redis.url(), Recorder::new(), RedisOptions::default())
        .await
        .expect("a store connects");
    let feed = store.feed();
    let publish = async |channel: &ChannelName, text: String| {
        let frame = Utf8Bytes::from(text);
        let broadcast = Broadcast::new(channel.as_str(), frame);
        other.publish(vec![broadcast]).await.expect("published");
    };
    for i in 0..80 {
        let channel = ChannelName::parse(&format!("ready-{i}")).unwrap();
        let first = SocketHandle::new(SocketId::random(), 16);
        hub.register(first.clone());
        hub.subscribe(&channel, &first);
        feed.ready(channel.as_str()).await;
        publish(&channel, format!("{i} first")).await;
        queued(&first, 1, &format!("channel {i}, first subscriber")).await;
        // The last subscriber leaves and a new one arrives a moment later:
        // from at once to about a round trip, so some arrive while the
        // bus's UNSUBSCRIBE is in flight. (Blocking this worker on purpose;
        // the bus runs on the other.)
        hub.remove_socket(&first.id, [&channel]);
        std::thread::sleep(Duration::from_micros(25 * (i % 12)));
        let second = SocketHandle::new(SocketId::random(), 16);
        hub.register(second.clone());
        hub.subscribe(&channel, &second);
        feed.ready(channel.as_str()).await;
        publish(&channel, format!("{i} second")).await;
        queued(&second, 1, &format!("channel {i}, second subscriber")).await;
    }
    assert_eq!(store.feed().subscribed(), 80);
}

/// Subscribers arrive at a node while other nodes commit to their rooms
/// without pause; each is the node's first subscriber of its channel, so its
/// snapshot races the bus's SUBSCRIBE. Every person joined after a
/// subscriber's snapshot must reach it as an update: snapshot ∪ updates is
/// everyone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_arriving_mid_stream_misses_no_update_after_its_snapshot() {
    const ROOMS: u32 = 6;
    const PEOPLE: u32 = 40;
    let redis = RedisServer::start().await;
    let (a, b) = (Arc::new(node(&redis).await), node(&redis).await);
    let (first_round, mut rooms_exist) = tokio::sync::watch::channel(false);
    let writer = {
        let a = Arc::clone(&a);
        tokio::spawn(async move {
            // Round-robin over the rooms, one commit after the other.
            for p in 1..=PEOPLE {
                for n in 1..=ROOMS {
                    post_ok(&a, &join(n, p)).await;
                }
                first_round.send_replace(true);
            }
        })
    };
    // Every room exists (so every subscriber gets a snapshot).
    rooms_exist.wait_for(|done| *done).await.unwrap();
    let mut clients = Vec::new();
    for n in 1..=ROOMS {
        // Staggered so the subscriptions land at different points.
        tokio::time::sleep(Duration::from_millis(40)).await;
        let mut client = PusherClient::connect(&b.ws_url("rollcall-key")).await;
        client.subscribe(&channel(n)).await;
        clients.push((n, client));
    }
    writer.await.expect("the writer finishes");
    for (n, mut client) in clients {
        // The snapshot comes first, then updates; a final marker closes the
        // stream.
        let snapshot = client.next_event("attendance.snapshot").await;
        let mut seen: BTreeSet<String> = snapshot.data["participants"]
            .as_array()
            .expect("participants")
            .iter()
            .map(|p| p["identity"].as_str().unwrap().to_string())
            .collect();
        let in_snapshot = seen.len();
        post_ok(&a, &join(n, 999)).await;
        loop {
            let frame = client.next_frame().await.expect("socket open");
            match frame.event.as_str() {
                "attendance.updated" => {
                    let who = frame.data["attendance"]["identity"].as_str().unwrap();
                    if who == "999_Person_999" {
                        break;
                    }
                    seen.insert(who.to_string());
                }
                // A re-sent snapshot (a bus gap) would only add people.
                "attendance.snapshot" => continue,
                other => panic!("unexpected {other}: {frame:?}"),
            }
        }
        let everyone: BTreeSet<String> = (1..=PEOPLE).map(|p| format!("{p}_Person_{p}")).collect();
        let missed: Vec<&String> = everyone.difference(&seen).collect();
        assert!(
            missed.is_empty(),
            "room {n}: snapshot had {in_snapshot}, updates missed {missed:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnecting_bus_resubscribes_every_locally_subscribed_channel() {
    let mut redis = RedisServer::start().await;
    let (a, b) = (node(&redis).await, node(&redis).await);
    let mut on_b = Vec::new();
    for n in 1..=3 {
        on_b.push((n, b.subscriber(&channel(n)).await));
    }
    bus_subscriptions_are(&b, 3).await;
    assert_eq!(metric(&b, "rollcall_bus_connections_total").await, 1);
    redis.restart().await;
    // Back on its own, with every channel; then A's commits reach B.
    let deadline = tokio::time::Instant::now() + GUARD;
    while metric(&b, "rollcall_bus_connections_total").await < 2 {
        assert!(tokio::time::Instant::now() < deadline, "B's bus reconnects");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    bus_subscriptions_are(&b, 3).await;
    for (n, client) in &mut on_b {
        let deadline = tokio::time::Instant::now() + GUARD;
        // A's first commits may meet its pool still reconnecting.
        loop {
            let res = a.post_webhook(&join(*n, 1)).await;
            if res.status() == 200 {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "A never recovered");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        until_update_of(client, "1_Person_1").await;
    }
}

/// Issue 13's per-node figure, quick edition: 6 nodes, each serving its own
/// channels, every room committing the same number of updates. A node of
/// the old design (one bus channel every node hears) is stood for by a
/// store whose delivery keeps no channel registry, which hears everything.
/// Run with `--nocapture` for the figures.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_of_six_nodes_hears_only_its_own_channels() {
    const NODES: u32 = 6;
    const CHANNELS_PER_NODE: u32 = 2;
    const UPDATES: u32 = 8;
    let redis = RedisServer::start().await;
    let everything = Recorder::new();
    let _before = RedisStore::connect(&redis.url(), everything.clone(), RedisOptions::default())
        .await
        .expect("a store connects");
    let mut nodes = Vec::new();
    for _ in 0..NODES {
        nodes.push(node(&redis).await);
    }
    let mut clients = Vec::new();
    for (i, app) in nodes.iter().enumerate() {
        for c in 0..CHANNELS_PER_NODE {
            let n = 100 + i as u32 * CHANNELS_PER_NODE + c;
            clients.push((n, app.subscriber(&channel(n)).await));
        }
    }
    for app in &nodes {
        bus_subscriptions_are(app, u64::from(CHANNELS_PER_NODE)).await;
    }
    // Every update of every room, committed round-robin on every node.
    let mut k = 0;
    for p in 1..=UPDATES {
        for (n, _) in &clients {
            post_ok(&nodes[k % nodes.len()], &join(*n, p)).await;
            k += 1;
        }
    }
    for (_, client) in &mut clients {
        until_update_of(client, &format!("{UPDATES}_Person_{UPDATES}")).await;
    }
    let total = u64::from(NODES * CHANNELS_PER_NODE * UPDATES);
    everything.wait_for(total as usize).await;
    let mut per_node = Vec::new();
    for app in &nodes {
        per_node.push(received(app).await);
    }
    println!(
        "fan-out, {NODES} nodes x {CHANNELS_PER_NODE} channels x {UPDATES} updates: \
         broadcasts received per node before (one channel for all) {total}, \
         after (subscribe on demand) {per_node:?}"
    );
    // Each update was the last on its channel's connection before the
    // client saw it, and the final ones are in: nothing else can come.
    let own = u64::from(CHANNELS_PER_NODE * UPDATES);
    assert!(per_node.iter().all(|n| *n == own), "{per_node:?}");
}
