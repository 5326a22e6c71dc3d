//! Presence channels, store-side and across nodes.
//!
//! - One conformance suite for every `PresenceStore` (memory, Redis): each
//!   test is a function of a `Presence` backend and runs on both.
//! - The node registry on Redis: leases, lapsed nodes, forgetting.
//! - Two real `rollcall` processes on one Redis: member lists are equal on
//!   both nodes, and when one is killed with SIGKILL (no goodbye) its
//!   members are removed on the other within the stated bound
//!   (`ROLLCALL_NODE_TTL` × 1.25), with one `member_removed` per user.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rollcall::pusher::SocketId;
use rollcall::pusher::auth::{sign_channel, sign_http_api};
use rollcall::store::presence::{
    JoinOutcome, Joining, MemoryPresence, NodeRegistry, PresenceStore,
};
use rollcall::store::{Broadcast, RedisOptions, RedisStore};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Utf8Bytes;

use crate::helpers::*;
use crate::process::ServerProcess;
use crate::redis_cluster::RedisCluster;
use crate::redis_server::RedisServer;
use crate::store_suite::Recorder;
use rollcall::store::conn::RedisTarget;

pub(crate) const CH: &str = "presence-class";

/// A presence store under test and what it delivers to "this node".
struct Backend {
    store: Arc<dyn PresenceStore>,
    delivered: Arc<Recorder>,
    _redis: Option<(RedisServer, RedisStore)>,
    _cluster: Option<(RedisCluster, RedisStore)>,
}

impl Backend {
    fn memory() -> Self {
        let delivered = Recorder::new();
        Self {
            store: Arc::new(MemoryPresence::new(delivered.clone())),
            delivered,
            _redis: None,
            _cluster: None,
        }
    }

    /// On a Redis Cluster: the scripts `SPUBLISH` on the channel's shard.
    async fn cluster() -> Self {
        let cluster = RedisCluster::start().await;
        let delivered = Recorder::hearing(&[CH]);
        let target = RedisTarget::Cluster(cluster.seeds());
        let rooms = subscribed_store(&target, &delivered).await;
        Self {
            store: Arc::new(rooms.presence()),
            delivered,
            _redis: None,
            _cluster: Some((cluster, rooms)),
        }
    }

    async fn redis() -> Self {
        let server = RedisServer::start().await;
        let delivered = Recorder::new();
        let target = RedisTarget::Single(server.url());
        let rooms = subscribed_store(&target, &delivered).await;
        Self {
            store: Arc::new(rooms.presence()),
            delivered,
            _redis: Some((server, rooms)),
            _cluster: None,
        }
    }

