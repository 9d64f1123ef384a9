//! WatchDecisions: the caller's tenant's decision events as they commit.
//!
//! Every write of a decision (and every new comment) calls [`notify`] in
//! its own transaction, next to its audit entry: `pg_notify` on
//! [`CHANNEL`], which PostgreSQL delivers only when the transaction
//! commits, in commit order. One `LISTEN` connection per decision process
//! ([`WatchHub`], started by the first subscriber) fans the events out to
//! the subscribers of the event's tenant, each through a bounded buffer it
//! fills with `try_send`: a subscriber that cannot keep up is cut off
//! (RESOURCE_EXHAUSTED, WATCH_OVERFLOW) instead of slowing the others or
//! the listener (whose connection PostgreSQL would otherwise have to queue
//! notifications for).

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};

use chrono::{DateTime, Utc};
use codeops_platform::convert::opt_timestamp;
use codeops_platform::error::{DOMAIN, UNAVAILABLE_RETRY};
use codeops_platform::{ApiError, Db, TenantTx};
use codeops_proto::decision::{DecisionEvent, DecisionEventType};
use tokio::sync::{mpsc, watch};
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};
use uuid::Uuid;

/// The notification channel of decision events.
pub const CHANNEL: &str = "codeops_decision_events";

/// Events buffered per subscriber before it is cut off.
pub const DEFAULT_BUFFER: usize = 256;

/// Most decision ids one watch may filter on.
pub const MAX_WATCHED_IDS: usize = 100;

/// What happened to a decision, as the notification payload names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum EventKind {
    Created,
    Updated,
    StatusChanged,
    Assigned,
    Escalated,
    Commented,
    Resolved,
}

impl EventKind {
    fn db(self) -> &'static str {
        match self {
            EventKind::Created => "CREATED",
            EventKind::Updated => "UPDATED",
            EventKind::StatusChanged => "STATUS_CHANGED",
            EventKind::Assigned => "ASSIGNED",
            EventKind::Escalated => "ESCALATED",
            EventKind::Commented => "COMMENTED",
            EventKind::Resolved => "RESOLVED",
        }
    }
}

/// Queues the event of a change to `decision_id` (now in `status`) in the
/// transaction: delivered to watchers when, and only if, it commits. The
/// payload is a few ids and words, far under PostgreSQL's 8000 bytes.
pub(crate) async fn notify(
    tx: &mut impl TenantTx,
    decision_id: Uuid,
    kind: EventKind,
    status: &str,
) -> Result<(), ApiError> {
    sqlx::query_scalar!(
        "SELECT count(*) AS \"n!\" FROM (SELECT pg_notify('codeops_decision_events', \
             json_build_object('id', $1::uuid, 'tenant_id', $2::uuid, 'decision_id', $3::uuid, \
                 'type', $4::text, 'status', $5::text, 'at', clock_timestamp())::text)) AS sent",
        Uuid::now_v7(),
        tx.tenant_id(),
        decision_id,
        kind.db(),
        status,
    )
    .fetch_one(&mut **tx)
    .await?;
    Ok(())
}

/// A notification's payload.
#[derive(serde::Deserialize)]
struct Payload {
    id: Uuid,
    tenant_id: Uuid,
    decision_id: Uuid,
    #[serde(rename = "type")]
    kind: String,
    status: String,
    at: DateTime<Utc>,
}

impl Payload {
    fn into_event(self) -> (Uuid, DecisionEvent) {
        let kind = DecisionEventType::from_str_name(&format!("DECISION_EVENT_TYPE_{}", self.kind))
            .unwrap_or_default();
        (
            self.tenant_id,
            DecisionEvent {
                id: self.id.to_string(),
                event_type: kind as i32,
                decision_id: self.decision_id.to_string(),
                status: crate::lifecycle::status_from_db(&self.status) as i32,
                event_time: opt_timestamp(Some(self.at)),
            },
        )
    }
}

/// Why a subscriber's stream ended (after its buffered events).
#[derive(Clone, Copy, Debug)]
enum End {
    Overflow,
    Interrupted,
    Shutdown,
}

/// What a subscriber asked for.
pub(crate) struct Filter {
    pub decision_ids: Vec<String>,
    pub event_types: Vec<i32>,
}

impl Filter {
    fn matches(&self, event: &DecisionEvent) -> bool {
        (self.decision_ids.is_empty() || self.decision_ids.contains(&event.decision_id))
            && (self.event_types.is_empty() || self.event_types.contains(&event.event_type))
    }
}

