//! The request-head framer: a pure function from the bytes received so far
//! to "need more", "a head of N bytes whose body is framed so", or "refuse
//! with this status". The connection wrapper (`io.rs`) only ever hands hyper
//! a head this accepted, so hyper's own parser never meets a head it would
//! answer with a bodyless 400/431: every such head is refused here, with the
//! contract's JSON. No I/O, no clock; the `http_head` fuzz target drives
//! [`frame_head`] and [`HeadScan`] through this public module.

use http::{HeaderName, HeaderValue, Method, Uri};

/// Largest request head accepted (request line + headers + blank line).
pub const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Most header lines accepted in one head (hyper's default too).
pub const MAX_HEADERS: usize = 100;

/// How the body after a head is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    /// Exactly this many bytes (0 when the head declares no body).
    Length(u64),
    /// `Transfer-Encoding: chunked`, delimited by [`super::chunked::ChunkScanner`].
    Chunked,
}

/// A complete, valid head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    /// Bytes of the head, including its blank line (and any empty lines
    /// before the request line, which httparse skips as hyper does).
    pub len: usize,
    pub body: BodyFraming,
    /// The request asks to switch protocols (an HTTP/1.1 `Upgrade`, or
    /// `CONNECT`): what follows its head is not HTTP unless the answer is
    /// not a 101.
    pub upgrade: bool,
}

/// Why a head is refused; each maps to one contract error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Larger than [`MAX_HEAD_BYTES`] or more than [`MAX_HEADERS`] headers:
    /// 431 `headers_too_large`.
    TooLarge,
    /// Anything hyper would reject or that makes the body's length
    /// ambiguous: 400 `malformed_request`.
    Malformed(&'static str),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No complete head yet, and nothing wrong so far.
    NeedMore,
    Head(Head),
    Refuse(Refusal),
}

/// Frames the head at the start of `buf`.
pub fn frame_head(buf: &[u8]) -> Framing {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD_BYTES => {
            return Framing::Refuse(Refusal::TooLarge);
        }
        Ok(httparse::Status::Partial) => return Framing::NeedMore,
        Err(httparse::Error::TooManyHeaders) => return Framing::Refuse(Refusal::TooLarge),
        Err(e) => return Framing::Refuse(Refusal::Malformed(e.reason())),
    };
    if len > MAX_HEAD_BYTES {
        return Framing::Refuse(Refusal::TooLarge);
    }
    match check(&req) {
        Ok((body, upgrade)) => Framing::Head(Head { len, body, upgrade }),
        Err(refusal) => Framing::Refuse(refusal),
    }
}

/// httparse's error as a static reason (its own text is private).
trait Reason {
    fn reason(&self) -> &'static str;
}

impl Reason for httparse::Error {
    fn reason(&self) -> &'static str {
        match self {
            httparse::Error::HeaderName => "invalid header name",
            httparse::Error::HeaderValue => "invalid header value",
            httparse::Error::NewLine => "invalid line ending",
            httparse::Error::Token => "invalid request line",
            httparse::Error::Version => "invalid HTTP version",
            _ => "malformed request head",
        }
    }
}

