//! Rules 24–26 (reconciliation with LiveKit) and the contract fields that
//! came with them (`opened_by`, `counting_window`, `late_minutes`).
//! Rule 23 (asking) and 27 (replay) are exercised where the asking and the
//! log live: `reconcile::listing` tests, `ingest` tests, and `tests/it`.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;

use super::test_support::*;
use super::*;
use crate::domain::{EventId, ParticipantSid, RoomSid, Timestamp, UnixMillis, UserId};

fn listing(taken_at: UnixMillis, present: &[(&str, &str, UnixMillis)]) -> Listing {
    Listing {
        taken_at,
        present: present
            .iter()
            .map(|(_, sid, _)| ParticipantSid::new(*sid))
            .collect(),
        joins: present
            .iter()
            .map(|(user, sid, at)| ListedJoin {
                participant: who(user, sid),
                joined_at: *at,
            })
            .collect(),
        metadata_schedule: None,
    }
}

fn none<K: Ord, V>() -> BTreeMap<K, V> {
    BTreeMap::new()
}

/// Plans `listing` against `state` and applies it, as reconciliation does.
fn reconcile(
    state: &mut RoomState,
    id: &str,
    l: &Listing,
    beats: &BTreeMap<UserId, UnixMillis>,
    seen: &BTreeMap<ParticipantSid, UnixMillis>,
) -> ListingPlan {
    let plan = state.plan_listing(l, beats, seen);
    if let Some(fact) = plan.fact.clone() {
        state.apply(&obs(id, l.taken_at, fact));
    }
    plan
}

fn read(state: &RoomState, user: &str, now: UnixMillis) -> Attendance {
    let user = UserId::new(user);
    let session = session();
    let naming = Naming::default();
    let rules = VerdictRules::default();
    RoomView {
        session: &session,
        state,
        naming: &naming,
        rules: &rules,
    }
    .attendance(&user, now)
    .unwrap()
}

#[test]
fn rule24_a_listed_participant_with_no_cycle_gets_one_opened_by_reconciliation() {
    let mut s = RoomState::default();
    let plan = reconcile(
        &mut s,
        "L1",
        &listing(T0 + 5 * MIN, &[("1", "PA_a", T0 + 1_234)]),
        &none(),
        &none(),
    );
    assert!(!plan.is_empty());
    let a = read(&s, "1", T0 + 10 * MIN);
    assert_eq!(a.cycles.len(), 1);
    assert_eq!(a.cycles[0].opened_by, OpenedBy::Reconciliation);
    assert_eq!(a.cycles[0].joined_at, Timestamp(T0 + 1_234));
    assert_eq!(a.cycles[0].closed_by, None);
    assert!(a.is_currently_in_meeting);
    assert_eq!(a.duration_ms, 10 * MIN - 1_234);
}

#[test]
fn rule24_a_late_webhook_join_adds_nothing_and_makes_no_second_cycle() {
    let l = listing(T0 + 5 * MIN, &[("1", "PA_a", T0)]);
    let mut listed_first = RoomState::default();
    reconcile(&mut listed_first, "L1", &l, &none(), &none());
    let before = listed_first.clone();
    let changes = listed_first.apply(&join("e1", "1", "PA_a", T0));
    assert!(changes.is_empty(), "nothing to broadcast");
    assert_eq!(listed_first, before, "the same fact again: nothing changes");
    let a = read(&listed_first, "1", T0 + 10 * MIN);
    assert_eq!(a.cycles.len(), 1, "no second cycle");
    assert_eq!(
        a.cycles[0].opened_by,
        OpenedBy::Reconciliation,
        "what happened"
    );
    // A webhook that came first: the listing finds nothing to do.
    let mut webhook_first = run(&[join("e1", "1", "PA_a", T0)]);
    assert!(webhook_first.plan_listing(&l, &none(), &none()).is_empty());
    // And the two facts, once both are in a log, merge alike in either
    // order (rule 6; replay applies them in log order, rule 27).
    let fact = Fact::Listing {
        opens: l.joins.clone(),
        closes: vec![],
    };
    webhook_first.apply(&obs("L1", l.taken_at, fact));
    assert_eq!(webhook_first, listed_first);
}

#[test]
fn rule24_a_listing_never_moves_a_join_a_webhook_gave() {
    let mut s = run(&[join("e1", "1", "PA_a", T0 + MIN)]);
    let l = listing(T0 + 5 * MIN, &[("1", "PA_a", T0)]);
    assert!(reconcile(&mut s, "L1", &l, &none(), &none()).is_empty());
    assert_eq!(
        read(&s, "1", T0 + 5 * MIN).cycles[0].joined_at,
        Timestamp(T0 + MIN)
    );
}

