//! Subscribers: WebSocket clients from round-robin loopback source
//! addresses, speaking Pusher v7 or Engine.IO v4 / Socket.IO v5 over a raw
//! WebSocket, that time every marked frame they receive.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::Semaphore;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

use crate::servers::Target;
use crate::track::Tracker;

pub type Ws = WebSocketStream<TcpStream>;

/// Guard for each handshake step; a server slower than this counts as a
/// failed connection.
const STEP: Duration = Duration::from_secs(30);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    Pusher,
    SocketIo,
}

impl From<Target> for Proto {
    fn from(t: Target) -> Self {
        match t {
            Target::Socketio => Proto::SocketIo,
            _ => Proto::Pusher,
        }
    }
}

/// Small buffers: 100k clients with tungstenite's default 128 KiB read
/// buffer each would need 13 GB.
pub fn ws_config() -> tokio_tungstenite::tungstenite::protocol::WebSocketConfig {
    tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0)
}

/// Opens a WebSocket to `url` from 127.0.0.`src`.
pub async fn open(url: &str, src: u8) -> anyhow::Result<Ws> {
    open_with(url, src, None).await
}

/// [`open`], optionally with a small kernel receive buffer (`rcvbuf`
/// bytes) so that a client which stops reading pushes back on the server
/// sooner (the soak's stalled readers).
pub async fn open_with(url: &str, src: u8, rcvbuf: Option<u32>) -> anyhow::Result<Ws> {
    let hostport = url
        .split("//")
        .nth(1)
        .and_then(|r| r.split('/').next())
        .context("ws url")?;
    let dest: SocketAddr = hostport.parse().context("ws url must be ip:port")?;
    anyhow::ensure!(dest.ip().is_loopback(), "loopback only");
    let socket = TcpSocket::new_v4()?;
    if let Some(bytes) = rcvbuf {
        socket.set_recv_buffer_size(bytes)?;
    }
    socket.bind(SocketAddr::V4(SocketAddrV4::new(
        Ipv4Addr::new(127, 0, 0, src),
        0,
    )))?;
    let stream = socket.connect(dest).await?;
    stream.set_nodelay(true)?;
    let (ws, _) =
        tokio_tungstenite::client_async_with_config(url, stream, Some(ws_config())).await?;
    Ok(ws)
}

async fn next_text(ws: &mut Ws) -> anyhow::Result<String> {
    loop {
        let msg = tokio::time::timeout(STEP, ws.next())
            .await
            .context("handshake step timed out")?
            .context("closed during handshake")??;
        match msg {
            Message::Text(t) => return Ok(t.as_str().to_string()),
            Message::Close(c) => bail!("closed during handshake: {c:?}"),
            _ => {}
        }
    }
}

/// Connects and subscribes to `channel`; returns once the server confirmed.
pub async fn subscribe(url: &str, src: u8, proto: Proto, channel: &str) -> anyhow::Result<Ws> {
    let mut ws = open(url, src).await?;
    handshake(&mut ws, proto, channel).await?;
    Ok(ws)
}

/// On an open WebSocket: waits for the server's hello, subscribes to
/// `channel` and returns once the server confirmed.
pub async fn handshake(ws: &mut Ws, proto: Proto, channel: &str) -> anyhow::Result<()> {
    match proto {
        Proto::Pusher => {
            let hello = next_text(ws).await?;
            anyhow::ensure!(
                hello.contains("pusher:connection_established"),
                "unexpected first frame {hello}"
            );
            let sub = serde_json::json!({"event":"pusher:subscribe","data":{"channel":channel}});
            ws.send(Message::text(sub.to_string())).await?;
            loop {
                let f = next_text(ws).await?;
                if f.contains("pusher_internal:subscription_succeeded") {
                    break;
                }
                if f.contains("pusher:error") {
                    bail!("subscribe refused: {f}");
                }
            }
        }
        Proto::SocketIo => {
            // Engine.IO open packet `0{"sid":..,"pingInterval":..}`.
            let open = next_text(ws).await?;
            anyhow::ensure!(open.starts_with('0'), "unexpected EIO open {open}");
            ws.send(Message::text("40")).await?; // Socket.IO CONNECT to "/"
            loop {
                let f = next_text(ws).await?;
                if f.starts_with("40") {
                    break;
                }
                if f.starts_with("44") {
                    bail!("connect refused: {f}");
                }
            }
            // EVENT with ack id 1: 42<id>[...]; the ack comes back as 43<id>[...].
            let ev = format!("421{}", serde_json::json!(["subscribe", channel]));
            ws.send(Message::text(ev)).await?;
            loop {
                let f = next_text(ws).await?;
                if f.starts_with("431") {
                    break;
                }
                if f == "2" {
                    ws.send(Message::text("3")).await?;
                }
            }
        }
    }
    Ok(())
}

