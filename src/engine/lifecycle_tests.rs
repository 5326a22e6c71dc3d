//! Rules 12–21 in the engine: heartbeat closures, schedules, verdicts,
//! expected attendees, finalization.

use std::collections::BTreeMap;

use super::test_support::*;
use super::*;
use crate::domain::{Identity, ParticipantSid, Timestamp, UnixMillis, UserId};

const TIMEOUT: i64 = 5 * MIN;

fn schedule(start: UnixMillis, minutes: u32, expected: &[&str]) -> Schedule {
    Schedule::new(
        Timestamp(start),
        minutes,
        expected.iter().map(|i| Identity::new(*i)).collect(),
    )
    .unwrap()
}

fn view_of(state: &RoomState, user: &str, now: UnixMillis) -> Attendance {
    let (s, n, r) = (session(), Naming::default(), VerdictRules::default());
    let view = RoomView {
        session: &s,
        state,
        naming: &n,
        rules: &r,
    };
    view.attendance(&UserId::new(user), now).unwrap()
}

fn roster(state: &RoomState, now: UnixMillis) -> Vec<Attendance> {
    let (s, n, r) = (session(), Naming::default(), VerdictRules::default());
    RoomView {
        session: &s,
        state,
        naming: &n,
        rules: &r,
    }
    .roster(now)
}

fn beats(pairs: &[(&str, UnixMillis)]) -> BTreeMap<UserId, UnixMillis> {
    pairs.iter().map(|(u, t)| (UserId::new(*u), *t)).collect()
}

#[test]
fn rule23_a_room_is_live_while_anyone_has_an_open_cycle() {
    // Reconciliation asks LiveKit about rooms with an open cycle: a room
    // is one of them exactly until its last open cycle closes, however.
    let mut s = RoomState::default();
    assert!(!s.has_open_cycle(), "nobody yet");
    s.apply(&join("e1", "1", "PA_a", T0));
    s.apply(&join("e2", "2", "PA_b", T0));
    assert!(s.has_open_cycle());
    s.apply(&leave("e3", "1", "PA_a", Some(T0), T0 + MIN));
    assert!(s.has_open_cycle(), "person 2 is still there");
    let stale = s.stale_cycles(&beats(&[("2", T0)]), T0 + TIMEOUT + 1, TIMEOUT);
    s.close_stale(&stale);
    assert!(!s.has_open_cycle(), "closed by heartbeat timeout");
    // Closures that are derived count too: a room_finished closes all.
    let mut s = run(&[join("e1", "1", "PA_a", T0)]);
    s.apply(&finish("f1", "RM_a", T0 + MIN));
    assert!(!s.has_open_cycle(), "closed by room_finished");
}

#[test]
fn rule12_no_open_cycle_means_not_in_the_meeting() {
    let mut s = RoomState::default();
    assert!(!s.is_in_meeting(&UserId::new("1")), "nobody yet");
    s.apply(&join("e1", "1", "PA_a", T0));
    assert!(s.is_in_meeting(&UserId::new("1")));
    s.apply(&leave("e2", "1", "PA_a", Some(T0), T0 + MIN));
    assert!(!s.is_in_meeting(&UserId::new("1")));
}

#[test]
fn rule13_stale_cycles_close_at_the_later_of_join_and_last_heartbeat() {
    let mut s = RoomState::default();
    s.apply(&join("e1", "1", "PA_a", T0));
    s.apply(&join("e2", "2", "PA_b", T0));
    let hb = beats(&[("1", T0 + 2 * MIN)]);
    // Not yet: exactly the timeout after the last heartbeat is not "older".
    assert!(
        s.stale_cycles(&hb, T0 + 2 * MIN + TIMEOUT, TIMEOUT)
            .is_empty()
    );
    let stale = s.stale_cycles(&hb, T0 + 2 * MIN + TIMEOUT + 1, TIMEOUT);
    assert_eq!(
        stale,
        vec![(UserId::new("1"), ParticipantSid::new("PA_a"), T0 + 2 * MIN)]
    );
    // Person 2 never sent a heartbeat: never closed this way.
    let changes = s.close_stale(&stale);
    assert_eq!(changes.people, vec![UserId::new("1")]);
    let a = view_of(&s, "1", T0 + 60 * MIN);
    assert_eq!(a.cycles[0].closed_by, Some(ClosedBy::HeartbeatTimeout));
    assert_eq!(a.cycles[0].left_at, Some(Timestamp(T0 + 2 * MIN)));
    assert_eq!(a.duration_ms, 2 * MIN);
    assert!(view_of(&s, "2", T0 + 60 * MIN).is_currently_in_meeting);
    // A heartbeat after the closure does not reopen it (it is recorded).
    let later = beats(&[("1", T0 + 30 * MIN)]);
    assert!(s.stale_cycles(&later, T0 + 60 * MIN, TIMEOUT).is_empty());
    assert!(!s.is_in_meeting(&UserId::new("1")));
}

