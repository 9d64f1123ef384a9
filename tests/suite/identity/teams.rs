//! TeamService: teams and their members, with permissions, audit rows and
//! bad input.

use std::collections::BTreeSet;

use codeops_proto::identity::{
    AddTeamMemberRequest, CreateTeamRequest, DeleteTeamRequest, GetTeamRequest,
    ListTeamMembersRequest, ListTeamsRequest, RemoveTeamMemberRequest, Team, TeamRole,
    UpdateTeamRequest,
};
use prost_types::value::Kind;
use tonic::Code;
use uuid::Uuid;

use crate::common::{TestApp, bearer, ids, random_id};
use crate::identity::support::*;

fn team(name: &str, slug: &str) -> Team {
    Team {
        name: name.to_owned(),
        slug: slug.to_owned(),
        ..Default::default()
    }
}

pub fn settings(fields: &[(&str, Kind)]) -> prost_types::Struct {
    prost_types::Struct {
        fields: fields
            .iter()
            .map(|(k, v)| {
                (
                    (*k).to_owned(),
                    prost_types::Value {
                        kind: Some(v.clone()),
                    },
                )
            })
            .collect(),
    }
}

async fn create_team(app: &TestApp, token: &str, t: Team) -> Team {
    app.teams()
        .create_team(bearer(
            CreateTeamRequest {
                team: Some(t),
                ..Default::default()
            },
            token,
        ))
        .await
        .expect("create team")
        .into_inner()
}

fn add(team: Uuid, user: Uuid, role: TeamRole) -> AddTeamMemberRequest {
    AddTeamMemberRequest {
        team_id: id(team),
        user_id: id(user),
        team_role: role as i32,
    }
}

// ---------------------------------------------------------------------------
// CreateTeam

#[tokio::test]
async fn create_team_returns_the_team_and_audits_create() {
    let app = TestApp::spawn().await;
    let pool = app.admin_pool().await;
    let alice = app.login_seeded("acme", "alice@acme.test").await;
    let rid = new_request_id("create-team");
    let created = app
        .teams()
        .create_team(call(
            CreateTeamRequest {
                team: Some(Team {
                    name: "Data".into(),
                    slug: "data-team".into(),
                    description: "Pipelines and dashboards".into(),
                    icon_url: "https://cdn.acme.test/data.svg".into(),
                    color: "#a1b2c3".into(),
                    lead_id: id(ids::CAROL),
                    settings: Some(settings(&[
                        ("slack", Kind::StringValue("#data".into())),
                        ("size", Kind::NumberValue(4.0)),
                    ])),
                    ..Default::default()
                }),
                ..Default::default()
            },
            &alice,
            &rid,
        ))
        .await
        .expect("create team")
        .into_inner();
    assert_eq!(created.slug, "data-team");
    assert_eq!(created.lead_id, id(ids::CAROL));
    assert!(created.is_active);
    assert!(!created.etag.is_empty());
    let stored = created.settings.expect("settings");
    assert_eq!(
        stored.fields["slack"].kind,
        Some(Kind::StringValue("#data".into()))
    );
    assert_eq!(stored.fields["size"].kind, Some(Kind::NumberValue(4.0)));

    let row = the_audit_row(&pool, &rid).await;
    assert_audit(
        &row,
        "CREATE",
        Some(ids::ALICE),
        "team",
        Uuid::parse_str(&created.id).unwrap(),
    );
    assert_eq!(row.request_id.as_deref(), Some(rid.as_str()));
    assert_eq!(row.new_json()["slug"], "data-team");
}

#[tokio::test]
async fn a_product_lead_can_create_a_team() {
    let app = TestApp::spawn().await;
    let bob = app.login_seeded("acme", "bob@acme.test").await;
    let created = create_team(&app, &bob, team("Mobile", "mobile")).await;
    assert_eq!(created.name, "Mobile");
}

#[tokio::test]
async fn create_team_with_a_taken_slug_is_already_exists() {
    let app = TestApp::spawn().await;
    let pool = app.admin_pool().await;
    let alice = app.login_seeded("acme", "alice@acme.test").await;
    let before = snapshot(&pool).await;
    expect_code(
        app.teams()
            .create_team(bearer(
                CreateTeamRequest {
                    team: Some(team("Growth again", "growth")),
                    ..Default::default()
                },
                &alice,
            ))
            .await,
        Code::AlreadyExists,
    );
    assert_unchanged(&before, &snapshot(&pool).await);
    // Slugs are unique per tenant only.
    let erin = app.login_seeded("globex", "erin@globex.test").await;
    create_team(&app, &erin, team("Growth", "growth")).await;
}

