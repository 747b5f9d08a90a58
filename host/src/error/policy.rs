//! The retry policy: what a failed attempt comes to (the client's answer, the same channel
//! again, the next channel), and the closed set of reasons it is counted under.

use http::StatusCode;

use super::{ErrorKind, Fault, Stage};
use crate::model::ErrorClass;

/// What may be tried after a failure, before any byte reached the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// The failure is the answer.
    Never,
    /// Another channel may succeed where this one failed.
    NextChannel,
    /// This channel may answer on another try (after a backoff, within the retry budget);
    /// once its attempts are spent, the next channel.
    SameChannel,
}

/// A failed attempt, as the retry policy sees it.
#[derive(Debug, Clone, Copy)]
pub enum Failure {
    /// The relay's own error for the attempt.
    Error(ErrorKind),
    /// The connection failed after the request was sent and before the response head (a
    /// reset, a close): the vendor may or may not have seen it.
    Dropped,
    /// A stream failed before its first output event, for a reason that is the vendor's
    /// (`fault`): nothing reached the client yet.
    StreamStart { fault: Fault },
    /// The vendor answered an error status and the adapter mapped it; `class` is the
    /// adapter's reading of it, where the contract carries one.
    Vendor { status: StatusCode, class: Option<ErrorClass> },
}

/// The retry policy: the one place that decides what a failed attempt comes to: the
/// client's answer (`Never`), another try of the same channel (`SameChannel`, bounded by
/// `[retry]`), or the next channel (`NextChannel`). Only before any byte reached the client.
pub fn policy(failure: Failure) -> Retry {
    match failure {
        // Refused or reset while connecting: a restart or a blip, worth another try.
        Failure::Error(ErrorKind::UpstreamConnect) | Failure::Dropped => Retry::SameChannel,
        // A bound expired on the way: trying the same vendor again would wait as long.
        Failure::Error(
            ErrorKind::UpstreamTimeout(
                Stage::Dns | Stage::Connect | Stage::TlsHandshake | Stage::ResponseHeader | Stage::FirstToken,
            )
            | ErrorKind::AdapterMissing
            | ErrorKind::UnsupportedEndpoint,
        ) => Retry::NextChannel,
        Failure::Error(_) => Retry::Never,
        Failure::StreamStart { fault: Fault::Upstream } => Retry::NextChannel,
        Failure::StreamStart { .. } => Retry::Never,
        // A prompt too long for this model may fit another channel's; every other 4xx
        // (a content filter's included) is the client's answer.
        Failure::Vendor { class: Some(ErrorClass::ContextLengthExceeded), .. } => Retry::NextChannel,
        Failure::Vendor { status, .. } => {
            if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
                Retry::SameChannel
            } else {
                Retry::Never
            }
        }
    }
}

/// The `reason` label of `relay_retries_total` and `relay_failovers_total`, and the access
/// record's word for why an attempt was not the answer: a closed set.
pub fn retry_reason(failure: Failure) -> &'static str {
    match failure {
        Failure::Error(ErrorKind::UpstreamConnect) => "connect",
        Failure::Error(ErrorKind::UpstreamTimeout(Stage::FirstToken)) => "first_token",
        Failure::Error(ErrorKind::UpstreamTimeout(_)) => "timeout",
        Failure::Error(ErrorKind::AdapterMissing | ErrorKind::UnsupportedEndpoint) => "adapter",
        Failure::Error(_) => "error",
        Failure::Dropped => "dropped",
        Failure::StreamStart { .. } => "stream_start",
        Failure::Vendor { class: Some(ErrorClass::ContextLengthExceeded), .. } => "context_length",
        Failure::Vendor { status, .. } if status == StatusCode::TOO_MANY_REQUESTS => "status_429",
        Failure::Vendor { status, .. } if status.is_server_error() => "status_5xx",
        Failure::Vendor { .. } => "status_4xx",
    }
}

