//! Stakeholder counters after a randomized sequence of decision moves: a
//! seeded PRNG picks a few hundred operations over a handful of decisions
//! and users — creates, assignments, every transition, escalations by hand,
//! sweeps at a moved clock — and failures: illegal transitions, stale
//! etags, unknown options, unknown decisions, callers without the
//! permission. A small model of the table predicts each outcome; every
//! failure must change nothing, and the counters must equal a recount every
//! few steps and at the end.
//!
//! The seed is in every assertion message; set `DECISION_SEQUENCE_SEED`
//! (decimal or 0x-hex) to replay one.

use std::collections::HashMap;

use chrono::{DateTime, Duration, Utc};
use codeops_proto::decision::{
    AssignDecisionRequest, CancelDecisionRequest, CreateDecisionRequest, Decision, DecisionStatus,
    DeferDecisionRequest, DiscussDecisionRequest, EscalateDecisionRequest,
    MarkDecisionImplementedRequest, ReopenDecisionRequest, RequestDecisionInputRequest,
    ResolveDecisionRequest,
};
use tonic::{Code, Status};
use tonic_types::StatusExt;
use uuid::Uuid;

use super::lifecycle::{Move, TABLE};
use super::stakeholders::{counters_differing_from_a_recount, internal};
use super::{Decisions, decision, time_of};
use crate::common::checks::{missing_permissions, snapshot, violation_fields};
use crate::common::{bearer, ids};

/// Operations per run.
const STEPS: usize = 300;
/// Counters are checked against a recount every this many steps.
const CHECK_EVERY: usize = 10;
/// Decisions the sequence may create (besides the seeded ones).
const MAX_DECISIONS: usize = 16;

/// xorshift64: small, seedable, no dependency.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }

    /// A number in `low..=high`.
    fn between(&mut self, low: i64, high: i64) -> i64 {
        low + (self.next() % (high - low + 1) as u64) as i64
    }
}

fn seed() -> u64 {
    match std::env::var("DECISION_SEQUENCE_SEED") {
        Ok(text) => {
            let text = text.trim();
            match text.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16),
                None => text.parse(),
            }
            .expect("DECISION_SEQUENCE_SEED: a decimal or 0x-hex number")
        }
        Err(_) => 0x00c0_de0b_5eed_2026,
    }
}

/// The seeded users (chain carol → bob → alice, dan → bob).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum User {
    Alice,
    Bob,
    Carol,
    Dan,
}

use User::{Alice, Bob, Carol, Dan};

impl User {
    const ALL: [User; 4] = [Alice, Bob, Carol, Dan];

    fn id(self) -> Uuid {
        match self {
            Alice => ids::ALICE,
            Bob => ids::BOB,
            Carol => ids::CAROL,
            Dan => ids::DAN,
        }
    }

    fn of(id: &str) -> Option<User> {
        User::ALL.into_iter().find(|u| u.id().to_string() == id)
    }

    fn manager(self) -> Option<User> {
        match self {
            Alice => None,
            Bob => Some(Alice),
            Carol | Dan => Some(Bob),
        }
    }

    /// decision.write (OWNER, PRODUCT_LEAD, ENGINEER).
    fn writes(self) -> bool {
        self != Dan
    }

    /// decision.resolve and decision.escalate (OWNER, PRODUCT_LEAD).
    fn resolves(self) -> bool {
        matches!(self, Alice | Bob)
    }
}

// The moves of lifecycle.rs, with what the sequence needs of them.
impl Move {
    /// The moves to draw from: the terminal ones less often, so the
    /// decisions keep moving.
    const WEIGHTED: [Move; 11] = [
        Move::Discuss,
        Move::Discuss,
        Move::RequestInput,
        Move::RequestInput,
        Move::Resolve,
        Move::Resolve,
        Move::Defer,
        Move::Cancel,
        Move::Implement,
        Move::Reopen,
        Move::Reopen,
    ];

    /// product.md's table: the edge exists, and reopening is the one way
    /// back from DECIDED.
    fn allowed_from(self, from: &str) -> bool {
        let edge = TABLE
            .iter()
            .any(|(f, targets)| *f == from && targets.contains(&self.target()));
        edge && (self == Move::Reopen) == (from == "DECIDED" && self.target() == "UNDER_DISCUSSION")
    }