#[tokio::test]
async fn create_team_rejects_each_bad_field_and_changes_nothing() {
    let app = TestApp::spawn().await;
    let pool = app.admin_pool().await;
    let alice = app.login_seeded("acme", "alice@acme.test").await;
    let good = || team("Good", "good");
    let cases: Vec<(&str, Team)> = vec![
        (
            "team.name",
            Team {
                name: String::new(),
                ..good()
            },
        ),
        (
            "team.name",
            Team {
                name: "n".repeat(256),
                ..good()
            },
        ),
        (
            "team.name",
            Team {
                name: "nul\0byte".into(),
                ..good()
            },
        ),
        (
            "team.slug",
            Team {
                slug: String::new(),
                ..good()
            },
        ),
        (
            "team.slug",
            Team {
                slug: "Not A Slug".into(),
                ..good()
            },
        ),
        (
            "team.slug",
            Team {
                slug: "double--dash".into(),
                ..good()
            },
        ),
        (
            "team.slug",
            Team {
                slug: "s".repeat(256),
                ..good()
            },
        ),
        (
            "team.description",
            Team {
                description: "d".repeat(256),
                ..good()
            },
        ),
        (
            "team.icon_url",
            Team {
                icon_url: "ftp://x/y.png".into(),
                ..good()
            },
        ),
        (
            "team.color",
            Team {
                color: "red".into(),
                ..good()
            },
        ),
        (
            "team.color",
            Team {
                color: "#12345g".into(),
                ..good()
            },
        ),
        (
            "team.lead_id",
            Team {
                lead_id: "carol".into(),
                ..good()
            },
        ),
        (
            "team.settings",
            Team {
                settings: Some(settings(&[("n", Kind::NumberValue(f64::NAN))])),
                ..good()
            },
        ),
        (
            "team.settings",
            Team {
                settings: Some(settings(&[("n", Kind::NumberValue(f64::INFINITY))])),
                ..good()
            },
        ),
        (
            "team.settings",
            Team {
                settings: Some(prost_types::Struct {
                    fields: [("unset".to_owned(), prost_types::Value { kind: None })].into(),
                }),
                ..good()
            },
        ),
    ];
    let before = snapshot(&pool).await;
    for (field, t) in cases {
        expect_invalid(
            app.teams()
                .create_team(bearer(
                    CreateTeamRequest {
                        team: Some(t),
                        ..Default::default()
                    },
                    &alice,
                ))
                .await,
            field,
        );
    }
    assert_unchanged(&before, &snapshot(&pool).await);
}

#[tokio::test]
async fn an_unknown_team_lead_is_reported_on_team_lead_id() {
    let app = TestApp::spawn().await;
    let pool = app.admin_pool().await;
    let alice = app.login_seeded("acme", "alice@acme.test").await;
    let before = snapshot(&pool).await;
    expect_invalid(
        app.teams()
            .create_team(bearer(
                CreateTeamRequest {
                    team: Some(Team {
                        lead_id: id(random_id()),
                        ..team("Ghost-led", "ghost-led")
                    }),
                    ..Default::default()
                },
                &alice,
            ))
            .await,
        "team.lead_id",
    );
    expect_invalid(
        app.teams()
            .update_team(bearer(
                UpdateTeamRequest {
                    team: Some(Team {
                        id: id(teams::GROWTH),
                        lead_id: id(random_id()),
                        ..Default::default()
                    }),
                    update_mask: mask(&["lead_id"]),
                },
                &alice,
            ))
            .await,
        "team.lead_id",
    );
    assert_unchanged(&before, &snapshot(&pool).await);
}

// ---------------------------------------------------------------------------
// GetTeam and ListTeams

