//! Docker's default seccomp profile as data, shared by the runtime (which applies it to
//! containers that ask for none) and the client (which writes it into the specs berthctl
//! builds, as Docker does), so the two can never drift apart.
//!
//! [`DOCKER_DEFAULT`] is JSON with these fields (each side turns it into an OCI
//! `linux.seccomp` value; nothing here parses it, as core has no JSON dependency):
//! - `allowed`: syscalls every container may make;
//! - `archAllowed`: extra syscalls per architecture family (`x86`, `arm`, `riscv64`);
//! - `byCapability`: `{capability, syscalls}` groups allowed when the bounding set holds the
//!   capability;
//! - `adminOnly`: syscalls allowed without argument checks only with `CAP_SYS_ADMIN` (`clone`,
//!   `clone3`; without it `clone` is allowed minus the namespace flags in
//!   `cloneNamespaceFlags`, and `clone3` fails with ENOSYS so libcs fall back to `clone`);
//! - `personalities`: the personality(2) values allowed;
//! - `defaultCapabilities`: Docker's default capability set, which the profile is for.
//!
//! Everything not allowed fails with EPERM.

/// The profile data; see the module documentation for its shape.
pub const DOCKER_DEFAULT: &str = include_str!("seccomp/docker-default.json");