#[test]
fn rule13_a_heartbeat_before_the_join_counts_from_the_join() {
    let mut s = RoomState::default();
    s.apply(&join("e1", "1", "PA_a", T0 + 10 * MIN));
    let hb = beats(&[("1", T0)]);
    let stale = s.stale_cycles(&hb, T0 + 10 * MIN + TIMEOUT + 1, TIMEOUT);
    assert_eq!(stale[0].2, T0 + 10 * MIN, "the later of join and heartbeat");
}

#[test]
fn rule15_the_webhook_replaces_every_estimate_later_or_earlier() {
    for real_leave in [T0 + MIN, T0 + 20 * MIN] {
        let mut s = RoomState::default();
        s.apply(&join("e1", "1", "PA_a", T0));
        let stale = s.stale_cycles(&beats(&[("1", T0 + 5 * MIN)]), T0 + 11 * MIN, TIMEOUT);
        s.close_stale(&stale);
        s.apply(&leave("e2", "1", "PA_a", Some(T0), real_leave));
        let a = view_of(&s, "1", T0 + 60 * MIN);
        assert_eq!(a.cycles[0].closed_by, Some(ClosedBy::Webhook));
        assert_eq!(a.duration_ms, real_leave - T0);
    }
    // And the session_end estimate.
    let mut s = RoomState::default();
    s.set_schedule(Some(schedule(T0, 30, &[])));
    s.apply(&join("e1", "1", "PA_a", T0));
    s.finalize();
    assert_eq!(
        view_of(&s, "1", T0 + 90 * MIN).cycles[0].closed_by,
        Some(ClosedBy::SessionEnd)
    );
    s.apply(&leave("e2", "1", "PA_a", Some(T0), T0 + 12 * MIN));
    let a = view_of(&s, "1", T0 + 90 * MIN);
    assert_eq!(a.cycles[0].closed_by, Some(ClosedBy::Webhook));
    assert_eq!(a.duration_ms, 12 * MIN);
}

#[test]
fn rules16_to_18_verdicts_from_the_schedule() {
    let mut s = RoomState::default();
    s.set_schedule(Some(schedule(T0, 60, &[])));
    // 1: prep time then the whole hour → 100 %, present, on time.
    s.apply(&join("a1", "1", "PA_1", T0 - 10 * MIN));
    s.apply(&leave(
        "a2",
        "1",
        "PA_1",
        Some(T0 - 10 * MIN),
        T0 + 70 * MIN,
    ));
    // 2: joins 20 min late and stays 40 min → 66.7 %, late.
    s.apply(&join("b1", "2", "PA_2", T0 + 20 * MIN));
    s.apply(&leave(
        "b2",
        "2",
        "PA_2",
        Some(T0 + 20 * MIN),
        T0 + 60 * MIN,
    ));
    // 3: on time, 30 min → 50 %, present (on time).
    s.apply(&join("c1", "3", "PA_3", T0));
    s.apply(&leave("c2", "3", "PA_3", Some(T0), T0 + 30 * MIN));
    // 4: 20 min → 33.3 %, partial. 5: 3 min → 5 %, absent.
    s.apply(&join("d1", "4", "PA_4", T0));
    s.apply(&leave("d2", "4", "PA_4", Some(T0), T0 + 20 * MIN));
    s.apply(&join("e1", "5", "PA_5", T0));
    s.apply(&leave("e2", "5", "PA_5", Some(T0), T0 + 3 * MIN));
    let now = T0 + 90 * MIN;
    let cases = [
        ("1", 100.0, false, Verdict::Present, 60 * MIN),
        ("2", 66.7, true, Verdict::Late, 40 * MIN),
        ("3", 50.0, false, Verdict::Present, 30 * MIN),
        ("4", 33.3, false, Verdict::Partial, 20 * MIN),
        ("5", 5.0, false, Verdict::Absent, 3 * MIN),
    ];
    for (user, pct, late, status, ms) in cases {
        let a = view_of(&s, user, now);
        assert_eq!(a.duration_ms, ms, "user {user}");
        assert_eq!(a.attendance_percentage, Some(pct), "user {user}");
        assert_eq!(a.is_late, Some(late), "user {user}");
        assert_eq!(a.attendance_status, Some(status), "user {user}");
    }
}