    fn needs_resolve(self) -> bool {
        matches!(self, Move::Resolve | Move::Reopen)
    }
}

/// One write of the sequence, as some user, with some etag.
#[derive(Clone, Debug)]
enum Write {
    Assign(Option<User>),
    Move(Move, &'static str),
    Escalate,
}

impl Write {
    fn permission(&self) -> &'static str {
        match self {
            Write::Move(mv, _) if mv.needs_resolve() => "decision.resolve",
            Write::Escalate => "decision.escalate",
            _ => "decision.write",
        }
    }

    fn allowed_to(&self, user: User) -> bool {
        match self.permission() {
            "decision.write" => user.writes(),
            _ => user.resolves(),
        }
    }
}

fn status_name(d: &Decision) -> &'static str {
    DecisionStatus::try_from(d.status)
        .expect("a status")
        .as_str_name()
        .trim_start_matches("DECISION_STATUS_")
}

fn is_open(d: &Decision) -> bool {
    matches!(status_name(d), "NEEDS_INPUT" | "UNDER_DISCUSSION")
}

fn is_terminal(d: &Decision) -> bool {
    matches!(status_name(d), "IMPLEMENTED" | "CANCELLED")
}

/// escalated-to, else assignee, else owner.
fn holder(d: &Decision) -> Option<User> {
    [&d.escalated_to_id, &d.assigned_to_id, &d.owner_id]
        .into_iter()
        .find(|id| !id.is_empty())
        .map(|id| User::of(id).expect("a seeded user"))
}

/// What a write must answer: the decision after it, or a code and reason.
enum Expected {
    Success,
    Failure(Code, &'static str),
}

/// The model: what `write` by `user` on `current` (given `etag`) answers.
fn expect(current: &Decision, write: &Write, user: User, etag: &str) -> Expected {
    if !write.allowed_to(user) {
        return Expected::Failure(Code::PermissionDenied, "PERMISSION_MISSING");
    }
    if !etag.is_empty() && etag != current.etag {
        return Expected::Failure(Code::Aborted, "ETAG_MISMATCH");
    }
    match write {
        Write::Assign(_) if is_terminal(current) => {
            Expected::Failure(Code::FailedPrecondition, "DECISION_CLOSED")
        }
        Write::Assign(_) => Expected::Success,
        Write::Move(mv, _) if !mv.allowed_from(status_name(current)) => {
            Expected::Failure(Code::FailedPrecondition, "ILLEGAL_TRANSITION")
        }
        Write::Move(Move::Resolve, option) if !option.starts_with("opt-") => {
            Expected::Failure(Code::InvalidArgument, "FIELD_VIOLATIONS")
        }
        Write::Move(..) => Expected::Success,
        Write::Escalate if !is_open(current) => {
            Expected::Failure(Code::FailedPrecondition, "DECISION_NOT_OPEN")
        }
        Write::Escalate => match holder(current).and_then(User::manager) {
            Some(_) => Expected::Success,
            None => Expected::Failure(Code::FailedPrecondition, "NO_ESCALATION_TARGET"),
        },
    }
}

struct Run {
    d: Decisions,
    tokens: HashMap<User, String>,
    seed: u64,
}

impl Run {
    fn token(&self, user: User) -> &str {
        &self.tokens[&user]
    }

    async fn get(&self, id: &str) -> Decision {
        self.d.get(id).await
    }