#[tokio::test]
async fn get_team_returns_a_team_of_the_tenant() {
    let app = TestApp::spawn().await;
    let dan = app.login_seeded("acme", "dan@acme.test").await;
    let growth = app
        .teams()
        .get_team(bearer(
            GetTeamRequest {
                id: id(teams::GROWTH),
            },
            &dan,
        ))
        .await
        .expect("get team")
        .into_inner();
    assert_eq!(growth.slug, "growth");
    assert_eq!(growth.lead_id, id(ids::BOB));
    assert_eq!(growth.color, "#22c55e");
    let settings = growth.settings.expect("settings");
    assert_eq!(
        settings.fields["slack_channel"].kind,
        Some(Kind::StringValue("#team-growth".into()))
    );
}

#[tokio::test]
async fn get_team_of_an_unknown_id_is_not_found_and_a_malformed_id_is_invalid() {
    let app = TestApp::spawn().await;
    let dan = app.login_seeded("acme", "dan@acme.test").await;
    expect_code(
        app.teams()
            .get_team(bearer(
                GetTeamRequest {
                    id: id(random_id()),
                },
                &dan,
            ))
            .await,
        Code::NotFound,
    );
    expect_invalid(
        app.teams()
            .get_team(bearer(
                GetTeamRequest {
                    id: "growth".into(),
                },
                &dan,
            ))
            .await,
        "id",
    );
}

#[tokio::test]
async fn team_reads_need_team_read() {
    let app = TestApp::spawn().await;
    let (_, token) = acme_user_with(&app, &["user.read"]).await;
    expect_denied(
        app.teams()
            .get_team(bearer(
                GetTeamRequest {
                    id: id(teams::GROWTH),
                },
                &token,
            ))
            .await,
        "team.read",
    );
    expect_denied(
        app.teams()
            .list_teams(bearer(ListTeamsRequest::default(), &token))
            .await,
        "team.read",
    );
    expect_denied(
        app.teams()
            .list_team_members(bearer(
                ListTeamMembersRequest {
                    team_id: id(teams::GROWTH),
                    ..Default::default()
                },
                &token,
            ))
            .await,
        "team.read",
    );
}

#[tokio::test]
async fn list_teams_leaves_out_archived_teams_unless_asked() {
    let app = TestApp::spawn().await;
    let alice = app.login_seeded("acme", "alice@acme.test").await;
    app.teams()
        .delete_team(bearer(
            DeleteTeamRequest {
                id: id(teams::PLATFORM),
            },
            &alice,
        ))
        .await
        .expect("archive platform");
    let slugs = |teams: Vec<Team>| teams.into_iter().map(|t| t.slug).collect::<Vec<_>>();
    let active = app
        .teams()
        .list_teams(bearer(ListTeamsRequest::default(), &alice))
        .await
        .expect("list")
        .into_inner()
        .teams;
    assert_eq!(slugs(active), ["growth"]);
    let all = app
        .teams()
        .list_teams(bearer(
            ListTeamsRequest {
                include_archived: true,
                ..Default::default()
            },
            &alice,
        ))
        .await
        .expect("list")
        .into_inner()
        .teams;
    assert_eq!(slugs(all), ["growth", "platform"]);
}

#[tokio::test]
async fn list_teams_filters_by_text() {
    let app = TestApp::spawn().await;
    let dan = app.login_seeded("acme", "dan@acme.test").await;
    let teams = app
        .teams()
        .list_teams(bearer(
            ListTeamsRequest {
                query: "PLAT".into(),
                ..Default::default()
            },
            &dan,
        ))
        .await
        .expect("list")
        .into_inner()
        .teams;
    assert_eq!(teams.len(), 1);
    assert_eq!(teams[0].id, id(teams::PLATFORM));
}

#[tokio::test]
async fn list_teams_pages_with_page_tokens() {
    let app = TestApp::spawn().await;
    let alice = app.login_seeded("acme", "alice@acme.test").await;
    for i in 0..3 {
        create_team(
            &app,
            &alice,
            team(&format!("Team {i}"), &format!("team-{i}")),
        )
        .await;
    }
    let mut seen = Vec::new();
    let mut token = String::new();
    let mut sizes = Vec::new();
    loop {
        let page = app
            .teams()
            .list_teams(bearer(
                ListTeamsRequest {
                    page_size: 2,
                    page_token: token.clone(),
                    ..Default::default()
                },
                &alice,
            ))
            .await
            .expect("page")
            .into_inner();
        sizes.push(page.teams.len());
        seen.extend(page.teams.into_iter().map(|t| t.slug));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
        assert!(sizes.len() < 10);
    }
    assert_eq!(sizes, [2, 2, 1]);
    assert_eq!(seen, ["growth", "platform", "team-0", "team-1", "team-2"]);
}