struct Subscriber {
    id: u64,
    filter: Filter,
    tx: mpsc::Sender<Arc<DecisionEvent>>,
    end: Arc<OnceLock<End>>,
}

#[derive(Default)]
struct Subscribers {
    /// Whether the listener runs: a subscriber registers only then.
    listening: bool,
    next_id: u64,
    by_tenant: HashMap<Uuid, Vec<Subscriber>>,
}

impl Subscribers {
    /// Ends every stream (each after its buffered events).
    fn end_all(&mut self, end: End) {
        for subscriber in self.by_tenant.drain().flat_map(|(_, subs)| subs) {
            let _ = subscriber.end.set(end);
        }
    }

    /// Hands `event` to the tenant's subscribers whose filters match; a
    /// full buffer ends that subscriber, a gone one is dropped.
    fn dispatch(&mut self, tenant_id: Uuid, event: DecisionEvent) {
        let Some(subs) = self.by_tenant.get_mut(&tenant_id) else {
            return;
        };
        let event = Arc::new(event);
        subs.retain(|subscriber| {
            if !subscriber.filter.matches(&event) {
                return !subscriber.tx.is_closed();
            }
            match subscriber.tx.try_send(event.clone()) {
                Ok(()) => true,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    let _ = subscriber.end.set(End::Overflow);
                    false
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            }
        });
        if subs.is_empty() {
            self.by_tenant.remove(&tenant_id);
        }
    }

    fn remove(&mut self, tenant_id: Uuid, id: u64) {
        if let Some(subs) = self.by_tenant.get_mut(&tenant_id) {
            subs.retain(|s| s.id != id);
            if subs.is_empty() {
                self.by_tenant.remove(&tenant_id);
            }
        }
    }
}

struct Inner {
    db: Db,
    buffer: usize,
    stopping: watch::Receiver<bool>,
    subscribers: Mutex<Subscribers>,
    /// Serialises starting the listener.
    starting: tokio::sync::Mutex<()>,
}

/// The process's one `LISTEN` connection and its subscribers.
#[derive(Clone)]
pub struct WatchHub {
    inner: Arc<Inner>,
}

impl WatchHub {
    /// A hub on `db` (its pool lends the listener a connection with the
    /// service's role) with `buffer` events per subscriber; streams end
    /// and the listener stops when `stopping` turns true.
    pub fn new(db: Db, buffer: usize, stopping: watch::Receiver<bool>) -> WatchHub {
        WatchHub {
            inner: Arc::new(Inner {
                db,
                buffer: buffer.max(1),
                stopping,
                subscribers: Mutex::new(Subscribers::default()),
                starting: tokio::sync::Mutex::new(()),
            }),
        }
    }

    fn subscribers(&self) -> std::sync::MutexGuard<'_, Subscribers> {
        self.inner
            .subscribers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Registers a subscriber of `tenant_id`'s events; the listener is
    /// listening when this returns, so every event committed from now on
    /// reaches the stream.
    pub(crate) async fn subscribe(
        &self,
        tenant_id: Uuid,
        filter: Filter,
    ) -> Result<WatchStream, Status> {
        if *self.inner.stopping.borrow() {
            return Err(shutting_down());
        }
        self.ensure_listening().await?;
        let (tx, rx) = mpsc::channel(self.inner.buffer);
        let end = Arc::new(OnceLock::new());
        let mut subs = self.subscribers();
        if !subs.listening {
            return Err(interrupted(None));
        }
        let id = subs.next_id;
        subs.next_id += 1;
        subs.by_tenant
            .entry(tenant_id)
            .or_default()
            .push(Subscriber {
                id,
                filter,
                tx,
                end: end.clone(),
            });
        Ok(WatchStream {
            rx,
            end,
            last: None,
            done: false,
            hub: self.clone(),
            tenant_id,
            id,
        })
    }

    async fn ensure_listening(&self) -> Result<(), Status> {
        let _starting = self.inner.starting.lock().await;
        if self.subscribers().listening {
            return Ok(());
        }
        let listener = self.inner.db.listen(CHANNEL).await.map_err(|error| {
            tracing::warn!(%error, "WatchDecisions: cannot LISTEN");
            Status::from(error)
        })?;
        self.subscribers().listening = true;
        // Its own span: it outlives the call that started it.
        let span = tracing::info_span!(parent: None, "watch_listener", service = %"decision");
        tokio::spawn(tracing::Instrument::instrument(
            self.clone().run(listener),
            span,
        ));
        Ok(())
    }

