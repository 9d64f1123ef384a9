//! CommentService over real gRPC and PostgreSQL: threading, parents and
//! options of the same decision only, the first comment's move to
//! UNDER_DISCUSSION, author-only edits, soft deletes that keep replies,
//! permissions, tenant isolation and keyset pages.

use codeops_proto::decision::{
    AddCommentRequest, CancelDecisionRequest, Comment, DecisionStatus, DeleteCommentRequest,
    ListCommentsRequest, RequestDecisionInputRequest, UpdateCommentRequest,
};
use tonic::Code;
use tonic_types::StatusExt;

use super::{Decisions, decision, uuid_of};
use crate::common::bearer;
use crate::common::checks::{
    assert_unchanged, audit_rows, call, expect_code, expect_denied, expect_invalid, mask,
    new_request_id, snapshot,
};
use crate::identity::support::acme_user_with;

fn reason(status: &tonic::Status) -> String {
    status.get_details_error_info().expect("ErrorInfo").reason
}

fn add(decision_id: &str, content: &str, parent_id: &str, option_id: &str) -> AddCommentRequest {
    AddCommentRequest {
        decision_id: decision_id.into(),
        content: content.into(),
        parent_id: parent_id.into(),
        option_id: option_id.into(),
        ..Default::default()
    }
}

impl Decisions {
    async fn comment(&self, token: &str, request: AddCommentRequest) -> Comment {
        self.app
            .comments()
            .add_comment(bearer(request, token))
            .await
            .expect("AddComment")
            .into_inner()
    }

    async fn all_comments(&self, decision_id: &str, page_size: i32) -> Vec<Comment> {
        let mut out = Vec::new();
        let mut token = String::new();
        loop {
            let page = self
                .app
                .comments()
                .list_comments(bearer(
                    ListCommentsRequest {
                        decision_id: decision_id.into(),
                        page_size,
                        page_token: token,
                    },
                    &self.alice,
                ))
                .await
                .expect("ListComments")
                .into_inner();
            assert!(page.comments.len() <= page_size as usize);
            out.extend(page.comments);
            if page.next_page_token.is_empty() {
                return out;
            }
            token = page.next_page_token;
        }
    }
}

#[tokio::test]
async fn threads_list_parents_before_replies_in_keyset_pages() {
    let d = Decisions::spawn().await;
    let id = d.create(decision("threads")).await.id;
    let a = d.comment(&d.alice, add(&id, "root a", "", "opt-a")).await;
    let b = d.comment(&d.alice, add(&id, "reply to a", &a.id, "")).await;
    let c = d.comment(&d.alice, add(&id, "root c", "", "")).await;
    let e = d
        .comment(&d.alice, add(&id, "reply to b", &b.id, "opt-b"))
        .await;
    let f = d
        .comment(&d.alice, add(&id, "reply to a again", &a.id, ""))
        .await;
    assert_eq!(b.parent_id, a.id);
    assert_eq!(e.option_id, "opt-b");
    assert!(!a.is_edited && !a.deleted && !a.etag.is_empty());
    assert_eq!(
        uuid_of(&a.author_id),
        uuid::uuid!("aaaaaaaa-aaaa-aaaa-aaaa-aaaaaaaaa001"),
        "the author is the caller"
    );

    let want: Vec<String> = [&a, &b, &c, &e, &f].iter().map(|c| c.id.clone()).collect();
    for page_size in [1, 2, 3, 100] {
        let listed = d.all_comments(&id, page_size).await;
        let got: Vec<String> = listed.iter().map(|c| c.id.clone()).collect();
        assert_eq!(got, want, "page size {page_size}");
        for (i, comment) in listed.iter().enumerate() {
            if !comment.parent_id.is_empty() {
                let parent = got.iter().position(|x| *x == comment.parent_id);
                assert!(parent.is_some_and(|p| p < i), "parent before reply");
            }
        }
    }

    // A token is bound to its decision.
    let other = d.create(decision("other")).await.id;
    let first = d
        .app
        .comments()
        .list_comments(bearer(
            ListCommentsRequest {
                decision_id: id.clone(),
                page_size: 1,
                ..Default::default()
            },
            &d.alice,
        ))
        .await
        .expect("list")
        .into_inner();
    expect_invalid(
        d.app
            .comments()
            .list_comments(bearer(
                ListCommentsRequest {
                    decision_id: other,
                    page_size: 1,
                    page_token: first.next_page_token,
                },
                &d.alice,
            ))
            .await,
        "page_token",
    );
    // No comments: an empty page; an unknown decision: NOT_FOUND.
    let empty = d.create(decision("quiet")).await.id;
    assert!(d.all_comments(&empty, 10).await.is_empty());
    expect_code(
        d.app
            .comments()
            .list_comments(bearer(
                ListCommentsRequest {
                    decision_id: uuid::Uuid::new_v4().to_string(),
                    ..Default::default()
                },
                &d.alice,
            ))
            .await,
        Code::NotFound,
    );
    d.app.shutdown().await;
}

