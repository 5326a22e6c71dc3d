//! The attendance engine: pure functions and types, no I/O, no clock, no
//! async. Time is always a parameter. This is where correctness lives, so
//! every rule of docs/attendance-rules.md it implements has a test here.

pub mod interval;
pub mod naming;
pub mod reconcile;
pub mod schedule;
pub mod state;
pub mod verdict;
pub mod view;

#[cfg(test)]
mod lifecycle_tests;
#[cfg(test)]
mod reconcile_tests;
#[cfg(test)]
mod test_support;
#[cfg(test)]
mod tests;

pub use interval::{Interval, Window};
pub use naming::{Naming, Session};
pub use reconcile::{LISTING_GRACE_MS, Listing, ListingPlan};
pub use schedule::Schedule;
pub use state::{
    Changes, ClosedBy, Cycles, Fact, Finalization, JoinSource, ListedClose, ListedJoin,
    Observation, OpenedBy, Participant, RoomState,
};
pub use verdict::VerdictRules;
pub use view::{Attendance, LiveStatus, RoomView, Verdict};