/// What hyper checks after httparse (method, URI, header names and values,
/// version, body framing), plus request smuggling's favourite: a head with
/// both `Content-Length` and `Transfer-Encoding` is refused, not guessed at
/// (RFC 9112 §6.1 allows either; refusing cannot be misread by a proxy).
fn check(req: &httparse::Request<'_, '_>) -> Result<(BodyFraming, bool), Refusal> {
    let malformed = Refusal::Malformed;
    let method = req.method.ok_or(malformed("no method"))?;
    let method = Method::from_bytes(method.as_bytes()).map_err(|_| malformed("invalid method"))?;
    let path = req.path.ok_or(malformed("no request target"))?;
    Uri::try_from(path).map_err(|_| malformed("invalid request target"))?;
    let http11 = match req.version {
        Some(1) => true,
        Some(0) => false,
        _ => return Err(malformed("unsupported HTTP version")),
    };
    let mut length: Option<u64> = None;
    let mut chunked: Option<bool> = None;
    let mut upgrade = method == Method::CONNECT;
    for header in req.headers.iter() {
        HeaderName::from_bytes(header.name.as_bytes())
            .map_err(|_| malformed("invalid header name"))?;
        HeaderValue::from_bytes(header.value).map_err(|_| malformed("invalid header value"))?;
        if header.name.eq_ignore_ascii_case("content-length") {
            let value = content_length(header.value).ok_or(malformed("invalid Content-Length"))?;
            if length.is_some_and(|l| l != value) {
                return Err(malformed("conflicting Content-Length headers"));
            }
            length = Some(value);
        } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
            if !http11 {
                return Err(malformed("Transfer-Encoding in an HTTP/1.0 request"));
            }
            // As hyper: the last line's last coding decides.
            chunked = Some(last_coding_is_chunked(header.value));
        } else if header.name.eq_ignore_ascii_case("upgrade") {
            upgrade = http11;
        }
    }
    let body = match (chunked, length) {
        (Some(_), Some(_)) => {
            return Err(malformed("both Content-Length and Transfer-Encoding"));
        }
        (Some(true), None) => BodyFraming::Chunked,
        (Some(false), None) => return Err(malformed("Transfer-Encoding is not chunked")),
        (None, length) => BodyFraming::Length(length.unwrap_or(0)),
    };
    Ok((body, upgrade))
}

/// A Content-Length value: digits, or a comma-separated list of equal ones
/// (RFC 9110 §8.6), never empty, never overflowing.
fn content_length(value: &[u8]) -> Option<u64> {
    let mut result = None;
    for part in value.split(|&b| b == b',') {
        let part = part.trim_ascii();
        if part.is_empty() || !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let n: u64 = std::str::from_utf8(part).ok()?.parse().ok()?;
        if result.is_some_and(|r| r != n) {
            return None;
        }
        result = Some(n);
    }
    result
}

fn last_coding_is_chunked(value: &[u8]) -> bool {
    value
        .rsplit(|&b| b == b',')
        .next()
        .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"))
}

/// Decides when the bytes received so far are worth handing to
/// [`frame_head`]: at the first bytes and when the request line is first
/// complete (so garbage, such as TLS sent to the plain port, is refused at
/// once), when a blank line (the end of a head) may have arrived, or past
/// the size limit. Re-parsing on every byte would make a client
/// sending one byte at a time cost quadratic CPU.
#[derive(Debug, Clone, Default)]
pub struct HeadScan {
    /// Bytes of the buffer already looked at.
    scanned: usize,
    /// A line end was seen (the request line is complete).
    line_seen: bool,
}

