//! The Pusher Channels protocol v7 boundary: what lets unmodified pusher-js
//! and Laravel Echo clients watch attendance live.
//!
//! - [`channel`]: `ChannelName`, `SocketId` (parsed once, then trusted);
//! - [`auth`]: channel-auth and HTTP API signatures (pure);
//! - [`frame`]: server frames serialized once, client frames parsed;
//! - [`hub`]: channel → local sockets, fan-out with a slow-consumer policy;
//! - [`presence`]: presence channels' wire formats (`channel_data`, members);
//! - `socket`: the task that owns one WebSocket;
//! - [`service`]: config, shared state and the `GET /app/{app_key}` route;
//! - [`client`]: a small watching client (the `rollcall watch` tool, tests).

pub mod auth;
pub mod channel;
pub mod client;
pub mod frame;
pub mod hub;
pub mod presence;
pub mod service;
mod socket;

#[cfg(test)]
mod tests;

pub use channel::{ChannelKind, ChannelName, SocketId};
pub use hub::{Halt, Hub, Outbox, Push, SocketHandle};
pub use service::{NoHook, PusherConfig, PusherState, SubscribeHook, routes};
