//! Send and receipt timestamps. Every published message has a sequence
//! number carried in its payload as the marker `~S<seq>~` (rollcall: the
//! participant's display name, which `attendance.updated` echoes); the
//! sender stores when it sent `seq`, each receiver looks the time up.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::stats::Latencies;

pub struct Tracker {
    base: Instant,
    /// Nanoseconds since `base` + 1 at which `seq` was sent; 0 = not sent.
    sent_ns: Vec<AtomicU64>,
    /// How many subscribers received `seq`.
    receipts: Vec<AtomicU32>,
    /// Nanoseconds since `base` + 1 of the latest receipt of `seq` (when
    /// its last subscriber got it; 0 = none yet).
    last_ns: Vec<AtomicU64>,
    /// First sequence number of each phase (ascending); a receipt's latency
    /// goes to its phase's histogram.
    phase_starts: Vec<u64>,
    phases: Vec<Latencies>,
    pub received: AtomicU64,
    /// Marked frames whose seq was never stamped (should stay 0).
    pub unknown: AtomicU64,
    /// Text bytes (WebSocket payloads) every subscriber read, any event.
    pub bytes: AtomicU64,
    /// Subscriber sockets that ended while still listening (the server
    /// closed them, or the connection broke), and of those the ones closed
    /// with 4100 (the server's slow-consumer close).
    pub ended: AtomicU64,
    pub closed_4100: AtomicU64,
}

impl Tracker {
    pub fn new(capacity: u64, phase_starts: Vec<u64>) -> Self {
        let phase_starts = if phase_starts.is_empty() {
            vec![0]
        } else {
            phase_starts
        };
        Self {
            base: Instant::now(),
            sent_ns: (0..capacity).map(|_| AtomicU64::new(0)).collect(),
            receipts: (0..capacity).map(|_| AtomicU32::new(0)).collect(),
            last_ns: (0..capacity).map(|_| AtomicU64::new(0)).collect(),
            phases: phase_starts.iter().map(|_| Latencies::new()).collect(),
            phase_starts,
            received: AtomicU64::new(0),
            unknown: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            ended: AtomicU64::new(0),
            closed_4100: AtomicU64::new(0),
        }
    }

    pub fn mark_sent(&self, seq: u64) {
        let ns = self.base.elapsed().as_nanos() as u64 + 1;
        self.sent_ns[seq as usize].store(ns, Ordering::Release);
    }

    /// Records `seq` as sent at `at` (when another process sends it).
    pub fn mark_sent_at(&self, seq: u64, at: Instant) {
        let ns = at.saturating_duration_since(self.base).as_nanos() as u64 + 1;
        self.sent_ns[seq as usize].store(ns, Ordering::Release);
    }

    pub fn sent_at(&self, seq: u64) -> Option<Instant> {
        let ns = self.sent_ns.get(seq as usize)?.load(Ordering::Acquire);
        (ns != 0).then(|| self.base + Duration::from_nanos(ns - 1))
    }

    /// A subscriber (`who`, for sharding) got a frame; records it if it
    /// carries a marker.
    pub fn on_text(&self, who: usize, text: &str) {
        let now = Instant::now();
        let Some(seq) = marker(text) else { return };
        match self.sent_at(seq) {
            Some(sent) => {
                self.receipts[seq as usize].fetch_add(1, Ordering::Relaxed);
                let at = now.saturating_duration_since(self.base).as_nanos() as u64 + 1;
                self.last_ns[seq as usize].fetch_max(at, Ordering::Relaxed);
                self.received.fetch_add(1, Ordering::Relaxed);
                let phase = self.phase_starts.partition_point(|&s| s <= seq).max(1) - 1;
                self.phases[phase].record(who, now.saturating_duration_since(sent));
            }
            None => {
                self.unknown.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// How many subscribers received `seq` so far.
    pub fn receipts(&self, seq: u64) -> u32 {
        self.receipts
            .get(seq as usize)
            .map_or(0, |r| r.load(Ordering::Relaxed))
    }

    /// From sending `seq` to its latest receipt: once every subscriber has
    /// it, how long the update took to reach all of them.
    pub fn completion(&self, seq: u64) -> Option<Duration> {
        let sent = self.sent_at(seq)?;
        let last = self.last_ns.get(seq as usize)?.load(Ordering::Relaxed);
        (last != 0)
            .then(|| (self.base + Duration::from_nanos(last - 1)).saturating_duration_since(sent))
    }

    pub fn phase(&self, i: usize) -> &Latencies {
        &self.phases[i]
    }
}

/// `~S<digits>~` anywhere in the frame.
pub fn marker(text: &str) -> Option<u64> {
    let at = text.find("~S")?;
    let digits = &text[at + 2..];
    let end = digits.find('~')?;
    digits[..end].parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_marker_in_a_pusher_frame() {
        let f = r#"{"event":"attendance.updated","channel":"session.1","data":"{\"name\":\"Bench ~S42~\"}"}"#;
        assert_eq!(marker(f), Some(42));
        assert_eq!(marker("42[\"attendance.updated\",\"x\"]"), None);
    }
}
