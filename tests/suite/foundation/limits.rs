//! Size limits: a list of the largest rows the API accepts still fits a
//! default client's 4 MiB message limit, page after page.

use codeops_proto::identity::{CreateTeamRequest, ListTeamsRequest, Team};

use crate::common::{TestApp, bearer};

/// A settings document just under the 16 KiB cap.
fn big_settings(seed: usize) -> prost_types::Struct {
    let mut fields = std::collections::BTreeMap::new();
    for i in 0..15 {
        fields.insert(
            format!("k{seed}_{i}"),
            prost_types::Value {
                kind: Some(prost_types::value::Kind::StringValue("x".repeat(1_000))),
            },
        );
    }
    prost_types::Struct { fields }
}

#[tokio::test]
async fn more_than_a_page_of_the_largest_teams_lists_within_default_client_limits() {
    let app = TestApp::spawn().await;
    let alice = app.login_seeded("acme", "alice@acme.test").await;
    let created = 110;
    for i in 0..created {
        let team = Team {
            name: format!("Team {i} {}", "n".repeat(200)),
            slug: format!("big-team-{i}"),
            description: "d".repeat(255),
            settings: Some(big_settings(i)),
            ..Default::default()
        };
        app.teams()
            .create_team(bearer(
                CreateTeamRequest {
                    team: Some(team),
                    ..Default::default()
                },
                &alice,
            ))
            .await
            .unwrap_or_else(|s| panic!("create team {i}: {s:?}"));
    }

    // The generated client keeps tonic's default 4 MiB decoding limit.
    let mut seen = std::collections::HashSet::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = app
            .teams()
            .list_teams(bearer(
                ListTeamsRequest {
                    page_size: 100,
                    page_token: token.clone(),
                    ..Default::default()
                },
                &alice,
            ))
            .await
            .expect("a page of the largest teams fits the default client limit")
            .into_inner();
        pages += 1;
        assert!(!page.teams.is_empty(), "empty page {pages}");
        for team in &page.teams {
            assert!(
                seen.insert(team.id.clone()),
                "team {} listed twice",
                team.id
            );
        }
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert!(pages >= 2, "110+ teams at 100 per page take two pages");
    // The seeded acme teams plus the ones made here.
    assert!(
        seen.len() >= created,
        "listed {} of {created}+ teams",
        seen.len()
    );
    app.shutdown().await;
}