// ---------------------------------------------------------------------------
// UpdateTeam

#[tokio::test]
async fn update_team_changes_the_masked_fields_and_audits_update() {
    let app = TestApp::spawn().await;
    let pool = app.admin_pool().await;
    let alice = app.login_seeded("acme", "alice@acme.test").await;
    let rid = new_request_id("update-team");
    let updated = app
        .teams()
        .update_team(call(
            UpdateTeamRequest {
                team: Some(Team {
                    id: id(teams::GROWTH),
                    name: "Growth & Retention".into(),
                    lead_id: id(ids::CAROL),
                    settings: Some(settings(&[(
                        "slack_channel",
                        Kind::StringValue("#grow".into()),
                    )])),
                    // Not in the mask: ignored.
                    slug: "renamed".into(),
                    ..Default::default()
                }),
                update_mask: mask(&["name", "lead_id", "settings"]),
            },
            &alice,
            &rid,
        ))
        .await
        .expect("update team")
        .into_inner();
    assert_eq!(updated.name, "Growth & Retention");
    assert_eq!(updated.lead_id, id(ids::CAROL));
    assert_eq!(updated.slug, "growth");
    assert_eq!(
        updated.settings.expect("settings").fields["slack_channel"].kind,
        Some(Kind::StringValue("#grow".into()))
    );
    let row = the_audit_row(&pool, &rid).await;
    assert_audit(&row, "UPDATE", Some(ids::ALICE), "team", teams::GROWTH);
    assert_eq!(row.request_id.as_deref(), Some(rid.as_str()));
    assert_eq!(row.old_json()["name"], "Growth");
    assert_eq!(row.new_json()["name"], "Growth & Retention");
}

#[tokio::test]
async fn update_team_with_a_stale_etag_is_aborted_and_changes_nothing() {
    let app = TestApp::spawn().await;
    let pool = app.admin_pool().await;
    let alice = app.login_seeded("acme", "alice@acme.test").await;
    let etag = app
        .teams()
        .get_team(bearer(
            GetTeamRequest {
                id: id(teams::GROWTH),
            },
            &alice,
        ))
        .await
        .expect("get")
        .into_inner()
        .etag;
    let update = |name: &str| UpdateTeamRequest {
        team: Some(Team {
            id: id(teams::GROWTH),
            name: name.to_owned(),
            etag: etag.clone(),
            ..Default::default()
        }),
        update_mask: mask(&["name"]),
    };
    app.teams()
        .update_team(bearer(update("First"), &alice))
        .await
        .expect("first update");
    let before = snapshot(&pool).await;
    expect_code(
        app.teams()
            .update_team(bearer(update("Second"), &alice))
            .await,
        Code::Aborted,
    );
    assert_unchanged(&before, &snapshot(&pool).await);
}

#[tokio::test]
async fn update_team_to_a_taken_slug_is_already_exists() {
    let app = TestApp::spawn().await;
    let pool = app.admin_pool().await;
    let alice = app.login_seeded("acme", "alice@acme.test").await;
    let before = snapshot(&pool).await;
    expect_code(
        app.teams()
            .update_team(bearer(
                UpdateTeamRequest {
                    team: Some(Team {
                        id: id(teams::GROWTH),
                        slug: "platform".into(),
                        ..Default::default()
                    }),
                    update_mask: mask(&["slug"]),
                },
                &alice,
            ))
            .await,
        Code::AlreadyExists,
    );
    assert_unchanged(&before, &snapshot(&pool).await);
}

