//! The statuses of messages the transport refuses.
//!
//! tonic answers a client's malformed or oversized message with codes gRPC
//! meant for the implementation's own faults: INTERNAL for a message that
//! does not decode (bad varint, invalid UTF-8, truncated frame, compressed
//! flag without `grpc-encoding`, corrupt gzip), OUT_OF_RANGE for one over
//! the size limit. Those are the client's mistakes, so the pipeline gives
//! clients INVALID_ARGUMENT (`MALFORMED_REQUEST`) and RESOURCE_EXHAUSTED
//! (`REQUEST_TOO_LARGE`) instead, each with an `ErrorInfo` like every other
//! CodeOps error.
//!
//! tonic's statuses are told apart by their messages: the services' own
//! INTERNAL errors always read "internal error" and carry no tonic wording,
//! and the suite's transport tests (`foundation::pipeline`) send each kind
//! of bad message, so a tonic upgrade that rewords one fails them.

use std::collections::HashMap;

use http::HeaderMap;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use codeops_tenant::ERROR_DOMAIN;

pub const MALFORMED_REQUEST: &str = "MALFORMED_REQUEST";
pub const REQUEST_TOO_LARGE: &str = "REQUEST_TOO_LARGE";
pub const RESPONSE_TOO_LARGE: &str = "RESPONSE_TOO_LARGE";

const GRPC_STATUS: &str = "grpc-status";
const GRPC_MESSAGE: &str = "grpc-message";
const GRPC_STATUS_DETAILS: &str = "grpc-status-details-bin";

/// How tonic (and prost, through tonic-prost's codec) begin the INTERNAL
/// messages of a request body that does not decode.
const MALFORMED_PREFIXES: [&str; 5] = [
    // prost: bad varint, invalid UTF-8, wrong wire type, truncated field
    "failed to decode Protobuf message",
    // tonic's framing: a compressed flag without grpc-encoding, or a flag
    // other than 0 and 1
    "protocol error: received message with",
    // a compressed message that does not decompress
    "Error decompressing",
    // the body ended inside a message
    "Unexpected EOF decoding stream",
    // a unary request without its message
    "Missing request message",
];

/// RESOURCE_EXHAUSTED for a request message over the limit.
pub(super) fn request_too_large(limit: Option<usize>) -> Status {
    let (message, metadata) = match limit {
        Some(limit) => (
            format!("request message exceeds the limit of {limit} bytes"),
            HashMap::from([("limitBytes".to_owned(), limit.to_string())]),
        ),
        None => ("request message too large".to_owned(), HashMap::new()),
    };
    with_error_info(
        Code::ResourceExhausted,
        message,
        REQUEST_TOO_LARGE,
        metadata,
    )
}

/// RESOURCE_EXHAUSTED for a response message over the limit: the client
/// asked for more than one message may carry (a smaller page would do).
pub(super) fn response_too_large(limit: usize) -> Status {
    with_error_info(
        Code::ResourceExhausted,
        format!("response message exceeds the limit of {limit} bytes"),
        RESPONSE_TOO_LARGE,
        HashMap::from([("limitBytes".to_owned(), limit.to_string())]),
    )
}

fn malformed_request(detail: &str) -> Status {
    with_error_info(
        Code::InvalidArgument,
        format!("malformed request message: {detail}"),
        MALFORMED_REQUEST,
        HashMap::new(),
    )
}

fn with_error_info(
    code: Code,
    message: String,
    reason: &str,
    metadata: HashMap<String, String>,
) -> Status {
    let details = ErrorDetails::with_error_info(reason, ERROR_DOMAIN, metadata);
    Status::with_error_details(code, message, details)
}

/// The gRPC code `headers` (a trailers-only response's headers, or a
/// stream's trailers) carry, if any.
pub(super) fn grpc_code(headers: &HeaderMap) -> Option<Code> {
    headers
        .get(GRPC_STATUS)
        .map(|value| Code::from_bytes(value.as_bytes()))
}

