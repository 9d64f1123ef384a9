//! CommentService: threaded comments on decisions. A reply's parent is a
//! comment of the same decision (the composite key
//! `decision_comments_parent_fkey`), an option id must be one of the
//! decision's, the decision's first comment moves NEEDS_INPUT to
//! UNDER_DISCUSSION in the same transaction, and a delete is soft so
//! replies keep their parent.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use codeops_platform::convert::{etag, id_string, opt_timestamp};
use codeops_platform::error::DOMAIN;
use codeops_platform::validate::{LONG_TEXT, SHORT_TEXT, check_etag};
use codeops_platform::{
    ApiError, AuditAction, AuditEntry, Claim, Cursor, Db, Page, RequestKey, TenantTx, Violations,
};
use codeops_proto::decision::comment_service_server::CommentService;
use codeops_proto::decision::{
    AddCommentRequest, Comment, DecisionStatus, DeleteCommentRequest, ListCommentsRequest,
    ListCommentsResponse, UpdateCommentRequest,
};
use codeops_tenant::{Permission, RequestExt};
use serde_json::json;
use tonic::{Code, Request, Response, Status};
use tonic_types::{ErrorDetails, StatusExt};
use uuid::Uuid;

use crate::decisions::{self, DecisionRow, time_text};
use crate::documents::options_from_json;
use crate::lifecycle::{DECISION_LIFECYCLE, status_db};
use crate::watch::{EventKind, notify};
use crate::write_error;

pub struct Comments {
    db: Db,
}

impl Comments {
    pub fn new(db: Db) -> Self {
        Self { db }
    }
}

/// A comment row as the schema types it.
struct CommentRow {
    id: Uuid,
    decision_id: Uuid,
    author_id: Uuid,
    parent_id: Option<Uuid>,
    content: String,
    option_id: Option<String>,
    is_edited: Option<bool>,
    created_at: DateTime<Utc>,
    updated_at: Option<DateTime<Utc>>,
    deleted_at: Option<DateTime<Utc>>,
}

impl CommentRow {
    fn cursor(&self) -> Cursor {
        Cursor {
            time: self.created_at,
            id: self.id,
        }
    }

    fn audit_values(&self) -> serde_json::Value {
        json!({
            "comment_id": self.id,
            "decision_id": self.decision_id,
            "author_id": self.author_id,
            "parent_id": self.parent_id,
            "content": self.content,
            "option_id": self.option_id,
            "is_edited": self.is_edited,
            "deleted_at": self.deleted_at,
        })
    }

    fn into_proto(self) -> Comment {
        Comment {
            id: self.id.to_string(),
            decision_id: self.decision_id.to_string(),
            author_id: self.author_id.to_string(),
            parent_id: id_string(self.parent_id),
            content: self.content,
            option_id: self.option_id.unwrap_or_default(),
            is_edited: self.is_edited.unwrap_or_default(),
            create_time: opt_timestamp(Some(self.created_at)),
            update_time: opt_timestamp(self.updated_at),
            etag: etag(self.updated_at),
            deleted: self.deleted_at.is_some(),
            delete_time: opt_timestamp(self.deleted_at),
        }
    }
}

/// One comment of the transaction's tenant (deleted ones too).
async fn get(tx: &mut impl TenantTx, id: Uuid) -> Result<CommentRow, ApiError> {
    sqlx::query_as!(
        CommentRow,
        "SELECT id, decision_id, author_id, parent_id, content, option_id, is_edited, created_at, \
             updated_at, deleted_at \
         FROM core.decision_comments WHERE tenant_id = $1 AND id = $2",
        tx.tenant_id(),
        id,
    )
    .fetch_optional(&mut **tx)
    .await?
    .ok_or(ApiError::NotFound("comment"))
}