#[test]
fn without_a_schedule_there_is_no_verdict() {
    let mut s = RoomState::default();
    s.apply(&join("a1", "1", "PA_1", T0));
    let a = view_of(&s, "1", T0 + MIN);
    assert_eq!(a.attendance_status, None);
    assert_eq!(a.attendance_percentage, None);
    assert_eq!(a.is_late, None);
}

#[test]
fn rule19_expected_but_never_joined_is_absent_with_zero() {
    let mut s = RoomState::default();
    s.set_schedule(Some(schedule(T0, 60, &["1_Test_User", "7_Missing_Person"])));
    s.apply(&join("a1", "1", "PA_1", T0));
    let r = roster(&s, T0 + 30 * MIN);
    assert_eq!(r.len(), 2, "the one who came and the one who did not");
    let missing = &r[1];
    assert_eq!(missing.identity, "7_Missing_Person");
    assert_eq!(missing.user_id, UserId::new("7"));
    assert_eq!(missing.duration_seconds, 0);
    assert_eq!(missing.join_count, 0);
    assert_eq!(missing.attendance_status, Some(Verdict::Absent));
    assert_eq!(missing.attendance_percentage, Some(0.0));
}

#[test]
fn rule20_finalization_closes_at_the_window_end_and_refinalizes() {
    let mut s = RoomState::default();
    s.set_schedule(Some(schedule(T0, 60, &[])));
    s.apply(&join("a1", "1", "PA_1", T0));
    let end = T0 + 60 * MIN;
    let delay = 5 * MIN;
    assert!(!s.finalize_due(end + delay - 1, delay));
    assert!(s.finalize_due(end + delay, delay));
    assert_eq!(
        s.next_due(&BTreeMap::new(), TIMEOUT, delay),
        Some(end + delay)
    );
    let changes = s.finalize();
    assert!(changes.everyone);
    assert!(!s.finalize_due(end + 2 * delay, delay), "exactly once");
    assert_eq!(s.finalization.revision, 1);
    assert!(s.finalization.report_due());
    let a = view_of(&s, "1", end + delay);
    assert!(a.is_final);
    assert_eq!(a.cycles[0].closed_by, Some(ClosedBy::SessionEnd));
    assert_eq!(a.cycles[0].left_at, Some(Timestamp(end)));
    assert_eq!(a.duration_ms, 60 * MIN);
    // The report went out; then a late event arrives: revision 2.
    s.finalization.reported_revision = 1;
    assert!(!s.finalization.report_due());
    s.apply(&leave("a2", "1", "PA_1", Some(T0), T0 + 45 * MIN));
    assert_eq!(s.finalization.revision, 2);
    assert!(s.finalization.report_due());
    assert_eq!(view_of(&s, "1", end + delay).duration_ms, 45 * MIN);
    // A duplicate-equivalent event that changes nothing does not bump it.
    s.apply(&leave("a2", "1", "PA_1", Some(T0), T0 + 45 * MIN));
    assert_eq!(s.finalization.revision, 2);
}

