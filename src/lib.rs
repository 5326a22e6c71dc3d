pub mod livekit;