#[test]
fn rule24_a_listing_gives_the_exact_join_a_lone_leave_could_only_bound() {
    // The join webhook was lost; the leave carried no joinedAt. The leave
    // alone makes a zero-length cycle; the listing knew the real join.
    let mut s = run(&[leave("e2", "1", "PA_a", None, T0 + 30 * MIN)]);
    assert_eq!(read(&s, "1", T0 + 40 * MIN).duration_ms, 0);
    let mut listed = RoomState::default();
    reconcile(
        &mut listed,
        "L1",
        &listing(T0 + 10 * MIN, &[("1", "PA_a", T0)]),
        &none(),
        &none(),
    );
    listed.apply(&leave("e2", "1", "PA_a", None, T0 + 30 * MIN));
    let a = read(&listed, "1", T0 + 40 * MIN);
    assert_eq!(a.duration_ms, 30 * MIN);
    assert_eq!(a.cycles[0].closed_by, Some(ClosedBy::Webhook));
    // In the other order too.
    reconcile(
        &mut s,
        "L1",
        &listing(T0 + 10 * MIN, &[("1", "PA_a", T0)]),
        &none(),
        &none(),
    );
    assert_eq!(s, listed);
}

#[test]
fn rule25_an_unlisted_open_cycle_closes_at_the_last_instant_rollcall_knew_the_person_there() {
    let base = run(&[join("e1", "1", "PA_a", T0)]);
    let taken = T0 + 20 * MIN;
    let cases: [(&str, Option<UnixMillis>, Option<UnixMillis>, UnixMillis); 4] = [
        ("only the join", None, None, T0),
        ("a later heartbeat", Some(T0 + 7 * MIN), None, T0 + 7 * MIN),
        (
            "a later listing that had it",
            None,
            Some(T0 + 12 * MIN),
            T0 + 12 * MIN,
        ),
        (
            "the latest of both",
            Some(T0 + 14 * MIN),
            Some(T0 + 12 * MIN),
            T0 + 14 * MIN,
        ),
    ];
    for (what, beat, seen, expected) in cases {
        let beats: BTreeMap<_, _> = beat.map(|b| (UserId::new("1"), b)).into_iter().collect();
        let seen: BTreeMap<_, _> = seen
            .map(|s| (ParticipantSid::new("PA_a"), s))
            .into_iter()
            .collect();
        let mut s = base.clone();
        reconcile(&mut s, "L1", &listing(taken, &[]), &beats, &seen);
        let a = read(&s, "1", taken + MIN);
        assert_eq!(a.cycles[0].left_at, Some(Timestamp(expected)), "{what}");
        assert_eq!(
            a.cycles[0].closed_by,
            Some(ClosedBy::Reconciliation),
            "{what}"
        );
        assert_eq!(a.cycles[0].opened_by, OpenedBy::Webhook, "{what}");
        assert!(!a.is_currently_in_meeting, "{what}");
        assert!(
            !s.is_in_meeting(&UserId::new("1")),
            "{what}: heartbeats now answer false"
        );
    }
}

#[test]
fn rule25_a_cycle_joined_30_s_or_less_before_the_listing_is_left_open() {
    let taken = T0 + 10 * MIN;
    let young = run(&[join("e1", "1", "PA_a", taken - LISTING_GRACE_MS)]);
    assert!(
        young
            .plan_listing(&listing(taken, &[]), &none(), &none())
            .is_empty()
    );
    let old = run(&[join("e1", "1", "PA_a", taken - LISTING_GRACE_MS - 1)]);
    assert!(
        !old.plan_listing(&listing(taken, &[]), &none(), &none())
            .is_empty()
    );
}

#[test]
fn rule25_a_room_livekit_no_longer_has_closes_every_open_cycle() {
    let mut s = run(&[
        join("e1", "1", "PA_a", T0),
        join("e2", "2", "PA_b", T0 + MIN),
        join("e3", "3", "PA_c", T0 + 2 * MIN),
        leave("e4", "3", "PA_c", Some(T0 + 2 * MIN), T0 + 3 * MIN),
    ]);
    // The room is gone: an empty listing.
    let gone = Listing {
        taken_at: T0 + 30 * MIN,
        ..Listing::default()
    };
    reconcile(&mut s, "L1", &gone, &none(), &none());
    for (user, closed_by) in [
        ("1", ClosedBy::Reconciliation),
        ("2", ClosedBy::Reconciliation),
        ("3", ClosedBy::Webhook),
    ] {
        assert_eq!(
            read(&s, user, T0 + 40 * MIN).cycles[0].closed_by,
            Some(closed_by),
            "{user}"
        );
    }
}

