//! gRPC calls with hand-built bodies over a plain HTTP/2 client: for the
//! requests a generated client cannot send (malformed messages, lying frame
//! headers, a compressed flag without an encoding).

use std::net::SocketAddr;

use bytes::Bytes;
use http::HeaderMap;
use tokio::net::TcpStream;
use tonic::Status;

/// One HTTP/2 connection to a port.
pub struct RawConnection {
    addr: SocketAddr,
    send: h2::client::SendRequest<Bytes>,
}

/// What came back for one call.
#[derive(Debug)]
pub struct RawResponse {
    pub headers: HeaderMap,
    pub trailers: Option<HeaderMap>,
}

impl RawResponse {
    /// The call's status: in the trailers, or in the headers of a
    /// trailers-only answer.
    pub fn status(&self) -> Status {
        self.trailers
            .as_ref()
            .and_then(Status::from_header_map)
            .or_else(|| Status::from_header_map(&self.headers))
            .unwrap_or_else(|| panic!("no grpc-status in {self:?}"))
    }
}

impl RawConnection {
    pub async fn connect(addr: SocketAddr) -> RawConnection {
        let tcp = TcpStream::connect(addr)
            .await
            .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
        let (send, connection) = h2::client::handshake(tcp).await.expect("HTTP/2 handshake");
        tokio::spawn(async move {
            let _ = connection.await;
        });
        RawConnection { addr, send }
    }

    /// POSTs `body` to `path` as a gRPC request with `headers` added, and
    /// reads the whole answer.
    pub async fn call(
        &mut self,
        path: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> RawResponse {
        let mut request = http::Request::builder()
            .method("POST")
            .uri(format!("http://{}{path}", self.addr))
            .header("content-type", "application/grpc")
            .header("te", "trailers");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request.body(()).expect("request");
        let mut send = self.send.clone().ready().await.expect("connection ready");
        let (response, mut stream) = send.send_request(request, false).expect("send headers");
        stream
            .send_data(Bytes::from(body), true)
            .expect("send body");
        let response = response.await.expect("response headers");
        let (parts, mut body) = response.into_parts();
        while let Some(data) = body.data().await {
            let data = data.expect("response data");
            let _ = body.flow_control().release_capacity(data.len());
        }
        let trailers = body.trailers().await.expect("response trailers");
        RawResponse {
            headers: parts.headers,
            trailers,
        }
    }
}

/// `message` framed as gRPC does: flag byte, 4-byte big-endian length.
pub fn frame(compressed: bool, message: &[u8]) -> Vec<u8> {
    frame_claiming(compressed, message.len(), message)
}

/// A frame whose header claims `length` bytes, whatever follows it.
pub fn frame_claiming(compressed: bool, length: usize, message: &[u8]) -> Vec<u8> {
    let mut framed = vec![u8::from(compressed)];
    framed.extend_from_slice(&u32::try_from(length).expect("length fits").to_be_bytes());
    framed.extend_from_slice(message);
    framed
}
