//! The per-connection IO wrapper hyper reads and writes through. It owns
//! every deadline of a plain HTTP connection and every refusal hyper would
//! otherwise make on its own (bodyless, or silent):
//!
//! - While a request head is expected it reads into its own bounded buffer,
//!   frames the head (`head.rs`) and only then lets hyper read the head's
//!   bytes; an invalid or oversized head, or none within the header
//!   timeout, is answered here with the contract's JSON and the connection
//!   closed. A keep-alive connection idle past the idle timeout is closed
//!   silently (at a message boundary, so hyper sees a clean EOF).
//! - It lets hyper read exactly the body the head declares (a length, or
//!   chunks found by `chunked.rs`), within the body timeout from the head.
//! - It then waits, reading nothing, until hyper starts the response; a
//!   `101` to an upgrade request switches it to a plain pass-through for the
//!   WebSocket's lifetime: no HTTP timer touches an upgraded socket.
//! - Dropped with input possibly unread, it hands the socket to a lingering
//!   close (`linger.rs`) so our last answer is not destroyed by a reset.
//!
//! Invariant: every phase but `Responding` (the handler's time, bounded by
//! the handlers themselves) and `Upgraded` (the WebSocket's own keepalive)
//! has a deadline; a response the client stops reading has one too.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker, ready};
use std::time::Duration;

use axum::http::StatusCode;
use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

use super::budget::{HttpSlot, SocketSlot};
use super::chunked::ChunkScanner;
use super::head::{self, BodyFraming, Framing, HeadScan, MAX_HEAD_BYTES, Refusal};
use super::linger::{LINGER_TIME, spawn_linger};
use crate::http::error::AppError;
use crate::metrics::{Metrics, TimeoutPhase};

/// What every connection of a server shares.
pub struct ConnConfig {
    pub header_timeout: Duration,
    pub body_timeout: Duration,
    pub idle_timeout: Duration,
    pub metrics: Arc<Metrics>,
}

/// Bytes read from the socket per read while framing.
const READ_CHUNK: usize = 8 * 1024;
/// A buffer larger than this is freed once empty (a large head or body
/// must not stay resident on an idle keep-alive or WebSocket connection).
const RETAINED_BUFFER: usize = 4 * 1024;

enum Phase {
    /// Waiting for a request head.
    Head,
    /// Letting hyper read the body the head declared.
    Body {
        body: BodyState,
        upgrade: bool,
        deadline: Instant,
    },
    /// The request is hyper's; nothing is read until its response starts.
    Responding { upgrade: bool },
    /// After a 101: bytes pass through untouched, no timers.
    Upgraded,
    /// Writing our own answer, then closing.
    Refusing {
        response: Bytes,
        written: usize,
        deadline: Instant,
    },
    /// Reads see EOF, writes fail.
    Closed,
}

enum BodyState {
    Length(u64),
    Chunked(ChunkScanner),
}

/// The socket of one accepted connection, as hyper sees it.
pub struct GuardedIo {
    stream: Option<TcpStream>,
    config: Arc<ConnConfig>,
    /// Received and not yet read by hyper.
    buf: BytesMut,
    /// Leading bytes of `buf` hyper may read now.
    allowance: usize,
    phase: Phase,
    scan: HeadScan,
    /// The deadline of the current phase.
    timer: Option<Pin<Box<Sleep>>>,
    /// Armed while a write of hyper's makes no progress.
    stall: Option<Pin<Box<Sleep>>>,
    /// hyper's read task while it waits on a write of its own
    /// (`Responding`, or a refusal waiting for hyper's write to finish).
    read_waker: Option<Waker>,
    accepted_at: Instant,
    /// No request head has been handed to hyper yet.
    first_request: bool,
    /// When the current head's first byte arrived.
    first_byte_at: Option<Instant>,
    /// When the connection last became idle (entered `Head`) or wrote.
    last_activity: Instant,
    /// hyper began its response to the current request.
    response_started: bool,
    /// hyper wrote bytes it has not flushed yet: our own answer must wait.
    hyper_mid_write: bool,
    /// The client closed its side: nothing unread, no need to linger.
    eof: bool,
    /// Admitted only to be refused: the first complete head gets this.
    refusal: Option<AppError>,
    socket_slot: Option<SocketSlot>,
    http_slot: Option<HttpSlot>,
}

