//! `attendance.snapshot`: what a socket is sent right after it subscribes
//! to a room's channel, so a page that loads or reconnects is current
//! without an HTTP call.

use async_trait::async_trait;
use axum::extract::ws::Utf8Bytes;

use crate::engine::view::{SNAPSHOT_EVENT, snapshot_json};
use crate::pusher::channel::ChannelName;
use crate::pusher::{SubscribeHook, frame};
use crate::rooms::Rooms;

pub struct Snapshots {
    pub rooms: Rooms,
}

impl Snapshots {
    /// One snapshot frame per room whose updates go to `channel`. A store
    /// failure yields no frames (logged): the subscription still works and
    /// updates still arrive.
    pub async fn frames(&self, channel: &str) -> Vec<Utf8Bytes> {
        let rooms = match self.rooms.store.rooms_of_channel(channel).await {
            Ok(rooms) => rooms,
            Err(e) => {
                tracing::warn!(channel, error = %e, "no snapshot: store unavailable");
                return Vec::new();
            }
        };
        let mut frames = Vec::with_capacity(rooms.len());
        for room in rooms {
            let (Some(session), Ok(Some(state))) = (
                self.rooms.session(room.as_str()),
                self.rooms.load(&room).await,
            ) else {
                continue;
            };
            let now = crate::domain::now_millis();
            let participants = self.rooms.view(&session, &state).roster(now);
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
