//! The cross-node bus: one dedicated pub/sub connection per node (not from
//! the command pool, which a subscribed connection would poison) that
//! hands every broadcast to this node's sockets. Reconnects with capped
//! exponential backoff and resubscribes; each (re)connection bumps a
//! counter so the node can re-send snapshots for what it may have missed.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::Utf8Bytes;
use futures_util::StreamExt;
use tokio::sync::watch;

use super::LocalDelivery;
use super::redis::BROADCAST_CHANNEL;

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

pub fn spawn(client: redis::Client, delivery: Arc<dyn LocalDelivery>) -> BusHandle {
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
                        deliver(&*delivery, msg.get_payload_bytes());
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
    pubsub.subscribe(BROADCAST_CHANNEL).await?;
    Ok(pubsub)
}

fn deliver(delivery: &dyn LocalDelivery, payload: &[u8]) {
    let Some(split) = payload.iter().position(|&b| b == b'\n') else {
        tracing::warn!("malformed broadcast on the bus; dropped");
        return;
    };
    let (channel, frame) = (&payload[..split], &payload[split + 1..]);
    match (
        std::str::from_utf8(channel),
        Utf8Bytes::try_from(frame.to_vec()),
    ) {
        (Ok(channel), Ok(frame)) => delivery.deliver(channel, frame),
        _ => tracing::warn!("non-UTF-8 broadcast on the bus; dropped"),
    }
}
