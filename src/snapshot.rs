//! `attendance.snapshot`: what a socket is sent right after it subscribes
//! to a room's channel, so a page that loads or reconnects is current
//! without an HTTP call.

use std::sync::Arc;

use async_trait::async_trait;
use axum::extract::ws::Utf8Bytes;

use crate::engine::view::{SNAPSHOT_EVENT, snapshot_json};
use crate::engine::{Attendance, Naming, Window};
use crate::pusher::channel::ChannelName;
use crate::pusher::{SubscribeHook, frame};
use crate::store::Store;

pub struct Snapshots {
    pub store: Arc<dyn Store>,
    pub naming: Naming,
}

impl Snapshots {
    /// One snapshot frame per room whose updates go to `channel`. A store
    /// failure yields no frames (logged): the subscription still works and
    /// updates still arrive.
    pub async fn frames(&self, channel: &str) -> Vec<Utf8Bytes> {
        let rooms = match self.store.rooms_of_channel(channel).await {
            Ok(rooms) => rooms,
            Err(e) => {
                tracing::warn!(channel, error = %e, "no snapshot: store unavailable");
                return Vec::new();
            }
        };
        let mut frames = Vec::with_capacity(rooms.len());
        for room in rooms {
            let (Some(session), Ok(Some(record))) = (
                self.naming.session(room.as_str()),
                self.store.load_room(&room).await,
            ) else {
                continue;
            };
            let now = crate::domain::now_millis();
            let participants = Attendance::roster(&session, &record.state, Window::UNBOUNDED, now);
            let data = snapshot_json(room.as_str(), &participants, now);
            frames.push(frame::event(SNAPSHOT_EVENT, Some(channel), &data));
        }
        frames
    }
}

#[async_trait]
impl SubscribeHook for Snapshots {
    async fn after_subscribe(&self, channel: &ChannelName) -> Vec<Utf8Bytes> {
        self.frames(channel.as_str()).await
    }
}