/// A comment that may still be changed: not deleted.
async fn get_live(tx: &mut impl TenantTx, id: Uuid) -> Result<CommentRow, ApiError> {
    let row = get(tx, id).await?;
    if row.deleted_at.is_some() {
        return Err(ApiError::NotFound("comment"));
    }
    Ok(row)
}

/// Locks the decision's row, so comments on one decision (and the move
/// the first one makes) are serialised with each other and with the
/// decision's transitions.
async fn lock_decision(tx: &mut impl TenantTx, id: Uuid) -> Result<(), ApiError> {
    sqlx::query_scalar!(
        "SELECT id FROM core.decisions WHERE tenant_id = $1 AND id = $2 FOR UPDATE",
        tx.tenant_id(),
        id,
    )
    .fetch_optional(&mut **tx)
    .await?
    .ok_or(ApiError::NotFound("decision"))?;
    Ok(())
}

/// `option_id` must be one of the decision's options.
fn check_option(decision: &DecisionRow, field: &str, option_id: &str) -> Result<(), ApiError> {
    let options = options_from_json(decision.options.as_deref());
    if options.iter().any(|o| o.id == option_id) {
        Ok(())
    } else {
        Err(ApiError::field(field, "is not an option of the decision"))
    }
}

/// Only the author (or, for a delete, a holder of decision.write).
fn not_author() -> Status {
    Status::with_error_details(
        Code::PermissionDenied,
        "only the comment's author may do this",
        ErrorDetails::with_error_info("NOT_COMMENT_AUTHOR", DOMAIN, HashMap::new()),
    )
}

/// Write errors of a comment insert: a parent of another decision (or
/// none at all) is a violation on `parent_id`.
fn comment_write_error(prefix: &'static str) -> impl Fn(sqlx::Error) -> ApiError {
    move |err| {
        if let sqlx::Error::Database(db) = &err
            && db.constraint() == Some("decision_comments_parent_fkey")
        {
            return ApiError::field(
                format!("{prefix}parent_id"),
                "must be a comment of the same decision",
            );
        }
        write_error("request")(err)
    }
}

