//! `rollcall-bench bare-server`: the least a tokio-tungstenite server can do
//! for the same job — our stack's limit, with no engine and no store.
//!
//! Speaks just enough Pusher v7: `connection_established`, `pusher:subscribe`
//! → `subscription_succeeded`, `pusher:ping` → `pusher:pong`. On the same
//! port, `POST /publish {"room","event","data"}` serializes the frame once
//! and hands the same bytes to every subscriber's bounded queue (a full
//! queue drops the frame, like rollcall's slow-consumer policy).
//! `GET /healthz` answers 200. The first bytes of a connection decide
//! whether it is HTTP (POST/healthz) or a WebSocket upgrade.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

const QUEUE: usize = 512;

type Subscribers = Vec<(u64, mpsc::Sender<Message>)>;

#[derive(Default)]
struct Hub {
    channels: RwLock<HashMap<String, Subscribers>>,
    next_id: AtomicU64,
}

impl Hub {
    fn publish(&self, channel: &str, frame: Utf8Bytes) -> usize {
        let map = self.channels.read().unwrap();
        let Some(subs) = map.get(channel) else {
            return 0;
        };
        let msg = Message::Text(frame);
        subs.iter()
            .filter(|(_, tx)| tx.try_send(msg.clone()).is_ok())
            .count()
    }

    fn join(&self, channel: &str, id: u64, tx: mpsc::Sender<Message>) {
        let mut map = self.channels.write().unwrap();
        let subs = map.entry(channel.to_string()).or_default();
        if !subs.iter().any(|(i, _)| *i == id) {
            subs.push((id, tx));
        }
    }

    fn leave_all(&self, id: u64, channels: &[String]) {
        let mut map = self.channels.write().unwrap();
        for c in channels {
            if let Some(subs) = map.get_mut(c) {
                subs.retain(|(i, _)| *i != id);
                if subs.is_empty() {
                    map.remove(c);
                }
            }
        }
    }
}

pub async fn run(listen: SocketAddr) -> anyhow::Result<()> {
    anyhow::ensure!(
        listen.ip().is_loopback(),
        "the bare server listens on loopback only"
    );
    crate::sys::raise_fd_limit();
    let listener = TcpListener::bind(listen).await?;
    let hub = Arc::new(Hub::default());
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        tokio::select! {
            _ = term.recv() => return Ok(()),
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let _ = stream.set_nodelay(true);
                let hub = hub.clone();
                tokio::spawn(async move {
                    let mut first = [0u8; 4];
                    let is_ws = match stream.peek(&mut first).await {
                        Ok(n) => n >= 3 && &first[..3] == b"GET" && !is_health(&stream).await,
                        Err(_) => return,
                    };
                    if is_ws {
                        socket(stream, hub).await;
                    } else {
                        let _ = http(stream, hub).await;
                    }
                });
            }
        }
    }
}

async fn is_health(stream: &TcpStream) -> bool {
    let mut buf = [0u8; 12];
    matches!(stream.peek(&mut buf).await, Ok(n) if n >= 12 && &buf[..12] == b"GET /healthz")
}

/// Keep-alive HTTP/1.1, just `POST /publish` and `GET /healthz`.
async fn http(stream: TcpStream, hub: Arc<Hub>) -> anyhow::Result<()> {
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    let mut line = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let request_line = line.trim_end().to_string();
        let mut length = 0usize;
        loop {
            line.clear();
            if r.read_line(&mut line).await? == 0 {
                return Ok(());
            }
            let h = line.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                length = v.trim().parse()?;
            }
        }
        anyhow::ensure!(length <= 1 << 20, "body too large");
        let mut body = vec![0u8; length];
        r.read_exact(&mut body).await?;
        let (status, reply) = if request_line.starts_with("POST /publish ") {
            match publish(&hub, &body) {
                Some(n) => ("200 OK", format!("{{\"delivered\":{n}}}")),
                None => ("400 Bad Request", "{\"error\":\"bad_json\"}".to_string()),
            }
        } else if request_line.starts_with("GET /healthz ") {
            ("200 OK", "{\"status\":\"ok\"}".to_string())
        } else {
            ("404 Not Found", "{}".to_string())
        };
        let head = format!(
            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            reply.len()
        );
        w.write_all(format!("{head}{reply}").as_bytes()).await?;
    }
}

fn publish(hub: &Hub, body: &[u8]) -> Option<usize> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let room = v["room"].as_str()?;
    let event = v["event"].as_str()?;
    let data = v["data"].as_str()?;
    // Serialized once; every subscriber gets the same bytes.
    let frame = serde_json::json!({"event": event, "channel": room, "data": data}).to_string();
    Some(hub.publish(room, Utf8Bytes::from(frame)))
}

async fn socket(stream: TcpStream, hub: Arc<Hub>) {
    let Ok(ws) =
        tokio_tungstenite::accept_async_with_config(stream, Some(crate::client::ws_config())).await
    else {
        return;
    };
    let id = hub.next_id.fetch_add(1, Ordering::Relaxed);
    let (mut sink, mut stream) = ws.split();
    let (tx, mut rx) = mpsc::channel::<Message>(QUEUE);
    let hello = serde_json::json!({
        "event": "pusher:connection_established",
        "data": format!("{{\"socket_id\":\"{}.{}\",\"activity_timeout\":120}}", id / 1_000_000 + 1, id % 1_000_000),
    })
    .to_string();
    if tx.try_send(Message::text(hello)).is_err() {
        return;
    }
    // One task owns the sink.
    let writer = tokio::spawn(async move {
        while let Some(m) = rx.recv().await {
            if sink.send(m).await.is_err() {
                break;
            }
        }
        let _ = sink.close().await;
    });
    let mut channels = Vec::new();
    while let Some(Ok(msg)) = stream.next().await {
        let Message::Text(t) = msg else {
            if let Message::Close(_) = msg {
                break;
            }
            continue;
        };
        let Ok(v) = serde_json::from_str::<serde_json::Value>(t.as_str()) else {
            continue;
        };
        match v["event"].as_str() {
            Some("pusher:subscribe") => {
                let Some(ch) = v["data"]["channel"].as_str() else {
                    continue;
                };
                // Confirm first, then join: nothing published after the
                // confirmation can be missed or arrive before it.
                let ok = serde_json::json!({
                    "event": "pusher_internal:subscription_succeeded", "channel": ch, "data": "{}",
                });
                let _ = tx.send(Message::text(ok.to_string())).await;
                hub.join(ch, id, tx.clone());
                channels.push(ch.to_string());
            }
            Some("pusher:ping") => {
                let _ = tx
                    .send(Message::text(r#"{"event":"pusher:pong","data":"{}"}"#))
                    .await;
            }
            _ => {}
        }
    }
    hub.leave_all(id, &channels);
    drop(tx);
    let _ = writer.await;
}
