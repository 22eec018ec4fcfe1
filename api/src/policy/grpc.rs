use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A gRPC status code other than OK, by its name in kebab-case
/// (UNAVAILABLE is `unavailable`, DEADLINE_EXCEEDED `deadline-exceeded`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum GrpcCode {
    Cancelled,
    Unknown,
    InvalidArgument,
    DeadlineExceeded,
    NotFound,
    AlreadyExists,
    PermissionDenied,
    ResourceExhausted,
    FailedPrecondition,
    Aborted,
    OutOfRange,
    Unimplemented,
    Internal,
    Unavailable,
    DataLoss,
    Unauthenticated,
}

impl GrpcCode {
    /// Every code, in numeric order (1-16).
    pub const ALL: [GrpcCode; 16] = [
        GrpcCode::Cancelled,
        GrpcCode::Unknown,
        GrpcCode::InvalidArgument,
        GrpcCode::DeadlineExceeded,
        GrpcCode::NotFound,
        GrpcCode::AlreadyExists,
        GrpcCode::PermissionDenied,
        GrpcCode::ResourceExhausted,
        GrpcCode::FailedPrecondition,
        GrpcCode::Aborted,
        GrpcCode::OutOfRange,
        GrpcCode::Unimplemented,
        GrpcCode::Internal,
        GrpcCode::Unavailable,
        GrpcCode::DataLoss,
        GrpcCode::Unauthenticated,
    ];

    /// The code's number on the wire (`grpc-status`).
    pub fn number(self) -> u32 {
        self as u32 + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_names_follow_the_grpc_spec() {
        assert_eq!(GrpcCode::Cancelled.number(), 1);
        assert_eq!(GrpcCode::DeadlineExceeded.number(), 4);
        assert_eq!(GrpcCode::ResourceExhausted.number(), 8);
        assert_eq!(GrpcCode::Internal.number(), 13);
        assert_eq!(GrpcCode::Unavailable.number(), 14);
        assert_eq!(GrpcCode::Unauthenticated.number(), 16);
        for (i, code) in GrpcCode::ALL.iter().enumerate() {
            assert_eq!(code.number() as usize, i + 1);
        }
        assert_eq!(
            serde_json::to_string(&GrpcCode::ALL).unwrap(),
            r#"["cancelled","unknown","invalid-argument","deadline-exceeded","not-found","already-exists","permission-denied","resource-exhausted","failed-precondition","aborted","out-of-range","unimplemented","internal","unavailable","data-loss","unauthenticated"]"#
        );
    }
}
