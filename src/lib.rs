//! rollcall: realtime attendance for LiveKit meetings over the Pusher
//! protocol. See ARCHITECTURE.md for the map.

pub mod domain;
pub mod engine;