#[test]
fn rule21_metadata_schedule_and_the_explicit_one_wins() {
    let mut s = RoomState::default();
    let mut j = join("a1", "1", "PA_1", T0 - 10 * MIN);
    j.metadata_schedule = Some(schedule(T0, 60, &[]));
    let changes = s.apply(&j);
    assert!(changes.everyone, "a new schedule recomputes everyone");
    assert_eq!(s.effective_schedule().unwrap().duration_minutes, 60);
    assert_eq!(
        view_of(&s, "1", T0 + 10 * MIN).duration_ms,
        10 * MIN,
        "prep time excluded"
    );
    let explicit = schedule(T0, 30, &[]);
    assert!(s.set_schedule(Some(explicit.clone())).everyone);
    assert_eq!(s.effective_schedule(), Some(&explicit));
    // Later metadata does not override the explicit schedule.
    let mut j2 = join("a2", "2", "PA_2", T0);
    j2.metadata_schedule = Some(schedule(T0, 90, &[]));
    assert!(!s.apply(&j2).everyone);
    assert_eq!(s.effective_schedule(), Some(&explicit));
    // Setting the same schedule again changes nothing.
    assert!(s.set_schedule(Some(explicit)).is_empty());
}

#[test]
fn next_due_tracks_the_earliest_stale_deadline() {
    let mut s = RoomState::default();
    s.apply(&join("a1", "1", "PA_1", T0));
    s.apply(&join("a2", "2", "PA_2", T0));
    assert_eq!(
        s.next_due(&BTreeMap::new(), TIMEOUT, 0),
        None,
        "no heartbeats, no schedule"
    );
    let hb = beats(&[("1", T0 + MIN), ("2", T0 + 3 * MIN)]);
    assert_eq!(s.next_due(&hb, TIMEOUT, 0), Some(T0 + MIN + TIMEOUT + 1));
}

#[test]
fn rule13_a_sweep_that_closes_nothing_leaves_the_revision_alone() {
    // Not final: a stale closure records the timeout, but never makes the
    // session final (only finalization does, rule 20).
    let mut s = RoomState::default();
    s.apply(&join("e1", "1", "PA_a", T0));
    let stale = s.stale_cycles(&beats(&[("1", T0)]), T0 + TIMEOUT + 1, TIMEOUT);
    assert_eq!(stale.len(), 1);
    s.close_stale(&stale);
    assert_eq!(s.finalization.revision, 0, "a stale closure is not final");
    assert!(!s.finalization.is_final());
    assert!(!view_of(&s, "1", T0 + 60 * MIN).is_final);
    // Final, and the sweep finds nothing stale: same revision, so no new
    // report goes out (the sweeper calls this on every pass).
    s.set_schedule(Some(schedule(T0, 30, &[])));
    s.finalize();
    s.finalization.reported_revision = s.finalization.revision;
    let revision = s.finalization.revision;
    for _ in 0..3 {
        assert!(s.close_stale(&[]).is_empty());
    }
    assert_eq!(s.finalization.revision, revision);
    assert!(!s.finalization.report_due());
}

#[test]
fn rule13_20_a_stale_closure_after_finalization_is_one_new_revision() {
    let mut s = RoomState::default();
    s.set_schedule(Some(schedule(T0, 60, &[])));
    s.apply(&join("e1", "1", "PA_a", T0));
    s.apply(&join("e2", "1", "PA_b", T0 + MIN));
    s.apply(&join("e3", "2", "PA_c", T0));
    s.finalize();
    // The schedule is withdrawn after the report: no window end closes
    // the cycles any more (revision 2), so heartbeats can.
    assert!(s.set_schedule(None).everyone);
    assert_eq!(s.finalization.revision, 2);
    s.finalization.reported_revision = 2;
    // Both of person 1's tabs and person 2's cycle close in one sweep.
    let hb = beats(&[("1", T0 + 2 * MIN), ("2", T0 + 3 * MIN)]);
    let stale = s.stale_cycles(&hb, T0 + 90 * MIN, TIMEOUT);
    assert_eq!(stale.len(), 3);
    let changes = s.close_stale(&stale);
    assert_eq!(
        changes.people,
        vec![UserId::new("1"), UserId::new("2")],
        "each person once"
    );
    assert!(!changes.everyone);
    assert_eq!(s.finalization.revision, 3, "one sweep, one new revision");
    assert!(s.finalization.report_due());
    let a = view_of(&s, "1", T0 + 90 * MIN);
    assert!(a.is_final);
    assert_eq!(a.cycles[0].closed_by, Some(ClosedBy::HeartbeatTimeout));
    assert_eq!(a.cycles[0].left_at, Some(Timestamp(T0 + 2 * MIN)));
}