    /// Reads notifications until shutdown or until the connection is lost
    /// (then every stream ends with WATCH_INTERRUPTED: events may have been
    /// missed; the next subscriber starts a new listener).
    async fn run(self, mut listener: sqlx::postgres::PgListener) {
        let mut stopping = self.inner.stopping.clone();
        let stopped = async move {
            let _ = stopping.wait_for(|stop| *stop).await;
        };
        tokio::pin!(stopped);
        let end = loop {
            tokio::select! {
                _ = &mut stopped => break End::Shutdown,
                notification = listener.try_recv() => match notification {
                    Ok(Some(notification)) => {
                        match serde_json::from_str::<Payload>(notification.payload()) {
                            Ok(payload) => {
                                let (tenant_id, event) = payload.into_event();
                                self.subscribers().dispatch(tenant_id, event);
                            }
                            Err(error) => {
                                tracing::warn!(%error, "WatchDecisions: a notification that is not an event");
                            }
                        }
                    }
                    Ok(None) => break End::Interrupted,
                    Err(error) => {
                        tracing::warn!(%error, "WatchDecisions: the notification connection failed");
                        break End::Interrupted;
                    }
                },
            }
        };
        let mut subs = self.subscribers();
        subs.listening = false;
        subs.end_all(end);
        drop(subs);
        // Dropping the listener gives its connection back to the pool.
        drop(listener);
    }
}

/// One subscriber's events, then its end.
pub struct WatchStream {
    rx: mpsc::Receiver<Arc<DecisionEvent>>,
    end: Arc<OnceLock<End>>,
    /// The last event delivered: id and time, for a status that ends it.
    last: Option<(String, Option<prost_types::Timestamp>)>,
    done: bool,
    hub: WatchHub,
    tenant_id: Uuid,
    id: u64,
}

impl tokio_stream::Stream for WatchStream {
    type Item = Result<DecisionEvent, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        match self.rx.poll_recv(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(event)) => {
                let event = Arc::unwrap_or_clone(event);
                self.last = Some((event.id.clone(), event.event_time));
                Poll::Ready(Some(Ok(event)))
            }
            Poll::Ready(None) => {
                self.done = true;
                let last = self.last.as_ref();
                match self.end.get() {
                    Some(End::Overflow) => Poll::Ready(Some(Err(ended(
                        Code::ResourceExhausted,
                        "WATCH_OVERFLOW",
                        "the stream fell more events behind than its buffer holds; \
                         re-read what you need and watch again",
                        last,
                    )))),
                    Some(End::Interrupted) => Poll::Ready(Some(Err(interrupted(last)))),
                    Some(End::Shutdown) | None => Poll::Ready(None),
                }
            }
        }
    }
}

impl Drop for WatchStream {
    fn drop(&mut self) {
        self.hub.subscribers().remove(self.tenant_id, self.id);
    }
}

fn ended(
    code: Code,
    reason: &str,
    message: &str,
    last: Option<&(String, Option<prost_types::Timestamp>)>,
) -> Status {
    let (id, time) = match last {
        Some((id, time)) => (
            id.clone(),
            time.as_ref()
                .and_then(|t| DateTime::<Utc>::from_timestamp(t.seconds, t.nanos as u32))
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
                .unwrap_or_default(),
        ),
        None => (String::new(), String::new()),
    };
    let mut details = ErrorDetails::with_error_info(
        reason,
        DOMAIN,
        HashMap::from([
            ("last_event_id".to_owned(), id),
            ("last_event_time".to_owned(), time),
        ]),
    );
    // UNAVAILABLE is retryable by convention; say after how long, as every
    // other UNAVAILABLE of the suite does.
    if code == Code::Unavailable {
        details.set_retry_info(Some(UNAVAILABLE_RETRY));
    }
    Status::with_error_details(code, message, details)
}

fn interrupted(last: Option<&(String, Option<prost_types::Timestamp>)>) -> Status {
    ended(
        Code::Unavailable,
        "WATCH_INTERRUPTED",
        "the service lost its database notification connection; events may have been missed: \
         re-read what you need and watch again",
        last,
    )
}

fn shutting_down() -> Status {
    let mut details = ErrorDetails::with_error_info("SHUTTING_DOWN", DOMAIN, HashMap::new());
    details.set_retry_info(Some(UNAVAILABLE_RETRY));
    Status::with_error_details(
        Code::Unavailable,
        "the service is shutting down; watch again",
        details,
    )
}
