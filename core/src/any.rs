//! [`AnyValue`]: an opaque typed payload, the domain twin of `google.protobuf.Any`.
//!
//! Containers carry their runtime options, spec and extensions this way, and events carry their
//! payload: Berth stores and forwards them without decoding, so the core only needs the type URL
//! and the bytes. containerd's type URLs are bare names (`containerd.events.TaskExit`,
//! `types.containerd.io/opencontainers/runtime-spec/1/Spec`), never `type.googleapis.com/…`.

use std::fmt;

/// A type URL and the encoded value it names.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct AnyValue {
    /// What `value` holds, e.g. `containerd.events.ContainerCreate`.
    pub type_url: String,
    /// The encoded value: protobuf bytes, or JSON for the runtime-spec types.
    pub value: Vec<u8>,
}

impl AnyValue {
    /// A value of type `type_url`.
    pub fn new(type_url: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        Self {
            type_url: type_url.into(),
            value: value.into(),
        }
    }
}

// Specs run to kilobytes: a debug print names the type and the size, not every byte.
impl fmt::Debug for AnyValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AnyValue")
            .field("type_url", &self.type_url)
            .field("len", &self.value.len())
            .finish()
    }
}
