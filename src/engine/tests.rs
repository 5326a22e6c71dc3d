//! Rule-by-rule tests of the engine (docs/attendance-rules.md numbers in the
//! test names) and the order-independence property (rule 6).

use proptest::prelude::*;

use super::test_support::*;
use super::*;
use crate::domain::{EventId, RoomSid, UnixMillis, UserId};

fn read(state: &RoomState, user: &str, window: Window, now: UnixMillis) -> Attendance {
    let user = UserId::new(user);
    Attendance::read(&session(), state, &user, &state.people[&user], window, now)
}

#[test]
fn rule3_each_participant_sid_is_its_own_cycle() {
    let s = run(&[
        join("e1", "1", "PA_a", T0),
        leave("e2", "1", "PA_a", Some(T0), T0 + MIN),
        join("e3", "1", "PA_b", T0 + 2 * MIN),
    ]);
    let a = read(&s, "1", Window::UNBOUNDED, T0 + 3 * MIN);
    assert_eq!(a.join_count, 2);
    assert_eq!(a.leave_count, 1);
    assert_eq!(a.cycles.len(), 2);
    assert_eq!(a.cycles[0].participant_sid.as_str(), "PA_a");
    assert_eq!(a.cycles[1].left_at, None);
    assert!(a.is_currently_in_meeting);
    assert_eq!(a.status, LiveStatus::Joined);
    assert_eq!(a.current_cycle_started_at.unwrap().0, T0 + 2 * MIN);
    assert_eq!(a.last_leave_time.unwrap().0, T0 + MIN);
    assert_eq!(a.duration_ms, 2 * MIN);
}

/// The fixtures' cycle: joined 1763719201.456, left 1763719260.
fn fixture_cycle() -> [Observation; 2] {
    [
        join("e1", "1", "PA_x", 1_763_719_201_456),
        leave(
            "e2",
            "1",
            "PA_x",
            Some(1_763_719_201_456),
            1_763_719_260_000,
        ),
    ]
}

#[test]
fn rule4_5_join_and_leave_make_an_exact_cycle() {
    // The fixtures: joined 1763719201.456, left 1763719260 → 58.544 s.
    let s = run(&fixture_cycle());
    let a = read(&s, "1", Window::UNBOUNDED, 1_763_719_999_000);
    assert_eq!(a.duration_ms, 58_544);
    assert_eq!(a.duration_seconds, 58);
    assert_eq!(a.duration_minutes, 0);
    assert_eq!(a.cycles[0].closed_by, Some(ClosedBy::Webhook));
    assert_eq!(a.status, LiveStatus::Left);
    assert!(!a.is_currently_in_meeting);
    assert_eq!(a.current_cycle_started_at, None);
}

#[test]
fn rule6_leave_before_join_and_leave_without_join() {
    let j = join("e1", "1", "PA_x", T0);
    let l = leave("e2", "1", "PA_x", Some(T0), T0 + 5 * MIN);
    let leave_first = run(&[l.clone(), j.clone()]);
    assert_eq!(leave_first, run(&[j, l.clone()]));
    let only_leave = run(&[l]);
    let a = read(&only_leave, "1", Window::UNBOUNDED, T0 + 10 * MIN);
    assert_eq!(
        a.duration_ms,
        5 * MIN,
        "the leave payload's joinedAt gives the cycle"
    );
    assert_eq!(a.status, LiveStatus::Left);
    assert_eq!(a.join_count, 1);
}

#[test]
fn rule6_a_late_join_does_not_reopen_a_closed_cycle() {
    let s = run(&[
        leave("e2", "1", "PA_x", Some(T0), T0 + MIN),
        join("e1", "1", "PA_x", T0),
    ]);
    let a = read(&s, "1", Window::UNBOUNDED, T0 + 60 * MIN);
    assert!(!a.is_currently_in_meeting);
    assert_eq!(a.duration_ms, MIN);
}

