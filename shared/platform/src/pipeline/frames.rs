//! Message size limits, checked on gRPC's length-prefixed framing (a flag
//! byte, a 4-byte big-endian length, the message) as the bytes stream past:
//! nothing is buffered, and an oversized message is refused from its
//! 5-byte header, before its body is read or sent.
//!
//! The lengths are as framed on the wire, so for a compressed message its
//! compressed size; tonic additionally refuses a request that decompresses
//! past its own 4 MiB limit.

use std::ops::ControlFlow;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};

use super::transport_errors::request_too_large;

const HEADER_LEN: usize = 5;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Where a stream of data chunks is in gRPC's framing.
#[derive(Debug, Default)]
pub(super) struct Framing {
    header: [u8; HEADER_LEN],
    /// Header bytes seen of the next message.
    filled: usize,
    /// Body bytes still to come of the current message.
    body_left: usize,
}

impl Framing {
    /// Walks `data`, calling `on_header(offset, length)` for each message
    /// header completed in it (`offset`: where in `data` the header began,
    /// 0 if it began in an earlier chunk), until `on_header` breaks.
    fn walk(
        &mut self,
        data: &[u8],
        mut on_header: impl FnMut(usize, usize) -> ControlFlow<()>,
    ) -> ControlFlow<()> {
        let mut pos = 0;
        while pos < data.len() {
            if self.body_left > 0 {
                let n = self.body_left.min(data.len() - pos);
                self.body_left -= n;
                pos += n;
                continue;
            }
            let start = pos;
            let n = (HEADER_LEN - self.filled).min(data.len() - pos);
            self.header[self.filled..self.filled + n].copy_from_slice(&data[pos..pos + n]);
            self.filled += n;
            pos += n;
            if self.filled < HEADER_LEN {
                break;
            }
            self.filled = 0;
            let [_, a, b, c, d] = self.header;
            let len = u32::from_be_bytes([a, b, c, d]) as usize;
            on_header(start, len)?;
            self.body_left = len;
        }
        ControlFlow::Continue(())
    }
}

/// A request body that fails, with RESOURCE_EXHAUSTED (`REQUEST_TOO_LARGE`),
/// at the header of the first message over `max` bytes. tonic's decoder
/// hands the failure to the client as the call's status.
///
/// It also notes when the transport fails under it (the client reset the
/// stream or the connection closed): whatever status the handler then
/// makes of that, nobody receives it, and the call is counted as CANCELLED.
pub struct RequestBody<B> {
    inner: B,
    framing: Framing,
    max: usize,
    failed: bool,
    client_gone: Arc<AtomicBool>,
}

impl<B> RequestBody<B> {
    pub(super) fn new(inner: B, max: usize, client_gone: Arc<AtomicBool>) -> Self {
        Self {
            inner,
            framing: Framing::default(),
            max,
            failed: false,
            client_gone,
        }
    }
}

impl<B> Body for RequestBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if this.failed {
            return Poll::Ready(None);
        }
        let frame = match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
            None => return Poll::Ready(None),
            Some(Err(err)) => {
                this.client_gone.store(true, Ordering::Relaxed);
                return Poll::Ready(Some(Err(err.into())));
            }
            Some(Ok(frame)) => frame,
        };
        if let Some(data) = frame.data_ref() {
            let max = this.max;
            let over = this
                .framing
                .walk(data, |_, len| {
                    if len > max {
                        ControlFlow::Break(())
                    } else {
                        ControlFlow::Continue(())
                    }
                })
                .is_break();
            if over {
                this.failed = true;
                return Poll::Ready(Some(Err(Box::new(request_too_large(Some(max))))));
            }
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.failed || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// What to send of a response data chunk.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Outbound {
    /// All of it (possibly empty: a message header is held back until it
    /// is whole).
    Pass(Bytes),
    /// The bytes before the header of a message over the limit; the
    /// response must end there.
    TooLarge { before: Bytes },
}