/// Reads frames until the socket closes or the task is aborted, answering
/// pings and reporting marked frames to `tracker`. (No stop signal in the
/// loop: a future on one channel shared by every client, re-registered on
/// each frame, costs a lock per frame; [`Crowd::close`] aborts instead.)
pub async fn listen(mut ws: Ws, who: usize, proto: Proto, tracker: Arc<Tracker>) {
    while let Some(Ok(msg)) = ws.next().await {
        let t = match msg {
            Message::Text(t) => t,
            Message::Close(frame) => {
                if frame.is_some_and(|f| u16::from(f.code) == 4100) {
                    tracker.closed_4100.fetch_add(1, Ordering::Relaxed);
                }
                continue;
            }
            _ => continue,
        };
        let text = t.as_str();
        tracker
            .bytes
            .fetch_add(text.len() as u64, Ordering::Relaxed);
        // The event name comes first in both protocols' frames, so this
        // scan stops early; snapshots (which may carry markers) don't count.
        if text.contains("attendance.updated") {
            tracker.on_text(who, text);
            continue;
        }
        match proto {
            Proto::Pusher if text.contains("\"pusher:ping\"") => {
                let _ = ws
                    .send(Message::text(r#"{"event":"pusher:pong","data":{}}"#))
                    .await;
            }
            Proto::SocketIo if text == "2" => {
                let _ = ws.send(Message::text("3")).await;
            }
            _ => {}
        }
    }
    // Only reached when the socket ended under us: `Crowd::close` aborts
    // the task at the `.await` above instead.
    tracker.ended.fetch_add(1, Ordering::Relaxed);
}

/// A crowd of subscribers, each listening in its own task.
pub struct Crowd {
    pub connected: u64,
    pub failed: u64,
    pub first_error: Option<String>,
    pub connect_secs: f64,
    tasks: tokio::task::JoinSet<()>,
}

/// Subscribes `n` clients; client `i` joins `channel_of(i)` from source
/// address 127.0.0.(1 + i % sources). At most `parallel` handshakes at once.
pub async fn crowd(
    url: &str,
    proto: Proto,
    n: usize,
    sources: u8,
    parallel: usize,
    channel_of: impl Fn(usize) -> String,
    tracker: Arc<Tracker>,
) -> Crowd {
    let gate = Arc::new(Semaphore::new(parallel.max(1)));
    let ok = Arc::new(AtomicU64::new(0));
    let bad = Arc::new(AtomicU64::new(0));
    let first_error = Arc::new(std::sync::Mutex::new(None::<String>));
    let started = std::time::Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<()>(n.max(1));
    for i in 0..n {
        let permit = gate.clone().acquire_owned().await.expect("open semaphore");
        let url = url.to_string();
        let channel = channel_of(i);
        let src = 1 + (i % sources.max(1) as usize) as u8;
        let (tracker, ok, bad, first_error, ready_tx) = (
            tracker.clone(),
            ok.clone(),
            bad.clone(),
            first_error.clone(),
            ready_tx.clone(),
        );
        tasks.spawn(async move {
            let ws = subscribe(&url, src, proto, &channel).await;
            drop(permit);
            match ws {
                Ok(ws) => {
                    ok.fetch_add(1, Ordering::Relaxed);
                    let _ = ready_tx.send(()).await;
                    listen(ws, i, proto, tracker).await;
                }
                Err(e) => {
                    bad.fetch_add(1, Ordering::Relaxed);
                    first_error.lock().unwrap().get_or_insert(format!("{e:#}"));
                    let _ = ready_tx.send(()).await;
                }
            }
        });
    }
    drop(ready_tx);
    for _ in 0..n {
        if ready_rx.recv().await.is_none() {
            break;
        }
    }
    let first_error = first_error.lock().unwrap().clone();
    Crowd {
        connected: ok.load(Ordering::Relaxed),
        failed: bad.load(Ordering::Relaxed),
        first_error,
        connect_secs: started.elapsed().as_secs_f64(),
        tasks,
    }
}

impl Crowd {
    /// Closes every client: aborting a task drops its socket (the server
    /// sees the connection end), then waits (bounded) for them all.
    pub async fn close(mut self) {
        self.tasks.abort_all();
        let _ = tokio::time::timeout(Duration::from_secs(20), async {
            while self.tasks.join_next().await.is_some() {}
        })
        .await;
    }

    pub fn summary(&self) -> String {
        let mut s = format!(
            "{} subscribed in {:.1} s, {} failed",
            self.connected, self.connect_secs, self.failed
        );
        if let Some(e) = &self.first_error {
            s.push_str(&format!(" (first: {e})"));
        }
        s
    }
}