/// The status a client should get instead of the transport error in
/// `headers`, if they hold one.
pub(super) fn replacement(headers: &HeaderMap) -> Option<Status> {
    // Only these codes can be a transport error; everything else (nearly
    // every response) is decided without decoding the message.
    let code = grpc_code(headers)?;
    if !matches!(
        code,
        Code::Internal | Code::OutOfRange | Code::ResourceExhausted
    ) {
        return None;
    }
    let status = Status::from_header_map(headers)?;
    // tonic's transport errors carry no details; ours always do.
    if !status.details().is_empty() {
        return None;
    }
    let message = status.message();
    match code {
        Code::Internal if MALFORMED_PREFIXES.iter().any(|p| message.starts_with(p)) => {
            Some(malformed_request(message))
        }
        // tonic's own limit, when a generated server's is below the
        // pipeline's: "Error, decoded message length too large: found N
        // bytes, the limit is: M bytes".
        Code::OutOfRange if message.starts_with("Error, decoded message length too large") => {
            Some(request_too_large(number_after(message, "the limit is: ")))
        }
        // A compressed message that decompresses past the limit: "Error
        // decompressing: size limit, of M bytes, exceeded …".
        Code::ResourceExhausted if message.starts_with("Error decompressing: size limit") => {
            Some(request_too_large(number_after(message, "size limit, of ")))
        }
        Code::OutOfRange if message.starts_with("Error, encoded message length too large") => {
            number_after(message, "the limit is: ").map(response_too_large)
        }
        _ => None,
    }
}

/// Writes `status` over the status in `headers`.
pub(super) fn write(status: &Status, headers: &mut HeaderMap) {
    headers.remove(GRPC_MESSAGE);
    headers.remove(GRPC_STATUS_DETAILS);
    if status.add_header(headers).is_err() {
        // Only a message that cannot be a header value fails, and ours are
        // plain ASCII; keep at least the code.
        headers.insert(GRPC_STATUS, (status.code() as i32).into());
    }
}

/// The decimal number right after `marker` in `message`.
fn number_after(message: &str, marker: &str) -> Option<usize> {
    let (_, rest) = message.split_once(marker)?;
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    rest[..digits].parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers_of(status: &Status) -> HeaderMap {
        let mut headers = HeaderMap::new();
        status.add_header(&mut headers).expect("status headers");
        headers
    }

    fn reason_of(status: &Status) -> String {
        status
            .get_details_error_info()
            .expect("an ErrorInfo detail")
            .reason
    }

    #[test]
    fn protobuf_decode_errors_are_malformed_requests() {
        let tonic = Status::internal(
            "failed to decode Protobuf message: LoginRequest.email: invalid string value: data is not UTF-8 encoded",
        );
        let status = replacement(&headers_of(&tonic)).expect("a replacement");
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(reason_of(&status), MALFORMED_REQUEST);
        assert!(
            status.message().contains("not UTF-8"),
            "{}",
            status.message()
        );
    }

    #[test]
    fn tonics_size_limits_become_request_too_large_with_the_limit() {
        let decoded = Status::out_of_range(
            "Error, decoded message length too large: found 5242885 bytes, the limit is: 4194304 bytes",
        );
        let inflated = Status::resource_exhausted(
            "Error decompressing: size limit, of 4194304 bytes, exceeded while decompressing message",
        );
        for tonic in [decoded, inflated] {
            let status = replacement(&headers_of(&tonic)).expect("a replacement");
            assert_eq!(status.code(), Code::ResourceExhausted);
            assert_eq!(reason_of(&status), REQUEST_TOO_LARGE);
            let info = status.get_details_error_info().expect("ErrorInfo");
            assert_eq!(info.metadata["limitBytes"], "4194304");
        }
    }

    #[test]
    fn the_services_own_statuses_are_left_alone() {
        for status in [
            Status::internal("internal error"),
            Status::out_of_range("page out of range"),
            Status::not_found("user not found"),
            request_too_large(Some(10)),
        ] {
            assert!(replacement(&headers_of(&status)).is_none(), "{status:?}");
        }
    }

    #[test]
    fn writing_a_replacement_drops_the_old_message_and_details() {
        let mut headers = headers_of(&Status::internal("Unexpected EOF decoding stream."));
        let status = replacement(&headers).expect("a replacement");
        write(&status, &mut headers);
        let written = Status::from_header_map(&headers).expect("a status");
        assert_eq!(written.code(), Code::InvalidArgument);
        assert_eq!(reason_of(&written), MALFORMED_REQUEST);
    }
}