#[tokio::test]
async fn update_team_rejects_bad_fields_and_masks() {
    let app = TestApp::spawn().await;
    let pool = app.admin_pool().await;
    let alice = app.login_seeded("acme", "alice@acme.test").await;
    let growth = |t: Team| Team {
        id: id(teams::GROWTH),
        ..t
    };
    let cases: Vec<(&str, Team, Vec<&str>)> = vec![
        ("update_mask", growth(Team::default()), vec![]),
        ("update_mask", growth(Team::default()), vec!["is_active"]),
        ("update_mask", growth(Team::default()), vec!["tenant_id"]),
        (
            "team.id",
            Team {
                name: "x".into(),
                ..Default::default()
            },
            vec!["name"],
        ),
        (
            "team.id",
            Team {
                id: "growth".into(),
                name: "x".into(),
                ..Default::default()
            },
            vec!["name"],
        ),
        ("team.name", growth(Team::default()), vec!["name"]),
        (
            "team.name",
            growth(Team {
                name: "n".repeat(256),
                ..Default::default()
            }),
            vec!["name"],
        ),
        (
            "team.slug",
            growth(Team {
                slug: "Bad Slug".into(),
                ..Default::default()
            }),
            vec!["slug"],
        ),
        (
            "team.color",
            growth(Team {
                color: "blue".into(),
                ..Default::default()
            }),
            vec!["color"],
        ),
        (
            "team.lead_id",
            growth(Team {
                lead_id: "bob".into(),
                ..Default::default()
            }),
            vec!["lead_id"],
        ),
        (
            "team.settings",
            growth(Team {
                settings: Some(settings(&[("x", Kind::NumberValue(f64::NAN))])),
                ..Default::default()
            }),
            vec!["settings"],
        ),
    ];
    let before = snapshot(&pool).await;
    for (field, t, paths) in cases {
        expect_invalid(
            app.teams()
                .update_team(bearer(
                    UpdateTeamRequest {
                        team: Some(t),
                        update_mask: mask(&paths),
                    },
                    &alice,
                ))
                .await,
            field,
        );
    }
    assert_unchanged(&before, &snapshot(&pool).await);
}

// ---------------------------------------------------------------------------
// DeleteTeam (archive)

#[tokio::test]
async fn delete_team_archives_it_and_audits_delete() {
    let app = TestApp::spawn().await;
    let pool = app.admin_pool().await;
    let alice = app.login_seeded("acme", "alice@acme.test").await;
    let rid = new_request_id("delete-team");
    let archived = app
        .teams()
        .delete_team(call(
            DeleteTeamRequest {
                id: id(teams::PLATFORM),
            },
            &alice,
            &rid,
        ))
        .await
        .expect("delete team")
        .into_inner();
    assert!(!archived.is_active);
    let still_there = app
        .teams()
        .get_team(bearer(
            GetTeamRequest {
                id: id(teams::PLATFORM),
            },
            &alice,
        ))
        .await
        .expect("an archived team can still be read")
        .into_inner();
    assert!(!still_there.is_active);
    let row = the_audit_row(&pool, &rid).await;
    assert_audit(&row, "DELETE", Some(ids::ALICE), "team", teams::PLATFORM);
    assert_eq!(row.request_id.as_deref(), Some(rid.as_str()));
    assert_eq!(row.new_json()["is_active"], false);
}

#[tokio::test]
async fn an_archived_team_cannot_be_archived_again_or_get_members() {
    let app = TestApp::spawn().await;
    let pool = app.admin_pool().await;
    let alice = app.login_seeded("acme", "alice@acme.test").await;
    app.teams()
        .delete_team(bearer(
            DeleteTeamRequest {
                id: id(teams::PLATFORM),
            },
            &alice,
        ))
        .await
        .expect("archive");
    let before = snapshot(&pool).await;
    expect_code(
        app.teams()
            .delete_team(bearer(
                DeleteTeamRequest {
                    id: id(teams::PLATFORM),
                },
                &alice,
            ))
            .await,
        Code::FailedPrecondition,
    );
    expect_code(
        app.teams()
            .add_team_member(bearer(
                add(teams::PLATFORM, ids::DAN, TeamRole::Member),
                &alice,
            ))
            .await,
        Code::FailedPrecondition,
    );
    assert_unchanged(&before, &snapshot(&pool).await);
}

#[tokio::test]
async fn delete_team_rejects_bad_and_unknown_ids() {
    let app = TestApp::spawn().await;
    let alice = app.login_seeded("acme", "alice@acme.test").await;
    expect_invalid(
        app.teams()
            .delete_team(bearer(
                DeleteTeamRequest {
                    id: "growth".into(),
                },
                &alice,
            ))
            .await,
        "id",
    );
    expect_code(
        app.teams()
            .delete_team(bearer(
                DeleteTeamRequest {
                    id: id(random_id()),
                },
                &alice,
            ))
            .await,
        Code::NotFound,
    );
}

// ---------------------------------------------------------------------------
// Members

