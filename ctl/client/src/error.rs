//! The one place a gRPC status becomes a [`berth_core::Error`], following containerd's
//! `errdefs.FromGRPC` so callers can branch on the same classes the server meant.

use berth_core::{Error, ErrorKind};
use tonic::{Code, Status};

/// The error kind containerd's client derives from a gRPC code.
pub fn kind_of(code: Code) -> ErrorKind {
    match code {
        Code::InvalidArgument => ErrorKind::InvalidArgument,
        Code::NotFound => ErrorKind::NotFound,
        Code::AlreadyExists => ErrorKind::AlreadyExists,
        Code::FailedPrecondition => ErrorKind::FailedPrecondition,
        Code::Unavailable => ErrorKind::Unavailable,
        Code::Unimplemented => ErrorKind::NotImplemented,
        Code::OutOfRange => ErrorKind::OutOfRange,
        Code::DataLoss => ErrorKind::DataLoss,
        Code::Cancelled => ErrorKind::Canceled,
        Code::DeadlineExceeded => ErrorKind::DeadlineExceeded,
        Code::PermissionDenied => ErrorKind::PermissionDenied,
        Code::Internal => ErrorKind::Internal,
        Code::Ok
        | Code::Unknown
        | Code::ResourceExhausted
        | Code::Aborted
        | Code::Unauthenticated => ErrorKind::Unknown,
    }
}

/// Converts a status to an error of the matching kind. A trailing `": <class>"` is stripped
/// from the message, as containerd's client does, because servers that append the class would
/// otherwise have it shown twice once the kind is printed again.
pub fn from_status(status: Status) -> Error {
    let kind = kind_of(status.code());
    let message = status.message();
    let message = message
        .strip_suffix(kind.as_str())
        .and_then(|m| m.strip_suffix(": "))
        .unwrap_or(message);
    let message = if message.is_empty() {
        // A bare status (e.g. a transport failure) still has to say something.
        format!("{} (grpc code {:?})", kind.as_str(), status.code())
    } else {
        message.to_owned()
    };
    Error::new(kind, message)
}

/// The error for a connection that could not be made to `socket`.
pub(crate) fn connect_error(socket: &std::path::Path, err: tonic::transport::Error) -> Error {
    // Each layer of a transport error tends to repeat its source's text; keep each once.
    let mut cause = err.to_string();
    let mut source: Option<&dyn std::error::Error> = std::error::Error::source(&err);
    while let Some(s) = source {
        let text = s.to_string();
        if !cause.contains(&text) {
            cause = format!("{cause}: {text}");
        }
        source = s.source();
    }
    Error::unavailable(format!(
        "connect to berthd at {}: {cause}",
        socket.display()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_maps_like_errdefs() {
        let table = [
            (Code::Ok, ErrorKind::Unknown),
            (Code::Cancelled, ErrorKind::Canceled),
            (Code::Unknown, ErrorKind::Unknown),
            (Code::InvalidArgument, ErrorKind::InvalidArgument),
            (Code::DeadlineExceeded, ErrorKind::DeadlineExceeded),
            (Code::NotFound, ErrorKind::NotFound),
            (Code::AlreadyExists, ErrorKind::AlreadyExists),
            (Code::PermissionDenied, ErrorKind::PermissionDenied),
            (Code::ResourceExhausted, ErrorKind::Unknown),
            (Code::FailedPrecondition, ErrorKind::FailedPrecondition),
            (Code::Aborted, ErrorKind::Unknown),
            (Code::OutOfRange, ErrorKind::OutOfRange),
            (Code::Unimplemented, ErrorKind::NotImplemented),
            (Code::Internal, ErrorKind::Internal),
            (Code::Unavailable, ErrorKind::Unavailable),
            (Code::DataLoss, ErrorKind::DataLoss),
            (Code::Unauthenticated, ErrorKind::Unknown),
        ];
        assert_eq!(table.len(), 17, "every gRPC code is covered");
        for (code, kind) in table {
            let err = from_status(Status::new(code, "content digest sha256:ab"));
            assert_eq!(err.kind(), kind, "{code:?}");
            assert_eq!(err.message(), "content digest sha256:ab", "{code:?}");
        }
    }

    #[test]
    fn strips_only_the_matching_class_suffix() {
        let err = from_status(Status::not_found("content digest sha256:ab: not found"));
        assert_eq!(err.message(), "content digest sha256:ab");
        assert_eq!(err.kind(), ErrorKind::NotFound);

        let err = from_status(Status::failed_precondition(
            "namespace is required: failed precondition",
        ));
        assert_eq!(err.message(), "namespace is required");

        let err = from_status(Status::unavailable("ref x locked: unavailable"));
        assert_eq!(err.message(), "ref x locked");

        // A different class's suffix is part of the message, not a class marker.
        let err = from_status(Status::invalid_argument("lookup: not found"));
        assert_eq!(err.message(), "lookup: not found");
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);

        // "…not found" without the separator is left alone.
        let err = from_status(Status::not_found("lease not found"));
        assert_eq!(err.message(), "lease not found");
    }

    #[test]
    fn empty_message_still_says_something() {
        let err = from_status(Status::unavailable(""));
        assert_eq!(err.kind(), ErrorKind::Unavailable);
        assert!(
            err.message().starts_with("unavailable"),
            "{}",
            err.message()
        );
    }
}
