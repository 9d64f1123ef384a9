//! How a port's connections are accepted and how long they live: TLS (or
//! plaintext HTTP/2), `TCP_NODELAY`, TCP keepalive, and the maximum
//! connection age that lets L4 load balancers rebalance long-lived HTTP/2
//! connections.

use std::io;
use std::net::IpAddr;
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
    /// Peers whose `x-forwarded-for` names the client (a sidecar, an
    /// ingress); empty: the TCP peer is the client, the header is ignored.
    pub trusted_proxies: Vec<IpRange>,
}

/// An address or a CIDR block (`10.0.0.0/8`, `127.0.0.1`, `fd00::/8`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpRange {
    network: IpAddr,
    prefix: u8,
}

impl IpRange {
    pub fn contains(&self, ip: IpAddr) -> bool {
        let bits = |ip: IpAddr| -> (u128, u8) {
            match ip.to_canonical() {
                IpAddr::V4(v4) => (u128::from(u32::from(v4)), 32),
                IpAddr::V6(v6) => (u128::from(v6), 128),
            }
        };
        let ((net, width), (addr, addr_width)) = (bits(self.network), bits(ip));
        if width != addr_width {
            return false;
        }
        let host_bits = u32::from(width - self.prefix);
        net.checked_shr(host_bits).unwrap_or(0) == addr.checked_shr(host_bits).unwrap_or(0)
    }
}

impl std::str::FromStr for IpRange {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, String> {
        let value = value.trim();
        let (addr, prefix) = value.split_once('/').unwrap_or((value, ""));
        let network: IpAddr = addr
            .parse()
            .map_err(|_| "expected IP addresses or CIDR blocks such as 10.0.0.0/8".to_owned())?;
        let network = network.to_canonical();
        let width = if network.is_ipv4() { 32 } else { 128 };
        let prefix = if prefix.is_empty() {
            width
        } else {
            prefix
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= width)
                .ok_or_else(|| format!("expected a prefix length from 0 to {width}"))?
        };
        Ok(Self { network, prefix })
    }
}

/// The client a call comes from: the TCP peer, unless the peer is a
/// trusted proxy; then the right-most `x-forwarded-for` address that is
/// not itself a trusted proxy (what a client writes on the left of the
/// header proves nothing; each proxy appends the peer it saw).
pub fn client_ip<'a>(
    peer: Option<IpAddr>,
    forwarded_for: impl Iterator<Item = &'a str>,
    trusted: &[IpRange],
) -> Option<IpAddr> {
    let peer = peer?.to_canonical();
    let is_trusted = |ip: IpAddr| trusted.iter().any(|range| range.contains(ip));
    if !is_trusted(peer) {
        return Some(peer);
    }
    let hops: Vec<&str> = forwarded_for.flat_map(|value| value.split(',')).collect();
    for hop in hops.iter().rev() {
        match hop.trim().parse::<IpAddr>() {
            Ok(ip) if is_trusted(ip.to_canonical()) => continue,
            Ok(ip) => return Some(ip.to_canonical()),
            // A hop that is not an address (`unknown`, garbage): nothing
            // left of it can be believed; the last proxy is the client.
            Err(_) => break,
        }
    }
    Some(peer)
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

#[cfg(test)]
mod client_ip_tests {
    use super::*;

    fn ranges(list: &[&str]) -> Vec<IpRange> {
        list.iter().map(|r| r.parse().expect("range")).collect()
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().expect("ip"))
    }

    #[test]
    fn ranges_parse_and_contain() {
        let net: IpRange = "10.1.0.0/16".parse().expect("cidr");
        assert!(net.contains("10.1.200.3".parse().expect("ip")));
        assert!(!net.contains("10.2.0.1".parse().expect("ip")));
        assert!(!net.contains("::1".parse().expect("ip")));
        let one: IpRange = "127.0.0.1".parse().expect("address");
        assert!(one.contains("::ffff:127.0.0.1".parse().expect("mapped")));
        let all: IpRange = "0.0.0.0/0".parse().expect("all");
        assert!(all.contains("192.0.2.1".parse().expect("ip")));
        assert!("10.0.0.0/33".parse::<IpRange>().is_err());
        assert!("fd00::/129".parse::<IpRange>().is_err());
        assert!("proxy".parse::<IpRange>().is_err());
    }

    #[test]
    fn the_header_counts_only_from_a_trusted_peer() {
        let trusted = ranges(&["127.0.0.1", "10.0.0.0/8"]);
        let header = ["198.51.100.9, 203.0.113.7"];
        // An untrusted peer: the header is whatever it chose to write.
        assert_eq!(
            client_ip(ip("192.0.2.5"), header.into_iter(), &trusted),
            ip("192.0.2.5")
        );
        // A trusted peer: the right-most hop it did not add itself.
        assert_eq!(
            client_ip(ip("127.0.0.1"), header.into_iter(), &trusted),
            ip("203.0.113.7")
        );
        // Proxies in a chain are skipped; repeated headers are one list.
        assert_eq!(
            client_ip(
                ip("127.0.0.1"),
                ["203.0.113.7", "10.0.0.4, 10.0.0.5"].into_iter(),
                &trusted
            ),
            ip("203.0.113.7")
        );
        // No header, garbage, or only proxies: the peer.
        assert_eq!(
            client_ip(ip("127.0.0.1"), std::iter::empty(), &trusted),
            ip("127.0.0.1")
        );
        assert_eq!(
            client_ip(
                ip("127.0.0.1"),
                ["203.0.113.7, unknown"].into_iter(),
                &trusted
            ),
            ip("127.0.0.1")
        );
        assert_eq!(
            client_ip(ip("127.0.0.1"), ["10.0.0.9"].into_iter(), &trusted),
            ip("127.0.0.1")
        );
        // Nothing trusted: the header never counts.
        assert_eq!(
            client_ip(ip("127.0.0.1"), header.into_iter(), &[]),
            ip("127.0.0.1")
        );
    }
}
