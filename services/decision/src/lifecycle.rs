//! product.md's decision table ("Decisions"), written once and read by
//! every transition. Each edge is made by exactly one method: a move names
//! its method, and the table lists the moves each status allows.

use codeops_platform::convert::{enum_from_db, enum_to_db};
use codeops_platform::{ApiError, Lifecycle};
use codeops_proto::decision::DecisionStatus;

use DecisionStatus as S;

/// One transition method.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecisionMove {
    Discuss,
    RequestInput,
    Resolve,
    Defer,
    Cancel,
    Implement,
    Reopen,
}

use DecisionMove as M;

impl DecisionMove {
    pub fn target(self) -> DecisionStatus {
        match self {
            M::Discuss | M::Reopen => S::UnderDiscussion,
            M::RequestInput => S::NeedsInput,
            M::Resolve => S::Decided,
            M::Defer => S::Deferred,
            M::Cancel => S::Cancelled,
            M::Implement => S::Implemented,
        }
    }

    pub fn method(self) -> &'static str {
        match self {
            M::Discuss => "DiscussDecision",
            M::RequestInput => "RequestDecisionInput",
            M::Resolve => "ResolveDecision",
            M::Defer => "DeferDecision",
            M::Cancel => "CancelDecision",
            M::Implement => "MarkDecisionImplemented",
            M::Reopen => "ReopenDecision",
        }
    }
}

/// Decision status: from → the moves it allows (product.md's table: every
/// edge once).
pub const DECISION_LIFECYCLE: Lifecycle<DecisionStatus, DecisionMove> = Lifecycle::new(&[
    (
        S::NeedsInput,
        &[M::Discuss, M::Resolve, M::Defer, M::Cancel],
    ),
    (
        S::UnderDiscussion,
        &[M::RequestInput, M::Resolve, M::Defer, M::Cancel],
    ),
    (S::Decided, &[M::Implement, M::Reopen]),
    (S::Deferred, &[M::RequestInput, M::Discuss, M::Cancel]),
    (S::Implemented, &[]),
    (S::Cancelled, &[]),
]);

/// Open decisions have a deadline and can be escalated.
pub fn is_open(status: DecisionStatus) -> bool {
    matches!(status, S::NeedsInput | S::UnderDiscussion)
}

pub fn status_db(status: DecisionStatus) -> &'static str {
    enum_to_db(status.as_str_name(), "DECISION_STATUS_")
}

pub fn status_from_db(text: &str) -> DecisionStatus {
    enum_from_db(text, "DECISION_STATUS_", DecisionStatus::from_str_name)
}

/// `ILLEGAL_TRANSITION` for a move the table does not allow from `from`.
pub fn illegal_move(from: DecisionStatus, mv: DecisionMove) -> ApiError {
    let allowed: Vec<(String, &str)> = DECISION_LIFECYCLE
        .targets(from)
        .iter()
        .map(|m| (status_db(m.target()).to_owned(), m.method()))
        .collect();
    ApiError::illegal_transition(
        "decision",
        status_db(from),
        status_db(mv.target()),
        &allowed,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every edge of product.md's table is made by exactly one move.
    #[test]
    fn each_edge_has_one_method() {
        for (from, moves) in DECISION_LIFECYCLE.edges {
            let mut targets: Vec<_> = moves.iter().map(|m| m.target()).collect();
            let len = targets.len();
            targets.sort_by_key(|t| *t as i32);
            targets.dedup();
            assert_eq!(
                targets.len(),
                len,
                "{from:?} reaches a status by two methods"
            );
        }
    }
}
