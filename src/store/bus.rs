//! The cross-node bus: one dedicated pub/sub connection per node (not from
//! the command pool, which a subscribed connection would poison) that
//! hands every broadcast to this node's sockets. Reconnects with capped
//! exponential backoff and resubscribes; each (re)connection bumps a
//! counter so the node can re-send snapshots for what it may have missed.
//!
//! The same connection receives channel queries from any node and answers
//! each with this node's subscription counts (see `redis.rs`).

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use super::LocalDelivery;
use super::redis::{
    BROADCAST_CHANNEL, CHANNELS_ANSWER_TTL_MS, CHANNELS_QUERY_CHANNEL, decode_channel_query,
    parse_halt,
};
use crate::pusher::SocketId;

const BACKOFF_START: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

pub struct BusHandle {
    connections: watch::Receiver<u64>,
    task: tokio::task::JoinHandle<()>,
}

impl BusHandle {
    pub fn connections(&self) -> watch::Receiver<u64> {
        self.connections.clone()
    }
}

impl Drop for BusHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub fn spawn(
    client: redis::Client,
    pool: deadpool_redis::Pool,
    delivery: Arc<dyn LocalDelivery>,
) -> BusHandle {
    let (tx, rx) = watch::channel(0u64);
    let task = tokio::spawn(async move {
        let mut backoff = BACKOFF_START;
        loop {
            match subscribe(&client).await {
                Ok(mut pubsub) => {
                    backoff = BACKOFF_START;
                    tx.send_modify(|n| *n += 1);
                    tracing::info!("broadcast bus subscribed");
                    let mut messages = pubsub.on_message();
                    while let Some(msg) = messages.next().await {
                        if msg.get_channel_name() == CHANNELS_QUERY_CHANNEL {
                            answer_query(&delivery, &pool, msg.get_payload_bytes());
                        } else {
                            deliver(&*delivery, msg.get_payload_bytes());
                        }
                    }
                    tracing::warn!("broadcast bus connection lost; reconnecting");
                }
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?backoff, "broadcast bus cannot subscribe");
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    });
    BusHandle {
        connections: rx,
        task,
    }
}

async fn subscribe(client: &redis::Client) -> redis::RedisResult<redis::aio::PubSub> {
    let mut pubsub = tokio::time::timeout(Duration::from_secs(5), client.get_async_pubsub())
        .await
        .map_err(|_| redis::RedisError::from((redis::ErrorKind::Io, "connect timed out")))??;
    pubsub
        .subscribe(&[BROADCAST_CHANNEL, CHANNELS_QUERY_CHANNEL])
        .await?;
    Ok(pubsub)
}

fn deliver(delivery: &dyn LocalDelivery, payload: &[u8]) {
    let Some(split) = payload.iter().position(|&b| b == b'\n') else {
        tracing::warn!("malformed broadcast on the bus; dropped");
        return;
    };
    let (header, frame) = (&payload[..split], &payload[split + 1..]);
    let (Ok(header), Ok(frame)) = (
        std::str::from_utf8(header),
        Utf8Bytes::try_from(frame.to_vec()),
    ) else {
        tracing::warn!("non-UTF-8 broadcast on the bus; dropped");
        return;
    };
    match header.split_once(' ') {
        None => delivery.deliver(header, frame, None),
        Some((channel, halt)) if halt.starts_with('!') => match parse_halt(&halt[1..]) {
            Some(why) => delivery.halt(channel, why),
            None => tracing::warn!("unknown halt on the bus; dropped"),
        },
        Some((channel, except)) => match SocketId::parse(except) {
            Ok(except) => delivery.deliver(channel, frame, Some(&except)),
            Err(_) => tracing::warn!("malformed excluded socket id on the bus; dropped"),
        },
    }
}

/// Pushes this node's counts for the query to its reply key, off the bus
/// loop (broadcasts keep flowing while the answer is written).
fn answer_query(delivery: &Arc<dyn LocalDelivery>, pool: &deadpool_redis::Pool, payload: &[u8]) {
    let Some((reply_key, query)) = std::str::from_utf8(payload)
        .ok()
        .and_then(decode_channel_query)
    else {
        tracing::warn!("malformed channel query on the bus; ignored");
        return;
    };
    let answer = match serde_json::to_string(&delivery.subscriptions(&query)) {
        Ok(answer) => answer,
        Err(e) => return tracing::warn!(error = %e, "cannot encode a channel query answer"),
    };
    let (reply_key, pool) = (reply_key.to_string(), pool.clone());
    tokio::spawn(async move {
        let reply = async {
            let mut conn = pool.get().await.map_err(|e| e.to_string())?;
            redis::pipe()
                .rpush(&reply_key, answer)
                .ignore()
                .pexpire(&reply_key, CHANNELS_ANSWER_TTL_MS as i64)
                .ignore()
                .query_async::<()>(&mut conn)
                .await
                .map_err(|e| e.to_string())
        };
        match tokio::time::timeout(Duration::from_secs(2), reply).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot answer a channel query"),
            Err(_) => tracing::warn!("answering a channel query timed out"),
        }
    });
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::store::redis::{encode_broadcast, encode_channel_query};
    use crate::store::{Broadcast, ChannelQuery, SubscriptionCounts};

    /// Records what the bus hands to "this node" (a halt as its frame
    /// `halt:<halt>`).
    #[derive(Default)]
    struct Seen(Mutex<Vec<(String, String, Option<String>)>>);

    impl LocalDelivery for Seen {
        fn deliver(&self, channel: &str, frame: Utf8Bytes, except: Option<&SocketId>) {
            let except = except.map(|s| s.as_str().to_string());
            let entry = (channel.to_string(), frame.as_str().to_string(), except);
            self.0.lock().unwrap().push(entry);
        }

        fn halt(&self, channel: &str, why: crate::pusher::Halt) {
            let entry = (channel.to_string(), format!("halt:{why:?}"), None);
            self.0.lock().unwrap().push(entry);
        }

        fn subscriptions(&self, _query: &ChannelQuery) -> SubscriptionCounts {
            SubscriptionCounts::new()
        }
    }

    #[test]
    fn broadcasts_round_trip_with_and_without_an_excluded_socket() {
        let seen = Seen::default();
        let frame = r#"{"event":"e","channel":"a.b","data":"x\ny"}"#;
        let mut b = Broadcast::new("a.b", Utf8Bytes::from(frame));
        deliver(&seen, &encode_broadcast(&b));
        b.except = Some(SocketId::parse("12.34").unwrap());
        deliver(&seen, &encode_broadcast(&b));
        deliver(&seen, b"a.b not-a-socket\n{}");
        deliver(&seen, b"no newline");
        let halt = Broadcast::halt("#server-to-user-12", crate::pusher::Halt::Terminated);
        deliver(&seen, &encode_broadcast(&halt));
        deliver(&seen, b"#server-to-user-12 !nonsense\n");
        let seen = seen.0.into_inner().unwrap();
        assert_eq!(
            seen,
            [
                ("a.b".into(), frame.into(), None),
                ("a.b".into(), frame.into(), Some("12.34".into())),
                ("#server-to-user-12".into(), "halt:Terminated".into(), None),
            ]
        );
    }

    #[test]
    fn channel_queries_round_trip() {
        let key = "rollcall:channels:reply:00ff";
        for query in [
            ChannelQuery::Names(vec!["a".into()]),
            ChannelQuery::Names(vec!["a,b".into(), "c;d".into()]),
            ChannelQuery::Prefix(String::new()),
            ChannelQuery::Prefix("private-".into()),
        ] {
            let message = encode_channel_query(key, &query);
            assert_eq!(decode_channel_query(&message), Some((key, query)));
        }
        // Only reply keys in our namespace are ever written to.
        assert_eq!(decode_channel_query("rollcall:state\n=a"), None);
        assert_eq!(decode_channel_query(&format!("{key}\n?a")), None);
    }
}