#[tokio::test]
async fn parents_and_options_must_be_of_the_same_decision() {
    let d = Decisions::spawn().await;
    let one = d.create(decision("one")).await.id;
    let two = d.create(decision("two")).await.id;
    let on_one = d.comment(&d.alice, add(&one, "on one", "", "")).await;
    let before = snapshot(&d.pool).await;
    let mut c = d.app.comments();
    let t = &d.alice;
    expect_invalid(
        c.add_comment(bearer(add(&two, "x", &on_one.id, ""), t))
            .await,
        "parent_id",
    );
    expect_invalid(
        c.add_comment(bearer(
            add(&two, "x", &uuid::Uuid::new_v4().to_string(), ""),
            t,
        ))
        .await,
        "parent_id",
    );
    expect_invalid(
        c.add_comment(bearer(add(&two, "x", "not-a-uuid", ""), t))
            .await,
        "parent_id",
    );
    expect_invalid(
        c.add_comment(bearer(add(&two, "x", "", "opt-zzz"), t))
            .await,
        "option_id",
    );
    expect_invalid(
        c.add_comment(bearer(add(&two, "  ", "", ""), t)).await,
        "content",
    );
    expect_invalid(
        c.add_comment(bearer(add(&two, "bell \u{7}", "", ""), t))
            .await,
        "content",
    );
    expect_invalid(
        c.add_comment(bearer(add(&two, &"x".repeat(20_001), "", ""), t))
            .await,
        "content",
    );
    expect_code(
        c.add_comment(bearer(
            add(&uuid::Uuid::new_v4().to_string(), "x", "", ""),
            t,
        ))
        .await,
        Code::NotFound,
    );
    // Updating to an option the decision lacks.
    expect_invalid(
        c.update_comment(bearer(
            UpdateCommentRequest {
                comment: Some(Comment {
                    id: on_one.id.clone(),
                    option_id: "opt-zzz".into(),
                    ..Default::default()
                }),
                update_mask: mask(&["option_id"]),
            },
            t,
        ))
        .await,
        "comment.option_id",
    );
    assert_unchanged(&before, &snapshot(&d.pool).await);
    // A reply in the same decision, pointing at an option of it, works.
    let reply = d.comment(t, add(&one, "ok", &on_one.id, "opt-b")).await;
    assert_eq!(reply.parent_id, on_one.id);
    d.app.shutdown().await;
}

#[tokio::test]
async fn the_first_comment_moves_needs_input_to_under_discussion() {
    let d = Decisions::spawn().await;
    let created = d.create(decision("discuss me")).await;
    assert_eq!(created.status, DecisionStatus::NeedsInput as i32);
    let request_id = new_request_id("first-comment");
    let first = d
        .app
        .comments()
        .add_comment(call(
            add(&created.id, "first", "", ""),
            &d.alice,
            &request_id,
        ))
        .await
        .expect("first comment")
        .into_inner();
    let moved = d.get(&created.id).await;
    assert_eq!(moved.status, DecisionStatus::UnderDiscussion as i32);
    assert_ne!(moved.etag, created.etag);
    let rows = audit_rows(&d.pool, &request_id).await;
    let actions: Vec<&str> = rows.iter().map(|r| r.action.as_str()).collect();
    assert_eq!(actions, ["STATUS_CHANGE", "DECISION_COMMENTED"]);
    assert!(rows.iter().all(|r| r.entity_id == uuid_of(&created.id)));
    assert_eq!(rows[0].old_json()["status"], "NEEDS_INPUT");
    assert_eq!(rows[0].new_json()["status"], "UNDER_DISCUSSION");
    assert_eq!(rows[1].new_json()["comment_id"], first.id);

    // Later comments do not move it: back to NEEDS_INPUT on request, a
    // second comment leaves it there and audits only the comment.
    d.app
        .decisions()
        .request_decision_input(bearer(
            RequestDecisionInputRequest {
                id: created.id.clone(),
                etag: String::new(),
            },
            &d.alice,
        ))
        .await
        .expect("request input");
    let request_id = new_request_id("second-comment");
    d.app
        .comments()
        .add_comment(call(
            add(&created.id, "second", "", ""),
            &d.alice,
            &request_id,
        ))
        .await
        .expect("second comment");
    assert_eq!(
        d.get(&created.id).await.status,
        DecisionStatus::NeedsInput as i32
    );
    let rows = audit_rows(&d.pool, &request_id).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].action, "DECISION_COMMENTED");

    // A closed decision takes no comments.
    d.app
        .decisions()
        .cancel_decision(bearer(
            CancelDecisionRequest {
                id: created.id.clone(),
                ..Default::default()
            },
            &d.alice,
        ))
        .await
        .expect("cancel");
    let before = snapshot(&d.pool).await;
    let refused = expect_code(
        d.app
            .comments()
            .add_comment(bearer(add(&created.id, "too late", "", ""), &d.alice))
            .await,
        Code::FailedPrecondition,
    );
    assert_eq!(reason(&refused), "DECISION_CLOSED");
    assert_unchanged(&before, &snapshot(&d.pool).await);
    d.app.shutdown().await;
}