    async fn send(
        &self,
        user: User,
        id: &str,
        etag: &str,
        write: &Write,
    ) -> Result<Decision, Status> {
        let mut c = self.d.app.decisions();
        let token = self.token(user);
        let (id, etag) = (id.to_owned(), etag.to_owned());
        let answer = match write {
            Write::Assign(to) => {
                c.assign_decision(bearer(
                    AssignDecisionRequest {
                        id,
                        etag,
                        assigned_to_id: to.map(|u| u.id().to_string()).unwrap_or_default(),
                    },
                    token,
                ))
                .await
            }
            Write::Escalate => {
                c.escalate_decision(bearer(
                    EscalateDecisionRequest {
                        id,
                        etag,
                        reason: "the sequence says so".into(),
                    },
                    token,
                ))
                .await
            }
            Write::Move(mv, option) => match mv {
                Move::Discuss => {
                    c.discuss_decision(bearer(DiscussDecisionRequest { id, etag }, token))
                        .await
                }
                Move::RequestInput => {
                    c.request_decision_input(bearer(
                        RequestDecisionInputRequest { id, etag },
                        token,
                    ))
                    .await
                }
                Move::Resolve => {
                    c.resolve_decision(bearer(
                        ResolveDecisionRequest {
                            id,
                            etag,
                            selected_option_id: (*option).into(),
                            rationale: "picked by the sequence".into(),
                        },
                        token,
                    ))
                    .await
                }
                Move::Defer => {
                    c.defer_decision(bearer(
                        DeferDecisionRequest {
                            id,
                            etag,
                            reason: "later".into(),
                        },
                        token,
                    ))
                    .await
                }
                Move::Cancel => {
                    c.cancel_decision(bearer(
                        CancelDecisionRequest {
                            id,
                            etag,
                            reason: "moot".into(),
                        },
                        token,
                    ))
                    .await
                }
                Move::Implement => {
                    c.mark_decision_implemented(bearer(
                        MarkDecisionImplementedRequest { id, etag },
                        token,
                    ))
                    .await
                }
                Move::Reopen => {
                    c.reopen_decision(bearer(
                        ReopenDecisionRequest {
                            id,
                            etag,
                            reason: "new facts".into(),
                        },
                        token,
                    ))
                    .await
                }
            },
        };
        answer.map(tonic::Response::into_inner)
    }

    /// A refused call: its code and reason are the model's, and no table
    /// changed.
    async fn expect_refused(
        &self,
        at: &str,
        code: Code,
        reason: &str,
        call: impl std::future::Future<Output = Result<Decision, Status>>,
    ) -> Status {
        let before = snapshot(&self.d.pool).await;
        let status = match call.await {
            Ok(decision) => panic!("{at}: expected {code:?} ({reason}), got {decision:?}"),
            Err(status) => status,
        };
        assert_eq!(status.code(), code, "{at}: {status:?}");
        let info = status.get_details_error_info();
        assert_eq!(
            info.map(|i| i.reason).as_deref(),
            Some(reason),
            "{at}: {status:?}"
        );
        let after = snapshot(&self.d.pool).await;
        for ((table, a), (_, b)) in before.iter().zip(&after) {
            assert_eq!(
                a, b,
                "{at}: core.{table} changed although the call was refused"
            );
        }
        status
    }

    async fn assert_counters(&self, at: &str) {
        let wrong = counters_differing_from_a_recount(&self.d.pool).await;
        assert!(
            wrong.is_empty(),
            "{at}: counters differ from a recount: {wrong:#?}"
        );
    }

