//! Half-open time intervals, the counting window, and the length of a union
//! (rule 9: overlapping cycles count once).

use crate::domain::UnixMillis;

/// `[start, end)` in Unix milliseconds. Invariant: `start <= end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Interval {
    start: UnixMillis,
    end: UnixMillis,
}

impl Interval {
    /// An interval from `start` to `end`; an `end` before `start` (a leave
    /// stamped in whole seconds before a join stamped in milliseconds) is
    /// an empty interval at `start`, never a negative one.
    pub fn new(start: UnixMillis, end: UnixMillis) -> Self {
        Self {
            start,
            end: end.max(start),
        }
    }

    pub fn len(self) -> i64 {
        self.end - self.start
    }

    pub fn is_empty(self) -> bool {
        self.start == self.end
    }
}

/// The span in which time counts (rule 10). Unbounded on a side that is
/// `None`: without a schedule the window is unbounded on both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Window {
    pub start: Option<UnixMillis>,
    pub end: Option<UnixMillis>,
}

impl Window {
    pub const UNBOUNDED: Window = Window {
        start: None,
        end: None,
    };

    pub fn between(start: UnixMillis, end: UnixMillis) -> Self {
        Self {
            start: Some(start),
            end: Some(end.max(start)),
        }
    }

    /// The part of `iv` inside the window; empty parts are dropped. Clipping
    /// never adds time: the result is always within `iv`.
    pub fn clip(&self, iv: Interval) -> Option<Interval> {
        let start = self.start.map_or(iv.start, |s| iv.start.max(s));
        let end = self.end.map_or(iv.end, |e| iv.end.min(e));
        (start < end).then(|| Interval::new(start, end))
    }
}

/// Total length covered by the union of `intervals`.
pub fn union_length(intervals: impl IntoIterator<Item = Interval>) -> i64 {
    let mut sorted: Vec<Interval> = intervals.into_iter().filter(|i| !i.is_empty()).collect();
    sorted.sort_unstable();
    let mut total = 0;
    let mut current: Option<Interval> = None;
    for iv in sorted {
        current = match current {
            Some(cur) if iv.start <= cur.end => Some(Interval::new(cur.start, cur.end.max(iv.end))),
            Some(cur) => {
                total += cur.len();
                Some(iv)
            }
            None => Some(iv),
        };
    }
    total + current.map_or(0, Interval::len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn iv(a: i64, b: i64) -> Interval {
        Interval::new(a, b)
    }

    #[test]
    fn union_table() {
        let cases: &[(&[(i64, i64)], i64)] = &[
            (&[], 0),
            (&[(0, 10)], 10),
            // Rule 9: two tabs over the same 30 minutes are 30 minutes.
            (&[(0, 1_800_000), (0, 1_800_000)], 1_800_000),
            (&[(0, 10), (5, 15)], 15),
            (&[(0, 10), (10, 20)], 20),
            (&[(0, 10), (20, 30)], 20),
            (&[(20, 30), (0, 10), (5, 25)], 30),
            (&[(0, 100), (10, 20), (30, 40)], 100),
            (&[(5, 5), (7, 7)], 0),
        ];
        for (input, want) in cases {
            let got = union_length(input.iter().map(|&(a, b)| iv(a, b)));
            assert_eq!(got, *want, "union of {input:?}");
        }
    }

    #[test]
    fn a_leave_before_its_join_is_empty_not_negative() {
        assert_eq!(iv(1_456, 1_000).len(), 0);
        assert!(iv(1_456, 1_000).is_empty());
        assert!(iv(1_000, 1_000).is_empty());
        assert!(!iv(1_000, 1_001).is_empty());
    }

    #[test]
    fn clip_table() {
        let w = Window::between(100, 200);
        assert_eq!(w.clip(iv(0, 50)), None, "preparation time does not count");
        assert_eq!(
            w.clip(iv(250, 300)),
            None,
            "time after the end does not count"
        );
        assert_eq!(w.clip(iv(50, 150)), Some(iv(100, 150)));
        assert_eq!(w.clip(iv(150, 250)), Some(iv(150, 200)));
        assert_eq!(w.clip(iv(0, 300)), Some(iv(100, 200)));
        assert_eq!(Window::UNBOUNDED.clip(iv(0, 300)), Some(iv(0, 300)));
        // Rule 10's window is [start, end]: a cycle that only touches it
        // has no time in it, and an empty part is dropped, not kept.
        assert_eq!(w.clip(iv(50, 100)), None, "left at the start");
        assert_eq!(w.clip(iv(200, 250)), None, "joined at the end");
        assert_eq!(w.clip(iv(150, 150)), None, "a zero-length attempt");
    }

    proptest! {
        #[test]
        fn union_is_at_most_the_sum_and_at_least_the_longest(
            raw in proptest::collection::vec((0i64..10_000, 0i64..5_000), 0..20)
        ) {
            let ivs: Vec<Interval> = raw.iter().map(|&(a, l)| iv(a, a + l)).collect();
            let u = union_length(ivs.iter().copied());
            let sum: i64 = ivs.iter().map(|i| i.len()).sum();
            let longest = ivs.iter().map(|i| i.len()).max().unwrap_or(0);
            prop_assert!(u <= sum);
            prop_assert!(u >= longest);
            // Order does not matter.
            let mut rev = ivs.clone();
            rev.reverse();
            prop_assert_eq!(u, union_length(rev));
        }

        #[test]
        fn clipping_never_adds_time(
            raw in proptest::collection::vec((0i64..10_000, 0i64..5_000), 0..20),
            ws in 0i64..10_000, wl in 0i64..10_000,
        ) {
            let ivs: Vec<Interval> = raw.iter().map(|&(a, l)| iv(a, a + l)).collect();
            let w = Window::between(ws, ws + wl);
            let clipped = union_length(ivs.iter().filter_map(|&i| w.clip(i)));
            prop_assert!(clipped <= union_length(ivs.iter().copied()));
            prop_assert!(clipped <= wl);
        }
    }
}
