//! `GET /metrics` over HTTP/1.1 on a port of its own: the one request a
//! Prometheus scraper makes. A deliberately small responder (one request per
//! connection, bounded in size, time and concurrency) rather than a second
//! HTTP stack in the binary: the gRPC ports speak HTTP/2 only.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use super::Metrics;

/// The content type of the Prometheus text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
/// A scraper's request head is a few hundred bytes.
const MAX_REQUEST_HEAD: usize = 8 * 1024;
/// A connection that has not sent its request and read the answer by then
/// is closed.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);
/// Scrapers are few; connections beyond this are closed at once.
const MAX_CONNECTIONS: usize = 16;

/// Answers `GET /metrics` on `listener` until `shutdown` resolves.
pub async fn serve(listener: TcpListener, metrics: Metrics, shutdown: impl Future<Output = ()>) {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(err) => {
                    // Out of file descriptors, most likely: back off rather
                    // than spin on the error.
                    tracing::warn!(error = %err, "metrics endpoint cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            continue;
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let _permit = permit;
            match tokio::time::timeout(CONNECTION_TIMEOUT, respond(stream, &metrics)).await {
                Ok(Ok(())) => {}
                Ok(Err(err)) => tracing::debug!(error = %err, "metrics request failed"),
                Err(_) => tracing::debug!("metrics request timed out"),
            }
        });
    }
}

async fn respond(mut stream: TcpStream, metrics: &Metrics) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            // Closed before a whole request arrived.
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
        if ends_head(&head) {
            break;
        }
        if head.len() > MAX_REQUEST_HEAD {
            return answer(
                &mut stream,
                "431 Request Header Fields Too Large",
                "",
                false,
            )
            .await;
        }
    }
    let request_line = head
        .split(|b| *b == b'\n')
        .next()
        .map(|line| String::from_utf8_lossy(line).trim_end().to_owned())
        .unwrap_or_default();
    let mut parts = request_line.split(' ');
    let method = parts.next().unwrap_or_default();
    let path = parts
        .next()
        .unwrap_or_default()
        .split('?')
        .next()
        .unwrap_or_default();
    match (method, path) {
        ("GET", "/metrics") => answer(&mut stream, "200 OK", &metrics.render(), true).await,
        ("HEAD", "/metrics") => answer(&mut stream, "200 OK", "", true).await,
        (_, "/metrics") => answer(&mut stream, "405 Method Not Allowed", "", false).await,
        _ => answer(&mut stream, "404 Not Found", "", false).await,
    }
}

/// A blank line ends the request head (CRLF as the protocol says, bare LF
/// as tolerant servers accept).
fn ends_head(head: &[u8]) -> bool {
    head.windows(4).any(|w| w == b"\r\n\r\n") || head.windows(2).any(|w| w == b"\n\n")
}

async fn answer(
    stream: &mut TcpStream,
    status: &str,
    body: &str,
    metrics: bool,
) -> std::io::Result<()> {
    let content_type = if metrics {
        CONTENT_TYPE
    } else {
        "text/plain; charset=utf-8"
    };
    let allow = if status.starts_with("405") {
        "Allow: GET, HEAD\r\n"
    } else {
        ""
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{allow}Cache-Control: no-store\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn endpoint() -> (
        std::net::SocketAddr,
        Metrics,
        tokio::sync::oneshot::Sender<()>,
    ) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let metrics = Metrics::new();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(serve(listener, metrics.clone(), async {
            let _ = stopped.await;
        }));
        (addr, metrics, stop)
    }

    async fn exchange(addr: std::net::SocketAddr, request: &str) -> String {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        stream.write_all(request.as_bytes()).await.expect("send");
        let mut response = String::new();
        stream
            .read_to_string(&mut response)
            .await
            .expect("read the answer");
        response
    }

    #[tokio::test]
    async fn get_metrics_answers_the_text_format() {
        let (addr, metrics, _stop) = endpoint().await;
        metrics
            .counter("x_scraped_total", "Scrapes.", &[("kind", "test")])
            .inc();
        let response = exchange(
            addr,
            "GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: text/plain\r\n\r\n",
        )
        .await;
        let (head, body) = response.split_once("\r\n\r\n").expect("head and body");
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        assert!(
            head.contains(&format!("Content-Type: {CONTENT_TYPE}")),
            "{head}"
        );
        assert!(
            head.contains(&format!("Content-Length: {}", body.len())),
            "{head}"
        );
        assert!(
            body.contains("x_scraped_total{kind=\"test\"} 1\n"),
            "{body}"
        );
    }

    #[tokio::test]
    async fn other_paths_are_not_found_and_other_methods_not_allowed() {
        let (addr, _metrics, _stop) = endpoint().await;
        let response = exchange(addr, "GET / HTTP/1.1\r\n\r\n").await;
        assert!(
            response.starts_with("HTTP/1.1 404 Not Found\r\n"),
            "{response}"
        );
        let response = exchange(addr, "POST /metrics HTTP/1.1\r\n\r\n").await;
        assert!(
            response.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"),
            "{response}"
        );
        assert!(response.contains("Allow: GET, HEAD\r\n"), "{response}");
    }

    #[tokio::test]
    async fn an_endless_request_head_is_refused() {
        let (addr, _metrics, _stop) = endpoint().await;
        // One byte over the limit and not one more: the responder reads all
        // of it, so closing does not reset the connection under the answer.
        let start = "GET /metrics HTTP/1.1\r\nX: ";
        let request = format!("{start}{}", "a".repeat(MAX_REQUEST_HEAD + 1 - start.len()));
        let response = exchange(addr, &request).await;
        assert!(response.starts_with("HTTP/1.1 431 "), "{response}");
    }
}