#[test]
fn rule6_reconnect_race_leave_after_new_join() {
    // The reconnect's join of the new sid arrives before the old sid's leave.
    let s = run(&[
        join("e1", "1", "PA_old", T0),
        join("e3", "1", "PA_new", T0 + 10 * MIN),
        leave("e2", "1", "PA_old", Some(T0), T0 + 10 * MIN),
    ]);
    let a = read(&s, "1", Window::UNBOUNDED, T0 + 20 * MIN);
    assert!(a.is_currently_in_meeting, "the new cycle stays open");
    assert_eq!(a.duration_ms, 20 * MIN);
}

#[test]
fn rule7_applying_an_event_again_changes_nothing() {
    let j = join("e1", "1", "PA_x", T0);
    let mut s = RoomState::default();
    assert!(!s.apply(&j).is_empty());
    let once = s.clone();
    assert!(
        s.apply(&j).is_empty(),
        "a second application reports no change"
    );
    assert_eq!(s, once);
}

#[test]
fn rule8_aborted_without_join_is_a_zero_length_attempt() {
    let s = run(&[abort("e1", "1", "PA_x", T0)]);
    let a = read(&s, "1", Window::UNBOUNDED, T0 + MIN);
    assert_eq!(a.join_count, 1);
    assert_eq!(a.duration_ms, 0);
    assert_eq!(a.cycles[0].closed_by, Some(ClosedBy::Webhook));
    assert!(!a.is_currently_in_meeting);
    // With its join known (either order), it is an ordinary closed cycle.
    let j = join("e0", "1", "PA_x", T0 - MIN);
    let s1 = run(&[abort("e1", "1", "PA_x", T0), j.clone()]);
    let s2 = run(&[j, abort("e1", "1", "PA_x", T0)]);
    assert_eq!(s1, s2);
    assert_eq!(read(&s1, "1", Window::UNBOUNDED, T0 + MIN).duration_ms, MIN);
}

#[test]
fn rule9_overlapping_tabs_count_once() {
    let s = run(&[
        join("e1", "1", "PA_tab1", T0),
        join("e2", "1", "PA_tab2", T0),
        leave("e3", "1", "PA_tab1", Some(T0), T0 + 30 * MIN),
        leave("e4", "1", "PA_tab2", Some(T0), T0 + 30 * MIN),
    ]);
    assert_eq!(
        read(&s, "1", Window::UNBOUNDED, T0 + 90 * MIN).duration_ms,
        30 * MIN
    );
    // Partly overlapping: 10:00–10:20 and 10:10–10:40 is 40 minutes.
    let s = run(&[
        leave("e1", "1", "PA_a", Some(T0), T0 + 20 * MIN),
        leave("e2", "1", "PA_b", Some(T0 + 10 * MIN), T0 + 40 * MIN),
    ]);
    assert_eq!(
        read(&s, "1", Window::UNBOUNDED, T0 + 90 * MIN).duration_ms,
        40 * MIN
    );
}

#[test]
fn rule10_only_time_inside_the_window_counts() {
    // Joined 10 minutes early (preparation), left 10 minutes after the end.
    let s = run(&[
        join("e1", "1", "PA_x", T0 - 10 * MIN),
        leave("e2", "1", "PA_x", Some(T0 - 10 * MIN), T0 + 70 * MIN),
    ]);
    let w = Window::between(T0, T0 + 60 * MIN);
    assert_eq!(read(&s, "1", w, T0 + 90 * MIN).duration_ms, 60 * MIN);
    assert_eq!(
        read(&s, "1", Window::UNBOUNDED, T0 + 90 * MIN).duration_ms,
        80 * MIN
    );
}

#[test]
fn rule11_open_cycles_count_up_to_now_clipped_to_the_window() {
    let s = run(&[join("e1", "1", "PA_x", T0 + 1_500)]);
    assert_eq!(
        read(&s, "1", Window::UNBOUNDED, T0 + 61_500).duration_ms,
        MIN
    );
    assert_eq!(
        read(&s, "1", Window::UNBOUNDED, T0).duration_ms,
        0,
        "no time before the join"
    );
    let w = Window::between(T0, T0 + 30_000);
    assert_eq!(read(&s, "1", w, T0 + 61_500).duration_ms, 28_500);
}

