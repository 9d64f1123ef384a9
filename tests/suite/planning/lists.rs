//! ListOutcomes and ListHypotheses: typed filters, the three orderings, and
//! keyset pages that see every row exactly once while rows are inserted.

use std::collections::{BTreeMap, BTreeSet};

use codeops_proto::planning::{
    ListHypothesesRequest, ListOutcomesRequest, Outcome, OutcomeOrderBy, OutcomePriority,
    OutcomeStatus,
};
use tonic::Code;

use super::{Planning, outcome, seeded};
use crate::common::bearer;
use crate::common::checks::{expect_code, expect_invalid, id};

/// Every page of `request` (page size 3), inserting an outcome after each
/// page when `insert` is set; returns the outcomes in the order received.
async fn all_pages(p: &Planning, request: ListOutcomesRequest, insert: bool) -> Vec<Outcome> {
    let mut seen = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = p
            .app
            .outcomes()
            .list_outcomes(bearer(
                ListOutcomesRequest {
                    page_size: 3,
                    page_token: token.clone(),
                    ..request.clone()
                },
                &p.alice,
            ))
            .await
            .expect("ListOutcomes")
            .into_inner();
        assert!(page.outcomes.len() <= 3);
        seen.extend(page.outcomes);
        pages += 1;
        if insert {
            let n = seen.len();
            p.create_outcome(Outcome {
                target_date: format!("2030-01-{:02}", 1 + n % 28),
                priority: [1, 2, 3, 4, 5][n % 5],
                ..outcome(&format!("inserted while paging {n}"))
            })
            .await;
        }
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
        assert!(pages < 200, "paging does not end");
    }
    seen
}

/// Outcomes spread over dates (some without), priorities and times.
async fn spread(p: &Planning) {
    for i in 0..14 {
        p.create_outcome(Outcome {
            target_date: if i % 4 == 0 {
                String::new()
            } else {
                format!("2030-0{}-1{}", 1 + i % 3, i % 2)
            },
            priority: 1 + (i % 5),
            tags: if i % 2 == 0 {
                vec!["even".into()]
            } else {
                vec![]
            },
            ..outcome(&format!("spread {i}"))
        })
        .await;
    }
}

fn sort_key(order: OutcomeOrderBy, o: &Outcome) -> (i64, String, i64, i64, String) {
    let created = o.create_time.as_ref().expect("create time");
    let micros = created.seconds * 1_000_000 + i64::from(created.nanos / 1000);
    match order {
        OutcomeOrderBy::TargetDate => (
            0,
            if o.target_date.is_empty() {
                "9999-99-99".into()
            } else {
                o.target_date.clone()
            },
            micros,
            0,
            o.id.clone(),
        ),
        // Priority numbers: CRITICAL = 1 is the most urgent.
        OutcomeOrderBy::Priority => (
            i64::from(o.priority),
            String::new(),
            -micros,
            0,
            String::new(),
        ),
        _ => (0, String::new(), -micros, 0, String::new()),
    }
}

#[tokio::test]
async fn every_ordering_pages_through_every_row_once_while_rows_are_inserted() {
    let p = Planning::spawn().await;
    spread(&p).await;
    for order in [
        OutcomeOrderBy::Unspecified,
        OutcomeOrderBy::CreateTimeDesc,
        OutcomeOrderBy::TargetDate,
        OutcomeOrderBy::Priority,
    ] {
        let existing: BTreeSet<String> =
            sqlx::query_scalar("SELECT id::text FROM core.outcomes WHERE tenant_id = $1")
                .bind(crate::common::ids::ACME)
                .fetch_all(&p.pool)
                .await
                .expect("existing ids")
                .into_iter()
                .collect();
        let request = ListOutcomesRequest {
            order_by: order as i32,
            ..Default::default()
        };
        let seen = all_pages(&p, request, true).await;
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for o in &seen {
            *counts.entry(o.id.as_str()).or_default() += 1;
        }
        let twice: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
        assert!(twice.is_empty(), "{order:?}: rows seen twice: {twice:?}");
        let missing: Vec<_> = existing
            .iter()
            .filter(|id| !counts.contains_key(id.as_str()))
            .collect();
        assert!(
            missing.is_empty(),
            "{order:?}: rows never seen: {missing:?}"
        );
        // In order, rows inserted meanwhile included.
        for pair in seen.windows(2) {
            let (a, b) = (sort_key(order, &pair[0]), sort_key(order, &pair[1]));
            if order != OutcomeOrderBy::TargetDate {
                assert!(
                    a <= b,
                    "{order:?}: {} before {}",
                    pair[0].title,
                    pair[1].title
                );
            } else {
                assert!(
                    a.1 <= b.1,
                    "{order:?}: {} before {}",
                    pair[0].title,
                    pair[1].title
                );
            }
        }
    }
}

