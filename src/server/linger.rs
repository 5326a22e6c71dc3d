//! Lingering close, as nginx's `lingering_close`: closing a socket whose
//! receive queue still holds client bytes makes the kernel send a reset,
//! which can destroy the answer we just wrote (a 413, a 408, a WebSocket's
//! close frame) before the client reads it. So a socket that may have unread
//! input is half-closed (FIN after our answer) and its input read and thrown
//! away until the client closes too, for a bounded time and byte count.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::budget::SocketSlot;

/// Longest a closed connection lingers.
pub const LINGER_TIME: Duration = Duration::from_secs(2);
/// Most input bytes read and discarded while lingering. Enough for a client
/// to finish a body or WebSocket frame of a few MiB that it writes whole
/// before reading (measured: at 1 MiB, a 2 MiB body's 413 and a 4 MiB
/// frame's 4100 close were lost to resets while the client still wrote).
/// Reading 8 MiB costs about a millisecond; time bounds it anyway.
pub const LINGER_BYTES: usize = 8 * 1024 * 1024;

/// Half-closes `stream` and discards its input until EOF, an error,
/// [`LINGER_TIME`] or [`LINGER_BYTES`]; the socket stays counted (`slot`)
/// until then.
pub async fn linger(mut stream: TcpStream, slot: SocketSlot) {
    let _ = tokio::time::timeout(LINGER_TIME, async {
        let _ = stream.shutdown().await;
        let mut scratch = [0u8; 8 * 1024];
        let mut discarded = 0;
        while discarded < LINGER_BYTES {
            match stream.read(&mut scratch).await {
                Ok(0) | Err(_) => break,
                Ok(n) => discarded += n,
            }
        }
    })
    .await;
    drop(stream);
    drop(slot);
}

/// Spawns [`linger`] on the current runtime; without one the socket is
/// simply closed.
pub fn spawn_linger(stream: TcpStream, slot: SocketSlot) {
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn(linger(stream, slot));
    }
}