#[test]
fn rule14_room_finished_closes_open_cycles_of_that_instance() {
    let mut s = run(&[
        join("e1", "1", "PA_x", T0),
        join("e2", "2", "PA_y", T0),
        leave("e3", "2", "PA_y", Some(T0), T0 + MIN),
    ]);
    let changes = s.apply(&finish("e4", "RM_a", T0 + 10 * MIN));
    assert_eq!(
        changes.people,
        vec![UserId::new("1")],
        "only the open cycle changes"
    );
    let a = read(&s, "1", Window::UNBOUNDED, T0 + 60 * MIN);
    assert_eq!(a.cycles[0].closed_by, Some(ClosedBy::RoomFinished));
    assert_eq!(a.duration_ms, 10 * MIN);
    assert!(!a.is_currently_in_meeting);
    // A cycle of the next room instance is not closed by the old finish.
    s.apply(&Observation {
        room_sid: RoomSid::new("RM_b"),
        ..join("e5", "1", "PA_z", T0 + 11 * MIN)
    });
    assert!(read(&s, "1", Window::UNBOUNDED, T0 + 60 * MIN).is_currently_in_meeting);
}

#[test]
fn rule15_a_webhook_leave_replaces_the_room_finished_estimate() {
    let s = run(&[
        join("e1", "1", "PA_x", T0),
        finish("e4", "RM_a", T0 + 10 * MIN),
        leave("e2", "1", "PA_x", Some(T0), T0 + 7 * MIN),
    ]);
    let a = read(&s, "1", Window::UNBOUNDED, T0 + 60 * MIN);
    assert_eq!(a.cycles[0].closed_by, Some(ClosedBy::Webhook));
    assert_eq!(a.duration_ms, 7 * MIN);
}

#[test]
fn labels_follow_the_latest_event_whatever_the_arrival_order() {
    let mut early = join("e1", "1", "PA_x", T0);
    let mut late = leave("e2", "1", "PA_x", Some(T0), T0 + MIN);
    if let Fact::Joined { participant, .. } = &mut early.fact {
        participant.name = "Old Name".into();
    }
    if let Fact::Left { participant, .. } = &mut late.fact {
        participant.name = String::new(); // LiveKit omitted it
    }
    let s = run(&[late.clone(), early.clone()]);
    assert_eq!(s, run(&[early, late]));
    assert_eq!(read(&s, "1", Window::UNBOUNDED, T0).name, "Old Name");
}

#[test]
fn payload_matches_the_contract_shape() {
    let s = run(&fixture_cycle());
    let a = read(&s, "1", Window::UNBOUNDED, 1_763_719_300_000);
    let v: serde_json::Value = serde_json::from_str(&a.updated_json(1_763_719_300_120)).unwrap();
    assert_eq!(v["user_id"], serde_json::json!(1));
    assert_eq!(v["timestamp"], "2025-11-21T10:01:40.120Z");
    let at = &v["attendance"];
    let keys: Vec<&str> = at.as_object().unwrap().keys().map(String::as_str).collect();
    let mut want = vec![
        "room",
        "session_id",
        "session_type",
        "identity",
        "name",
        "is_currently_in_meeting",
        "status",
        "duration_ms",
        "duration_seconds",
        "duration_minutes",
        "current_cycle_started_at",
        "join_count",
        "leave_count",
        "first_join_time",
        "last_leave_time",
        "attendance_status",
        "attendance_percentage",
        "is_late",
        "late_minutes",
        "is_final",
        "cycles",
        "counting_window",
    ];
    let mut got = keys.clone();
    got.sort_unstable();
    want.sort_unstable();
    assert_eq!(got, want);
    assert_eq!(at["room"], ROOM);
    assert_eq!(at["session_id"], "121");
    assert_eq!(at["session_type"], "quran");
    assert_eq!(at["status"], "left");
    assert_eq!(at["duration_ms"], 58_544);
    assert_eq!(at["first_join_time"], "2025-11-21T10:00:01.456Z");
    assert_eq!(at["last_leave_time"], "2025-11-21T10:01:00.000Z");
    assert_eq!(at["attendance_status"], serde_json::Value::Null);
    assert_eq!(at["is_final"], false);
    assert_eq!(at["late_minutes"], serde_json::Value::Null);
    assert_eq!(at["counting_window"], serde_json::Value::Null);
    assert_eq!(
        at["cycles"][0],
        serde_json::json!({
            "participant_sid": "PA_x",
            "joined_at": "2025-11-21T10:00:01.456Z",
            "left_at": "2025-11-21T10:01:00.000Z",
            "opened_by": "webhook",
            "closed_by": "webhook"
        })
    );
}