#[test]
fn rule25_a_real_leave_replaces_the_estimate_earlier_or_later() {
    for leave_at in [T0 + 5 * MIN, T0 + 25 * MIN] {
        let mut s = run(&[join("e1", "1", "PA_a", T0)]);
        let seen = [(ParticipantSid::new("PA_a"), T0 + 15 * MIN)].into();
        reconcile(&mut s, "L1", &listing(T0 + 30 * MIN, &[]), &none(), &seen);
        assert_eq!(read(&s, "1", T0 + 40 * MIN).duration_ms, 15 * MIN);
        s.apply(&leave("e2", "1", "PA_a", Some(T0), leave_at));
        let a = read(&s, "1", T0 + 40 * MIN);
        assert_eq!(a.cycles[0].closed_by, Some(ClosedBy::Webhook));
        assert_eq!(a.duration_ms, leave_at - T0);
    }
}

#[test]
fn rule26_a_listing_that_agrees_changes_nothing() {
    let s = run(&[
        join("e1", "1", "PA_a", T0),
        join("e2", "2", "PA_b", T0),
        leave("e3", "2", "PA_b", Some(T0), T0 + MIN),
    ]);
    let taken = T0 + 10 * MIN;
    // Still there: untouched. Closed but listed again: never reopened.
    let l = listing(taken, &[("1", "PA_a", T0), ("2", "PA_b", T0)]);
    assert!(s.plan_listing(&l, &none(), &none()).is_empty());
    let mut after = s.clone();
    reconcile(&mut after, "L1", &l, &none(), &none());
    assert_eq!(after, s);
    assert!(!after.is_in_meeting(&UserId::new("2")));
}

#[test]
fn rule26_a_cycle_closed_otherwise_is_not_closed_again() {
    let mut s = run(&[join("e1", "1", "PA_a", T0)]);
    s.close_stale(&[(UserId::new("1"), ParticipantSid::new("PA_a"), T0 + 3 * MIN)]);
    assert!(
        s.plan_listing(&listing(T0 + 30 * MIN, &[]), &none(), &none())
            .is_empty()
    );
    let finished = run(&[
        join("e1", "1", "PA_a", T0),
        finish("f", "RM_a", T0 + 9 * MIN),
    ]);
    assert!(
        finished
            .plan_listing(&listing(T0 + 30 * MIN, &[]), &none(), &none())
            .is_empty()
    );
}

#[test]
fn the_earliest_reconciliation_closure_wins_in_any_order() {
    let close = |at| Fact::Listing {
        opens: vec![],
        closes: vec![ListedClose {
            user_id: UserId::new("1"),
            sid: ParticipantSid::new("PA_a"),
            at,
        }],
    };
    let j = join("e1", "1", "PA_a", T0);
    let a = obs("L1", T0 + 20 * MIN, close(T0 + 5 * MIN));
    let b = obs("L2", T0 + 30 * MIN, close(T0 + 8 * MIN));
    let ab = run(&[j.clone(), a.clone(), b.clone()]);
    assert_eq!(ab, run(&[j, b, a]));
    assert_eq!(read(&ab, "1", T0 + 40 * MIN).duration_ms, 5 * MIN);
}

#[test]
fn a_listing_after_finalization_makes_a_new_revision() {
    let mut s = run(&[join("e1", "1", "PA_a", T0)]);
    s.set_schedule(Some(Schedule::new(Timestamp(T0), 30, vec![]).unwrap()));
    s.finalize();
    assert_eq!(s.finalization.revision, 1);
    // Finalization already closed the open cycle at the window end.
    assert!(
        s.plan_listing(&listing(T0 + 40 * MIN, &[]), &none(), &none())
            .is_empty()
    );
    // A join LiveKit never delivered changes the final verdict: revision 2.
    reconcile(
        &mut s,
        "L1",
        &listing(T0 + 40 * MIN, &[("2", "PA_b", T0 + MIN)]),
        &none(),
        &none(),
    );
    assert_eq!(s.finalization.revision, 2);
}

