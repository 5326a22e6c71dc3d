//! The end of a chunked request body (`server/chunked.rs` `ChunkScanner`):
//! the connection wrapper scans each read as it arrives, so where a body
//! ends must not depend on how TCP cut it.
//!
//! Asserts: the bytes scanned whole and in pieces (split points derived from
//! the input) give the same result: the same end of body, "not over yet"
//! after consuming every byte, or the same error; until the end every byte
//! of a piece is body; an ended body ends with a line end, and scanning
//! just its bytes ends it at the same place while any shorter prefix is not
//! over and not an error.
//!
//! Input: the bytes after a `Transfer-Encoding: chunked` head.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rollcall::server::chunked::ChunkScanner;
use rollcall_fuzz::cuts;

/// Scans `body` in pieces ending at `ends`: the consumed total and whether
/// the body ended, or the error.
fn in_pieces(body: &[u8], ends: &[usize]) -> Result<(usize, bool), &'static str> {
    let mut scanner = ChunkScanner::new();
    let mut total = 0;
    let mut start = 0;
    for &end in ends.iter().chain(std::iter::once(&body.len())) {
        let piece = &body[start..end];
        start = end;
        let scan = scanner.scan(piece)?;
        assert!(scan.consumed <= piece.len());
        total += scan.consumed;
        if scan.done {
            return Ok((total, true));
        }
        assert_eq!(
            scan.consumed,
            piece.len(),
            "all of a piece is body until the end"
        );
    }
    Ok((total, false))
}

fuzz_target!(|data: &[u8]| {
    let whole = ChunkScanner::new()
        .scan(data)
        .map(|scan| (scan.consumed, scan.done));
    let ends = cuts(data.len(), data);
    assert_eq!(in_pieces(data, &ends), whole, "cut at {ends:?}");
    // Byte at a time, the slowest client.
    if data.len() <= 512 {
        let every: Vec<usize> = (1..data.len()).collect();
        assert_eq!(in_pieces(data, &every), whole, "byte at a time");
    }
    match whole {
        Ok((end, true)) => {
            assert!(end >= 5 && end <= data.len());
            assert!(data[..end].ends_with(b"\n"));
            let again = ChunkScanner::new()
                .scan(&data[..end])
                .expect("its own bytes");
            assert!(again.done && again.consumed == end);
            // Any shorter prefix (one from the cuts, and one byte short).
            for k in ends
                .iter()
                .copied()
                .filter(|&k| k < end)
                .take(1)
                .chain([end - 1])
            {
                let scan = ChunkScanner::new()
                    .scan(&data[..k])
                    .expect("a prefix of a body");
                assert!(!scan.done && scan.consumed == k, "prefix of {k}");
            }
        }
        Ok((end, false)) => assert_eq!(end, data.len()),
        Err(e) => assert!(!e.is_empty()),
    }
});