/// A join of `user`'s `sid` delivered again as a different event
/// (`id`, `created_at`) carrying `identity` and `name`: only its labels
/// can differ from the first join at `T0`.
fn relabel(id: &str, created_at: UnixMillis, identity: &str, name: &str) -> Observation {
    let mut p = who("1", "PA_x");
    p.identity = crate::domain::Identity::new(identity);
    p.name = name.into();
    obs(
        id,
        created_at,
        Fact::Joined {
            participant: p,
            joined_at: T0,
        },
    )
}

#[test]
fn rule6_labels_are_last_writer_wins_by_created_at_then_event_id() {
    let old = relabel("e1", T0, "1_Test_User", "Old Name");
    let new = relabel("e2", T0 + MIN, "1_Renamed_User", "New Name");
    for events in [[old.clone(), new.clone()], [new.clone(), old.clone()]] {
        let s = run(&events);
        let a = read(&s, "1", Window::UNBOUNDED, T0 + 2 * MIN);
        assert_eq!(a.name, "New Name", "the later createdAt wins");
        assert_eq!(a.identity, "1_Renamed_User", "the later createdAt wins");
    }
    // Same createdAt: the greater event id wins, whatever the order.
    let a = relabel("EV_a", T0, "1_Test_User", "Ann");
    let b = relabel("EV_b", T0, "1_Other_User", "Bob");
    for events in [[a.clone(), b.clone()], [b.clone(), a.clone()]] {
        let s = run(&events);
        let got = read(&s, "1", Window::UNBOUNDED, T0 + MIN);
        assert_eq!(
            (got.identity.as_str(), got.name.as_str()),
            ("1_Other_User", "Bob")
        );
    }
}

#[test]
fn rule7_a_label_change_is_a_change_and_the_same_labels_are_not() {
    let mut s = run(&[relabel("e1", T0, "1_Test_User", "Ann")]);
    // A later event with the same labels (and the same cycle): nothing to
    // broadcast.
    assert!(
        s.apply(&relabel("e2", T0 + MIN, "1_Test_User", "Ann"))
            .is_empty()
    );
    // A new display name alone is a change of this person.
    assert_eq!(
        s.apply(&relabel("e3", T0 + 2 * MIN, "1_Test_User", "Ann B."))
            .people,
        vec![UserId::new("1")]
    );
    // A new identity alone (same user id) is too.
    assert_eq!(
        s.apply(&relabel("e4", T0 + 3 * MIN, "1_New_User", "Ann B."))
            .people,
        vec![UserId::new("1")]
    );
    // Both at once is one change, not two that cancel out.
    assert_eq!(
        s.apply(&relabel("e5", T0 + 4 * MIN, "1_Newer_User", "Ann C."))
            .people,
        vec![UserId::new("1")]
    );
    // An older event with other labels changes nothing (it loses).
    assert!(
        s.apply(&relabel("e0", T0 - MIN, "1_Test_User", "Ann"))
            .is_empty()
    );
    let a = read(&s, "1", Window::UNBOUNDED, T0 + 5 * MIN);
    assert_eq!(
        (a.identity.as_str(), a.name.as_str()),
        ("1_Newer_User", "Ann C.")
    );
    // A first display name after events that carried none is a change.
    let mut s = run(&[relabel("e1", T0, "1_Test_User", "")]);
    assert_eq!(read(&s, "1", Window::UNBOUNDED, T0).name, "1_Test_User");
    assert_eq!(
        s.apply(&relabel("e2", T0 + MIN, "1_Test_User", "Ann"))
            .people,
        vec![UserId::new("1")]
    );
    assert_eq!(read(&s, "1", Window::UNBOUNDED, T0).name, "Ann");
}

