//! The single error type. Its [`ErrorKind`] mirrors containerd's errdefs classes, because clients
//! branch on them (e.g. `AlreadyExists` on a content write means "already have it").

use std::fmt;

/// The class of an error; mapped to a gRPC status code in exactly one place on each side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The request is malformed (bad digest, bad name, bad filter).
    InvalidArgument,
    /// The thing asked for does not exist.
    NotFound,
    /// The thing to create exists already.
    AlreadyExists,
    /// The system is not in a state that allows the operation.
    FailedPrecondition,
    /// A resource is busy (e.g. a ref locked by another writer); retrying may succeed.
    Unavailable,
    /// The operation is not implemented.
    NotImplemented,
    /// An offset or size is outside the valid range.
    OutOfRange,
    /// Data was lost or corrupted.
    DataLoss,
    /// The caller gave up.
    Canceled,
    /// A deadline passed.
    DeadlineExceeded,
    /// Permission denied.
    PermissionDenied,
    /// A bug or an unexpected failure of the host (I/O, database).
    Internal,
    /// An error whose class was lost (e.g. an unknown gRPC code).
    Unknown,
}

impl ErrorKind {
    /// containerd's lower-case name of the class, appended to messages as ": <class>".
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::InvalidArgument => "invalid argument",
            ErrorKind::NotFound => "not found",
            ErrorKind::AlreadyExists => "already exists",
            ErrorKind::FailedPrecondition => "failed precondition",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::NotImplemented => "not implemented",
            ErrorKind::OutOfRange => "out of range",
            ErrorKind::DataLoss => "data loss",
            ErrorKind::Canceled => "canceled",
            ErrorKind::DeadlineExceeded => "deadline exceeded",
            ErrorKind::PermissionDenied => "permission denied",
            ErrorKind::Internal => "internal",
            ErrorKind::Unknown => "unknown",
        }
    }
}

impl ErrorKind {
    /// Every class, `Unknown` last.
    pub const ALL: [ErrorKind; 13] = [
        ErrorKind::InvalidArgument,
        ErrorKind::NotFound,
        ErrorKind::AlreadyExists,
        ErrorKind::FailedPrecondition,
        ErrorKind::Unavailable,
        ErrorKind::NotImplemented,
        ErrorKind::OutOfRange,
        ErrorKind::DataLoss,
        ErrorKind::Canceled,
        ErrorKind::DeadlineExceeded,
        ErrorKind::PermissionDenied,
        ErrorKind::Internal,
        ErrorKind::Unknown,
    ];

    /// The class named `name` (as [`ErrorKind::as_str`] spells it), `Unknown` for any other
    /// name: how an error's class travels through a pipe or a socket and back.
    pub fn from_name(name: &str) -> ErrorKind {
        ErrorKind::ALL
            .into_iter()
            .find(|k| k.as_str() == name)
            .unwrap_or(ErrorKind::Unknown)
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error with a class, a message that says what was being done to what, and an optional
/// cause.
#[derive(Debug, thiserror::Error)]
pub struct Error {
    kind: ErrorKind,
    message: String,
    #[source]
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        if let Some(source) = &self.source {
            write!(f, ": {source}")?;
        }
        Ok(())
    }
}

/// Shorthand for results carrying [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

macro_rules! constructors {
    ($($name:ident => $kind:ident),* $(,)?) => {
        $(
            #[doc = concat!("An error of kind [`ErrorKind::", stringify!($kind), "`].")]
            pub fn $name(message: impl Into<String>) -> Self {
                Self::new(ErrorKind::$kind, message)
            }
        )*
    };
}

impl Error {
    /// An error of `kind` with `message`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            source: None,
        }
    }

    constructors! {
        invalid_argument => InvalidArgument,
        not_found => NotFound,
        already_exists => AlreadyExists,
        failed_precondition => FailedPrecondition,
        unavailable => Unavailable,
        not_implemented => NotImplemented,
        out_of_range => OutOfRange,
        data_loss => DataLoss,
        internal => Internal,
    }

    /// An [`ErrorKind::Internal`] error for a failed I/O step: `what` names the step and path.
    pub fn io(what: impl Into<String>, err: std::io::Error) -> Self {
        let kind = match err.kind() {
            std::io::ErrorKind::NotFound => ErrorKind::NotFound,
            std::io::ErrorKind::AlreadyExists => ErrorKind::AlreadyExists,
            std::io::ErrorKind::PermissionDenied => ErrorKind::PermissionDenied,
            _ => ErrorKind::Internal,
        };
        Self {
            kind,
            message: what.into(),
            source: Some(Box::new(err)),
        }
    }

    /// Attaches a cause.
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    /// The error's class.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The message without the cause.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Whether the error is of `kind`.
    pub fn is(&self, kind: ErrorKind) -> bool {
        self.kind == kind
    }

    /// Prefixes the message with `context` ("committing ingest x: <message>"), keeping the kind.
    pub fn context(mut self, context: impl fmt::Display) -> Self {
        self.message = format!("{context}: {}", self.message);
        self
    }
}

/// Adds context to the error of a result.
pub trait ResultExt<T> {
    /// Prefixes the error's message with the output of `f`.
    fn with_context<C: fmt::Display>(self, f: impl FnOnce() -> C) -> Result<T>;
}

impl<T> ResultExt<T> for Result<T> {
    fn with_context<C: fmt::Display>(self, f: impl FnOnce() -> C) -> Result<T> {
        self.map_err(|e| e.context(f()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_names_round_trip() {
        for kind in ErrorKind::ALL {
            assert_eq!(ErrorKind::from_name(kind.as_str()), kind);
        }
        assert_eq!(ErrorKind::from_name("no such class"), ErrorKind::Unknown);
    }

    #[test]
    fn display_includes_cause_and_context() {
        let err = Error::io(
            "open /x",
            std::io::Error::new(std::io::ErrorKind::NotFound, "gone"),
        )
        .context("reading blob");
        assert_eq!(err.kind(), ErrorKind::NotFound);
        assert_eq!(err.to_string(), "reading blob: open /x: gone");
    }
}