    async fn join(&self, node: &str, socket: &str, user: &str, max: usize) -> JoinOutcome {
        let info = format!(r#"{{"name":"{user}"}}"#);
        let added = Broadcast {
            channel: CH.into(),
            frame: Utf8Bytes::from(format!("added {user}")),
            except: Some(SocketId::parse(socket).unwrap()),
            halt: None,
        };
        let joining = Joining {
            channel: CH,
            node,
            socket,
            user_id: user,
            user_info: &info,
        };
        self.store.join(joining, max, &added).await.unwrap()
    }

    /// What was delivered, `member_removed` frames shown as `removed <id>`.
    async fn delivered(&self, n: usize) -> Vec<String> {
        self.delivered
            .wait_for(n)
            .await
            .into_iter()
            .map(|(channel, frame)| {
                assert_eq!(channel, CH);
                match serde_json::from_str::<Value>(&frame) {
                    Ok(v) => {
                        assert_eq!(v["event"], "pusher_internal:member_removed", "{v}");
                        assert_eq!(v["channel"], CH);
                        let data: Value =
                            serde_json::from_str(v["data"].as_str().unwrap()).unwrap();
                        format!("removed {}", data["user_id"].as_str().unwrap())
                    }
                    Err(_) => frame,
                }
            })
            .collect()
    }
}

/// A store on `target` delivering to `delivered`, once its bus is subscribed.
async fn subscribed_store(target: &RedisTarget, delivered: &Arc<Recorder>) -> RedisStore {
    let rooms = RedisStore::connect_to(target, delivered.clone(), RedisOptions::default())
        .await
        .expect("RedisStore connects");
    let mut bus = rooms.bus_connections();
    tokio::time::timeout(GUARD, bus.wait_for(|n| *n >= 1))
        .await
        .expect("bus subscribed")
        .unwrap();
    rooms
}

fn ids(outcome: &JoinOutcome) -> Vec<&str> {
    match outcome {
        JoinOutcome::Joined { members, .. } => members.iter().map(|(id, _)| id.as_str()).collect(),
        JoinOutcome::Full => panic!("refused as full"),
    }
}

fn added(outcome: &JoinOutcome) -> bool {
    matches!(outcome, JoinOutcome::Joined { added: true, .. })
}

async fn members_are_users_not_connections(b: Backend) {
    let first = b.join("n1", "1.1", "u1", 100).await;
    assert!(added(&first));
    assert_eq!(ids(&first), ["u1"]);
    // The same user on another connection, even on another node: no new member.
    let tab = b.join("n2", "2.1", "u1", 100).await;
    assert!(!added(&tab));
    // A repeated join of one connection changes nothing.
    assert!(!added(&b.join("n1", "1.1", "u1", 100).await));
    let second = b.join("n1", "1.2", "u2", 100).await;
    assert_eq!(ids(&second), ["u1", "u2"]);
    match &second {
        JoinOutcome::Joined { members, .. } => assert_eq!(members[0].1, r#"{"name":"u1"}"#),
        JoinOutcome::Full => unreachable!(),
    }
    assert_eq!(
        b.store
            .user_counts(&[CH.into(), "presence-none".into()])
            .await
            .unwrap(),
        [2, 0]
    );

    // u1 leaves one connection: still a member; then the last: removed.
    assert_eq!(b.store.leave(CH, "n1", "1.1").await.unwrap(), None);
    assert_eq!(
        b.store.leave(CH, "n1", "1.1").await.unwrap(),
        None,
        "idempotent"
    );
    assert_eq!(
        b.store.leave(CH, "n2", "2.1").await.unwrap(),
        Some("u1".into())
    );
    let members = b.store.members(CH).await.unwrap();
    assert_eq!(
        members,
        [("u2".to_string(), r#"{"name":"u2"}"#.to_string())]
    );
    assert_eq!(b.delivered(3).await, ["added u1", "added u2", "removed u1"]);
}

async fn a_full_channel_refuses_new_users_but_not_members_tabs(b: Backend) {
    b.join("n1", "1.1", "u1", 2).await;
    b.join("n1", "1.2", "u2", 2).await;
    assert_eq!(b.join("n1", "1.3", "u3", 2).await, JoinOutcome::Full);
    assert_eq!(ids(&b.join("n2", "2.1", "u2", 2).await), ["u1", "u2"]);
    // The refused join left nothing behind.
    assert_eq!(b.store.user_counts(&[CH.into()]).await.unwrap(), [2]);
    assert_eq!(b.store.leave(CH, "n1", "1.3").await.unwrap(), None);
}

async fn removing_a_node_removes_only_its_connections_once(b: Backend) {
    b.join("dead", "1.1", "u1", 100).await; // only on the dead node
    b.join("dead", "1.2", "u2", 100).await; // on both nodes
    b.join("live", "2.1", "u2", 100).await;
    b.join("live", "2.2", "u3", 100).await; // only on the live node
    let mut removed = b.store.remove_node("dead").await.unwrap();
    removed.sort();
    assert_eq!(removed, [(CH.to_string(), "u1".to_string())]);
    assert_eq!(
        b.store.remove_node("dead").await.unwrap(),
        [],
        "a second pass finds nothing"
    );
    let ids: Vec<String> = b
        .store
        .members(CH)
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.0)
        .collect();
    assert_eq!(ids, ["u2", "u3"]);
    assert_eq!(b.delivered(4).await.last().unwrap(), "removed u1");
}

macro_rules! on_both {
    ($($test:ident),* $(,)?) => {
        mod on_memory {
            $(#[tokio::test] async fn $test() { super::$test(super::Backend::memory()).await })*
        }
        mod on_redis {
            $(#[tokio::test] async fn $test() { super::$test(super::Backend::redis().await).await })*
        }
        mod on_cluster {
            $(#[tokio::test] async fn $test() { super::$test(super::Backend::cluster().await).await })*
        }
    };
}

on_both!(
    members_are_users_not_connections,
    a_full_channel_refuses_new_users_but_not_members_tabs,
    removing_a_node_removes_only_its_connections_once,
);

#[tokio::test]
async fn the_registry_tells_lapsed_nodes_and_never_revives_one() {
    let b = Backend::redis().await;
    let (_, rooms) = b._redis.as_ref().unwrap();
    let registry = rooms.presence();
    let ttl = Duration::from_secs(10);
    let first = registry.renew_node("a", ttl, 1_000, 3).await.unwrap();
    assert!(!first.was_registered);
    assert_eq!(first.cluster_connections, 3);
    let b_node = registry.renew_node("b", ttl, 2_000, 4).await.unwrap();
    assert_eq!(b_node.cluster_connections, 7, "both nodes' connections");
    assert!(
        registry
            .renew_node("a", ttl, 5_000, 3)
            .await
            .unwrap()
            .was_registered
    );
    // At 12.5 s, b's lease (to 12 s) lapsed, a's (to 15 s) did not.
    assert_eq!(registry.expired_nodes(12_500).await.unwrap(), ["b"]);
    // A lapsed node's connections no longer count.
    assert_eq!(
        registry
            .renew_node("a", ttl, 12_500, 3)
            .await
            .unwrap()
            .cluster_connections,
        3
    );
    // A lapsed lease is never revived by its node: it stays dead to the
    // others until it is forgotten (its members removed), then registers
    // afresh.
    let late = registry.renew_node("b", ttl, 12_600, 4).await.unwrap();
    assert!(late.lapsed && !late.was_registered);
    assert_eq!(registry.expired_nodes(12_650).await.unwrap(), ["b"]);
    registry.forget_node("b", 12_700).await.unwrap();
    assert!(registry.expired_nodes(12_750).await.unwrap().is_empty());
    let fresh = registry.renew_node("b", ttl, 12_800, 4).await.unwrap();
    assert!(!fresh.lapsed && !fresh.was_registered);
    // A live lease is never forgotten.
    registry.forget_node("b", 12_900).await.unwrap();
    let again = registry.renew_node("b", ttl, 13_000, 4).await.unwrap();
    assert!(again.was_registered);
}

// ---- two real nodes --------------------------------------------------------

const KEY: &str = "rollcall-key";

async fn node(redis: &RedisServer) -> ServerProcess {
    ServerProcess::spawn(&[
        ("ROLLCALL_REDIS_URL", &redis.url()),
        ("ROLLCALL_NODE_TTL", "2s"),
    ])
    .await
}

/// A socket on `node` subscribed to `CH` as `user`; returns it with the
/// member ids its `subscription_succeeded` listed.
pub(crate) async fn member(node: &ServerProcess, user: &str) -> (PusherClient, Vec<String>) {
    let mut c = PusherClient::connect(&node.ws_url(KEY)).await;
    let channel_data = json!({"user_id": user, "user_info": {"name": user}}).to_string();
    let auth = format!(
        "{KEY}:{}",
        sign_channel(APP_SECRET, &c.socket_id, CH, Some(&channel_data))
    );
    c.send(json!({"event":"pusher:subscribe","data":{"channel":CH,"auth":auth,"channel_data":channel_data}}))
        .await;
    let ok = c.next_event("pusher_internal:subscription_succeeded").await;
    let ids = ok.data["presence"]["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    (c, ids)
}

/// A signed Pusher HTTP API GET against `node`.
async fn api_get(node: &ServerProcess, path: &str, params: &[(&str, &str)]) -> Value {
    let ts = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs())
    .to_string();
    let mut pairs = vec![
        ("auth_key", KEY),
        ("auth_timestamp", ts.as_str()),
        ("auth_version", "1.0"),
    ];
    pairs.extend_from_slice(params);
    let signature = sign_http_api(APP_SECRET, "GET", path, &pairs);
    pairs.push(("auth_signature", &signature));
    let query: String = pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    let res = reqwest::get(node.url(&format!("{path}?{query}")))
        .await
        .expect("server answers");
    assert_eq!(res.status(), 200);
    res.json().await.unwrap()
}

async fn users(node: &ServerProcess) -> Vec<String> {
    let body = api_get(node, &format!("/apps/rollcall/channels/{CH}/users"), &[]).await;
    body["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["id"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn members_are_shared_across_nodes_and_a_killed_nodes_members_leave_once() {
    let redis = RedisServer::start().await;
    let (one, two) = (node(&redis).await, node(&redis).await);

    let (mut ada, seen) = member(&one, "ada").await;
    assert_eq!(seen, ["ada"]);
    let (_bo, seen) = member(&two, "bo").await;
    assert_eq!(seen, ["ada", "bo"], "a member on the other node is listed");
    assert_eq!(
        ada.next_event("pusher_internal:member_added").await.data["user_id"],
        "bo"
    );
    // Ada's second tab on node two, and Cy, only on node two.
    let (_ada_tab, _) = member(&two, "ada").await;
    let (_cy, _) = member(&two, "cy").await;
    assert_eq!(
        ada.next_event("pusher_internal:member_added").await.data["user_id"],
        "cy"
    );

    // Both nodes answer the same, exactly.
    for n in [&one, &two] {
        assert_eq!(users(n).await, ["ada", "bo", "cy"]);
        let info = api_get(
            n,
            &format!("/apps/rollcall/channels/{CH}"),
            &[("info", "user_count,subscription_count")],
        )
        .await;
        assert_eq!(info["user_count"], 3, "{info}");
        assert_eq!(info["subscription_count"], 4, "{info}");
        let list = api_get(
            n,
            "/apps/rollcall/channels",
            &[("filter_by_prefix", "presence-"), ("info", "user_count")],
        )
        .await;
        assert_eq!(list["channels"][CH]["user_count"], 3, "{list}");
    }

    // Node two dies without a goodbye.
    let killed_at = Instant::now();
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(two.pid() as libc::pid_t, libc::SIGKILL) };
    let mut removed = Vec::new();
    while removed.len() < 2 {
        let frame = ada.next_event("pusher_internal:member_removed").await;
        removed.push(frame.data["user_id"].as_str().unwrap().to_string());
    }
    let took = killed_at.elapsed();
    removed.sort();
    // Ada still has her tab on node one: she stays.
    assert_eq!(removed, ["bo", "cy"]);
    eprintln!(
        "a killed node's members were removed after {took:?} (bound: 2.5 s + a store round trip)"
    );
    assert!(took < Duration::from_secs(8), "removed after {took:?}");
    // Exactly once: nothing more comes.
    assert!(
        ada.frame_within(Duration::from_millis(1_500))
            .await
            .is_none()
    );
    assert_eq!(users(&one).await, ["ada"]);

    // A new node on the same Redis resurrects nobody.
    let three = node(&redis).await;
    assert_eq!(users(&three).await, ["ada"]);
    drop(two);
}

#[tokio::test]
async fn a_node_cut_off_past_its_lease_comes_back_without_resurrecting_anyone() {
    let redis = RedisServer::start().await;
    let (one, two) = (node(&redis).await, node(&redis).await);
    let (mut ada, _) = member(&one, "ada").await;
    let (mut bo, _) = member(&two, "bo").await;
    assert_eq!(
        ada.next_event("pusher_internal:member_added").await.data["user_id"],
        "bo"
    );

    // Node two stops (a long GC pause, a partition): its lease lapses and
    // node one removes Bo, once.
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(two.pid() as libc::pid_t, libc::SIGSTOP) };
    let removed = ada.next_event("pusher_internal:member_removed").await;
    assert_eq!(removed.data["user_id"], "bo");
    unsafe { libc::kill(two.pid() as libc::pid_t, libc::SIGCONT) };

    // Back, node two learns its lease was lost and closes its sockets with
    // 4200 (clients reconnect and join again); it re-adds nobody itself.
    let close = bo.closed().await.expect("a close frame");
    assert_eq!(u16::from(close.code), 4200);
    assert!(
        ada.frame_within(Duration::from_millis(1_500))
            .await
            .is_none(),
        "no second member_removed, no resurrected member_added"
    );
    assert_eq!(users(&one).await, ["ada"]);
    assert_eq!(users(&two).await, ["ada"]);
}

/// A presence channel's members as pusher-js keeps them: replaced by each
/// `subscription_succeeded`, changed by `member_added` / `member_removed`.
type View = std::collections::BTreeSet<String>;

/// Reads `c`'s frames into `members` until they are `wanted`; returns the
/// events read.
async fn view_until(c: &mut PusherClient, members: &mut View, wanted: &[&str]) -> Vec<String> {
    let mut events = Vec::new();
    let wanted: std::collections::BTreeSet<String> = wanted.iter().map(|s| s.to_string()).collect();
    tokio::time::timeout(GUARD, async {
        while *members != wanted {
            let Some(frame) = c.next_frame().await else {
                panic!("closed while the view was {members:?}")
            };
            events.push(frame.event.clone());
            match frame.event.as_str() {
                "pusher_internal:subscription_succeeded" => {
                    *members = frame.data["presence"]["ids"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|v| v.as_str().unwrap().to_string())
                        .collect();
                }
                "pusher_internal:member_added" => {
                    members.insert(frame.data["user_id"].as_str().unwrap().to_string());
                }
                "pusher_internal:member_removed" => {
                    members.remove(frame.data["user_id"].as_str().unwrap());
                }
                _ => {}
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the view never became {wanted:?}"));
    events
}

#[tokio::test]
async fn a_leave_during_a_redis_outage_reaches_every_page_once_redis_is_back() {
    let mut redis = RedisServer::start().await;
    let app = spawn_app_with(|s| {
        s.redis_url = Some(redis.url());
        s.redis.command_timeout = Duration::from_millis(300);
        s.node_ttl = Duration::from_secs(1);
    })
    .await;
    let join = |user: &'static str| {
        let url = app.ws_url(KEY);
        async move {
            let mut c = PusherClient::connect(&url).await;
            let channel_data = json!({"user_id": user}).to_string();
            let auth = format!(
                "{KEY}:{}",
                sign_channel(APP_SECRET, &c.socket_id, CH, Some(&channel_data))
            );
            c.send(json!({"event":"pusher:subscribe","data":{"channel":CH,"auth":auth,"channel_data":channel_data}}))
                .await;
            c
        }
    };
    let mut view = View::new();
    let mut ada = join("ada").await;
    view_until(&mut ada, &mut view, &["ada"]).await;
    let bo = join("bo").await;
    view_until(&mut ada, &mut view, &["ada", "bo"]).await;

    // Redis goes away; Bo leaves meanwhile: his leave cannot be stored, and
    // no member_removed can be published.
    redis.kill().await;
    drop(bo);
    tokio::time::sleep(Duration::from_millis(500)).await;
    redis.restart().await;

    // Once Redis is back, the leave is retried and Ada's page learns of it
    // (from the retried leave's member_removed, or from the member list the
    // node re-sends after its bus reconnects).
    let mut seen = view_until(&mut ada, &mut view, &["ada"]).await;
    // Whichever came first, the node re-sends the member list after its bus
    // reconnects (what repairs a page that missed a member_removed).
    while !seen
        .iter()
        .any(|e| e == "pusher_internal:subscription_succeeded")
    {
        let frame = ada.next_frame().await.expect("the socket stays open");
        seen.push(frame.event);
    }
    let body = api_get_app(&app, &format!("/apps/rollcall/channels/{CH}/users")).await;
    assert_eq!(body["users"], json!([{"id": "ada"}]));
}

/// A signed Pusher HTTP API GET against an in-process app.
async fn api_get_app(app: &TestApp, path: &str) -> Value {
    let ts = (rollcall::domain::now_millis() / 1000).to_string();
    let pairs = [
        ("auth_key", KEY),
        ("auth_timestamp", ts.as_str()),
        ("auth_version", "1.0"),
    ];
    let signature = sign_http_api(APP_SECRET, "GET", path, &pairs);
    let query =
        format!("auth_key={KEY}&auth_timestamp={ts}&auth_version=1.0&auth_signature={signature}");
    let res = app
        .http
        .get(app.url(&format!("{path}?{query}")))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    res.json().await.unwrap()
}
