//! The one place where [`berth_core::Error`] becomes a gRPC status.

use berth_core::{Error, ErrorKind};
use tonic::{Code, Status};

/// The gRPC code containerd's errdefs uses for an error kind.
pub fn code_of(kind: ErrorKind) -> Code {
    match kind {
        ErrorKind::InvalidArgument => Code::InvalidArgument,
        ErrorKind::NotFound => Code::NotFound,
        ErrorKind::AlreadyExists => Code::AlreadyExists,
        ErrorKind::FailedPrecondition => Code::FailedPrecondition,
        ErrorKind::Unavailable => Code::Unavailable,
        ErrorKind::NotImplemented => Code::Unimplemented,
        ErrorKind::OutOfRange => Code::OutOfRange,
        ErrorKind::DataLoss => Code::DataLoss,
        ErrorKind::Canceled => Code::Cancelled,
        ErrorKind::DeadlineExceeded => Code::DeadlineExceeded,
        ErrorKind::PermissionDenied => Code::PermissionDenied,
        ErrorKind::Internal => Code::Internal,
        ErrorKind::Unknown => Code::Unknown,
    }
}

/// Converts an error to a status with containerd's code and the full message.
pub fn to_status(err: Error) -> Status {
    let code = code_of(err.kind());
    if code == Code::Internal {
        tracing::error!(error = %err, "internal error");
    }
    Status::new(code, err.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errdefs_table() {
        let table = [
            (ErrorKind::InvalidArgument, Code::InvalidArgument),
            (ErrorKind::NotFound, Code::NotFound),
            (ErrorKind::AlreadyExists, Code::AlreadyExists),
            (ErrorKind::FailedPrecondition, Code::FailedPrecondition),
            (ErrorKind::Unavailable, Code::Unavailable),
            (ErrorKind::NotImplemented, Code::Unimplemented),
            (ErrorKind::OutOfRange, Code::OutOfRange),
            (ErrorKind::DataLoss, Code::DataLoss),
            (ErrorKind::Canceled, Code::Cancelled),
            (ErrorKind::DeadlineExceeded, Code::DeadlineExceeded),
            (ErrorKind::PermissionDenied, Code::PermissionDenied),
            (ErrorKind::Internal, Code::Internal),
            (ErrorKind::Unknown, Code::Unknown),
        ];
        for (kind, code) in table {
            let status = to_status(Error::new(kind, "content x"));
            assert_eq!(status.code(), code, "{kind:?}");
            assert_eq!(status.message(), "content x");
        }
    }
}