#[tokio::test]
async fn add_team_member_adds_and_audits_team_member_added() {
    let app = TestApp::spawn().await;
    let pool = app.admin_pool().await;
    let bob = app.login_seeded("acme", "bob@acme.test").await;
    let rid = new_request_id("add-member");
    let member = app
        .teams()
        .add_team_member(call(
            add(teams::PLATFORM, ids::DAN, TeamRole::Observer),
            &bob,
            &rid,
        ))
        .await
        .expect("add member")
        .into_inner();
    assert_eq!(member.team_id, id(teams::PLATFORM));
    assert_eq!(member.user_id, id(ids::DAN));
    assert_eq!(member.team_role, TeamRole::Observer as i32);
    assert_eq!(member.added_by_id, id(ids::BOB));
    assert_eq!(member.email, "dan@acme.test");
    assert!(member.join_time.is_some());
    let row = the_audit_row(&pool, &rid).await;
    assert_audit(
        &row,
        "TEAM_MEMBER_ADDED",
        Some(ids::BOB),
        "team",
        teams::PLATFORM,
    );
    assert_eq!(row.request_id.as_deref(), Some(rid.as_str()));
    assert_eq!(row.new_json()["user_id"], id(ids::DAN));
    assert_eq!(row.new_json()["team_role"], "OBSERVER");
}

#[tokio::test]
async fn add_team_member_defaults_to_member() {
    let app = TestApp::spawn().await;
    let alice = app.login_seeded("acme", "alice@acme.test").await;
    let member = app
        .teams()
        .add_team_member(bearer(
            AddTeamMemberRequest {
                team_id: id(teams::PLATFORM),
                user_id: id(ids::DAN),
                team_role: 0,
            },
            &alice,
        ))
        .await
        .expect("add member")
        .into_inner();
    assert_eq!(member.team_role, TeamRole::Member as i32);
}

#[tokio::test]
async fn adding_a_member_twice_is_already_exists() {
    let app = TestApp::spawn().await;
    let pool = app.admin_pool().await;
    let alice = app.login_seeded("acme", "alice@acme.test").await;
    let before = snapshot(&pool).await;
    expect_code(
        app.teams()
            .add_team_member(bearer(
                add(teams::GROWTH, ids::CAROL, TeamRole::Lead),
                &alice,
            ))
            .await,
        Code::AlreadyExists,
    );
    assert_unchanged(&before, &snapshot(&pool).await);
}

#[tokio::test]
async fn add_team_member_rejects_bad_input_and_changes_nothing() {
    let app = TestApp::spawn().await;
    let pool = app.admin_pool().await;
    let alice = app.login_seeded("acme", "alice@acme.test").await;
    let before = snapshot(&pool).await;
    let request = |team_id: &str, user_id: &str, team_role: i32| AddTeamMemberRequest {
        team_id: team_id.to_owned(),
        user_id: user_id.to_owned(),
        team_role,
    };
    for (field, r) in [
        (
            "team_role",
            request(&id(teams::PLATFORM), &id(ids::DAN), 99),
        ),
        (
            "team_role",
            request(&id(teams::PLATFORM), &id(ids::DAN), -3),
        ),
        ("team_id", request("platform", &id(ids::DAN), 2)),
        ("team_id", request("", &id(ids::DAN), 2)),
        ("user_id", request(&id(teams::PLATFORM), "dan", 2)),
    ] {
        expect_invalid(app.teams().add_team_member(bearer(r, &alice)).await, field);
    }
    expect_code(
        app.teams()
            .add_team_member(bearer(
                request(&id(teams::PLATFORM), &id(random_id()), 2),
                &alice,
            ))
            .await,
        Code::NotFound,
    );
    expect_code(
        app.teams()
            .add_team_member(bearer(request(&id(random_id()), &id(ids::DAN), 2), &alice))
            .await,
        Code::NotFound,
    );
    assert_unchanged(&before, &snapshot(&pool).await);
}