#[test]
fn counting_window_and_late_minutes_follow_the_schedule() {
    let mut s = run(&[
        join("e1", "1", "PA_a", T0 + 20 * MIN + 59_999),
        join("e2", "2", "PA_b", T0 + 2 * MIN),
    ]);
    let no_schedule = read(&s, "1", T0 + 30 * MIN);
    assert_eq!(no_schedule.counting_window, None);
    assert_eq!(no_schedule.late_minutes, None);
    s.set_schedule(Some(Schedule::new(Timestamp(T0), 60, vec![]).unwrap()));
    let late = read(&s, "1", T0 + 30 * MIN);
    assert_eq!(
        late.counting_window,
        Some(view::CountingWindow {
            starts_at: Timestamp(T0),
            ends_at: Timestamp(T0 + 60 * MIN)
        })
    );
    assert_eq!(late.is_late, Some(true));
    assert_eq!(late.late_minutes, Some(20), "whole minutes, rounded down");
    let on_time = read(&s, "2", T0 + 30 * MIN);
    assert_eq!(on_time.is_late, Some(false));
    assert_eq!(on_time.late_minutes, Some(0));
    let json = serde_json::to_value(&late).unwrap();
    assert_eq!(
        json["counting_window"]["starts_at"],
        "2025-11-21T10:00:00.000Z"
    );
    assert_eq!(
        json["counting_window"]["ends_at"],
        "2025-11-21T11:00:00.000Z"
    );
    assert_eq!(json["late_minutes"], 20);
    assert_eq!(json["cycles"][0]["opened_by"], "webhook");
}

#[test]
fn an_expected_absentee_has_a_window_and_no_late_minutes() {
    let mut s = RoomState::default();
    s.set_schedule(Some(
        Schedule::new(
            Timestamp(T0),
            60,
            vec![crate::domain::Identity::new("7_Absent")],
        )
        .unwrap(),
    ));
    let session = session();
    let naming = Naming::default();
    let rules = VerdictRules::default();
    let view = RoomView {
        session: &session,
        state: &s,
        naming: &naming,
        rules: &rules,
    };
    let roster = view.roster(T0 + 10 * MIN);
    assert_eq!(roster.len(), 1);
    assert!(roster[0].counting_window.is_some());
    assert_eq!(roster[0].late_minutes, None);
}

