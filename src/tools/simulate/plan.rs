//! The meeting `rollcall simulate` plays, decided up front and pure: who
//! comes, when each connection opens and closes, when heartbeats go out.
//! Times are offsets from the moment the simulation starts; the session
//! starts after `prep` and lasts `minutes`. Everything scales with the
//! session's length, so a 1-minute run shows the same story as an hour.
//! A seed fixes every choice (names, jitter), so a run can be repeated.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

/// First and last names of the academy's people (Arabic, and a few
/// English), combined into identities `{user_id}_{First}_{Last}`.
const NAMES: &[(&str, &str)] = &[
    ("Ameer", "Maher"),
    ("Fatima", "Zahra"),
    ("Omar", "Khaled"),
    ("Layla", "Hassan"),
    ("Yusuf", "Ibrahim"),
    ("Mariam", "Saleh"),
    ("Ahmed", "Nasser"),
    ("Huda", "Karim"),
    ("Khalid", "Mansour"),
    ("Sara", "Adel"),
    ("Bilal", "Hamdan"),
    ("Noor", "Aziz"),
    ("Emily", "Clark"),
    ("Daniel", "Brooks"),
    ("Aisha", "Rahman"),
    ("Hamza", "Yousef"),
];

/// What one person does, in the order people are added: the first nine
/// cover every case the dashboard must show; more people come on time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Joins during preparation and is still there when the room finishes
    /// (`room_finished` closes the cycle after the end; once final, the
    /// roster reports the earlier session end).
    EarlyStaysToTheEnd,
    /// Joins on time, leaves after the end.
    OnTime,
    /// Joins late (30 % in), stays.
    Late,
    /// Joins on time; 40 % in, their page stops heartbeating and LiveKit's
    /// leave never arrives: the server's heartbeat timeout closes them.
    LostLeave,
    /// Leaves 40 % in and re-joins a little later: a new connection, a new
    /// sid.
    Reconnects,
    /// Opens a second tab (a second sid at once) from 30 % to 60 % in.
    TwoTabs,
    /// Expected, never comes.
    NeverComes,
    /// Joins 60 % in.
    VeryLate,
    /// Joins during preparation, leaves after the end.
    Early,
}