#[tokio::test]
async fn remove_team_member_removes_and_audits_team_member_removed() {
    let app = TestApp::spawn().await;
    let pool = app.admin_pool().await;
    let alice = app.login_seeded("acme", "alice@acme.test").await;
    let rid = new_request_id("remove-member");
    app.teams()
        .remove_team_member(call(
            RemoveTeamMemberRequest {
                team_id: id(teams::GROWTH),
                user_id: id(ids::DAN),
            },
            &alice,
            &rid,
        ))
        .await
        .expect("remove member");
    let members = app
        .teams()
        .list_team_members(bearer(
            ListTeamMembersRequest {
                team_id: id(teams::GROWTH),
                ..Default::default()
            },
            &alice,
        ))
        .await
        .expect("list members")
        .into_inner()
        .members;
    assert!(members.iter().all(|m| m.user_id != id(ids::DAN)));
    let row = the_audit_row(&pool, &rid).await;
    assert_audit(
        &row,
        "TEAM_MEMBER_REMOVED",
        Some(ids::ALICE),
        "team",
        teams::GROWTH,
    );
    assert_eq!(row.request_id.as_deref(), Some(rid.as_str()));
    assert_eq!(row.old_json()["user_id"], id(ids::DAN));
    assert_eq!(row.old_json()["team_role"], "OBSERVER");
}

#[tokio::test]
async fn removing_a_non_member_is_not_found_and_bad_ids_are_invalid() {
    let app = TestApp::spawn().await;
    let pool = app.admin_pool().await;
    let alice = app.login_seeded("acme", "alice@acme.test").await;
    let before = snapshot(&pool).await;
    let remove = |team_id: String, user_id: String| RemoveTeamMemberRequest { team_id, user_id };
    expect_code(
        app.teams()
            .remove_team_member(bearer(remove(id(teams::PLATFORM), id(ids::DAN)), &alice))
            .await,
        Code::NotFound,
    );
    expect_invalid(
        app.teams()
            .remove_team_member(bearer(remove("x".into(), id(ids::DAN)), &alice))
            .await,
        "team_id",
    );
    expect_invalid(
        app.teams()
            .remove_team_member(bearer(remove(id(teams::GROWTH), "dan".into()), &alice))
            .await,
        "user_id",
    );
    assert_unchanged(&before, &snapshot(&pool).await);
}

#[tokio::test]
async fn list_team_members_returns_the_members_with_their_names() {
    let app = TestApp::spawn().await;
    let dan = app.login_seeded("acme", "dan@acme.test").await;
    let members = app
        .teams()
        .list_team_members(bearer(
            ListTeamMembersRequest {
                team_id: id(teams::GROWTH),
                ..Default::default()
            },
            &dan,
        ))
        .await
        .expect("list members")
        .into_inner()
        .members;
    let summary: Vec<(String, i32)> = members
        .iter()
        .map(|m| (m.email.clone(), m.team_role))
        .collect();
    assert_eq!(
        summary,
        [
            ("bob@acme.test".to_owned(), TeamRole::Lead as i32),
            ("carol@acme.test".to_owned(), TeamRole::Member as i32),
            ("dan@acme.test".to_owned(), TeamRole::Observer as i32),
        ]
    );
    assert!(
        members
            .iter()
            .all(|m| !m.first_name.is_empty() && m.team_id == id(teams::GROWTH))
    );
}

#[tokio::test]
async fn list_team_members_pages_and_checks_the_team() {
    let app = TestApp::spawn().await;
    let dan = app.login_seeded("acme", "dan@acme.test").await;
    let page = |token: String| ListTeamMembersRequest {
        team_id: id(teams::GROWTH),
        page_size: 2,
        page_token: token,
    };
    let first = app
        .teams()
        .list_team_members(bearer(page(String::new()), &dan))
        .await
        .expect("page 1")
        .into_inner();
    assert_eq!(first.members.len(), 2);
    let second = app
        .teams()
        .list_team_members(bearer(page(first.next_page_token), &dan))
        .await
        .expect("page 2")
        .into_inner();
    assert_eq!(second.members.len(), 1);
    assert!(second.next_page_token.is_empty());
    let all: BTreeSet<String> = first
        .members
        .iter()
        .chain(&second.members)
        .map(|m| m.user_id.clone())
        .collect();
    assert_eq!(all.len(), 3);

    expect_code(
        app.teams()
            .list_team_members(bearer(
                ListTeamMembersRequest {
                    team_id: id(random_id()),
                    ..Default::default()
                },
                &dan,
            ))
            .await,
        Code::NotFound,
    );
    expect_invalid(
        app.teams()
            .list_team_members(bearer(
                ListTeamMembersRequest {
                    team_id: "growth".into(),
                    ..Default::default()
                },
                &dan,
            ))
            .await,
        "team_id",
    );
}
