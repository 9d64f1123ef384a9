//! The response side of a call: where its final status is seen. A
//! trailers-only response (an error before any message) carries it in its
//! headers; every other response in the trailers that end its body, which
//! for a stream may be long after the handler returned.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderMap, Response};
use http_body::{Body, Frame, SizeHint};
use tonic::{Code, Status};
use tracing::Span;

use super::frames::{Outbound, OutboundLimit};
use super::transport_errors::{self, response_too_large};
use super::{Call, panic_message};

/// A response body the pipeline watches until the call's final status.
pub struct ResponseBody<B> {
    inner: B,
    state: State,
    /// The call's span, entered while the body is polled: a streaming
    /// handler's work happens here, after the handler returned.
    span: Span,
    limit: OutboundLimit,
}

enum State {
    /// Trailers-only: the status was in the headers, nothing to watch.
    Settled,
    /// Messages flowing; the status is still to come.
    Open(Call),
    /// These trailers go out once the held data before them has.
    Closing(HeaderMap),
    Done,
}

/// Wraps a response: settles it now if its status is already in the
/// headers, otherwise watches its body for the trailers.
pub(super) fn wrap<B>(
    response: Response<B>,
    mut call: Call,
    max_bytes: usize,
) -> Response<ResponseBody<B>> {
    let (mut parts, inner) = response.into_parts();
    let limit = OutboundLimit::new(max_bytes);
    if transport_errors::grpc_code(&parts.headers).is_some() {
        if let Some(status) = transport_errors::replacement(&parts.headers) {
            transport_errors::write(&status, &mut parts.headers);
            // tonic leaves the status it answered with in the extensions.
            parts.extensions.insert(status);
        }
        let code = transport_errors::grpc_code(&parts.headers).unwrap_or(Code::Unknown);
        call.finish(code);
        let body = ResponseBody {
            inner,
            state: State::Settled,
            span: Span::none(),
            limit,
        };
        return Response::from_parts(parts, body);
    }
    let body = ResponseBody {
        inner,
        span: call.span.clone(),
        state: State::Open(call),
        limit,
    };
    Response::from_parts(parts, body)
}

impl<B> ResponseBody<B> {
    /// Records the call's final code and moves on to `next`.
    fn settle(&mut self, code: Code, next: State) {
        if let State::Open(mut call) = std::mem::replace(&mut self.state, next) {
            call.finish(code);
        }
    }

    /// Ends the response with `status` after `before`, the data preceding it.
    fn end_with(&mut self, status: &Status, before: Option<Bytes>) -> Frame<Bytes> {
        let trailers = status_trailers(status);
        match before.filter(|data| !data.is_empty()) {
            Some(data) => {
                self.settle(status.code(), State::Closing(trailers));
                Frame::data(data)
            }
            None => {
                self.settle(status.code(), State::Done);
                Frame::trailers(trailers)
            }
        }
    }
}

impl<B> Body for ResponseBody<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.get_mut();
        match &mut this.state {
            State::Settled => return Pin::new(&mut this.inner).poll_frame(cx),
            State::Done => return Poll::Ready(None),
            State::Closing(_) => {
                let State::Closing(trailers) = std::mem::replace(&mut this.state, State::Done)
                else {
                    unreachable!("matched just above");
                };
                return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
            }
            State::Open(_) => {}
        }
        let span = this.span.clone();
        let _entered = span.enter();
        loop {
            let polled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                Pin::new(&mut this.inner).poll_frame(cx)
            }));
            let frame = match polled {
                Err(payload) => {
                    tracing::error!(
                        panic = %panic_message(&payload),
                        "handler panicked while streaming its response"
                    );
                    // The inner body is never polled again.
                    let status = Status::internal("internal error");
                    return Poll::Ready(Some(Ok(this.end_with(&status, None))));
                }
                Ok(Poll::Pending) => return Poll::Pending,
                Ok(Poll::Ready(None)) => {
                    // A gRPC response ends with trailers; one that does not
                    // has no status the client could see.
                    let held = this.limit.take_held();
                    this.settle(Code::Unknown, State::Done);
                    return Poll::Ready(held.map(|data| Ok(Frame::data(data))));
                }
                Ok(Poll::Ready(Some(Err(err)))) => {
                    this.settle(Code::Unknown, State::Done);
                    return Poll::Ready(Some(Err(err)));
                }
                Ok(Poll::Ready(Some(Ok(frame)))) => frame,
            };
            let frame = match frame.into_data() {
                Ok(data) => match this.limit.check(data) {
                    Outbound::Pass(data) if data.is_empty() => continue,
                    Outbound::Pass(data) => Frame::data(data),
                    Outbound::TooLarge { before } => {
                        let status = response_too_large(this.limit.max());
                        tracing::warn!(
                            limit_bytes = this.limit.max(),
                            "response message over the limit: answering RESOURCE_EXHAUSTED"
                        );
                        this.end_with(&status, Some(before))
                    }
                },
                Err(frame) => match frame.into_trailers() {
                    Ok(mut trailers) => {
                        if let Some(status) = transport_errors::replacement(&trailers) {
                            transport_errors::write(&status, &mut trailers);
                        }
                        let code = transport_errors::grpc_code(&trailers).unwrap_or(Code::Unknown);
                        match this.limit.take_held() {
                            Some(held) => {
                                this.settle(code, State::Closing(trailers));
                                Frame::data(held)
                            }
                            None => {
                                this.settle(code, State::Done);
                                Frame::trailers(trailers)
                            }
                        }
                    }
                    // Neither data nor trailers: nothing to watch.
                    Err(frame) => frame,
                },
            };
            return Poll::Ready(Some(Ok(frame)));
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.state {
            State::Settled => self.inner.is_end_stream(),
            State::Open(_) => !self.limit.holds_bytes() && self.inner.is_end_stream(),
            State::Closing(_) => false,
            State::Done => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.state {
            State::Settled => self.inner.size_hint(),
            State::Done => SizeHint::with_exact(0),
            // A body may still be cut short or grow by held bytes.
            State::Open(_) | State::Closing(_) => SizeHint::default(),
        }
    }
}

fn status_trailers(status: &Status) -> HeaderMap {
    let mut trailers = HeaderMap::new();
    transport_errors::write(status, &mut trailers);
    trailers
}
