//! The request-head framer (`server/head.rs`): every byte a client sends
//! before hyper sees it goes through `frame_head`, fed by `HeadScan` as the
//! connection wrapper (`server/io.rs`) does.
//!
//! Asserts: a head's length is within the input and at most
//! `MAX_HEAD_BYTES`; the bytes up to it frame to the same head, one byte
//! fewer needs more, and bytes after it change nothing; `httparse` as hyper
//! configures it (`ParserConfig::default()`) accepts the same head with the
//! same length and one header per header line, at most `MAX_HEADERS`;
//! method, target, names and values build an `http::Request`; the body
//! framing is what the `Content-Length` / `Transfer-Encoding` lines say;
//! feeding the bytes in pieces (split points derived from the input) and
//! framing only when `HeadScan::should_frame` says so reaches the same
//! verdict as framing them whole, never misses a head, and delays a
//! refusal no further than the size limit; every refusal is answered with
//! 400 or 431.
//!
//! Input: mode byte, then the bytes. Odd mode: every 0x7f byte becomes 128
//! `a`s, so heads past the 16 KiB limit are reachable under `-max_len`.
#![no_main]

use http::StatusCode;
use libfuzzer_sys::fuzz_target;
use rollcall::server::head::{
    BodyFraming, Framing, Head, HeadScan, MAX_HEAD_BYTES, MAX_HEADERS, Refusal, frame_head,
};
use rollcall::server::io::refusal_error;
use rollcall_fuzz::cuts;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let expanded;
    let buf: &[u8] = if mode & 1 == 1 {
        expanded = rest
            .iter()
            .flat_map(|&b| if b == 0x7f { vec![b'a'; 128] } else { vec![b] })
            .collect::<Vec<u8>>();
        &expanded
    } else {
        rest
    };

    let whole = frame_head(buf);
    match whole {
        Framing::Head(head) => check_head(buf, head),
        Framing::Refuse(refusal) => check_refusal(refusal),
        Framing::NeedMore => assert!(buf.len() <= MAX_HEAD_BYTES, "needs more past the limit"),
    }

    // In pieces, as the connection wrapper reads them.
    let mut scan = HeadScan::default();
    let mut incremental = Framing::NeedMore;
    let mut ends: Vec<usize> = cuts(buf.len(), data);
    ends.push(buf.len());
    let mut prev_end = 0;
    for end in ends {
        if end == prev_end {
            continue;
        }
        prev_end = end;
        let prefix = &buf[..end];
        if !scan.should_frame(prefix) {
            continue;
        }
        incremental = frame_head(prefix);
        match incremental {
            Framing::NeedMore => {}
            Framing::Head(h) => {
                // The head ends within the piece just read: framed at once.
                assert_eq!(whole, Framing::Head(h), "prefix of {end} bytes");
                break;
            }
            Framing::Refuse(r) => {
                check_refusal(r);
                assert!(
                    matches!(whole, Framing::Refuse(_)),
                    "prefix of {end} bytes refused ({r:?}), whole {whole:?}"
                );
                break;
            }
        }
    }
    match whole {
        // Nothing missed: a head of the whole is seen in pieces.
        Framing::Head(_) => assert_eq!(incremental, whole, "head missed in pieces"),
        // A refusal may wait for a line end, a blank line or the limit
        // (garbage without them costs nothing), never past the limit.
        Framing::Refuse(_) if buf.len() > MAX_HEAD_BYTES => {
            assert!(
                matches!(incremental, Framing::Refuse(_)),
                "refusal missed past the limit"
            )
        }
        Framing::Refuse(_) => assert!(!matches!(incremental, Framing::Head(_))),
        Framing::NeedMore => assert_eq!(incremental, Framing::NeedMore),
    }
});

fn check_refusal(refusal: Refusal) {
    let error = refusal_error(refusal);
    match refusal {
        Refusal::TooLarge => assert_eq!(error.status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE),
        Refusal::Malformed(why) => {
            assert_eq!(error.status, StatusCode::BAD_REQUEST);
            assert!(!why.is_empty());
        }
    }
}

fn check_head(buf: &[u8], head: Head) {
    assert!(head.len > 0 && head.len <= buf.len(), "{head:?}");
    assert!(head.len <= MAX_HEAD_BYTES, "{head:?}");
    let bytes = &buf[..head.len];
    assert!(bytes.ends_with(b"\n"));
    // A prefix that is the complete head gives the same head; one byte
    // fewer is not complete yet; what follows changes nothing.
    assert_eq!(frame_head(bytes), Framing::Head(head));
    assert_eq!(frame_head(&bytes[..head.len - 1]), Framing::NeedMore);
    let mut more = bytes.to_vec();
    more.extend_from_slice(b"\r\n\r\nGARBAGE\x00");
    assert_eq!(frame_head(&more), Framing::Head(head));

    // httparse as hyper configures it, with room for more headers than
    // allowed, agrees.
    let mut headers = [httparse::EMPTY_HEADER; 2 * MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let status = httparse::ParserConfig::default()
        .parse_request(&mut req, buf)
        .expect("httparse refuses an accepted head");
    assert_eq!(status, httparse::Status::Complete(head.len));
    let count = req.headers.len();
    assert!(count <= MAX_HEADERS);
    // One header per line: lines minus leading empty ones, the request
    // line and the blank line.
    let newlines = bytes.iter().filter(|&&b| b == b'\n').count();
    let leading = bytes
        .split(|&b| b == b'\n')
        .take_while(|line| line.is_empty() || *line == b"\r")
        .count();
    assert_eq!(count, newlines - leading - 2, "headers lost or merged");

    // What hyper builds from it.
    let method = req.method.expect("a method");
    let mut builder = http::Request::builder()
        .method(method)
        .uri(req.path.expect("a target"));
    for h in req.headers.iter() {
        builder = builder.header(h.name, h.value);
    }
    builder.body(()).expect("hyper would refuse this head");
    let http11 = match req.version {
        Some(1) => true,
        Some(0) => false,
        v => panic!("version {v:?} accepted"),
    };

    // Body framing as the lines say.
    let named = |name: &str| -> Vec<&[u8]> {
        req.headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
            .collect()
    };
    let lengths = named("content-length");
    let codings = named("transfer-encoding");
    match head.body {
        BodyFraming::Chunked => {
            assert!(http11 && lengths.is_empty());
            let last = codings.last().expect("chunked without Transfer-Encoding");
            let coding = last.rsplit(|&b| b == b',').next().unwrap_or_default();
            assert!(coding.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        }
        BodyFraming::Length(n) => {
            assert!(codings.is_empty());
            if lengths.is_empty() {
                assert_eq!(n, 0);
            }
            for value in lengths {
                for part in value.split(|&b| b == b',') {
                    let part = std::str::from_utf8(part.trim_ascii()).expect("digits");
                    assert!(part.bytes().all(|b| b.is_ascii_digit()), "{part:?}");
                    assert_eq!(part.parse::<u64>().ok(), Some(n));
                }
            }
        }
    }
    if head.upgrade {
        assert!(method == "CONNECT" || (http11 && !named("upgrade").is_empty()));
    }
}