/// Holds response messages to `max` bytes. A message's header is only sent
/// once it is known to be within the limit, so a response can always be
/// cut cleanly at a message boundary.
#[derive(Debug)]
pub(super) struct OutboundLimit {
    framing: Framing,
    /// The start of a header split across chunks, not yet sent.
    held: Option<Bytes>,
    max: usize,
}

impl OutboundLimit {
    pub(super) fn new(max: usize) -> Self {
        Self {
            framing: Framing::default(),
            held: None,
            max,
        }
    }

    pub(super) fn max(&self) -> usize {
        self.max
    }

    pub(super) fn check(&mut self, data: Bytes) -> Outbound {
        let data = match self.held.take() {
            None => data,
            Some(held) => {
                let mut joined = BytesMut::with_capacity(held.len() + data.len());
                joined.extend_from_slice(&held);
                joined.extend_from_slice(&data);
                joined.freeze()
            }
        };
        let max = self.max;
        let mut cut = None;
        let _ = self.framing.walk(&data, |start, len| {
            if len > max {
                cut = Some(start);
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        });
        if let Some(start) = cut {
            return Outbound::TooLarge {
                before: data.slice(..start),
            };
        }
        // A header cut short by the chunk's end is held and walked again,
        // whole, with the next chunk.
        let partial = std::mem::take(&mut self.framing.filled);
        if partial > 0 {
            let keep = data.len() - partial;
            self.held = Some(data.slice(keep..));
            return Outbound::Pass(data.slice(..keep));
        }
        Outbound::Pass(data)
    }

    /// Bytes held back when the response ends (only a malformed response
    /// ends inside a header); sent as they are.
    pub(super) fn take_held(&mut self) -> Option<Bytes> {
        self.held.take()
    }

    pub(super) fn holds_bytes(&self) -> bool {
        self.held.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One framed message of `len` zero bytes.
    fn message(len: usize) -> Vec<u8> {
        let mut framed = vec![0];
        framed.extend_from_slice(&(len as u32).to_be_bytes());
        framed.resize(HEADER_LEN + len, 0);
        framed
    }

    fn lengths(chunks: &[&[u8]]) -> Vec<usize> {
        let mut framing = Framing::default();
        let mut seen = Vec::new();
        for chunk in chunks {
            let _ = framing.walk(chunk, |_, len| {
                seen.push(len);
                ControlFlow::Continue(())
            });
        }
        seen
    }

    #[test]
    fn headers_are_found_across_any_chunking() {
        let mut stream = message(3);
        stream.extend(message(0));
        stream.extend(message(300));
        for split in 0..stream.len() {
            let (a, b) = stream.split_at(split);
            assert_eq!(lengths(&[a, b]), [3, 0, 300], "split at {split}");
        }
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(lengths(&bytes), [3, 0, 300]);
    }

    #[test]
    fn a_response_is_cut_before_the_first_message_over_the_limit() {
        let mut stream = message(10);
        stream.extend(message(11));
        let mut limit = OutboundLimit::new(10);
        assert_eq!(
            limit.check(Bytes::from(stream)),
            Outbound::TooLarge {
                before: Bytes::from(message(10))
            }
        );
    }

    #[test]
    fn a_header_split_across_chunks_is_held_until_whole() {
        let mut stream = message(10);
        stream.extend(message(20));
        let (first, second) = stream.split_at(HEADER_LEN + 10 + 2);
        let mut limit = OutboundLimit::new(10);
        assert_eq!(
            limit.check(Bytes::copy_from_slice(first)),
            Outbound::Pass(Bytes::from(message(10)))
        );
        assert!(limit.holds_bytes());
        assert_eq!(
            limit.check(Bytes::copy_from_slice(second)),
            Outbound::TooLarge {
                before: Bytes::new()
            }
        );

        let mut within = OutboundLimit::new(20);
        let Outbound::Pass(a) = within.check(Bytes::copy_from_slice(first)) else {
            panic!("within the limit");
        };
        let Outbound::Pass(b) = within.check(Bytes::copy_from_slice(second)) else {
            panic!("within the limit");
        };
        assert_eq!([a, b].concat(), stream, "every byte goes out, in order");
        assert!(!within.holds_bytes());
    }
}