fn arb_fact() -> impl Strategy<Value = Observation> {
    let user = prop_oneof![Just("1"), Just("2")];
    let sid = prop_oneof![Just("PA_a"), Just("PA_b"), Just("PA_c")];
    let at = (0i64..60).prop_map(|m| T0 + m * MIN);
    prop_oneof![
        (user.clone(), sid.clone(), at.clone(), 0u32..1000).prop_map(|(u, s, at, n)| join(
            &format!("j{n}"),
            u,
            s,
            at
        )),
        (
            user.clone(),
            sid.clone(),
            at.clone(),
            any::<bool>(),
            0u32..1000
        )
            .prop_map(|(u, s, at, with_join, n)| {
                leave(
                    &format!("l{n}"),
                    u,
                    s,
                    with_join.then_some(at - 5 * MIN),
                    at,
                )
            }),
        (user, sid, at.clone(), 0u32..1000).prop_map(|(u, s, at, n)| Observation {
            id: EventId::new(format!("L{n}")),
            created_at: at + MIN,
            room_sid: RoomSid::new("RM_a"),
            metadata_schedule: None,
            fact: Fact::Listing {
                opens: vec![ListedJoin {
                    participant: who(u, s),
                    joined_at: at,
                }],
                closes: vec![],
            },
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Rule 6 with listings: the joins a listing merges commute with every
    /// webhook fact, so any order of the same facts gives the same state.
    #[test]
    fn listing_joins_and_webhooks_commute(
        facts in prop::collection::vec(arb_fact(), 1..12),
        seed in any::<u64>(),
    ) {
        let forward = run(&facts);
        let mut shuffled = facts.clone();
        // A deterministic shuffle from the seed.
        let mut x = seed | 1;
        for i in (1..shuffled.len()).rev() {
            x ^= x << 13; x ^= x >> 7; x ^= x << 17;
            shuffled.swap(i, (x % (i as u64 + 1)) as usize);
        }
        prop_assert_eq!(&run(&shuffled), &forward);
        let doubled: Vec<Observation> = facts.iter().chain(facts.iter()).cloned().collect();
        prop_assert_eq!(run(&doubled), forward);
    }

    /// A plan applied once leaves nothing for the same listing to do.
    #[test]
    fn a_listing_applied_plans_nothing_the_second_time(
        facts in prop::collection::vec(arb_fact(), 0..10),
        present in prop::collection::btree_set(0usize..3, 0..3),
        taken in 0i64..90,
    ) {
        let mut s = run(&facts);
        let sids = ["PA_a", "PA_b", "PA_c"];
        let listed: Vec<(&str, &str, UnixMillis)> =
            present.iter().map(|i| ("1", sids[*i], T0 + (*i as i64) * MIN)).collect();
        let l = listing(T0 + taken * MIN, &listed);
        reconcile(&mut s, "Lx", &l, &none(), &none());
        prop_assert!(s.plan_listing(&l, &none(), &none()).is_empty());
        let present: BTreeSet<_> = l.present.clone();
        for person in s.people.values() {
            for (sid, c) in &person.cycles {
                if present.contains(sid) {
                    continue;
                }
                // Unlisted and old enough: closed, one way or another.
                if c.joined_at < l.taken_at - LISTING_GRACE_MS {
                    prop_assert!(s.closure(c).is_some());
                }
            }
        }
    }
}

#[test]
fn rule21_26_a_listing_brings_a_metadata_schedule_only_when_it_is_new() {
    let hour = Schedule::new(Timestamp(T0), 60, vec![]).unwrap();
    let with = |schedule: &Schedule| Listing {
        metadata_schedule: Some(schedule.clone()),
        ..listing(T0 + 5 * MIN, &[])
    };
    // No metadata schedule known yet: the listing's is news.
    let mut s = RoomState::default();
    let plan = s.plan_listing(&with(&hour), &none(), &none());
    assert_eq!(plan.metadata_schedule, Some(hour.clone()));
    assert_eq!(plan.fact, None, "nobody to open or close");
    assert!(!plan.is_empty(), "a schedule alone is something to write");
    s.apply(&Observation {
        metadata_schedule: plan.metadata_schedule,
        ..obs("L1", T0 + 5 * MIN, Fact::RoomStarted)
    });
    assert_eq!(s.effective_schedule(), Some(&hour));
    // The same schedule again: nothing to write (rule 26).
    assert!(s.plan_listing(&with(&hour), &none(), &none()).is_empty());
    // A different one is news again.
    let half = Schedule::new(Timestamp(T0), 30, vec![]).unwrap();
    assert_eq!(
        s.plan_listing(&with(&half), &none(), &none())
            .metadata_schedule,
        Some(half)
    );
    // No schedule in the listing: none planned.
    assert!(
        s.plan_listing(&listing(T0 + 5 * MIN, &[]), &none(), &none())
            .is_empty()
    );
}

#[test]
fn rule24_25_one_listing_reports_each_person_it_touched_once() {
    // Person 1 has two unlisted tabs and a listed new one; person 2 is gone.
    let mut s = run(&[
        join("e1", "1", "PA_a", T0),
        join("e2", "1", "PA_b", T0),
        join("e3", "2", "PA_c", T0),
    ]);
    let plan = s.plan_listing(
        &listing(
            T0 + 10 * MIN,
            &[("1", "PA_d", T0 + 9 * MIN), ("1", "PA_e", T0 + 9 * MIN)],
        ),
        &none(),
        &none(),
    );
    let changes = s.apply(&obs("L1", T0 + 10 * MIN, plan.fact.unwrap()));
    assert_eq!(changes.people, vec![UserId::new("1"), UserId::new("2")]);
    assert!(!changes.everyone);
}

#[test]
fn rule24_stored_state_keeps_opened_by_and_webhook_cycles_keep_their_old_shape() {
    // A listing-opened cycle, an inferred join and a webhook join.
    let mut s = run(&[
        join("e1", "1", "PA_a", T0),
        leave("e2", "2", "PA_b", None, T0 + 5 * MIN),
    ]);
    reconcile(
        &mut s,
        "L1",
        &listing(T0 + 5 * MIN, &[("3", "PA_c", T0 + MIN)]),
        &none(),
        &none(),
    );
    let json = serde_json::to_value(&s).unwrap();
    let cycle = |user: &str, sid: &str| json["people"][user]["cycles"][sid].clone();
    // A webhook's join is stored as state written before reconciliation
    // existed, so either version reads the other's state.
    assert_eq!(cycle("1", "PA_a").get("source"), None);
    assert_eq!(cycle("2", "PA_b")["source"], "inferred");
    assert_eq!(cycle("3", "PA_c")["source"], "listing");
    // Read back, the state is the same: `opened_by` survives a restart.
    let back: RoomState = serde_json::from_value(json).unwrap();
    assert_eq!(back, s);
    assert_eq!(
        read(&back, "3", T0 + 10 * MIN).cycles[0].opened_by,
        OpenedBy::Reconciliation
    );
}