impl HeadScan {
    /// Whether `buf` (which extends what was seen before) should be framed.
    pub fn should_frame(&mut self, buf: &[u8]) -> bool {
        if buf.len() > MAX_HEAD_BYTES {
            return true;
        }
        // Back up over a terminator split between two reads.
        let first_bytes = self.scanned == 0 && !buf.is_empty();
        let from = self.scanned.saturating_sub(3).min(buf.len());
        let new = &buf[from..];
        self.scanned = buf.len();
        let blank_line =
            new.windows(2).any(|w| w == b"\n\n") || new.windows(3).any(|w| w == b"\n\r\n");
        let first_line = !self.line_seen && new.contains(&b'\n');
        self.line_seen |= first_line;
        first_bytes || blank_line || first_line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(text: &str) -> Framing {
        frame_head(text.as_bytes())
    }

    fn refused_as_malformed(text: &str) -> bool {
        matches!(head(text), Framing::Refuse(Refusal::Malformed(_)))
    }

    #[test]
    fn frames_a_complete_head_and_leaves_what_follows() {
        let text =
            "POST /webhooks/livekit HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhelloGET";
        assert_eq!(
            head(text),
            Framing::Head(Head {
                len: text.len() - 8,
                body: BodyFraming::Length(5),
                upgrade: false
            })
        );
    }

    #[test]
    fn needs_more_until_the_blank_line() {
        let text = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        for end in 0..text.len() {
            assert_eq!(head(&text[..end]), Framing::NeedMore, "at {end}");
        }
        assert!(matches!(head(text), Framing::Head(_)));
    }

    #[test]
    fn bodies_upgrades_and_chunks() {
        let get = head("GET / HTTP/1.1\r\n\r\n");
        assert!(matches!(
            get,
            Framing::Head(Head {
                body: BodyFraming::Length(0),
                upgrade: false,
                ..
            })
        ));
        let ws = head("GET /app/k HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n");
        assert!(matches!(ws, Framing::Head(Head { upgrade: true, .. })));
        let ws10 = head("GET /app/k HTTP/1.0\r\nUpgrade: websocket\r\n\r\n");
        assert!(matches!(ws10, Framing::Head(Head { upgrade: false, .. })));
        let chunked = head("POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n");
        assert!(matches!(
            chunked,
            Framing::Head(Head {
                body: BodyFraming::Chunked,
                ..
            })
        ));
        let same = head("POST / HTTP/1.1\r\nContent-Length: 3, 3\r\nContent-Length: 3\r\n\r\n");
        assert!(matches!(
            same,
            Framing::Head(Head {
                body: BodyFraming::Length(3),
                ..
            })
        ));
    }

    #[test]
    fn refuses_what_hyper_would_answer_without_a_body() {
        assert!(refused_as_malformed("GARBAGE\r\n\r\n"));
        // A TLS ClientHello sent to the plain-text port.
        assert!(matches!(
            frame_head(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"),
            Framing::Refuse(Refusal::Malformed(_))
        ));
        assert!(refused_as_malformed("GET / HTTP/2.0\r\n\r\n"));
        assert!(refused_as_malformed(
            "GET / HTTP/1.1\r\nBad Name: x\r\n\r\n"
        ));
        assert!(refused_as_malformed("GET / HTTP/1.1\r\nX: a\x01b\r\n\r\n"));
        assert!(refused_as_malformed(
            "POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"
        ));
        assert!(refused_as_malformed(
            "POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n"
        ));
        assert!(refused_as_malformed(
            "POST / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n"
        ));
        assert!(refused_as_malformed(
            "POST / HTTP/1.1\r\nContent-Length: \r\n\r\n"
        ));
        assert!(refused_as_malformed(
            "POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n"
        ));
        assert!(refused_as_malformed(
            "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"
        ));
        assert!(refused_as_malformed(
            "POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
        ));
    }

    #[test]
    fn frames_only_at_line_ends_and_blank_lines() {
        let text = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        let mut scan = HeadScan::default();
        let decisions: Vec<usize> = (1..=text.len())
            .filter(|&end| scan.should_frame(&text[..end]))
            .collect();
        // The first byte, the request line's end, then the blank line's.
        assert_eq!(decisions, vec![1, 16, text.len()]);
        let mut scan = HeadScan::default();
        assert!(scan.should_frame(text), "a whole head at once");
        let mut scan = HeadScan::default();
        assert!(scan.should_frame(&vec![b'a'; MAX_HEAD_BYTES + 1]));
    }

    #[test]
    fn refuses_large_heads_as_too_large() {
        let big = format!(
            "GET / HTTP/1.1\r\nX: {}\r\n\r\n",
            "a".repeat(MAX_HEAD_BYTES)
        );
        assert_eq!(head(&big), Framing::Refuse(Refusal::TooLarge));
        // Still incomplete, but already past the limit.
        assert_eq!(
            head(&big[..MAX_HEAD_BYTES + 10]),
            Framing::Refuse(Refusal::TooLarge)
        );
        let many: String = (0..=MAX_HEADERS).map(|i| format!("X-{i}: v\r\n")).collect();
        assert_eq!(
            head(&format!("GET / HTTP/1.1\r\n{many}\r\n")),
            Framing::Refuse(Refusal::TooLarge)
        );
        let just: String = (0..MAX_HEADERS).map(|i| format!("X-{i}: v\r\n")).collect();
        assert!(matches!(
            head(&format!("GET / HTTP/1.1\r\n{just}\r\n")),
            Framing::Head(_)
        ));
    }
}