impl GuardedIo {
    /// `http_slot` is `None` for a connection over a cap: it is answered
    /// `refusal` (503) after its head.
    pub fn new(
        stream: TcpStream,
        config: Arc<ConnConfig>,
        socket_slot: SocketSlot,
        http_slot: Option<HttpSlot>,
        refusal: Option<AppError>,
    ) -> Self {
        let now = Instant::now();
        Self {
            stream: Some(stream),
            config,
            buf: BytesMut::new(),
            allowance: 0,
            phase: Phase::Head,
            scan: HeadScan::default(),
            timer: None,
            stall: None,
            read_waker: None,
            accepted_at: now,
            first_request: true,
            first_byte_at: None,
            last_activity: now,
            response_started: false,
            hyper_mid_write: false,
            eof: false,
            refusal,
            socket_slot: Some(socket_slot),
            http_slot,
        }
    }

    fn stream(&mut self) -> Pin<&mut TcpStream> {
        Pin::new(self.stream.as_mut().expect("the stream lives until drop"))
    }

    /// Polls the phase's timer, set to `deadline`; true once it passed.
    fn poll_deadline(&mut self, cx: &mut Context<'_>, deadline: Instant) -> bool {
        match &mut self.timer {
            Some(timer) if timer.deadline() == deadline => {}
            Some(timer) => timer.as_mut().reset(deadline),
            None => self.timer = Some(Box::pin(tokio::time::sleep_until(deadline))),
        }
        let timer = self.timer.as_mut().expect("just set");
        timer.as_mut().poll(cx).is_ready()
    }

    /// Reads up to `max` more bytes into `buf`; `Ok(0)` is EOF.
    fn poll_fill(&mut self, cx: &mut Context<'_>, max: usize) -> Poll<io::Result<usize>> {
        let mut scratch = [0u8; READ_CHUNK];
        let want = max.clamp(1, READ_CHUNK);
        let mut read = ReadBuf::new(&mut scratch[..want]);
        ready!(self.stream().poll_read(cx, &mut read))?;
        let n = read.filled().len();
        self.buf.extend_from_slice(read.filled());
        if n > 0 && self.first_byte_at.is_none() {
            self.first_byte_at = Some(Instant::now());
        }
        Poll::Ready(Ok(n))
    }

    fn enter_head(&mut self) {
        self.phase = Phase::Head;
        self.scan = HeadScan::default();
        let now = Instant::now();
        self.last_activity = now;
        // Pipelined bytes already here start the header clock now.
        self.first_byte_at = (self.buf.len() > self.allowance).then_some(now);
        self.wake_reader();
    }

    fn enter_upgraded(&mut self) {
        self.phase = Phase::Upgraded;
        // Client bytes that came with the upgrade request are the
        // WebSocket's.
        self.allowance = self.buf.len();
        if self.buf.is_empty() {
            self.buf = BytesMut::new();
        }
        self.timer = None;
        self.stall = None;
        // Counted as a WebSocket from now on, not as plain HTTP.
        self.http_slot = None;
        self.wake_reader();
    }

    fn wake_reader(&mut self) {
        if let Some(waker) = self.read_waker.take() {
            waker.wake();
        }
    }

    /// Answers `error` ourselves and closes (see `poll_refusal`).
    fn refuse(&mut self, error: AppError) {
        tracing::debug!(status = %error.status, code = error.code, "refusing HTTP request");
        self.phase = Phase::Refusing {
            response: raw_response(&error),
            written: 0,
            deadline: Instant::now() + LINGER_TIME,
        };
    }

    /// Writes our answer (after any half-written response of hyper's), then
    /// half-closes. Ready once `Closed`.
    fn poll_refusal(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let Phase::Refusing {
            response,
            written,
            deadline,
        } = &self.phase
        else {
            return Poll::Ready(());
        };
        let (response, mut written, deadline) = (response.clone(), *written, *deadline);
        if self.poll_deadline(cx, deadline) {
            self.phase = Phase::Closed;
            return Poll::Ready(());
        }
        if self.hyper_mid_write {
            self.read_waker = Some(cx.waker().clone());
            return Poll::Pending;
        }
        while written < response.len() {
            let step = self.stream().poll_write(cx, &response[written..]);
            match step {
                Poll::Ready(Ok(n)) if n > 0 => written += n,
                Poll::Ready(_) => {
                    self.phase = Phase::Closed;
                    return Poll::Ready(());
                }
                Poll::Pending => {
                    if let Phase::Refusing { written: w, .. } = &mut self.phase {
                        *w = written;
                    }
                    return Poll::Pending;
                }
            }
        }
        if let Phase::Refusing { written: w, .. } = &mut self.phase {
            *w = written;
        }
        ready!(self.stream().poll_shutdown(cx)).ok();
        self.phase = Phase::Closed;
        Poll::Ready(())
    }

