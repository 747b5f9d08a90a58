//! The error model: every failure the relay answers or records is one `RelayError`, which
//! says what happened (`ErrorKind`), whose fault it is (`Fault`) and whether another try
//! may do better (`Retry`). Callers branch on those three, never on strings: failover reads
//! `retry`, the access record reads `fault` (log level, the `fault` metric label), and one
//! encoder per client API (`openai`) turns the kind into that API's status and error shape.

pub mod anthropic;
pub mod openai;
mod policy;

use http::StatusCode;

pub use policy::{Failure, RETRY_REASONS, Retry, policy, retry_reason};

/// Whose fault a failure is: it decides the log level and the `fault` metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The client sent something wrong, or went over a limit meant for it.
    Client,
    /// An adapter failed: trap, limit, or an adapter error of its own.
    Adapter,
    /// The vendor or the path to it failed, or the vendor answered an error.
    Upstream,
    /// The relay itself: a missing adapter, no capacity, shutting down, a bug.
    Relay,
}

impl Fault {
    /// The `fault` label and log field.
    pub fn name(self) -> &'static str {
        match self {
            Fault::Client => "client",
            Fault::Adapter => "adapter",
            Fault::Upstream => "upstream",
            Fault::Relay => "relay",
        }
    }
}

/// The bound that expired on the way to the vendor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Dns,
    Connect,
    TlsHandshake,
    ResponseHeader,
    StreamIdle,
    /// `timeouts.first_token`: a stream's first output event did not come in time.
    FirstToken,
    Total,
}

impl Stage {
    /// From the `relay_timeouts_total` stage name the connector reports.
    pub fn from_name(name: &str) -> Self {
        match name {
            "dns" => Stage::Dns,
            "connect" => Stage::Connect,
            "tls_handshake" => Stage::TlsHandshake,
            "response_header" => Stage::ResponseHeader,
            "stream_idle" => Stage::StreamIdle,
            "first_token" => Stage::FirstToken,
            _ => Stage::Total,
        }
    }
}

/// Why an adapter refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// The request is invalid for this vendor.
    Invalid,
    /// A parameter this vendor cannot honour.
    Unsupported,
}

/// What happened. Each kind has one HTTP status, one default fault and one retry policy;
/// each client API's encoder gives it that API's error type and code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    InvalidRequest,
    /// `model` too long or with characters no model id has.
    InvalidModel,
    /// The channel's adapter does not serve this endpoint.
    UnsupportedEndpoint,
    Authentication,
    /// The token may not use the model.
    Permission,
    ModelNotFound,
    NotFound,
    MethodNotAllowed,
    ClientTimeout,
    BodyTooLarge,
    AdapterRejected(Rejection),
    UpstreamTimeout(Stage),
    /// The vendor could not be reached (refused, reset, DNS, TLS).
    UpstreamConnect,
    /// Every channel for the model is cooling down after its vendor's `Retry-After`: no
    /// vendor was called.
    UpstreamCoolingDown,
    /// The vendor answered something unusable (not JSON, too large, cut short, redirected).
    BadUpstream,
    /// The vendor answered an error, mapped by its adapter; the adapter's body and status
    /// go to the client, so this kind is only recorded (log, metrics), not encoded.
    UpstreamStatus,
    AdapterFailed,
    /// The channel's adapter is not loaded.
    AdapterMissing,
    /// Every adapter instance slot is in use.
    Capacity,
    /// The in-flight body budget is spent.
    BodyBudget,
    /// Shutting down, at the connection limit, or a channel unusable as configured.
    Unavailable,
    /// A bug: a handler panicked.
    Internal,
    JobQueueFull,
    JobQuotaExceeded,
    JobStoreUnavailable,
    JobStoreFull,
    /// The job's result could not be saved.
    JobStoreFailed,
    /// The relay stopped (shutdown or restart) while the job ran.
    JobInterrupted,
    /// The job's run ended inside the relay (a panic, a cancelled task).
    JobAborted,
    JobTooLarge,
    JobCancelled,
}

impl ErrorKind {
    /// Every kind, for zero samples and tests.
    pub const ALL: [ErrorKind; 38] = [
        ErrorKind::InvalidRequest,
        ErrorKind::InvalidModel,
        ErrorKind::UnsupportedEndpoint,
        ErrorKind::Authentication,
        ErrorKind::Permission,
        ErrorKind::ModelNotFound,
        ErrorKind::NotFound,
        ErrorKind::MethodNotAllowed,
        ErrorKind::ClientTimeout,
        ErrorKind::BodyTooLarge,
        ErrorKind::AdapterRejected(Rejection::Invalid),
        ErrorKind::AdapterRejected(Rejection::Unsupported),
        ErrorKind::UpstreamTimeout(Stage::Dns),
        ErrorKind::UpstreamTimeout(Stage::Connect),
        ErrorKind::UpstreamTimeout(Stage::TlsHandshake),
        ErrorKind::UpstreamTimeout(Stage::ResponseHeader),
        ErrorKind::UpstreamTimeout(Stage::StreamIdle),
        ErrorKind::UpstreamTimeout(Stage::FirstToken),
        ErrorKind::UpstreamTimeout(Stage::Total),
        ErrorKind::UpstreamConnect,
        ErrorKind::UpstreamCoolingDown,
        ErrorKind::BadUpstream,
        ErrorKind::UpstreamStatus,
        ErrorKind::AdapterFailed,
        ErrorKind::AdapterMissing,
        ErrorKind::Capacity,
        ErrorKind::BodyBudget,
        ErrorKind::Unavailable,
        ErrorKind::Internal,
        ErrorKind::JobQueueFull,
        ErrorKind::JobQuotaExceeded,
        ErrorKind::JobStoreUnavailable,
        ErrorKind::JobStoreFull,
        ErrorKind::JobStoreFailed,
        ErrorKind::JobInterrupted,
        ErrorKind::JobAborted,
        ErrorKind::JobTooLarge,
        ErrorKind::JobCancelled,
    ];