    /// One write by `user` on `id`, checked against the model.
    async fn write(
        &self,
        at: &str,
        user: User,
        id: &str,
        etag: &str,
        write: &Write,
        tally: &mut Tally,
    ) {
        let current = self.get(id).await;
        tally.saw(&current);
        let at = format!(
            "{at}: {user:?} {write:?} on {id} ({}, etag {etag:?})",
            status_name(&current)
        );
        match expect(&current, write, user, etag) {
            Expected::Failure(code, reason) => {
                let status = self
                    .expect_refused(&at, code, reason, self.send(user, id, etag, write))
                    .await;
                if code == Code::PermissionDenied {
                    assert_eq!(missing_permissions(&status), [write.permission()], "{at}");
                }
                if reason == "FIELD_VIOLATIONS" {
                    assert_eq!(violation_fields(&status), ["selected_option_id"], "{at}");
                }
                *tally.failed.entry(reason).or_default() += 1;
            }
            Expected::Success => {
                let after = self
                    .send(user, id, etag, write)
                    .await
                    .unwrap_or_else(|status| panic!("{at}: expected success, got {status:?}"));
                assert_ne!(after.etag, current.etag, "{at}: a new etag");
                tally.saw(&after);
                match write {
                    Write::Assign(to) => {
                        assert_eq!(
                            after.assigned_to_id,
                            to.map(|u| u.id().to_string()).unwrap_or_default(),
                            "{at}"
                        );
                        assert_eq!(after.status, current.status, "{at}");
                    }
                    Write::Move(mv, option) => {
                        assert_eq!(status_name(&after), mv.target(), "{at}");
                        if *mv == Move::Resolve {
                            assert_eq!(after.decided_by_id, user.id().to_string(), "{at}");
                            assert_eq!(
                                after.selected_option.as_ref().map(|o| o.id.as_str()),
                                Some(*option),
                                "{at}"
                            );
                        }
                        if *mv == Move::Reopen {
                            assert!(after.decided_by_id.is_empty(), "{at}: resolution cleared");
                        }
                    }
                    Write::Escalate => {
                        let manager = holder(&current).and_then(User::manager).expect("model");
                        assert_eq!(after.escalated_to_id, manager.id().to_string(), "{at}");
                        assert_eq!(after.escalation_level, current.escalation_level + 1, "{at}");
                    }
                }
                let name = match write {
                    Write::Assign(_) => "assign",
                    Write::Move(mv, _) => mv.target(),
                    Write::Escalate => "escalate",
                };
                *tally.succeeded.entry(name).or_default() += 1;
            }
        }
    }

    /// A sweep at `clock`: every open decision of ours past its deadline
    /// and not flagged for it is escalated to its holder's manager, or
    /// flagged when there is none; nothing else changes.
    async fn sweep(
        &self,
        at: &str,
        sweeper: &codeops_decision::Sweeper,
        clock: DateTime<Utc>,
        ours: &[String],
        tally: &mut Tally,
    ) {
        let mut before = Vec::new();
        for id in ours {
            before.push(self.get(id).await);
        }
        let report = sweeper.sweep(clock).await.expect("sweep");
        assert!(!report.identity_failed, "{at}: {report:?}");
        for current in before {
            let after = self.get(&current.id).await;
            tally.saw(&current);
            tally.saw(&after);
            let at = format!("{at}: sweep at {clock} of {}", current.id);
            let overdue = is_open(&current)
                && time_of(&current.due_time) < clock
                && !current.escalation_flagged;
            if !overdue {
                assert_eq!(after, current, "{at}: not due, untouched");
                continue;
            }
            match holder(&current).and_then(User::manager) {
                Some(manager) => {
                    assert_eq!(after.escalated_to_id, manager.id().to_string(), "{at}");
                    assert_eq!(after.escalation_level, current.escalation_level + 1, "{at}");
                    assert!(time_of(&after.due_time) > clock, "{at}: a new deadline");
                    tally.swept_escalated += 1;
                }
                None => {
                    assert!(
                        after.escalation_flagged,
                        "{at}: flagged: before {current:#?} after {after:#?}"
                    );
                    assert_eq!(after.escalation_level, current.escalation_level, "{at}");
                    tally.swept_flagged += 1;
                }
            }
            assert_eq!(after.status, current.status, "{at}");
        }
    }
}

/// What the sequence did, and what it saw of each decision.
#[derive(Default)]
struct Tally {
    succeeded: HashMap<&'static str, u32>,
    failed: HashMap<&'static str, u32>,
    swept_escalated: u32,
    swept_flagged: u32,
    /// Every etag each decision had, for stale ones.
    etags: HashMap<String, Vec<String>>,
    /// The decisions last seen IMPLEMENTED or CANCELLED.
    closed: std::collections::HashSet<String>,
}

impl Tally {
    /// What the sequence did, for messages.
    fn summary(&self) -> String {
        format!(
            "succeeded {:?}, refused {:?}, sweeps escalated {} and flagged {}",
            self.succeeded, self.failed, self.swept_escalated, self.swept_flagged
        )
    }