    /// One step while a head is expected.
    fn step_head(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.scan.should_frame(&self.buf) {
            match head::frame_head(&self.buf) {
                Framing::Head(head) => {
                    if let Some(error) = self.refusal.take() {
                        self.refuse(error);
                        return Poll::Ready(Ok(()));
                    }
                    self.allowance = head.len;
                    self.first_request = false;
                    self.first_byte_at = None;
                    self.response_started = false;
                    self.phase = Phase::Body {
                        body: match head.body {
                            BodyFraming::Length(n) => BodyState::Length(n),
                            BodyFraming::Chunked => BodyState::Chunked(ChunkScanner::new()),
                        },
                        upgrade: head.upgrade,
                        deadline: Instant::now() + self.config.body_timeout,
                    };
                    return Poll::Ready(Ok(()));
                }
                Framing::Refuse(refusal) => {
                    self.refuse(refusal_error(refusal));
                    return Poll::Ready(Ok(()));
                }
                Framing::NeedMore => {}
            }
        }
        // Idle between requests, or waiting for the rest of a head.
        let (deadline, phase) = match self.first_byte_at {
            // Over a cap: the 503 waits for the head (a client reads an
            // answer to a request it sent) but not for long, as this
            // connection holds a descriptor beyond the caps.
            _ if self.refusal.is_some() => (
                self.accepted_at + self.config.header_timeout.min(LINGER_TIME),
                TimeoutPhase::Header,
            ),
            _ if self.first_request => (
                self.accepted_at + self.config.header_timeout,
                TimeoutPhase::Header,
            ),
            Some(first) => (first + self.config.header_timeout, TimeoutPhase::Header),
            None => (
                self.last_activity + self.config.idle_timeout,
                TimeoutPhase::Idle,
            ),
        };
        if self.poll_deadline(cx, deadline) {
            if let Some(error) = self.refusal.take() {
                self.refuse(error);
                return Poll::Ready(Ok(()));
            }
            self.config.metrics.http_timeout(phase);
            match phase {
                TimeoutPhase::Idle => self.phase = Phase::Closed,
                _ => self.refuse(AppError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    "request_timeout",
                    "the request head did not arrive in time",
                )),
            }
            return Poll::Ready(Ok(()));
        }
        let room = MAX_HEAD_BYTES + 1 - self.buf.len().min(MAX_HEAD_BYTES);
        if ready!(self.poll_fill(cx, room))? == 0 {
            // The client closed (perhaps mid-head): nothing to answer.
            self.eof = true;
            self.phase = Phase::Closed;
        }
        Poll::Ready(Ok(()))
    }

    /// One step while a body is expected.
    fn step_body(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let Phase::Body {
            body,
            upgrade,
            deadline,
        } = &mut self.phase
        else {
            return Poll::Ready(Ok(()));
        };
        let (upgrade, deadline) = (*upgrade, *deadline);
        let mut malformed = false;
        let finished = match body {
            BodyState::Length(left) => {
                let take = (*left).min(self.buf.len() as u64);
                *left -= take;
                self.allowance = take as usize;
                *left == 0
            }
            BodyState::Chunked(_) if self.buf.is_empty() => false,
            BodyState::Chunked(scanner) => match scanner.scan(&self.buf) {
                Ok(scan) => {
                    self.allowance = scan.consumed;
                    scan.done
                }
                Err(_) => {
                    malformed = true;
                    false
                }
            },
        };
        if malformed {
            self.end_body_early(AppError::bad_request(
                "malformed_request",
                "the chunked body is malformed",
            ));
            return Poll::Ready(Ok(()));
        }
        if finished {
            if self.response_started {
                self.enter_head();
            } else {
                self.phase = Phase::Responding { upgrade };
            }
        }
        if finished || self.allowance > 0 {
            return Poll::Ready(Ok(()));
        }
        if self.poll_deadline(cx, deadline) {
            self.config.metrics.http_timeout(TimeoutPhase::Body);
            self.end_body_early(AppError::new(
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                "the request body did not arrive in time",
            ));
            return Poll::Ready(Ok(()));
        }
        if ready!(self.poll_fill(cx, READ_CHUNK))? == 0 {
            // hyper reports the incomplete body to the handler.
            self.eof = true;
            self.phase = Phase::Closed;
        }
        Poll::Ready(Ok(()))
    }

    /// The body cannot complete: answer `error` if hyper has not started a
    /// response, else just close.
    fn end_body_early(&mut self, error: AppError) {
        if self.response_started {
            self.phase = Phase::Closed;
        } else {
            self.refuse(error);
        }
    }

    /// Looks at the first write of hyper's after a head: an interim `100
    /// Continue` changes nothing, a `101` to an upgrade request switches to
    /// pass-through, anything else starts the response. Writes that
    /// continue an unflushed one (the rest of a previous response) are not
    /// a response's first bytes and are not looked at.
    fn observe_response(&mut self, mut data: &[u8]) {
        let upgrade = match self.phase {
            Phase::Body { upgrade, .. } | Phase::Responding { upgrade } => upgrade,
            _ => return,
        };
        if self.response_started || self.hyper_mid_write {
            return;
        }
        // The interim answer may share a write with the final one.
        while data.starts_with(b"HTTP/1.1 100 ") {
            match data.windows(4).position(|w| w == b"\r\n\r\n") {
                Some(end) => data = &data[end + 4..],
                None => return,
            }
        }
        if data.is_empty() {
            return;
        }
        if upgrade && data.starts_with(b"HTTP/1.1 101 ") {
            self.enter_upgraded();
            return;
        }
        self.response_started = true;
        if matches!(self.phase, Phase::Responding { .. }) {
            self.enter_head();
        }
    }
}