    /// The `kind` label and log field: a fixed snake_case name (stage and rejection
    /// detail left out, so the label set stays small).
    pub fn name(self) -> &'static str {
        use ErrorKind as K;
        match self {
            K::InvalidRequest => "invalid_request",
            K::InvalidModel => "invalid_model",
            K::UnsupportedEndpoint => "unsupported_endpoint",
            K::Authentication => "authentication",
            K::Permission => "permission",
            K::ModelNotFound => "model_not_found",
            K::NotFound => "not_found",
            K::MethodNotAllowed => "method_not_allowed",
            K::ClientTimeout => "client_timeout",
            K::BodyTooLarge => "body_too_large",
            K::AdapterRejected(_) => "adapter_rejected",
            K::UpstreamTimeout(_) => "upstream_timeout",
            K::UpstreamConnect => "upstream_connect",
            K::UpstreamCoolingDown => "upstream_cooling_down",
            K::BadUpstream => "bad_upstream",
            K::UpstreamStatus => "upstream_status",
            K::AdapterFailed => "adapter_failed",
            K::AdapterMissing => "adapter_missing",
            K::Capacity => "capacity",
            K::BodyBudget => "body_budget",
            K::Unavailable => "unavailable",
            K::Internal => "internal",
            K::JobQueueFull => "job_queue_full",
            K::JobQuotaExceeded => "job_quota_exceeded",
            K::JobStoreUnavailable => "job_store_unavailable",
            K::JobStoreFull => "job_store_full",
            K::JobStoreFailed => "job_store_failed",
            K::JobInterrupted => "job_interrupted",
            K::JobAborted => "job_aborted",
            K::JobTooLarge => "job_too_large",
            K::JobCancelled => "job_cancelled",
        }
    }

    /// The HTTP status this kind is answered with.
    pub fn status(self) -> StatusCode {
        use ErrorKind as K;
        match self {
            K::InvalidRequest | K::InvalidModel | K::UnsupportedEndpoint | K::AdapterRejected(_) => {
                StatusCode::BAD_REQUEST
            }
            K::Authentication => StatusCode::UNAUTHORIZED,
            K::Permission => StatusCode::FORBIDDEN,
            K::ModelNotFound | K::NotFound => StatusCode::NOT_FOUND,
            K::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            K::ClientTimeout => StatusCode::REQUEST_TIMEOUT,
            K::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            K::JobQueueFull | K::JobQuotaExceeded | K::UpstreamCoolingDown => StatusCode::TOO_MANY_REQUESTS,
            K::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            K::UpstreamConnect | K::BadUpstream | K::UpstreamStatus | K::AdapterFailed | K::JobTooLarge => {
                StatusCode::BAD_GATEWAY
            }
            K::AdapterMissing
            | K::Capacity
            | K::BodyBudget
            | K::Unavailable
            | K::JobStoreUnavailable
            | K::JobStoreFailed
            | K::JobInterrupted
            | K::JobAborted => StatusCode::SERVICE_UNAVAILABLE,
            K::UpstreamTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            K::JobStoreFull => StatusCode::INSUFFICIENT_STORAGE,
            // Only ever a job's recorded end; nginx's "client closed request".
            K::JobCancelled => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
        }
    }

    /// Whose fault this kind is, unless its maker knows better.
    pub fn fault(self) -> Fault {
        use ErrorKind as K;
        match self {
            K::InvalidRequest
            | K::InvalidModel
            | K::UnsupportedEndpoint
            | K::Authentication
            | K::Permission
            | K::ModelNotFound
            | K::NotFound
            | K::MethodNotAllowed
            | K::ClientTimeout
            | K::BodyTooLarge
            | K::AdapterRejected(_)
            | K::JobQuotaExceeded
            | K::JobTooLarge
            | K::JobCancelled => Fault::Client,
            K::UpstreamTimeout(_)
            | K::UpstreamConnect
            | K::UpstreamCoolingDown
            | K::BadUpstream
            | K::UpstreamStatus => Fault::Upstream,
            K::AdapterFailed => Fault::Adapter,
            K::AdapterMissing
            | K::Capacity
            | K::BodyBudget
            | K::Unavailable
            | K::Internal
            | K::JobQueueFull
            | K::JobStoreUnavailable
            | K::JobStoreFull
            | K::JobStoreFailed
            | K::JobInterrupted
            | K::JobAborted => Fault::Relay,
        }
    }

    /// A refusal under load or while stopping: expected operation, not a defect, so it
    /// is logged at warn even when the relay is the one refusing.
    pub fn is_refusal(self) -> bool {
        matches!(
            self,
            ErrorKind::Capacity
                | ErrorKind::BodyBudget
                | ErrorKind::Unavailable
                | ErrorKind::JobQueueFull
                | ErrorKind::JobStoreUnavailable
                | ErrorKind::JobStoreFull
        )
    }
}

