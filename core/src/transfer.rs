//! Moving images between registries and the content store (Berth's transfer service): the
//! request and progress types and the [`Transfer`] trait the daemon implements.
//!
//! Pull resolves a reference, fetches the root descriptor's tree into the namespaced content
//! store (concurrently, digest-verified, under a lease so GC cannot take half-pulled content),
//! creates or updates the image record and, when asked, unpacks the chosen platform's layers
//! into a snapshotter as soon as each layer and its parents are in. Push walks an image's tree
//! from the content store and uploads what the registry lacks, manifests last.
//!
//! The trait is asynchronous (it is network-bound); progress is reported through a callback so
//! the gRPC layer can stream it to clients.

use crate::RequestContext;
use crate::Result;
use crate::diff::Descriptor;
use crate::images::Image;

/// An OS/architecture pair, as OCI image indexes name platforms.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Platform {
    /// `linux`, `windows`, …
    pub os: String,
    /// OCI architecture names: `amd64`, `arm64`, `arm`, `386`, `ppc64le`, `s390x`, …
    pub architecture: String,
    /// `v7`, `v8`, …, empty when none.
    pub variant: String,
}

impl Platform {
    /// Parses `os/arch[/variant]` (e.g. `linux/arm64/v8`).
    pub fn parse(s: &str) -> Result<Self> {
        let parts: Vec<&str> = s.split('/').collect();
        match parts.as_slice() {
            [os, arch] if !os.is_empty() && !arch.is_empty() => Ok(Self {
                os: (*os).to_owned(),
                architecture: (*arch).to_owned(),
                variant: String::new(),
            }),
            [os, arch, variant] if !os.is_empty() && !arch.is_empty() && !variant.is_empty() => {
                Ok(Self {
                    os: (*os).to_owned(),
                    architecture: (*arch).to_owned(),
                    variant: (*variant).to_owned(),
                })
            }
            _ => Err(crate::Error::invalid_argument(format!(
                "invalid platform {s:?}: want os/arch[/variant], e.g. linux/amd64"
            ))),
        }
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if !self.variant.is_empty() {
            write!(f, "/{}", self.variant)?;
        }
        Ok(())
    }
}

/// Registry credentials sent with a request (the client reads them from its docker-style
/// config; the daemon never stores them).
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Credentials {
    /// The user name (empty with an identity token).
    pub username: String,
    /// The password, or the identity/refresh token when `username` is empty.
    pub secret: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// What to pull.
#[derive(Debug, Clone, Default)]
pub struct PullRequest {
    /// The image reference as the user typed it (normalized by the implementation).
    pub reference: String,
    /// Platforms to fetch and unpack; empty means the host's.
    pub platforms: Vec<Platform>,
    /// Fetch every platform of an index (unpack still only `platforms`).
    pub all_platforms: bool,
    /// Unpack into `snapshotter` after fetching.
    pub unpack: bool,
    /// The snapshotter to unpack into (`overlayfs` when empty).
    pub snapshotter: String,
    /// Credentials for the registry, if any.
    pub credentials: Option<Credentials>,
    /// Labels for the image record.
    pub labels: crate::labels::Labels,
}

/// What to push.
#[derive(Debug, Clone, Default)]
pub struct PushRequest {
    /// The local image to push.
    pub image: String,
    /// Where to push it; empty means the image's own name.
    pub reference: String,
    /// Push only these platforms of an index; empty means everything the store holds.
    pub platforms: Vec<Platform>,
    /// Credentials for the registry, if any.
    pub credentials: Option<Credentials>,
}

/// Where one blob is in a transfer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlobState {
    /// Known, not started.
    Waiting,
    /// Bytes are moving.
    Transferring,
    /// Already present at the destination; nothing to move.
    Exists,
    /// Mounted from another repository of the same registry (push).
    Mounted,
    /// Moved and verified.
    Done,
    /// Being applied to a snapshot (pull with unpack).
    Unpacking,
    /// Applied and committed (pull with unpack).
    Unpacked,
}

/// One progress event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// The reference resolved to `root` (normalized name `name`).
    Resolved {
        /// The normalized reference.
        name: String,
        /// The root descriptor (index or manifest).
        root: Descriptor,
    },
    /// A blob's state and byte counts changed.
    Blob {
        /// The blob.
        descriptor: Descriptor,
        /// Its state.
        state: BlobState,
        /// Bytes done.
        offset: u64,
    },
    /// The transfer finished with this image record.
    Done {
        /// The image as stored (pull) or as pushed (push).
        image: Image,
    },
}

/// Receives progress events; must be cheap (it is called from the transfer's tasks).
pub type ProgressSink = Box<dyn Fn(Progress) + Send + Sync>;

pub use crate::BoxFuture;

/// Pulls and pushes images (daemon side).
pub trait Transfer: Send + Sync {
    /// Pulls `req.reference` into the context's namespace and returns the image record.
    fn pull<'a>(
        &'a self,
        ctx: &'a RequestContext,
        req: PullRequest,
        progress: ProgressSink,
    ) -> BoxFuture<'a, Result<Image>>;

    /// Pushes a local image to a registry and returns the pushed root descriptor as an image.
    fn push<'a>(
        &'a self,
        ctx: &'a RequestContext,
        req: PushRequest,
        progress: ProgressSink,
    ) -> BoxFuture<'a, Result<Image>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platforms_parse_and_print() {
        let p = Platform::parse("linux/arm64/v8").unwrap();
        assert_eq!(p.variant, "v8");
        assert_eq!(p.to_string(), "linux/arm64/v8");
        assert_eq!(
            Platform::parse("linux/amd64").unwrap().to_string(),
            "linux/amd64"
        );
        for bad in ["", "linux", "linux/", "/amd64", "a/b/c/d"] {
            assert!(Platform::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn credentials_never_print_the_secret() {
        let c = Credentials {
            username: "u".into(),
            secret: "hunter2".into(),
        };
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}
