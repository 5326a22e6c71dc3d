//! Client events across nodes: a `client-*` event a socket sends goes
//! through the store's pub/sub like an HTTP API event, so the channel's
//! subscribers on every node get it, with the sender's socket id carried
//! along to leave it out wherever that socket is.

use std::sync::Arc;

use async_trait::async_trait;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use crate::pusher::channel::{ChannelName, SocketId};
use crate::pusher::service::ClientEventRelay;
use crate::store::{Broadcast, Store};

pub struct StoreRelay(pub Arc<dyn Store>);

#[async_trait]
impl ClientEventRelay for StoreRelay {
    async fn relay(&self, channel: &ChannelName, frame: Utf8Bytes, sender: &SocketId) -> bool {
        let broadcast = Broadcast {
            channel: channel.as_str().to_owned(),
            frame,
            except: Some(sender.clone()),
            halt: None,
        };
        match self.0.publish(vec![broadcast]).await {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(channel = channel.as_str(), error = %e, "client event not relayed: store unavailable");
                false
            }
        }
    }
}
