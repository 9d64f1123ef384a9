//! `grpc.health.v1.Health` as the gRPC health protocol describes it.
//! tonic-health's server answers `Watch` of an unknown service with
//! `NOT_FOUND`; the protocol wants the stream to stay open, send
//! `SERVICE_UNKNOWN`, and follow the service should it be registered
//! later. `Check` of an unknown service is `NOT_FOUND`, as there.
//!
//! Each `Watch` sends the current status, then every change (only the
//! latest when several happen at once), and ends (OK) when the port stops
//! accepting calls, so a client watching health never holds the drain.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_server::{Health as HealthApi, HealthServer};
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

use crate::ApiError;

/// The serving status of a port ("") and of each service it serves;
/// cheap to clone, every clone the same state.
#[derive(Clone)]
pub struct Health {
    inner: Arc<Inner>,
}

struct Inner {
    statuses: RwLock<HashMap<String, watch::Sender<ServingStatus>>>,
    /// Signalled whenever a service is registered: `Watch` streams of a
    /// name not (yet) known wait on it.
    registered: watch::Sender<()>,
    /// True once the port stops accepting calls: every `Watch` ends.
    closed: watch::Sender<bool>,
}

type WatchItem = Result<HealthCheckResponse, Status>;

impl Default for Health {
    fn default() -> Self {
        Self::new()
    }
}

impl Health {
    /// The server ("") SERVING, no service registered.
    pub fn new() -> Self {
        let statuses = HashMap::from([(String::new(), watch::channel(ServingStatus::Serving).0)]);
        Health {
            inner: Arc::new(Inner {
                statuses: RwLock::new(statuses),
                registered: watch::channel(()).0,
                closed: watch::channel(false).0,
            }),
        }
    }

    /// Sets (or registers) `service`'s status; watchers hear of a change.
    pub fn set(&self, service: &str, status: ServingStatus) {
        let mut statuses = self
            .inner
            .statuses
            .write()
            .unwrap_or_else(|e| e.into_inner());
        match statuses.get(service) {
            Some(sender) => {
                sender.send_if_modified(|current| {
                    let changed = *current != status;
                    *current = status;
                    changed
                });
            }
            None => {
                statuses.insert(service.to_owned(), watch::channel(status).0);
                drop(statuses);
                self.inner.registered.send_replace(());
            }
        }
    }

    /// `service`'s status; `None` when it is not registered.
    pub fn status(&self, service: &str) -> Option<ServingStatus> {
        let statuses = self
            .inner
            .statuses
            .read()
            .unwrap_or_else(|e| e.into_inner());
        statuses.get(service).map(|sender| *sender.borrow())
    }

    /// Ends every `Watch` stream, and any opened later: the port is
    /// stopping.
    pub fn close(&self) {
        self.inner.closed.send_replace(true);
    }

    /// The gRPC service answering from this state.
    pub fn service(&self) -> HealthServer<Health> {
        HealthServer::new(self.clone())
    }

    fn subscribe(&self, service: &str) -> Option<watch::Receiver<ServingStatus>> {
        let statuses = self
            .inner
            .statuses
            .read()
            .unwrap_or_else(|e| e.into_inner());
        statuses.get(service).map(watch::Sender::subscribe)
    }

    /// Feeds one `Watch` call until the client goes away or the port
    /// stops.
    async fn stream(self, service: String, tx: mpsc::Sender<WatchItem>) {
        let mut closed = self.inner.closed.subscribe();
        let mut registered = self.inner.registered.subscribe();
        let mut told_unknown = false;
        let mut status = loop {
            registered.borrow_and_update();
            if let Some(status) = self.subscribe(&service) {
                break status;
            }
            if !told_unknown {
                if tx
                    .send(Ok(response(ServingStatus::ServiceUnknown)))
                    .await
                    .is_err()
                {
                    return;
                }
                told_unknown = true;
            }
            tokio::select! {
                _ = tx.closed() => return,
                _ = closed.wait_for(|closed| *closed) => return,
                changed = registered.changed() => if changed.is_err() { return },
            }
        };
        loop {
            let current = *status.borrow_and_update();
            if tx.send(Ok(response(current))).await.is_err() {
                return;
            }
            tokio::select! {
                // A change and the stop at once: the change goes out first.
                biased;
                changed = status.changed() => if changed.is_err() { return },
                _ = tx.closed() => return,
                _ = closed.wait_for(|closed| *closed) => return,
            }
        }
    }
}

fn response(status: ServingStatus) -> HealthCheckResponse {
    HealthCheckResponse {
        status: status as i32,
    }
}

#[tonic::async_trait]
impl HealthApi for Health {
    async fn check(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        match self.status(&request.get_ref().service) {
            Some(status) => Ok(Response::new(response(status))),
            None => Err(ApiError::NotFound("service").into()),
        }
    }

    type WatchStream = ReceiverStream<WatchItem>;

    async fn watch(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        // One status in flight at a time: a slow watcher gets the latest.
        let (tx, rx) = mpsc::channel(1);
        tokio::spawn(self.clone().stream(request.into_inner().service, tx));
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_stream::StreamExt;

    async fn next(stream: &mut ReceiverStream<WatchItem>) -> Option<ServingStatus> {
        let item = tokio::time::timeout(std::time::Duration::from_secs(5), stream.next())
            .await
            .expect("a status within 5 s")?;
        Some(ServingStatus::try_from(item.expect("no error").status).expect("a known status"))
    }

    async fn watch(health: &Health, service: &str) -> ReceiverStream<WatchItem> {
        let request = Request::new(HealthCheckRequest {
            service: service.to_owned(),
        });
        health.watch(request).await.expect("watch").into_inner()
    }

    #[tokio::test]
    async fn watch_of_an_unknown_service_says_so_then_follows_it_once_registered() {
        let health = Health::new();
        let mut stream = watch(&health, "later.v1.Service").await;
        assert_eq!(next(&mut stream).await, Some(ServingStatus::ServiceUnknown));
        health.set("later.v1.Service", ServingStatus::NotServing);
        assert_eq!(next(&mut stream).await, Some(ServingStatus::NotServing));
        health.set("later.v1.Service", ServingStatus::Serving);
        assert_eq!(next(&mut stream).await, Some(ServingStatus::Serving));
    }

    #[tokio::test]
    async fn watch_sends_changes_only_and_ends_when_the_port_stops() {
        let health = Health::new();
        let mut stream = watch(&health, "").await;
        assert_eq!(next(&mut stream).await, Some(ServingStatus::Serving));
        health.set("", ServingStatus::Serving);
        health.set("", ServingStatus::NotServing);
        assert_eq!(next(&mut stream).await, Some(ServingStatus::NotServing));
        health.close();
        assert_eq!(next(&mut stream).await, None);
    }
}