/// Every `retry_reason`, for zero samples.
pub const RETRY_REASONS: [&str; 11] = [
    "connect",
    "first_token",
    "timeout",
    "adapter",
    "error",
    "dropped",
    "stream_start",
    "context_length",
    "status_429",
    "status_5xx",
    "status_4xx",
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::RelayError;

    #[test]
    fn retry_policy() {
        // Issue 14 changed three rows: a refused connection is retried on the same channel
        // first, a silent vendor (response_header) fails over, a 5xx or 429 is retried on
        // the same channel within `[retry]` before failing over.
        assert_eq!(RelayError::upstream_unreachable("x").retry, Retry::SameChannel);
        for stage in [Stage::Dns, Stage::Connect, Stage::TlsHandshake, Stage::ResponseHeader, Stage::FirstToken] {
            assert_eq!(RelayError::upstream_timeout(stage, "x").retry, Retry::NextChannel, "{stage:?}");
        }
        for stage in [Stage::Total, Stage::StreamIdle] {
            assert_eq!(RelayError::upstream_timeout(stage, "x").retry, Retry::Never, "{stage:?}");
        }
        assert_eq!(RelayError::bad_upstream("x").retry, Retry::Never);
        assert_eq!(RelayError::bad_upstream("x").with_retry(Failure::Dropped).retry, Retry::SameChannel);
        assert_eq!(policy(Failure::StreamStart { fault: Fault::Upstream }), Retry::NextChannel);
        assert_eq!(policy(Failure::StreamStart { fault: Fault::Adapter }), Retry::Never);
        assert_eq!(RelayError::plugin("x").retry, Retry::Never);
        assert_eq!(RelayError::unavailable("x").retry, Retry::Never);
        assert_eq!(RelayError::new(ErrorKind::UpstreamCoolingDown, "x").retry, Retry::Never);
        assert_eq!(RelayError::new(ErrorKind::AdapterMissing, "x").retry, Retry::NextChannel);
        for (status, retry) in [(500, Retry::SameChannel), (503, Retry::SameChannel), (429, Retry::SameChannel)]
            .into_iter()
            .chain([(400, Retry::Never), (401, Retry::Never), (404, Retry::Never)])
        {
            let status = StatusCode::from_u16(status).unwrap();
            assert_eq!(policy(Failure::Vendor { status, class: None }), retry, "{status}");
        }
        // By the adapter's class: a context-length 400 moves on, a content-filter 400 is the answer.
        let bad = StatusCode::BAD_REQUEST;
        let context = Failure::Vendor { status: bad, class: Some(ErrorClass::ContextLengthExceeded) };
        assert_eq!(policy(context), Retry::NextChannel);
        assert_eq!(retry_reason(context), "context_length");
        let filtered = Failure::Vendor { status: bad, class: Some(ErrorClass::ContentFiltered) };
        assert_eq!(policy(filtered), Retry::Never);
    }

    #[test]
    fn every_reason_is_listed() {
        let failures = [
            Failure::Error(ErrorKind::UpstreamConnect),
            Failure::Error(ErrorKind::UpstreamTimeout(Stage::FirstToken)),
            Failure::Error(ErrorKind::UpstreamTimeout(Stage::ResponseHeader)),
            Failure::Error(ErrorKind::AdapterMissing),
            Failure::Error(ErrorKind::Internal),
            Failure::Dropped,
            Failure::StreamStart { fault: Fault::Upstream },
            Failure::Vendor { status: StatusCode::BAD_REQUEST, class: Some(ErrorClass::ContextLengthExceeded) },
            Failure::Vendor { status: StatusCode::TOO_MANY_REQUESTS, class: None },
            Failure::Vendor { status: StatusCode::BAD_GATEWAY, class: None },
            Failure::Vendor { status: StatusCode::NOT_FOUND, class: None },
        ];
        let reasons: Vec<&str> = failures.iter().map(|f| retry_reason(*f)).collect();
        assert_eq!(reasons, RETRY_REASONS);
    }
}