#[test]
fn rule6_7_a_late_join_that_moves_a_lone_leaves_join_is_a_change() {
    // A leave without `joinedAt` arrived first: a zero-length cycle. The
    // join webhook, delivered late, moves its start earlier (its labels
    // are older and lose): that person's numbers changed, so they are
    // broadcast, though the cycle's `opened_by` and leave stay the same.
    let mut s = run(&[leave("e2", "1", "PA_a", None, T0 + 10 * MIN)]);
    assert_eq!(
        read(&s, "1", Window::UNBOUNDED, T0 + 20 * MIN).duration_ms,
        0
    );
    let changes = s.apply(&join("e1", "1", "PA_a", T0));
    assert_eq!(changes.people, vec![UserId::new("1")]);
    let a = read(&s, "1", Window::UNBOUNDED, T0 + 20 * MIN);
    assert_eq!(a.duration_ms, 10 * MIN);
    assert_eq!(a.cycles[0].opened_by, OpenedBy::Webhook);
}

fn join_in(room_sid: &str, id: &str, user: &str, sid: &str, at: UnixMillis) -> Observation {
    Observation {
        room_sid: RoomSid::new(room_sid),
        ..join(id, user, sid, at)
    }
}

fn closed_by(s: &RoomState, user: &str) -> Option<(UnixMillis, ClosedBy)> {
    let a = read(s, user, Window::UNBOUNDED, T0 + 90 * MIN);
    a.cycles[0]
        .closed_by
        .map(|by| (a.cycles[0].left_at.unwrap().0, by))
}

#[test]
fn rule1_14_a_room_finished_ends_only_its_own_instance() {
    // Rule 1: LiveKit restarted the room (RM_b) while RM_a's cycle was
    // open; RM_a's finish is after RM_b's join but is not RM_b's.
    let s = run(&[
        join_in("RM_a", "e1", "1", "PA_a", T0),
        join_in("RM_b", "e2", "2", "PA_b", T0 + MIN),
        finish("f1", "RM_a", T0 + 10 * MIN),
    ]);
    assert_eq!(
        closed_by(&s, "1"),
        Some((T0 + 10 * MIN, ClosedBy::RoomFinished))
    );
    assert_eq!(closed_by(&s, "2"), None, "another instance stays open");
    // A cycle's own instance's finish is the one that ends it, even when
    // a finish LiveKit sent without a room sid came earlier.
    let s = run(&[
        join_in("RM_a", "e1", "1", "PA_a", T0),
        finish("f0", "", T0 + 5 * MIN),
        finish("f1", "RM_a", T0 + 10 * MIN),
    ]);
    assert_eq!(
        closed_by(&s, "1"),
        Some((T0 + 10 * MIN, ClosedBy::RoomFinished))
    );
}