#[tonic::async_trait]
impl CommentService for Comments {
    async fn add_comment(
        &self,
        request: Request<AddCommentRequest>,
    ) -> Result<Response<Comment>, Status> {
        let ctx = request.tenant()?;
        let req = request.get_ref();
        let mut v = Violations::new();
        let decision_id = v.uuid("decision_id", &req.decision_id);
        let content = v.required("content", &req.content, LONG_TEXT);
        let parent_id = v.optional_uuid("parent_id", &req.parent_id);
        let option_id = v.optional("option_id", &req.option_id, SHORT_TEXT);
        let key = RequestKey::parse(&mut v, req);
        v.finish()?;

        let mut tx = self.db.write(ctx).await?;
        let id = Uuid::now_v7();
        if let Claim::Replay(first) = tx.claim(key.as_ref(), id).await? {
            return Ok(Response::new(get(&mut tx, first).await?.into_proto()));
        }
        lock_decision(&mut tx, decision_id).await?;
        let before = decisions::get(&mut tx, decision_id).await?;
        if DECISION_LIFECYCLE.is_terminal(before.status()) {
            return Err(ApiError::precondition(
                "DECISION_CLOSED",
                format!("the decision is {}; it takes no comments", before.status),
            )
            .into());
        }
        if let Some(option_id) = &option_id {
            check_option(&before, "option_id", option_id)?;
        }
        let first = !sqlx::query_scalar!(
            "SELECT EXISTS (SELECT 1 FROM core.decision_comments WHERE tenant_id = $1 AND decision_id = $2) \
                 AS \"exists!\"",
            tx.tenant_id(),
            decision_id,
        )
        .fetch_one(&mut *tx)
        .await
        .map_err(ApiError::from)?;

        // A reply is created after its parent (by at least a microsecond,
        // whatever the clock does), so creation order is thread order.
        sqlx::query!(
            "INSERT INTO core.decision_comments (id, tenant_id, decision_id, author_id, parent_id, content, \
                 option_id, is_edited, created_at, updated_at) \
             SELECT $1, $2, $3, $4, $5, $6, $7, false, t.at, t.at \
             FROM (SELECT greatest(clock_timestamp(), \
                       (SELECT p.created_at + interval '1 microsecond' FROM core.decision_comments p \
                        WHERE p.tenant_id = $2 AND p.id = $5)) AS at) t",
            id,
            tx.tenant_id(),
            decision_id,
            ctx.user_id,
            parent_id,
            content,
            option_id,
        )
        .execute(&mut *tx)
        .await
        .map_err(comment_write_error(""))?;

        if first && before.status() == DecisionStatus::NeedsInput {
            let moved = sqlx::query!(
                "UPDATE core.decisions SET status = $3, updated_at = clock_timestamp() \
                 WHERE tenant_id = $1 AND id = $2 AND status = 'NEEDS_INPUT'",
                tx.tenant_id(),
                decision_id,
                status_db(DecisionStatus::UnderDiscussion),
            )
            .execute(&mut *tx)
            .await
            .map_err(ApiError::from)?
            .rows_affected();
            if moved != 1 {
                return Err(ApiError::concurrent_update().into());
            }
            let after = decisions::get(&mut tx, decision_id).await?;
            notify(
                &mut tx,
                decision_id,
                EventKind::StatusChanged,
                &after.status,
            )
            .await?;
            tx.audit(
                AuditEntry::new(AuditAction::StatusChange, "decision", decision_id)
                    .title(&after.title)
                    .description(format!(
                        "{} -> {}: first comment",
                        before.status, after.status
                    ))
                    .changes(before.audit_values(), after.audit_values()),
            )
            .await?;
        }
        let comment = get(&mut tx, id).await?;
        let status = if first && before.status() == DecisionStatus::NeedsInput {
            status_db(DecisionStatus::UnderDiscussion)
        } else {
            before.status.as_str()
        };
        notify(&mut tx, decision_id, EventKind::Commented, status).await?;
        tx.commit(
            AuditEntry::new(AuditAction::DecisionCommented, "decision", decision_id)
                .title(&before.title)
                .new_values(comment.audit_values()),
        )
        .await?;
        Ok(Response::new(comment.into_proto()))
    }

    async fn list_comments(
        &self,
        request: Request<ListCommentsRequest>,
    ) -> Result<Response<ListCommentsResponse>, Status> {
        let ctx = request.tenant()?;
        let req = request.get_ref();
        let mut v = Violations::new();
        let decision_id = v.uuid("decision_id", &req.decision_id);
        let page = Page::parse(
            req.page_size,
            &req.page_token,
            &format!("comments|{decision_id}"),
            &mut v,
        );
        v.finish()?;

        let mut tx = self.db.read(ctx).await?;
        let tenant_id = tx.tenant_id();
        let known = sqlx::query_scalar!(
            "SELECT EXISTS (SELECT 1 FROM core.decisions WHERE tenant_id = $1 AND id = $2) AS \"exists!\"",
            tenant_id,
            decision_id,
        )
        .fetch_one(&mut *tx)
        .await
        .map_err(ApiError::from)?;
        if !known {
            return Err(ApiError::NotFound("decision").into());
        }
        let rows = sqlx::query_as!(
            CommentRow,
            "SELECT id, decision_id, author_id, parent_id, content, option_id, is_edited, created_at, \
                 updated_at, deleted_at \
             FROM core.decision_comments \
             WHERE tenant_id = $1 AND decision_id = $2 \
               AND (created_at, id) > ($3::text::timestamptz, $4::uuid) \
             ORDER BY created_at, id \
             LIMIT $5",
            tenant_id,
            decision_id,
            time_text(page.after_time(), "-infinity"),
            page.after_id().unwrap_or(Uuid::nil()),
            page.limit(),
        )
        .fetch_all(&mut *tx)
        .await
        .map_err(ApiError::from)?;
        let (comments, next_page_token) =
            page.finish(rows, CommentRow::cursor, CommentRow::into_proto);
        Ok(Response::new(ListCommentsResponse {
            comments,
            next_page_token,
        }))
    }