/// The contract's error as raw HTTP/1.1 bytes, closing the connection.
fn raw_response(error: &AppError) -> Bytes {
    let body = serde_json::json!({"error": error.code, "message": error.message}).to_string();
    let retry = if error.status == StatusCode::SERVICE_UNAVAILABLE {
        "retry-after: 1\r\n"
    } else {
        ""
    };
    Bytes::from(format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{retry}connection: close\r\n\r\n{body}",
        error.status.as_u16(),
        error.status.canonical_reason().unwrap_or(""),
        body.len(),
    ))
}

/// The contract error a head refusal is answered with (400 or 431); public
/// so the `http_head` fuzz target can check every refusal maps to one.
pub fn refusal_error(refusal: Refusal) -> AppError {
    match refusal {
        Refusal::TooLarge => AppError::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "headers_too_large",
            format!(
                "the request head is larger than {MAX_HEAD_BYTES} bytes or has more than {} headers",
                head::MAX_HEADERS
            ),
        ),
        Refusal::Malformed(why) => AppError::bad_request("malformed_request", why),
    }
}

impl AsyncRead for GuardedIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.allowance > 0 && out.remaining() > 0 {
                let n = this.allowance.min(out.remaining());
                out.put_slice(&this.buf[..n]);
                this.buf.advance(n);
                this.allowance -= n;
                // An upgraded socket keeps no buffer at all (idle
                // WebSockets stay small); others only a small one.
                let upgraded = matches!(this.phase, Phase::Upgraded);
                if this.buf.is_empty() && (upgraded || this.buf.capacity() > RETAINED_BUFFER) {
                    this.buf = BytesMut::new();
                }
                return Poll::Ready(Ok(()));
            }
            match this.phase {
                Phase::Closed => return Poll::Ready(Ok(())),
                Phase::Upgraded => return this.stream().poll_read(cx, out),
                Phase::Responding { .. } => {
                    this.read_waker = Some(cx.waker().clone());
                    return Poll::Pending;
                }
                Phase::Refusing { .. } => ready!(this.poll_refusal(cx)),
                Phase::Head => ready!(this.step_head(cx))?,
                Phase::Body { .. } => ready!(this.step_body(cx))?,
            }
        }
    }
}

impl AsyncWrite for GuardedIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match this.phase {
            Phase::Upgraded => return this.stream().poll_write(cx, data),
            Phase::Closed | Phase::Refusing { .. } => {
                return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
            }
            _ => this.observe_response(data),
        }
        if matches!(this.phase, Phase::Upgraded) {
            return this.stream().poll_write(cx, data);
        }
        match this.stream().poll_write(cx, data) {
            Poll::Ready(Ok(n)) => {
                this.stall = None;
                this.hyper_mid_write = true;
                this.last_activity = Instant::now();
                Poll::Ready(Ok(n))
            }
            Poll::Pending => {
                // A client that stops reading our response: bounded by the
                // idle timeout.
                let idle = this.config.idle_timeout;
                let stall = this
                    .stall
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
                if stall.as_mut().poll(cx).is_ready() {
                    this.config.metrics.http_timeout(TimeoutPhase::Idle);
                    this.phase = Phase::Closed;
                    return Poll::Ready(Err(io::ErrorKind::TimedOut.into()));
                }
                Poll::Pending
            }
            other => other,
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.stream().poll_flush(cx))?;
        if this.hyper_mid_write {
            this.hyper_mid_write = false;
            // A refusal may be waiting for hyper's write to finish.
            if matches!(this.phase, Phase::Refusing { .. }) {
                this.wake_reader();
            }
        }
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().stream().poll_shutdown(cx)
    }
}

impl Drop for GuardedIo {
    fn drop(&mut self) {
        let (Some(stream), Some(slot)) = (self.stream.take(), self.socket_slot.take()) else {
            return;
        };
        if self.eof {
            return;
        }
        // Unread input may remain (a body we refused, a WebSocket closed
        // mid-frame): linger so our last bytes are not lost to a reset.
        spawn_linger(stream, slot);
    }
}