#[tokio::test]
async fn only_the_author_edits_and_deletes_keep_replies() {
    let d = Decisions::spawn().await;
    let (_, writer) = acme_user_with(&d.app, &["comment.write", "decision.read"]).await;
    let id = d.create(decision("edits")).await.id;
    let root = d.comment(&writer, add(&id, "root", "", "opt-a")).await;
    let reply = d.comment(&d.alice, add(&id, "reply", &root.id, "")).await;
    let mut c = d.app.comments();
    let edit = |comment: &Comment, content: &str, etag: &str| UpdateCommentRequest {
        comment: Some(Comment {
            id: comment.id.clone(),
            content: content.into(),
            etag: etag.into(),
            ..Default::default()
        }),
        update_mask: mask(&["content"]),
    };

    // Not the author (alice holds every permission): refused.
    let before = snapshot(&d.pool).await;
    let denied = expect_code(
        c.update_comment(bearer(edit(&root, "mine", ""), &d.alice))
            .await,
        Code::PermissionDenied,
    );
    assert_eq!(reason(&denied), "NOT_COMMENT_AUTHOR");
    // A stale etag: refused.
    expect_code(
        c.update_comment(bearer(edit(&root, "x", "W/\"1\""), &writer))
            .await,
        Code::Aborted,
    );
    // A missing mask: refused.
    expect_invalid(
        c.update_comment(bearer(
            UpdateCommentRequest {
                comment: Some(Comment {
                    id: root.id.clone(),
                    content: "x".into(),
                    ..Default::default()
                }),
                update_mask: None,
            },
            &writer,
        ))
        .await,
        "update_mask",
    );
    // The writer (no decision.write) may not delete alice's reply.
    let denied = expect_code(
        c.delete_comment(bearer(
            DeleteCommentRequest {
                id: reply.id.clone(),
                etag: String::new(),
            },
            &writer,
        ))
        .await,
        Code::PermissionDenied,
    );
    assert_eq!(reason(&denied), "NOT_COMMENT_AUTHOR");
    assert_unchanged(&before, &snapshot(&d.pool).await);

    let edited = c
        .update_comment(bearer(edit(&root, "root, edited", &root.etag), &writer))
        .await
        .expect("author edits")
        .into_inner();
    assert!(edited.is_edited);
    assert_eq!(edited.content, "root, edited");
    assert_eq!(
        edited.option_id, "opt-a",
        "option untouched outside the mask"
    );
    assert_ne!(edited.etag, root.etag);

    // The author deletes the root: the reply survives, still its reply.
    let deleted = c
        .delete_comment(bearer(
            DeleteCommentRequest {
                id: root.id.clone(),
                etag: edited.etag.clone(),
            },
            &writer,
        ))
        .await
        .expect("author deletes")
        .into_inner();
    assert!(deleted.deleted && deleted.delete_time.is_some());
    assert!(deleted.content.is_empty() && deleted.option_id.is_empty());
    let listed = d.all_comments(&id, 10).await;
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0].id, root.id);
    assert!(listed[0].deleted);
    assert_eq!(listed[1].id, reply.id);
    assert_eq!(listed[1].parent_id, root.id);
    assert_eq!(listed[1].content, "reply");
    // A deleted comment is gone for edits and deletes.
    expect_code(
        c.update_comment(bearer(edit(&root, "back", ""), &writer))
            .await,
        Code::NotFound,
    );
    expect_code(
        c.delete_comment(bearer(
            DeleteCommentRequest {
                id: root.id.clone(),
                etag: String::new(),
            },
            &writer,
        ))
        .await,
        Code::NotFound,
    );
    // Replying to a deleted comment still threads under it.
    let late = d
        .comment(&d.alice, add(&id, "late reply", &root.id, ""))
        .await;
    assert_eq!(late.parent_id, root.id);

    // A holder of decision.write deletes someone else's comment.
    let other = d.comment(&writer, add(&id, "spam", "", "")).await;
    let request_id = new_request_id("moderate");
    c.delete_comment(call(
        DeleteCommentRequest {
            id: other.id.clone(),
            etag: String::new(),
        },
        &d.alice,
        &request_id,
    ))
    .await
    .expect("decision.write deletes");
    let rows = audit_rows(&d.pool, &request_id).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].action, "DELETE");
    assert_eq!(rows[0].entity_type, "comment");
    assert_eq!(rows[0].old_json()["content"], "spam");
    d.app.shutdown().await;
}