    fn saw(&mut self, decision: &Decision) {
        let etags = self.etags.entry(decision.id.clone()).or_default();
        if !etags.contains(&decision.etag) {
            etags.push(decision.etag.clone());
        }
        if is_terminal(decision) {
            self.closed.insert(decision.id.clone());
        }
    }
}

#[tokio::test]
async fn counters_equal_a_recount_after_a_random_sequence_with_failures_and_sweeps() {
    let seed = seed();
    let d = Decisions::spawn().await;
    let mut tokens = HashMap::new();
    for user in User::ALL {
        let email = format!("{}@acme.test", format!("{user:?}").to_lowercase());
        let token = d.app.login_seeded("acme", &email).await;
        tokens.insert(user, token);
    }
    let run = Run { d, tokens, seed };
    let d = &run.d;
    let sweeper = d.sweeper(None).await;
    // Alice and bob are seeded stakeholders; carol becomes one now, dan at
    // some point in the sequence (counted when created).
    d.create_stakeholder(internal(&ids::CAROL.to_string(), "carol@acme.test"))
        .await
        .expect("carol's stakeholder");
    let mut dan_is_stakeholder = false;

    let mut rng = Rng::new(run.seed);
    // Whole seconds, as the database keeps microseconds: a deadline set
    // from one sweep's clock is then exactly comparable with a later one.
    let mut clock = DateTime::from_timestamp(Utc::now().timestamp(), 0).expect("a time");
    let mut ours: Vec<String> = Vec::new();
    let mut tally = Tally::default();
    let create = |user: User, owner: User, sla_hours: i32, title: String| {
        let mut c = run.d.app.decisions();
        let token = run.token(user).to_owned();
        async move {
            c.create_decision(bearer(
                CreateDecisionRequest {
                    decision: Some(Decision {
                        owner_id: owner.id().to_string(),
                        sla_hours,
                        ..decision(&title)
                    }),
                    ..Default::default()
                },
                &token,
            ))
            .await
            .map(tonic::Response::into_inner)
        }
    };
    for i in 0..5 {
        let created = create(
            Alice,
            rng.pick(&User::ALL),
            rng.between(1, 72) as i32,
            format!("seq {i}"),
        )
        .await
        .expect("create");
        tally.saw(&created);
        ours.push(created.id);
    }

    for step in 0..STEPS {
        let at = format!("seed {:#x} (DECISION_SEQUENCE_SEED), step {step}", run.seed);
        // Mostly a decision that can still move.
        let open: Vec<&String> = ours
            .iter()
            .filter(|id| !tally.closed.contains(*id))
            .collect();
        let id = if !open.is_empty() && rng.below(4) != 0 {
            open[rng.below(open.len())].clone()
        } else {
            ours[rng.below(ours.len())].clone()
        };
        let roll = rng.below(100);
        match roll {
            // Create, as a writer or (refused) as the viewer.
            0..=4 => {
                let user = rng.pick(&User::ALL);
                let owner = rng.pick(&User::ALL);
                let sla = rng.between(1, 72) as i32;
                if !user.writes() {
                    run.expect_refused(
                        &format!("{at}: {user:?} creates"),
                        Code::PermissionDenied,
                        "PERMISSION_MISSING",
                        create(user, owner, sla, format!("seq {step}")),
                    )
                    .await;
                    *tally.failed.entry("PERMISSION_MISSING").or_default() += 1;
                } else if ours.len() < MAX_DECISIONS {
                    let created = create(user, owner, sla, format!("seq {step}"))
                        .await
                        .unwrap_or_else(|s| panic!("{at}: create: {s:?}"));
                    assert_eq!(status_name(&created), "NEEDS_INPUT", "{at}");
                    tally.saw(&created);
                    ours.push(created.id);
                    *tally.succeeded.entry("create").or_default() += 1;
                }
            }
            // Assign (or unassign), with the current etag or none.
            5..=19 => {
                let user = rng.pick(&[Alice, Bob, Carol, Carol, Dan]);
                let to = rng.pick(&[Some(Alice), Some(Bob), Some(Carol), Some(Dan), None]);
                let etag = if rng.below(2) == 0 {
                    run.get(&id).await.etag
                } else {
                    String::new()
                };
                run.write(&at, user, &id, &etag, &Write::Assign(to), &mut tally)
                    .await;
            }
            // A transition, legal or not, by anyone.
            20..=59 => {
                let mv = rng.pick(&Move::WEIGHTED);
                let user = rng.pick(&[Alice, Alice, Bob, Bob, Carol, Carol, Dan]);
                let option = rng.pick(&["opt-a", "opt-b"]);
                run.write(&at, user, &id, "", &Write::Move(mv, option), &mut tally)
                    .await;
            }
            // Escalation by hand.
            60..=67 => {
                let user = rng.pick(&[Alice, Bob, Bob, Carol]);
                run.write(&at, user, &id, "", &Write::Escalate, &mut tally)
                    .await;
            }
            // A sweep, the clock moved on by 1 to 36 hours.
            68..=77 => {
                clock += Duration::hours(rng.between(1, 36));
                run.sweep(&at, &sweeper, clock, &ours, &mut tally).await;
            }
            // A stale etag: any write is ABORTED.
            78..=85 => {
                let current = run.get(&id).await.etag;
                let old: Vec<String> = tally.etags[&id]
                    .iter()
                    .filter(|e| **e != current)
                    .cloned()
                    .collect();
                if !old.is_empty() {
                    let stale = old[rng.below(old.len())].clone();
                    let write = match rng.below(3) {
                        0 => Write::Assign(Some(rng.pick(&User::ALL))),
                        1 => Write::Move(rng.pick(&Move::ALL), "opt-a"),
                        _ => Write::Escalate,
                    };
                    run.write(&at, Alice, &id, &stale, &write, &mut tally).await;
                }
            }
            // Resolving with an option the decision does not have.
            86..=91 => {
                run.write(
                    &at,
                    rng.pick(&[Alice, Bob]),
                    &id,
                    "",
                    &Write::Move(Move::Resolve, "no-such-option"),
                    &mut tally,
                )
                .await;
            }
            // A decision that does not exist (or is another tenant's).
            92..=95 => {
                let unknown = if rng.below(2) == 0 {
                    Uuid::new_v4().to_string()
                } else {
                    super::seeded::GLOBEX_OVERDUE.to_string()
                };
                let write = Write::Move(rng.pick(&Move::ALL), "opt-a");
                run.expect_refused(
                    &format!("{at}: {write:?} on unknown {unknown}"),
                    Code::NotFound,
                    "RESOURCE_NOT_FOUND",
                    run.send(Alice, &unknown, "", &write),
                )
                .await;
                *tally.failed.entry("RESOURCE_NOT_FOUND").or_default() += 1;
            }
            // Dan becomes a stakeholder (once); afterwards a step that writes
            // nothing.
            _ => {
                if !dan_is_stakeholder {
                    d.create_stakeholder(internal(&ids::DAN.to_string(), "dan@acme.test"))
                        .await
                        .unwrap_or_else(|s| panic!("{at}: dan's stakeholder: {s:?}"));
                    dan_is_stakeholder = true;
                }
            }
        }
        if step % CHECK_EVERY == CHECK_EVERY - 1 {
            run.assert_counters(&at).await;
        }
    }
    let at = format!("seed {:#x} (DECISION_SEQUENCE_SEED), the end", run.seed);
    run.assert_counters(&at).await;
    // The sequence did what it is for: decisions were resolved, escalated by
    // hand and by the sweeper, and refused for each kind of reason.
    for done in ["DECIDED", "escalate", "assign", "UNDER_DISCUSSION"] {
        assert!(
            tally.succeeded.get(done).copied().unwrap_or(0) > 0,
            "{at}: no successful {done}: {}",
            tally.summary()
        );
    }
    for refused in [
        "ILLEGAL_TRANSITION",
        "ETAG_MISMATCH",
        "FIELD_VIOLATIONS",
        "PERMISSION_MISSING",
        "RESOURCE_NOT_FOUND",
    ] {
        assert!(
            tally.failed.get(refused).copied().unwrap_or(0) > 0,
            "{at}: no {refused}: {}",
            tally.summary()
        );
    }
    assert!(tally.swept_escalated > 0, "{at}: {}", tally.summary());
    eprintln!("{at}: {}", tally.summary());
    run.d.app.shutdown().await;
}