/// An error on its way to the client.
#[derive(Debug, Clone)]
pub struct RelayError {
    pub kind: ErrorKind,
    pub fault: Fault,
    pub retry: Retry,
    /// The request field at fault, if one is.
    pub param: Option<String>,
    pub message: String,
    /// Seconds the client should wait before retrying (`Retry-After`), for load refusals.
    pub retry_after: Option<u32>,
}

impl RelayError {
    /// An error of `kind`, with the kind's fault and retry policy.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            fault: kind.fault(),
            retry: policy(Failure::Error(kind)),
            param: None,
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn status(&self) -> StatusCode {
        self.kind.status()
    }

    pub fn with_param(mut self, param: impl Into<String>) -> Self {
        self.param = Some(param.into());
        self
    }

    /// The policy's decision for a failure the kind alone does not tell (`Failure::Dropped`,
    /// `Failure::StreamStart`).
    pub fn with_retry(mut self, failure: Failure) -> Self {
        self.retry = policy(failure);
        self
    }

    pub fn with_retry_after(mut self, secs: u32) -> Self {
        self.retry_after = Some(secs);
        self
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Authentication, message)
    }

    pub fn model_forbidden(model: &str, token: &str) -> Self {
        Self::new(ErrorKind::Permission, format!("the token '{token}' is not allowed to use the model '{model}'"))
            .with_param("model")
    }

    pub fn model_not_found(model: &str) -> Self {
        Self::new(ErrorKind::ModelNotFound, format!("The model '{model}' does not exist or no channel serves it"))
            .with_param("model")
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidRequest, message)
    }

    pub fn invalid_model(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidModel, message).with_param("model")
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, message)
    }

    pub fn method_not_allowed(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::MethodNotAllowed, message)
    }

    pub fn payload_too_large(limit: u64) -> Self {
        Self::new(ErrorKind::BodyTooLarge, format!("request body is larger than the limit of {limit} bytes"))
    }

    pub fn client_timeout(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::ClientTimeout, message)
    }

    /// A bound on the way to the vendor expired before any byte reached the client.
    pub fn upstream_timeout(stage: Stage, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::UpstreamTimeout(stage), message)
    }

    /// The vendor could not be reached (refused, reset, DNS, TLS): another channel may do.
    pub fn upstream_unreachable(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::UpstreamConnect, message)
    }

    /// The vendor answered something unusable (not JSON, too large, cut short).
    pub fn bad_upstream(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::BadUpstream, message)
    }

    pub fn plugin(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::AdapterFailed, message)
    }

    pub fn plugin_rejected(message: impl Into<String>, why: Rejection) -> Self {
        Self::new(ErrorKind::AdapterRejected(why), message)
    }

    /// The in-flight body budget (`limits.max_inflight_body_bytes`) is spent: a load refusal
    /// the client may retry.
    pub fn body_budget_exhausted(limit: u64) -> Self {
        Self::new(
            ErrorKind::BodyBudget,
            format!(
                "the relay is holding its maximum of {limit} bytes of request bodies (limits.max_inflight_body_bytes); retry shortly"
            ),
        )
        .with_retry_after(1)
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unavailable, message)
    }

    /// A bug inside the relay (a handler panicked); the message says nothing of internals.
    pub fn internal() -> Self {
        Self::new(ErrorKind::Internal, "the relay had an internal error while processing your request")
    }

    /// The OpenAI error object as bytes (`openai::body`).
    pub fn body(&self) -> bytes::Bytes {
        openai::body(self)
    }

    /// The OpenAI error as one SSE event (`openai::sse_event`).
    pub fn sse_event(&self) -> bytes::Bytes {
        openai::sse_event(self)
    }
}

impl std::fmt::Display for RelayError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.status().as_u16())
    }
}

impl std::error::Error for RelayError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_have_unique_codes_and_names_per_detail() {
        let mut names = std::collections::BTreeSet::new();
        for k in ErrorKind::ALL {
            assert!(!k.name().is_empty());
            assert!(k.name().bytes().all(|b| b.is_ascii_lowercase() || b == b'_'), "{}", k.name());
            names.insert(k.name());
        }
        // Stage and rejection detail share a name: 38 kinds, 31 names.
        assert_eq!(names.len(), 31);
    }
}