const ROLES: [Role; 9] = [
    Role::EarlyStaysToTheEnd,
    Role::OnTime,
    Role::Late,
    Role::LostLeave,
    Role::Reconnects,
    Role::TwoTabs,
    Role::NeverComes,
    Role::VeryLate,
    Role::Early,
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Person {
    pub identity: String,
    pub name: String,
    pub role: Role,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Act {
    /// `participant_joined` for this person's `connection`-th connection.
    Join {
        person: usize,
        connection: u32,
        why: &'static str,
    },
    /// `participant_left` for it.
    Leave {
        person: usize,
        connection: u32,
        why: &'static str,
    },
    /// The page of `person` stops heartbeating; nothing is sent (a lost
    /// leave). Listed so the run says when it happens.
    GoesSilent { person: usize },
    /// One heartbeat from each of these people's pages.
    Heartbeats { people: Vec<usize> },
    /// `room_finished`.
    RoomFinished,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub at: Duration,
    pub act: Act,
}

#[derive(Debug, Clone)]
pub struct Plan {
    pub people: Vec<Person>,
    /// When the session starts (after preparation).
    pub starts_after: Duration,
    pub minutes: u32,
    /// In time order.
    pub steps: Vec<Step>,
}

/// The knobs of a plan.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub people: usize,
    pub prep: Duration,
    pub minutes: u32,
    pub heartbeat_every: Duration,
    pub seed: u64,
}

/// One open connection: from `from` to `to` (`None`: until the room
/// finishes); `silent_from`: heartbeats stop then and no leave is sent.
struct Stay {
    connection: u32,
    from: Duration,
    to: Option<Duration>,
    why: &'static str,
    /// Why it closes before the end (after it: "after the end").
    left_why: &'static str,
}

impl Plan {
    pub fn new(shape: Shape) -> Self {
        let mut rng = StdRng::seed_from_u64(shape.seed);
        let session = Duration::from_secs(u64::from(shape.minutes.max(1)) * 60);
        let start = shape.prep;
        let end = start + session;
        // Leaves just after the end, then the room finishes: each a 50th
        // of the session later (at least a second), so the order is clear.
        let gap = (session / 50).max(Duration::from_secs(1));
        let leave_after_end = end + gap;
        let room_finished = leave_after_end + gap;

        let mut names = NAMES.to_vec();
        names.shuffle(&mut rng);
        let first_id: u32 = rng.random_range(10..90);
        let mut people = Vec::with_capacity(shape.people);
        let mut stays: Vec<Vec<Stay>> = Vec::with_capacity(shape.people);
        let mut silent: Vec<Option<Duration>> = Vec::with_capacity(shape.people);
        for i in 0..shape.people {
            let role = ROLES.get(i).copied().unwrap_or(Role::OnTime);
            let (first, last) = names[i % names.len()];
            let user_id = first_id + u32::try_from(i).unwrap_or(u32::MAX - first_id);
            people.push(Person {
                identity: format!("{user_id}_{first}_{last}"),
                name: format!("{first} {last}"),
                role,
            });
            // A point `f` of the way through the session, give or take 1 %
            // of it, so runs with different seeds differ a little.
            let mut into = |f: f64| {
                let jitter = rng.random_range(-0.01..=0.01);
                start + session.mul_f64((f + jitter).clamp(0.0, 1.0))
            };
            let stay = |connection, from, to, why| Stay {
                connection,
                from,
                to,
                why,
                left_why: "leaves early",
            };
            let end_leave = Some(leave_after_end);
            let (list, quiet) = match role {
                Role::EarlyStaysToTheEnd => (
                    vec![stay(1, shape.prep.mul_f64(0.2), None, "during preparation")],
                    None,
                ),
                Role::Early => (
                    vec![stay(
                        1,
                        shape.prep.mul_f64(0.5),
                        end_leave,
                        "during preparation",
                    )],
                    None,
                ),
                Role::OnTime => (vec![stay(1, into(0.02), end_leave, "on time")], None),
                Role::Late => (vec![stay(1, into(0.30), end_leave, "late")], None),
                Role::VeryLate => (vec![stay(1, into(0.60), end_leave, "very late")], None),
                Role::LostLeave => {
                    let join = into(0.02);
                    let quiet = into(0.40);
                    (vec![stay(1, join, None, "on time")], Some(quiet))
                }
                Role::Reconnects => {
                    let leave = into(0.40);
                    let rejoin = leave + session / 20;
                    (
                        vec![
                            Stay {
                                left_why: "drops out, will re-join",
                                ..stay(1, into(0.03), Some(leave), "on time")
                            },
                            stay(2, rejoin, end_leave, "re-joins: a new sid"),
                        ],
                        None,
                    )
                }
                Role::TwoTabs => (
                    vec![
                        stay(1, into(0.05), end_leave, "on time"),
                        Stay {
                            left_why: "closes the second tab",
                            ..stay(2, into(0.30), Some(into(0.60)), "opens a second tab")
                        },
                    ],
                    None,
                ),
                Role::NeverComes => (vec![], None),
            };
            stays.push(list);
            silent.push(quiet);
        }

        let mut steps = Vec::new();
        for (person, list) in stays.iter().enumerate() {
            for s in list {
                steps.push(Step {
                    at: s.from,
                    act: Act::Join {
                        person,
                        connection: s.connection,
                        why: s.why,
                    },
                });
                if let Some(to) = s.to {
                    let why = if to >= end {
                        "after the end"
                    } else {
                        s.left_why
                    };
                    steps.push(Step {
                        at: to,
                        act: Act::Leave {
                            person,
                            connection: s.connection,
                            why,
                        },
                    });
                }
            }
            if let Some(at) = silent[person] {
                steps.push(Step {
                    at,
                    act: Act::GoesSilent { person },
                });
            }
        }
        // Heartbeat rounds, as every open page sends them.
        let every = shape.heartbeat_every.max(Duration::from_millis(100));
        let mut at = every;
        while at < room_finished {
            let people: Vec<usize> = (0..people.len())
                .filter(|&p| {
                    let connected = stays[p]
                        .iter()
                        .any(|s| s.from <= at && s.to.is_none_or(|to| at < to));
                    connected && silent[p].is_none_or(|quiet| at < quiet)
                })
                .collect();
            if !people.is_empty() {
                steps.push(Step {
                    at,
                    act: Act::Heartbeats { people },
                });
            }
            at += every;
        }
        steps.push(Step {
            at: room_finished,
            act: Act::RoomFinished,
        });
        // Stable: a join listed before its leave stays before it.
        steps.sort_by_key(|s| s.at);
        Self {
            people,
            starts_after: start,
            minutes: shape.minutes.max(1),
            steps,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(seed: u64) -> Shape {
        Shape {
            people: 9,
            prep: Duration::from_secs(30),
            minutes: 3,
            heartbeat_every: Duration::from_secs(15),
            seed,
        }
    }

    fn joins(plan: &Plan, person: usize) -> Vec<(Duration, u32)> {
        plan.steps
            .iter()
            .filter_map(|s| match s.act {
                Act::Join {
                    person: p,
                    connection,
                    ..
                } if p == person => Some((s.at, connection)),
                _ => None,
            })
            .collect()
    }

    fn leaves(plan: &Plan, person: usize) -> Vec<(Duration, u32)> {
        plan.steps
            .iter()
            .filter_map(|s| match s.act {
                Act::Leave {
                    person: p,
                    connection,
                    ..
                } if p == person => Some((s.at, connection)),
                _ => None,
            })
            .collect()
    }

    fn heartbeats(plan: &Plan, person: usize) -> Vec<Duration> {
        plan.steps
            .iter()
            .filter_map(|s| match &s.act {
                Act::Heartbeats { people } if people.contains(&person) => Some(s.at),
                _ => None,
            })
            .collect()
    }

    fn who(plan: &Plan, role: Role) -> usize {
        plan.people.iter().position(|p| p.role == role).unwrap()
    }

    #[test]
    fn the_same_seed_plays_the_same_meeting() {
        let (a, b, c) = (
            Plan::new(shape(1)),
            Plan::new(shape(1)),
            Plan::new(shape(2)),
        );
        assert_eq!(a.steps, b.steps);
        assert_eq!(a.people, b.people);
        assert!(a.steps != c.steps || a.people != c.people);
    }

    #[test]
    fn nine_people_cover_every_case() {
        let plan = Plan::new(shape(3));
        let start = plan.starts_after;
        let end = start + Duration::from_secs(180);
        assert_eq!(plan.people.len(), 9);
        for p in &plan.people {
            let (id, rest) = p.identity.split_once('_').unwrap();
            assert!(id.parse::<u32>().is_ok(), "{}", p.identity);
            assert_eq!(rest.replace('_', " "), p.name);
        }
        let early = who(&plan, Role::EarlyStaysToTheEnd);
        assert!(joins(&plan, early)[0].0 < start, "joins in preparation");
        assert!(leaves(&plan, early).is_empty(), "room_finished closes them");
        let reconnects = who(&plan, Role::Reconnects);
        let j = joins(&plan, reconnects);
        let l = leaves(&plan, reconnects);
        assert_eq!(j.iter().map(|x| x.1).collect::<Vec<_>>(), [1, 2]);
        assert!(l[0].1 == 1 && l[0].0 < j[1].0, "left before re-joining");
        let tabs = who(&plan, Role::TwoTabs);
        let j = joins(&plan, tabs);
        let l = leaves(&plan, tabs);
        assert!(
            j[1].0 < l.iter().find(|x| x.1 == 1).unwrap().0,
            "both open at once"
        );
        let lost = who(&plan, Role::LostLeave);
        assert!(leaves(&plan, lost).is_empty(), "the leave never arrives");
        let last_beat = *heartbeats(&plan, lost).last().unwrap();
        assert!(last_beat < start + Duration::from_secs(80), "{last_beat:?}");
        assert!(heartbeats(&plan, lost).len() >= 2);
        let never = who(&plan, Role::NeverComes);
        assert!(joins(&plan, never).is_empty() && heartbeats(&plan, never).is_empty());
        let late = who(&plan, Role::Late);
        assert!(joins(&plan, late)[0].0 > start + Duration::from_secs(45));
        // Ends with room_finished after everyone's leave.
        let last = plan.steps.last().unwrap();
        assert_eq!(last.act, Act::RoomFinished);
        assert!(last.at > end);
        assert!(plan.steps.windows(2).all(|w| w[0].at <= w[1].at));
    }

    #[test]
    fn heartbeats_come_only_from_open_pages() {
        let plan = Plan::new(shape(4));
        let on_time = who(&plan, Role::OnTime);
        let (joined, _) = joins(&plan, on_time)[0];
        let (left, _) = leaves(&plan, on_time)[0];
        let beats = heartbeats(&plan, on_time);
        assert!(beats.iter().all(|&t| joined <= t && t < left));
        assert!(
            beats
                .windows(2)
                .all(|w| w[1] - w[0] == Duration::from_secs(15))
        );
    }

    #[test]
    fn any_number_of_people_and_a_one_minute_session() {
        let plan = Plan::new(Shape {
            people: 20,
            prep: Duration::ZERO,
            minutes: 1,
            heartbeat_every: Duration::from_secs(5),
            seed: 5,
        });
        assert_eq!(plan.people.len(), 20);
        let mut ids: Vec<_> = plan.people.iter().map(|p| &p.identity).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 20, "identities are distinct");
        assert!(plan.people[9..].iter().all(|p| p.role == Role::OnTime));
        assert_eq!(
            Plan::new(Shape {
                people: 2,
                ..shape(1)
            })
            .people
            .len(),
            2
        );
    }
}