    async fn update_comment(
        &self,
        request: Request<UpdateCommentRequest>,
    ) -> Result<Response<Comment>, Status> {
        let ctx = request.tenant()?;
        let req = request.get_ref();
        let comment = req.comment.clone().unwrap_or_default();
        let mut v = Violations::new();
        let id = v.uuid("comment.id", &comment.id);
        let mask = v.update_mask(req.update_mask.as_ref(), &["content", "option_id"]);
        let content = mask
            .contains("content")
            .then(|| v.required("comment.content", &comment.content, LONG_TEXT));
        let option_id = mask
            .contains("option_id")
            .then(|| v.optional("comment.option_id", &comment.option_id, SHORT_TEXT));
        v.finish()?;

        let mut tx = self.db.write(ctx).await?;
        let before = get_live(&mut tx, id).await?;
        if before.author_id != ctx.user_id {
            return Err(not_author());
        }
        check_etag(&comment.etag, &etag(before.updated_at))?;
        if let Some(Some(option_id)) = &option_id {
            let decision = decisions::get(&mut tx, before.decision_id).await?;
            check_option(&decision, "comment.option_id", option_id)?;
        }
        let updated = sqlx::query!(
            "UPDATE core.decision_comments SET \
                 content = coalesce($4, content), \
                 option_id = CASE WHEN $5::bool THEN $6::text ELSE option_id END, \
                 is_edited = true, \
                 updated_at = clock_timestamp() \
             WHERE tenant_id = $1 AND id = $2 AND updated_at IS NOT DISTINCT FROM $3 AND deleted_at IS NULL",
            tx.tenant_id(),
            id,
            before.updated_at,
            content,
            option_id.is_some(),
            option_id.flatten(),
        )
        .execute(&mut *tx)
        .await
        .map_err(write_error("comment"))?
        .rows_affected();
        if updated == 0 {
            return Err(ApiError::concurrent_update().into());
        }
        let after = get(&mut tx, id).await?;
        tx.commit(
            AuditEntry::new(AuditAction::Update, "comment", id)
                .changes(before.audit_values(), after.audit_values()),
        )
        .await?;
        Ok(Response::new(after.into_proto()))
    }

    async fn delete_comment(
        &self,
        request: Request<DeleteCommentRequest>,
    ) -> Result<Response<Comment>, Status> {
        let ctx = request.tenant()?;
        let req = request.get_ref();
        let mut v = Violations::new();
        let id = v.uuid("id", &req.id);
        v.finish()?;

        let mut tx = self.db.write(ctx).await?;
        let before = get_live(&mut tx, id).await?;
        if before.author_id != ctx.user_id && !ctx.has(Permission::DecisionWrite) {
            return Err(not_author());
        }
        check_etag(&req.etag, &etag(before.updated_at))?;
        let deleted = sqlx::query!(
            "UPDATE core.decision_comments SET content = '', option_id = NULL, \
                 deleted_at = clock_timestamp(), updated_at = clock_timestamp() \
             WHERE tenant_id = $1 AND id = $2 AND updated_at IS NOT DISTINCT FROM $3 AND deleted_at IS NULL",
            tx.tenant_id(),
            id,
            before.updated_at,
        )
        .execute(&mut *tx)
        .await
        .map_err(ApiError::from)?
        .rows_affected();
        if deleted == 0 {
            return Err(ApiError::concurrent_update().into());
        }
        let after = get(&mut tx, id).await?;
        tx.commit(
            AuditEntry::new(AuditAction::Delete, "comment", id)
                .changes(before.audit_values(), after.audit_values()),
        )
        .await?;
        Ok(Response::new(after.into_proto()))
    }
}