#[test]
fn rule14_without_a_room_sid_the_earliest_finish_not_before_the_join_ends_it() {
    // The cycle lacks the room sid: any instance's finish from its join on.
    let s = run(&[
        join_in("", "e1", "1", "PA_a", T0),
        join_in("", "e2", "2", "PA_b", T0 + 10 * MIN),
        join_in("", "e3", "3", "PA_c", T0 + 11 * MIN),
        finish("f1", "RM_a", T0 + 10 * MIN),
        finish("f2", "RM_b", T0 + 20 * MIN),
    ]);
    assert_eq!(
        closed_by(&s, "1"),
        Some((T0 + 10 * MIN, ClosedBy::RoomFinished))
    );
    assert_eq!(
        closed_by(&s, "2"),
        Some((T0 + 10 * MIN, ClosedBy::RoomFinished)),
        "a finish at the very join instant ends it (zero length)"
    );
    assert_eq!(
        closed_by(&s, "3"),
        Some((T0 + 20 * MIN, ClosedBy::RoomFinished)),
        "a finish before the join belongs to an earlier instance"
    );
    // The finish lacks the room sid: it ends every cycle joined by then.
    let s = run(&[
        join_in("RM_a", "e1", "1", "PA_a", T0),
        join_in("RM_b", "e2", "2", "PA_b", T0 + 15 * MIN),
        finish("f1", "", T0 + 10 * MIN),
    ]);
    assert_eq!(
        closed_by(&s, "1"),
        Some((T0 + 10 * MIN, ClosedBy::RoomFinished))
    );
    assert_eq!(closed_by(&s, "2"), None, "joined after that finish");
}

#[test]
fn rule1_6_a_cycle_keeps_the_least_room_sid_its_events_carry_in_any_order() {
    // The same sid's join delivered twice, once with RM_b: the cycle
    // belongs to RM_a whatever the order, so only RM_a's finish ends it.
    let a = join_in("RM_a", "e1", "1", "PA_a", T0);
    let b = join_in("RM_b", "e2", "1", "PA_a", T0);
    let finishes = [
        finish("f1", "RM_b", T0 + 10 * MIN),
        finish("f2", "RM_a", T0 + 20 * MIN),
    ];
    for events in [[a.clone(), b.clone()], [b.clone(), a.clone()]] {
        let s = run(&[&events[..], &finishes[..]].concat());
        assert_eq!(
            closed_by(&s, "1"),
            Some((T0 + 20 * MIN, ClosedBy::RoomFinished))
        );
    }
    // A join that lacked the room sid learns it from a later event, and
    // from then on only that instance's finish ends it (rule 14).
    let bare = join_in("", "e1", "1", "PA_a", T0);
    let finishes = [
        finish("f1", "RM_a", T0 + 10 * MIN),
        finish("f2", "RM_b", T0 + 20 * MIN),
    ];
    for events in [[bare.clone(), b.clone()], [b.clone(), bare.clone()]] {
        let s = run(&[&events[..], &finishes[..]].concat());
        assert_eq!(
            closed_by(&s, "1"),
            Some((T0 + 20 * MIN, ClosedBy::RoomFinished))
        );
    }
}

/// A scheduled hour and one person for each verdict (rules 16–19).
fn every_verdict() -> Vec<Attendance> {
    let mut s = RoomState::default();
    s.set_schedule(Some(
        Schedule::new(
            crate::domain::Timestamp(T0),
            60,
            vec![crate::domain::Identity::new("4_Never_Came")],
        )
        .unwrap(),
    ));
    for e in [
        join("a1", "1", "PA_1", T0),
        leave("a2", "1", "PA_1", Some(T0), T0 + 60 * MIN),
        join("b1", "2", "PA_2", T0 + 20 * MIN),
        leave("b2", "2", "PA_2", Some(T0 + 20 * MIN), T0 + 60 * MIN),
        join("c1", "3", "PA_3", T0),
        leave("c2", "3", "PA_3", Some(T0), T0 + 20 * MIN),
    ] {
        s.apply(&e);
    }
    let (session, naming, rules) = (session(), Naming::default(), VerdictRules::default());
    RoomView {
        session: &session,
        state: &s,
        naming: &naming,
        rules: &rules,
    }
    .roster(T0 + 90 * MIN)
}

