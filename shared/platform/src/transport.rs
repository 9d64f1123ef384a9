//! How a port's connections are accepted and how long they live: TLS (or
//! plaintext HTTP/2), `TCP_NODELAY`, TCP keepalive, and the maximum
//! connection age that lets L4 load balancers rebalance long-lived HTTP/2
//! connections.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, Sleep};
use tokio_stream::{Stream, StreamExt};
use tonic::transport::Identity;
use tonic::transport::server::{
    Connected, ServerTlsConfig, TcpConnectInfo, TcpIncoming, TlsConnectInfo,
};

/// TCP keepalive, for peers that vanish without a FIN.
pub const TCP_KEEPALIVE: Duration = Duration::from_secs(60);
/// How long a client may take over the TLS handshake before its
/// connection is dropped.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How a port's connections are served; the default is plaintext HTTP/2
/// with no age limit.
#[derive(Clone, Debug, Default)]
pub struct TransportSettings {
    /// After this long a connection is told to go away (HTTP/2 GOAWAY):
    /// its client opens a new one, possibly to another replica, for its
    /// next calls, while the calls in flight finish. `None`: no limit.
    pub max_connection_age: Option<Duration>,
    /// Then, how long calls still open on it (streams) may go on before
    /// the connection is closed under them.
    pub max_connection_age_grace: Duration,
    /// TLS with this certificate and key; `None`: plaintext (h2c).
    pub tls: Option<ServerTlsConfig>,
}

/// TLS settings from a PEM certificate chain and its PEM private key,
/// checked now: a bad certificate or key fails at start-up, not at the
/// first handshake.
pub fn tls_config(
    cert_pem: &str,
    key_pem: &str,
) -> Result<ServerTlsConfig, tonic::transport::Error> {
    let config = ServerTlsConfig::new()
        .identity(Identity::from_pem(cert_pem, key_pem))
        .timeout(TLS_HANDSHAKE_TIMEOUT);
    tonic::transport::Server::builder().tls_config(config.clone())?;
    Ok(config)
}

/// Accepted connections with `TCP_NODELAY` and TCP keepalive set (the
/// builder's own socket options do not apply to a listener passed in),
/// each closed at `max_age` (age and grace) if still open. Without
/// `TCP_NODELAY` the trailers of a unary answer, written after its
/// message, wait for the client's delayed ACK: about 40 ms a call for any
/// client that does not send something back at once.
pub fn incoming(
    listener: TcpListener,
    max_age: Option<Duration>,
) -> impl Stream<Item = io::Result<AgedConnection>> + Send + 'static {
    TcpIncoming::from(listener)
        .with_nodelay(Some(true))
        .with_keepalive(Some(TCP_KEEPALIVE))
        .map(move |accepted| {
            accepted.map(|stream| AgedConnection {
                stream,
                cut: max_age.map(|age| Box::pin(tokio::time::sleep_until(Instant::now() + age))),
            })
        })
}

/// A TCP connection that fails its reads and writes once it is past its
/// age and grace. The server has sent GOAWAY at its age (tonic's
/// `max_connection_age`); a connection still open after the grace holds
/// streams that did not end, and failing its I/O closes it and them
/// (tonic 0.14's own `max_connection_age_grace` would skip the GOAWAY).
pub struct AgedConnection {
    stream: TcpStream,
    cut: Option<Pin<Box<Sleep>>>,
}

fn past_age() -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        "connection past its maximum age and grace",
    )
}

impl AgedConnection {
    fn is_cut(&self) -> bool {
        self.cut.as_ref().is_some_and(|cut| cut.is_elapsed())
    }
}

impl Connected for AgedConnection {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.stream.connect_info()
    }
}

impl AsyncRead for AgedConnection {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        // The server always has a read pending on a connection: polling the
        // timer here wakes the connection when its time is up.
        if let Some(cut) = this.cut.as_mut()
            && cut.as_mut().poll(cx).is_ready()
        {
            return Poll::Ready(Err(past_age()));
        }
        Pin::new(&mut this.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for AgedConnection {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.is_cut() {
            return Poll::Ready(Err(past_age()));
        }
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if self.is_cut() {
            return Poll::Ready(Err(past_age()));
        }
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

/// The peer address of a request, over TLS or not.
pub fn peer_addr<B>(request: &http::Request<B>) -> Option<std::net::SocketAddr> {
    let extensions = request.extensions();
    extensions
        .get::<TcpConnectInfo>()
        .and_then(TcpConnectInfo::remote_addr)
        .or_else(|| {
            extensions
                .get::<TlsConnectInfo<TcpConnectInfo>>()
                .and_then(|info| info.get_ref().remote_addr())
        })
}