#[tokio::test]
async fn comments_need_their_permissions() {
    let d = Decisions::spawn().await;
    let id = d.create(decision("perms")).await.id;
    let root = d.comment(&d.alice, add(&id, "root", "", "")).await;
    let (_, reader) = acme_user_with(&d.app, &["decision.read"]).await;
    let (_, nobody) = acme_user_with(&d.app, &[]).await;
    let mut c = d.app.comments();
    let before = snapshot(&d.pool).await;
    expect_denied(
        c.add_comment(bearer(add(&id, "x", "", ""), &reader)).await,
        "comment.write",
    );
    expect_denied(
        c.update_comment(bearer(
            UpdateCommentRequest {
                comment: Some(Comment {
                    id: root.id.clone(),
                    content: "x".into(),
                    ..Default::default()
                }),
                update_mask: mask(&["content"]),
            },
            &reader,
        ))
        .await,
        "comment.write",
    );
    expect_denied(
        c.delete_comment(bearer(
            DeleteCommentRequest {
                id: root.id.clone(),
                etag: String::new(),
            },
            &reader,
        ))
        .await,
        "comment.write",
    );
    expect_denied(
        c.list_comments(bearer(
            ListCommentsRequest {
                decision_id: id.clone(),
                ..Default::default()
            },
            &nobody,
        ))
        .await,
        "decision.read",
    );
    assert_unchanged(&before, &snapshot(&d.pool).await);
    let listed = c
        .list_comments(bearer(
            ListCommentsRequest {
                decision_id: id,
                ..Default::default()
            },
            &reader,
        ))
        .await
        .expect("a reader lists")
        .into_inner();
    assert_eq!(listed.comments.len(), 1);
    d.app.shutdown().await;
}

#[tokio::test]
async fn another_tenants_decisions_and_comments_answer_like_unknown_ones() {
    let d = Decisions::spawn().await;
    let erin = d.app.login_seeded("globex", "erin@globex.test").await;
    let acme = d.create(decision("acme only")).await.id;
    let acme_comment = d.comment(&d.alice, add(&acme, "acme talk", "", "")).await;
    let globex = d
        .app
        .decisions()
        .create_decision(bearer(
            codeops_proto::decision::CreateDecisionRequest {
                decision: Some(decision("globex")),
                ..Default::default()
            },
            &erin,
        ))
        .await
        .expect("globex decision")
        .into_inner()
        .id;
    let before = snapshot(&d.pool).await;
    let mut c = d.app.comments();
    expect_code(
        c.add_comment(bearer(add(&acme, "hi", "", ""), &erin)).await,
        Code::NotFound,
    );
    expect_code(
        c.list_comments(bearer(
            ListCommentsRequest {
                decision_id: acme.clone(),
                ..Default::default()
            },
            &erin,
        ))
        .await,
        Code::NotFound,
    );
    expect_code(
        c.update_comment(bearer(
            UpdateCommentRequest {
                comment: Some(Comment {
                    id: acme_comment.id.clone(),
                    content: "mine".into(),
                    ..Default::default()
                }),
                update_mask: mask(&["content"]),
            },
            &erin,
        ))
        .await,
        Code::NotFound,
    );
    expect_code(
        c.delete_comment(bearer(
            DeleteCommentRequest {
                id: acme_comment.id.clone(),
                etag: String::new(),
            },
            &erin,
        ))
        .await,
        Code::NotFound,
    );
    // An acme comment as the parent of a globex reply: like an unknown one.
    expect_invalid(
        c.add_comment(bearer(add(&globex, "reply", &acme_comment.id, ""), &erin))
            .await,
        "parent_id",
    );
    assert_unchanged(&before, &snapshot(&d.pool).await);
    d.app.shutdown().await;
}