#[test]
fn rule20_21_a_schedule_change_after_finalization_is_one_new_revision() {
    let mut s = RoomState::default();
    s.apply(&join("e1", "1", "PA_a", T0));
    // Before finalization a schedule change makes no revision.
    assert!(s.set_schedule(Some(schedule(T0, 60, &[]))).everyone);
    assert_eq!(s.finalization.revision, 0);
    assert!(!s.finalization.is_final());
    s.finalize();
    s.finalization.reported_revision = 1;
    // A new schedule recomputes everyone: revision 2, a report is due.
    let changes = s.set_schedule(Some(schedule(T0, 30, &[])));
    assert!(changes.everyone);
    assert_eq!(changes.people, vec![UserId::new("1")]);
    assert_eq!(s.finalization.revision, 2);
    assert!(s.finalization.report_due());
    // Clearing the explicit schedule is a change too: revision 3.
    assert!(s.set_schedule(None).everyone);
    assert_eq!(s.finalization.revision, 3);
    // Setting what is already there is no change and no revision.
    assert!(s.set_schedule(None).is_empty());
    assert_eq!(s.finalization.revision, 3);
}

#[test]
fn rule21_an_explicit_schedule_equal_to_the_metadata_one_changes_nothing() {
    let mut s = RoomState::default();
    let mut j = join("a1", "1", "PA_1", T0);
    j.metadata_schedule = Some(schedule(T0, 60, &[]));
    s.apply(&j);
    s.finalize();
    // The schedule in force stays the same: nobody's numbers change, and
    // the final verdict keeps its revision.
    assert!(s.set_schedule(Some(schedule(T0, 60, &[]))).is_empty());
    assert_eq!(s.finalization.revision, 1);
    assert_eq!(s.schedule, Some(schedule(T0, 60, &[])), "but it is kept");
    // Clearing it falls back to the identical metadata one: no change.
    assert!(s.set_schedule(None).is_empty());
    assert_eq!(s.finalization.revision, 1);
}

#[test]
fn rule20_the_final_broadcast_is_everyone_with_whatever_the_sweep_closed() {
    // The sweeper merges the stale closures with finalization's changes:
    // one broadcast of the whole roster (rule 20), each person once.
    let mut s = RoomState::default();
    s.set_schedule(Some(schedule(T0, 60, &["9_Never_Came"])));
    s.apply(&join("e1", "1", "PA_a", T0));
    s.apply(&join("e2", "2", "PA_b", T0));
    let stale = s.stale_cycles(&beats(&[("1", T0)]), T0 + 70 * MIN, TIMEOUT);
    let mut changes = s.close_stale(&stale);
    assert_eq!(changes.people, vec![UserId::new("1")]);
    assert!(!changes.everyone);
    changes.merge(s.finalize());
    assert!(changes.everyone, "finalization broadcasts the whole roster");
    assert_eq!(changes.people, vec![UserId::new("1"), UserId::new("2")]);
    // Merging is a union: nothing merged away, nothing twice.
    let mut c = Changes {
        people: vec![UserId::new("2")],
        everyone: true,
    };
    c.merge(Changes::default());
    assert!(c.everyone, "an empty change does not clear `everyone`");
    c.merge(Changes {
        people: vec![UserId::new("2"), UserId::new("3")],
        everyone: true,
    });
    assert!(c.everyone);
    assert_eq!(c.people, vec![UserId::new("2"), UserId::new("3")]);
    let mut none = Changes::default();
    none.merge(Changes::default());
    assert!(none.is_empty());
    assert!(!none.everyone);
}