#[test]
fn rule18_verdicts_are_the_contract_strings_in_the_snapshot() {
    let roster = every_verdict();
    let statuses: Vec<_> = roster.iter().map(|a| a.attendance_status).collect();
    let want = [
        Verdict::Present,
        Verdict::Late,
        Verdict::Partial,
        Verdict::Absent,
    ];
    assert_eq!(statuses, want.map(Some));
    for (v, s) in want.iter().zip(["present", "late", "partial", "absent"]) {
        assert_eq!(v.as_str(), s, "the CSV's spelling");
        assert_eq!(serde_json::to_value(v).unwrap(), s, "the JSON's spelling");
    }
    let header = view::SessionHeader {
        schedule: None,
        is_final: false,
        revision: 0,
    };
    let json = view::snapshot_json(ROOM, &roster, header, T0 + 90 * MIN);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let mut keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort_unstable();
    // The contract's three fields, and the header's three.
    assert_eq!(
        keys,
        [
            "is_final",
            "participants",
            "revision",
            "room",
            "schedule",
            "timestamp"
        ]
    );
    assert_eq!(v["schedule"], serde_json::Value::Null);
    assert_eq!(v["room"], ROOM);
    assert_eq!(v["timestamp"], "2025-11-21T11:30:00.000Z");
    let rows: Vec<(&str, &str)> = v["participants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["identity"].as_str().unwrap(),
                p["attendance_status"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            ("1_Test_User", "present"),
            ("2_Test_User", "late"),
            ("3_Test_User", "partial"),
            ("4_Never_Came", "absent"),
        ]
    );
    assert_eq!(v["participants"][1]["attendance_percentage"], 66.7);
    assert_eq!(v["participants"][3]["duration_seconds"], 0);
}

// ---- Rule 6 as a property: any order, any duplicates, same state. ----

