//! Why Sluice gave no usable answer: the kinds `failure_mode` acts on, each with its own counter.

use super::Answer;

/// Why Sluice gave no usable answer; each kind has its own error counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The call could not be started (unknown cluster, host refused it).
    Dispatch,
    /// gRPC DEADLINE_EXCEEDED: the timeout passed.
    Timeout,
    /// gRPC UNAVAILABLE: Sluice unreachable, or its store is down.
    Unavailable,
    /// Any other gRPC status.
    GrpcStatus,
    /// An HTTP call without a response: timeout, reset or unreachable.
    NoResponse,
    /// An HTTP status that is neither an answer nor a rejection.
    HttpStatus,
    /// An answer that does not decode, is too big, or does not fit the request.
    Malformed,
}

impl ErrorKind {
    pub const ALL: [Self; 7] = [
        Self::Dispatch,
        Self::Timeout,
        Self::Unavailable,
        Self::GrpcStatus,
        Self::NoResponse,
        Self::HttpStatus,
        Self::Malformed,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Dispatch => "dispatch",
            Self::Timeout => "timeout",
            Self::Unavailable => "unavailable",
            Self::GrpcStatus => "grpc_status",
            Self::NoResponse => "no_response",
            Self::HttpStatus => "http_status",
            Self::Malformed => "malformed",
        }
    }

    /// The kind for a non-OK gRPC status.
    pub fn from_grpc(status: u32) -> Self {
        match status {
            4 => Self::Timeout,
            14 => Self::Unavailable,
            _ => Self::GrpcStatus,
        }
    }
}

/// A failed check: its kind and a line for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub kind: ErrorKind,
    pub detail: String,
}

impl Failure {
    pub fn new(kind: ErrorKind, detail: impl Into<String>) -> Self {
        Self {
            kind,
            detail: detail.into(),
        }
    }
}

/// gRPC INVALID_ARGUMENT: Sluice's status for a malformed or oversized check.
const INVALID_ARGUMENT: u32 = 3;

/// What a gRPC status other than OK means. INVALID_ARGUMENT is Sluice refusing the check as
/// malformed, which only the client's values can cause ([`Answer::refused`]): letting it through
/// under `failure_mode: allow` would be a bypass. Any other status is a failure. Its message is
/// not read: the SDK's `get_grpc_status` panics on hosts that do not answer as it expects.
pub fn from_grpc_status(status: u32) -> Result<Answer, Failure> {
    if status == INVALID_ARGUMENT {
        return Ok(Answer::refused("gRPC status INVALID_ARGUMENT"));
    }
    Err(Failure::new(
        ErrorKind::from_grpc(status),
        format!("gRPC status {status}"),
    ))
}
