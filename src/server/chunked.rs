//! Finds the end of a chunked request body without decoding it: the
//! connection wrapper passes the body's bytes to hyper unchanged (hyper
//! decodes them) and must know where the body stops, so that the next
//! request's head goes through the head framer and never straight to hyper.
//! Pure: bytes in, "this many were body, and it is (not yet) over" out.

/// Longest chunk-size line (size and extensions) accepted.
const MAX_LINE_BYTES: usize = 4 * 1024;
/// Most trailer bytes accepted after the last chunk.
const MAX_TRAILER_BYTES: usize = super::head::MAX_HEAD_BYTES;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading the hex size; `digits` so far.
    Size {
        digits: u8,
        value: u64,
    },
    /// After the size: extensions up to the CR.
    Extension {
        value: u64,
    },
    SizeLf {
        value: u64,
    },
    Data(u64),
    DataCr,
    DataLf,
    /// At the start of a trailer line (or of the final CRLF).
    TrailerStart,
    Trailer,
    TrailerLf,
    EndLf,
    Done,
}

/// Progress through one chunked body.
#[derive(Debug, Clone)]
pub struct ChunkScanner {
    state: State,
    /// Bytes of the current size line, or of all trailers so far.
    meta: usize,
}

/// What [`ChunkScanner::scan`] found in the bytes it was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scan {
    /// Leading bytes of the input that belong to the body.
    pub consumed: usize,
    /// The body ended within them (nothing after `consumed` is body).
    pub done: bool,
}

impl Default for ChunkScanner {
    fn default() -> Self {
        Self::new()
    }
}

const BAD: &str = "malformed chunked body";

impl ChunkScanner {
    pub fn new() -> Self {
        Self {
            state: State::Size {
                digits: 0,
                value: 0,
            },
            meta: 0,
        }
    }

    /// Advances over `input`, the bytes that follow those already scanned.
    pub fn scan(&mut self, input: &[u8]) -> Result<Scan, &'static str> {
        let mut i = 0;
        while i < input.len() && self.state != State::Done {
            if let State::Data(n) = self.state {
                let take = n.min((input.len() - i) as u64);
                i += take as usize;
                self.state = match n - take {
                    0 => State::DataCr,
                    left => State::Data(left),
                };
                continue;
            }
            self.state = self.step(input[i])?;
            i += 1;
        }
        Ok(Scan {
            consumed: i,
            done: self.state == State::Done,
        })
    }

    fn step(&mut self, b: u8) -> Result<State, &'static str> {
        self.meta += 1;
        let line_limit = match self.state {
            State::TrailerStart | State::Trailer | State::TrailerLf | State::EndLf => {
                MAX_TRAILER_BYTES
            }
            _ => MAX_LINE_BYTES,
        };
        if self.meta > line_limit {
            return Err("chunk metadata too long");
        }
        Ok(match (self.state, b) {
            (State::Size { digits, value }, _) if b.is_ascii_hexdigit() => {
                if digits >= 15 {
                    return Err("chunk size too large");
                }
                let d = (b as char).to_digit(16).expect("a hex digit") as u64;
                State::Size {
                    digits: digits + 1,
                    value: value * 16 + d,
                }
            }
            (State::Size { digits: 0, .. }, _) => return Err(BAD),
            (State::Size { value, .. }, b'\r') => State::SizeLf { value },
            (State::Size { value, .. }, b';' | b' ' | b'\t') => State::Extension { value },
            (State::Extension { value }, b'\r') => State::SizeLf { value },
            (State::Extension { .. }, b'\n') => return Err(BAD),
            (State::Extension { value }, _) => State::Extension { value },
            (State::SizeLf { value: 0 }, b'\n') => {
                self.meta = 0;
                State::TrailerStart
            }
            (State::SizeLf { value }, b'\n') => State::Data(value),
            (State::DataCr, b'\r') => State::DataLf,
            (State::DataLf, b'\n') => {
                self.meta = 0;
                State::Size {
                    digits: 0,
                    value: 0,
                }
            }
            (State::TrailerStart, b'\r') => State::EndLf,
            (State::Trailer, b'\r') => State::TrailerLf,
            (State::TrailerStart | State::Trailer, b'\n') => return Err(BAD),
            (State::TrailerStart | State::Trailer, _) => State::Trailer,
            (State::TrailerLf, b'\n') => State::TrailerStart,
            (State::EndLf, b'\n') => State::Done,
            _ => return Err(BAD),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Scans `body` fed in pieces of `step` bytes; the consumed total and
    /// whether it ended.
    fn scan_in_pieces(body: &[u8], step: usize) -> Result<(usize, bool), &'static str> {
        let mut s = ChunkScanner::new();
        let mut total = 0;
        for piece in body.chunks(step) {
            let r = s.scan(piece)?;
            total += r.consumed;
            if r.done {
                return Ok((total, true));
            }
            assert_eq!(
                r.consumed,
                piece.len(),
                "all of a piece is body until the end"
            );
        }
        Ok((total, false))
    }

    #[test]
    fn finds_the_end_whatever_the_pieces() {
        let body = b"5;ext=1\r\nhello\r\nA\r\n0123456789\r\n0\r\nTrailer: x\r\n\r\nGET / HTTP/1.1";
        let end = body.len() - "GET / HTTP/1.1".len();
        for step in 1..body.len() {
            assert_eq!(
                scan_in_pieces(body, step),
                Ok((end, true)),
                "pieces of {step}"
            );
        }
        assert_eq!(scan_in_pieces(b"0\r\n\r\n", 100), Ok((5, true)));
        assert_eq!(scan_in_pieces(b"3\r\nabc\r\n", 100), Ok((8, false)));
    }

    #[test]
    fn refuses_malformed_chunks() {
        for bad in [
            &b"\r\n"[..],
            b"x\r\n",
            b"3\r\nabcd\r\n",
            b"3\nabc",
            b"3\r\nabc\n",
            b"0\r\nTrailer\n",
            b"ffffffffffffffff0\r\n",
        ] {
            assert!(
                scan_in_pieces(bad, 100).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let long_ext = format!("1;{}\r\n", "e".repeat(MAX_LINE_BYTES));
        assert!(scan_in_pieces(long_ext.as_bytes(), 100).is_err());
        let long_trailer = format!("0\r\nX: {}\r\n\r\n", "t".repeat(MAX_TRAILER_BYTES));
        assert!(scan_in_pieces(long_trailer.as_bytes(), 100).is_err());
    }
}