fn arb_event() -> impl Strategy<Value = Observation> {
    let user = prop::sample::select(vec!["1", "2"]);
    let sid = prop::sample::select(vec!["PA_a", "PA_b", "PA_c"]);
    let at = (0i64..100).prop_map(|m| T0 + m * 1_000);
    let name = prop::sample::select(vec!["", "Ann", "Bob"]);
    let room_sid = prop::sample::select(vec!["RM_a", "RM_b", ""]);
    (
        0u8..4,
        user,
        sid,
        at,
        0i64..50,
        name,
        room_sid,
        0u32..1_000_000,
    )
        .prop_map(|(kind, user, sid, at, joined_back, name, room_sid, n)| {
            let mut p = who(user, sid);
            p.name = name.to_string();
            let fact = match kind {
                0 => Fact::Joined {
                    participant: p,
                    joined_at: at - joined_back * 1_000,
                },
                1 => Fact::Left {
                    participant: p,
                    joined_at: (joined_back % 2 == 0).then_some(at - joined_back * 1_000),
                },
                2 => Fact::Aborted { participant: p },
                _ => Fact::RoomFinished,
            };
            Observation {
                id: EventId::new(format!("EV_{n}")),
                created_at: at,
                room_sid: RoomSid::new(room_sid),
                metadata_schedule: None,
                fact,
            }
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn rule6_any_order_of_the_same_events_gives_the_same_state(
        (events, order) in prop::collection::vec(arb_event(), 0..24)
            .prop_flat_map(|events| {
                let n = events.len();
                (Just(events), Just((0..n).collect::<Vec<_>>()).prop_shuffle())
            }),
        dup_every in 1usize..5,
    ) {
        let in_order = run(&events);
        // Shuffled, with some events delivered twice (rule 7).
        let mut shuffled = Vec::new();
        for (i, &k) in order.iter().enumerate() {
            shuffled.push(events[k].clone());
            if i % dup_every == 0 {
                shuffled.push(events[k].clone());
            }
        }
        let other = run(&shuffled);
        prop_assert_eq!(&in_order, &other);
        // Equal states read equally, at any instant and window.
        let now = T0 + 200_000;
        let w = Window::between(T0 + 10_000, T0 + 80_000);
        let s = session();
        let roster = Attendance::roster(&s, &in_order, w, now);
        // Not vacuous: every person of the events is read, in user order.
        let people: std::collections::BTreeSet<&str> = events
            .iter()
            .filter_map(|e| match &e.fact {
                Fact::Joined { participant, .. }
                | Fact::Left { participant, .. }
                | Fact::Aborted { participant } => Some(participant.user_id.as_str()),
                _ => None,
            })
            .collect();
        let read: Vec<&str> = roster.iter().map(|a| a.user_id.as_str()).collect();
        prop_assert_eq!(read, people.into_iter().collect::<Vec<_>>());
        prop_assert_eq!(roster, Attendance::roster(&s, &other, w, now));
    }

    #[test]
    fn duration_never_exceeds_the_window_or_the_sum_of_cycles(
        events in prop::collection::vec(arb_event(), 0..24),
        ws in 0i64..100, wl in 0i64..100,
    ) {
        let s = run(&events);
        let now = T0 + 150_000;
        let w = Window::between(T0 + ws * 1_000, T0 + (ws + wl) * 1_000);
        let roster = Attendance::roster(&session(), &s, w, now);
        // Not vacuous: one reading per person.
        prop_assert_eq!(roster.len(), s.people.len());
        for a in roster {
            prop_assert!(a.duration_ms <= wl * 1_000);
            let unbounded = Attendance::read(&session(), &s, &a.user_id, &s.people[&a.user_id], Window::UNBOUNDED, now);
            prop_assert!(a.duration_ms <= unbounded.duration_ms);
            let sum: i64 = unbounded.cycles.iter().map(|c| {
                c.left_at.map_or(now, |l| l.0).max(c.joined_at.0) - c.joined_at.0
            }).sum();
            prop_assert!(unbounded.duration_ms <= sum);
        }
    }
}

fn a_cycle(at: UnixMillis) -> state::Cycle {
    state::Cycle {
        room_sid: RoomSid::new("RM_a"),
        joined_at: at,
        source: JoinSource::Webhook,
        left_at: None,
        timeout_at: None,
        reconciled_at: None,
    }
}

proptest! {
    /// `Cycles` (a sorted `Vec`) behaves as the `BTreeMap` it replaced and
    /// stores the same JSON, so state written by either reads back.
    #[test]
    fn cycles_behave_and_serialize_as_a_btreemap(
        inserts in prop::collection::vec((0u8..8, 0i64..100), 0..20),
    ) {
        let mut model = std::collections::BTreeMap::new();
        let mut cycles = Cycles::default();
        for (sid, at) in inserts {
            let sid = crate::domain::ParticipantSid::new(format!("PA_{sid}"));
            model.entry(sid.clone()).or_insert_with(|| a_cycle(at));
            cycles.get_or_insert_with(&sid, || a_cycle(at));
        }
        prop_assert_eq!(cycles.len(), model.len());
        prop_assert_eq!(cycles.is_empty(), model.is_empty());
        prop_assert!(cycles.iter().eq(model.iter()));
        prop_assert!(cycles.values().eq(model.values()));
        prop_assert!((&cycles).into_iter().eq(model.iter()));
        // Every sid the inserts could have used, present or not.
        for n in 0u8..10 {
            let sid = crate::domain::ParticipantSid::new(format!("PA_{n}"));
            prop_assert_eq!(cycles.get(&sid), model.get(&sid));
            prop_assert_eq!(cycles.contains_key(&sid), model.contains_key(&sid));
            if let Some(c) = model.get(&sid) {
                prop_assert_eq!(&cycles[&sid], c);
            }
        }
        let json = serde_json::to_string(&cycles).unwrap();
        prop_assert_eq!(&json, &serde_json::to_string(&model).unwrap());
        let back: Cycles = serde_json::from_str(&json).unwrap();
        prop_assert_eq!(&back, &cycles);
        let collected: Cycles = model.clone().into_iter().collect();
        prop_assert_eq!(collected, cycles);
    }
}