#[tokio::test]
async fn list_outcomes_filters_combine() {
    let p = Planning::spawn().await;
    spread(&p).await;
    let list = |request: ListOutcomesRequest| {
        let p = &p;
        async move { all_pages(p, request, false).await }
    };
    let critical_even = list(ListOutcomesRequest {
        priorities: vec![
            OutcomePriority::Critical as i32,
            OutcomePriority::High as i32,
        ],
        tag: "even".into(),
        ..Default::default()
    })
    .await;
    assert!(!critical_even.is_empty());
    for o in &critical_even {
        assert!(
            o.priority <= 2 && o.tags.contains(&"even".to_owned()),
            "{o:?}"
        );
    }
    let dated = list(ListOutcomesRequest {
        target_date_from: "2030-02-01".into(),
        target_date_to: "2030-02-28".into(),
        ..Default::default()
    })
    .await;
    assert!(!dated.is_empty());
    assert!(dated.iter().all(|o| o.target_date.starts_with("2030-02")));
    let texts = list(ListOutcomesRequest {
        query: "SPREAD 1".into(),
        ..Default::default()
    })
    .await;
    let titles: BTreeSet<_> = texts.iter().map(|o| o.title.as_str()).collect();
    assert!(
        titles.contains("spread 1") && titles.contains("spread 13"),
        "{titles:?}"
    );
    let by_status = list(ListOutcomesRequest {
        statuses: vec![OutcomeStatus::Validated as i32],
        status: OutcomeStatus::InProgress as i32,
        ..Default::default()
    })
    .await;
    let ids: BTreeSet<_> = by_status.iter().map(|o| o.id.clone()).collect();
    assert_eq!(
        ids,
        [id(seeded::ACME_ACTIVATION), id(seeded::ACME_LATENCY)]
            .into_iter()
            .collect()
    );
    let by_team = list(ListOutcomesRequest {
        team_id: id(seeded::ACME_TEAM),
        ..Default::default()
    })
    .await;
    assert_eq!(by_team.len(), 2, "the Growth team's two seeded outcomes");
    // Another tenant's team matches nothing.
    let foreign = list(ListOutcomesRequest {
        team_id: id(seeded::GLOBEX_TEAM),
        ..Default::default()
    })
    .await;
    assert!(foreign.is_empty());
}

#[tokio::test]
async fn page_tokens_are_bound_to_their_filters_and_order() {
    let p = Planning::spawn().await;
    spread(&p).await;
    let first = p
        .app
        .outcomes()
        .list_outcomes(bearer(
            ListOutcomesRequest {
                page_size: 2,
                order_by: OutcomeOrderBy::Priority as i32,
                ..Default::default()
            },
            &p.alice,
        ))
        .await
        .expect("ListOutcomes")
        .into_inner();
    assert!(!first.next_page_token.is_empty());
    for other in [
        ListOutcomesRequest {
            order_by: OutcomeOrderBy::TargetDate as i32,
            ..Default::default()
        },
        ListOutcomesRequest {
            order_by: OutcomeOrderBy::Priority as i32,
            tag: "even".into(),
            ..Default::default()
        },
    ] {
        expect_invalid(
            p.app
                .outcomes()
                .list_outcomes(bearer(
                    ListOutcomesRequest {
                        page_token: first.next_page_token.clone(),
                        ..other
                    },
                    &p.alice,
                ))
                .await,
            "page_token",
        );
    }
    for bad in [
        ListOutcomesRequest {
            statuses: vec![99],
            ..Default::default()
        },
        ListOutcomesRequest {
            order_by: 9,
            ..Default::default()
        },
        ListOutcomesRequest {
            target_date_from: "tomorrow".into(),
            ..Default::default()
        },
        ListOutcomesRequest {
            page_token: "garbage".into(),
            ..Default::default()
        },
    ] {
        expect_code(
            p.app.outcomes().list_outcomes(bearer(bad, &p.alice)).await,
            Code::InvalidArgument,
        );
    }
}

#[tokio::test]
async fn list_hypotheses_filters_by_outcome_status_and_text() {
    let p = Planning::spawn().await;
    for i in 0..5 {
        p.create_hypothesis(&id(seeded::ACME_ACTIVATION), &format!("extra {i}"))
            .await;
    }
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = p
            .app
            .hypotheses()
            .list_hypotheses(bearer(
                ListHypothesesRequest {
                    outcome_id: id(seeded::ACME_ACTIVATION),
                    page_size: 2,
                    page_token: token,
                    ..Default::default()
                },
                &p.alice,
            ))
            .await
            .expect("ListHypotheses")
            .into_inner();
        seen.extend(page.hypotheses);
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seen.len(), 8, "three seeded and five new");
    let ids: BTreeSet<_> = seen.iter().map(|h| h.id.clone()).collect();
    assert_eq!(ids.len(), 8);
    let drafts = p
        .app
        .hypotheses()
        .list_hypotheses(bearer(
            ListHypothesesRequest {
                statuses: vec![1],
                query: "EXTRA".into(),
                ..Default::default()
            },
            &p.alice,
        ))
        .await
        .expect("ListHypotheses")
        .into_inner();
    assert_eq!(drafts.hypotheses.len(), 5);
    let tagged = p
        .app
        .hypotheses()
        .list_hypotheses(bearer(
            ListHypothesesRequest {
                tag: "onboarding".into(),
                ..Default::default()
            },
            &p.alice,
        ))
        .await
        .expect("ListHypotheses")
        .into_inner();
    assert_eq!(
        tagged.hypotheses.len(),
        3,
        "the seeded onboarding hypotheses"
    );
}
