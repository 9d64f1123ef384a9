//! The two lifecycle tables of product.md ("Planning lifecycle"), written
//! once and read by every transition. Each move is one custom method named
//! for where it goes; a move is legal exactly when the table lists its
//! target under the current status.

use codeops_platform::convert::{enum_from_db, enum_to_db};
use codeops_platform::{ApiError, Lifecycle};
use codeops_proto::planning::{HypothesisStatus, OutcomeStatus};

use OutcomeStatus as O;

/// Outcome status: from → to.
pub const OUTCOME_LIFECYCLE: Lifecycle<OutcomeStatus> = Lifecycle::new(&[
    (O::Draft, &[O::NotStarted, O::InProgress, O::Abandoned]),
    (O::NotStarted, &[O::InProgress, O::Abandoned]),
    (O::InProgress, &[O::Validating, O::Abandoned]),
    (
        O::Validating,
        &[O::Validated, O::Invalidated, O::InProgress, O::Abandoned],
    ),
    (O::Validated, &[]),
    (O::Invalidated, &[]),
    (O::Abandoned, &[]),
]);

/// The method that moves an outcome to `to`.
pub fn outcome_method(to: OutcomeStatus) -> &'static str {
    match to {
        O::NotStarted => "PlanOutcome",
        O::InProgress => "StartOutcome",
        O::Validating => "SubmitOutcomeForValidation",
        O::Validated => "ValidateOutcome",
        O::Invalidated => "InvalidateOutcome",
        O::Abandoned => "AbandonOutcome",
        O::Draft | O::Unspecified => "CreateOutcome",
    }
}

pub fn outcome_status_db(status: OutcomeStatus) -> &'static str {
    enum_to_db(status.as_str_name(), "OUTCOME_STATUS_")
}

pub fn outcome_status_from_db(text: &str) -> OutcomeStatus {
    enum_from_db(text, "OUTCOME_STATUS_", OutcomeStatus::from_str_name)
}

/// `ILLEGAL_TRANSITION` for an outcome move the table does not allow.
pub fn illegal_outcome_move(from: OutcomeStatus, to: OutcomeStatus) -> ApiError {
    let allowed: Vec<(String, &str)> = OUTCOME_LIFECYCLE
        .targets(from)
        .iter()
        .map(|t| (outcome_status_db(*t).to_owned(), outcome_method(*t)))
        .collect();
    ApiError::illegal_transition(
        "outcome",
        outcome_status_db(from),
        outcome_status_db(to),
        &allowed,
    )
}

use HypothesisStatus as H;

/// Where a hypothesis move goes: a status, or back to the status a BLOCKED
/// hypothesis was blocked from (product.md: "the status it was blocked
/// from (unblock)").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HypothesisTarget {
    To(HypothesisStatus),
    BlockedFrom,
}

use HypothesisTarget::{BlockedFrom, To};

/// Hypothesis status: from → to.
pub const HYPOTHESIS_LIFECYCLE: Lifecycle<HypothesisStatus, HypothesisTarget> = Lifecycle::new(&[
    (H::Draft, &[To(H::Ready), To(H::Abandoned)]),
    (
        H::Ready,
        &[To(H::Building), To(H::Blocked), To(H::Abandoned)],
    ),
    (
        H::Building,
        &[To(H::Deployed), To(H::Blocked), To(H::Abandoned)],
    ),
    (
        H::Deployed,
        &[To(H::Measuring), To(H::Blocked), To(H::Abandoned)],
    ),
    (
        H::Measuring,
        &[
            To(H::Validated),
            To(H::Invalidated),
            To(H::Blocked),
            To(H::Abandoned),
        ],
    ),
    (H::Blocked, &[BlockedFrom, To(H::Abandoned)]),
    (H::Validated, &[]),
    (H::Invalidated, &[]),
    (H::Abandoned, &[]),
]);

/// The method that makes a hypothesis move.
pub fn hypothesis_method(target: HypothesisTarget) -> &'static str {
    match target {
        BlockedFrom => "UnblockHypothesis",
        To(H::Ready) => "MarkHypothesisReady",
        To(H::Building) => "StartBuildingHypothesis",
        To(H::Deployed) => "MarkHypothesisDeployed",
        To(H::Measuring) => "StartMeasuringHypothesis",
        To(H::Blocked) => "BlockHypothesis",
        To(H::Validated | H::Invalidated) => "ConcludeHypothesis",
        To(H::Abandoned) => "AbandonHypothesis",
        To(H::Draft | H::Unspecified) => "CreateHypothesis",
    }
}

pub fn hypothesis_status_db(status: HypothesisStatus) -> &'static str {
    enum_to_db(status.as_str_name(), "HYPOTHESIS_STATUS_")
}

pub fn hypothesis_status_from_db(text: &str) -> HypothesisStatus {
    enum_from_db(text, "HYPOTHESIS_STATUS_", HypothesisStatus::from_str_name)
}

/// `ILLEGAL_TRANSITION` for a hypothesis move the table does not allow;
/// `blocked_from` names where a BLOCKED one would return.
pub fn illegal_hypothesis_move(
    from: HypothesisStatus,
    target: HypothesisTarget,
    blocked_from: HypothesisStatus,
) -> ApiError {
    let resolve = |t: HypothesisTarget| match t {
        To(status) => status,
        BlockedFrom => blocked_from,
    };
    let allowed: Vec<(String, &str)> = HYPOTHESIS_LIFECYCLE
        .targets(from)
        .iter()
        .map(|t| {
            (
                hypothesis_status_db(resolve(*t)).to_owned(),
                hypothesis_method(*t),
            )
        })
        .collect();
    let to = match target {
        To(status) => hypothesis_status_db(status),
        // Unblocking a hypothesis that is not blocked.
        BlockedFrom => "the status it was blocked from",
    };
    ApiError::illegal_transition("hypothesis", hypothesis_status_db(from), to, &allowed)
}
