//! Docker's default seccomp profile, as an OCI `linux.seccomp` value.
//!
//! The profile denies (EPERM) every syscall it does not list. The list is Docker's allow-list;
//! Docker's groups conditioned on capabilities are kept (a container granted `CAP_SYS_ADMIN` may
//! mount), those conditioned on a kernel version are taken as met (Berth needs a far newer kernel
//! than 4.8 anyway), and the architecture groups follow the machine the runtime is built for.
//!
//! The lists are data in [`berth_core::seccomp::DOCKER_DEFAULT`], which berth-client reads too
//! when it writes the profile into the specs berthctl builds.

use std::collections::BTreeSet;

use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompArgBuilder,
    LinuxSeccompOperator, LinuxSyscall,
};
use serde::Deserialize;

/// The profile's data ([`berth_core::seccomp::DOCKER_DEFAULT`], shared with berth-client).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Data {
    allowed: Vec<String>,
    arch_allowed: ArchAllowed,
    by_capability: Vec<CapabilityGroup>,
    admin_only: Vec<String>,
    personalities: Vec<u64>,
    clone_namespace_flags: u64,
}

/// Syscalls only one architecture family has.
#[derive(Debug, Deserialize)]
struct ArchAllowed {
    x86: Vec<String>,
    arm: Vec<String>,
    riscv64: Vec<String>,
}

/// Syscalls allowed to a container that holds a capability, as Docker groups them.
#[derive(Debug, Deserialize)]
struct CapabilityGroup {
    capability: String,
    syscalls: Vec<String>,
}

const CAP_SYS_ADMIN: u8 = 21;

fn data() -> serde_json::Result<Data> {
    serde_json::from_str(berth_core::seccomp::DOCKER_DEFAULT)
}

/// Docker's default profile for a container with Docker's default capabilities
/// ([`crate::capabilities::docker_default`]).
pub fn docker_default_profile() -> LinuxSeccomp {
    let caps = crate::capabilities::docker_default()
        .iter()
        .filter_map(|name| crate::capabilities::number(name))
        .fold(0u64, |mask, cap| mask | 1u64 << cap);
    docker_profile(caps)
}

/// Docker's default profile for a container whose bounding set is `capabilities` (a mask of
/// capability numbers): the groups of syscalls Docker allows per capability follow it.
pub fn docker_profile(capabilities: u64) -> LinuxSeccomp {
    let data = match data() {
        Ok(data) => data,
        Err(e) => {
            // The data is compiled in and a unit test parses it, so this cannot happen in a
            // tested build; if it did, failing closed beats running unconfined.
            tracing::error!(error = %e, "Docker's default seccomp data does not parse; denying every syscall");
            let mut deny = LinuxSeccomp::default();
            deny.set_default_action(LinuxSeccompAction::ScmpActErrno)
                .set_default_errno_ret(Some(libc::EPERM as u32))
                .set_architectures(Some(architectures()));
            return deny;
        }
    };
    let has = |cap: u8| capabilities & (1u64 << cap) != 0;
    let arch: &[String] = if cfg!(any(target_arch = "x86_64", target_arch = "x86")) {
        &data.arch_allowed.x86
    } else if cfg!(any(target_arch = "aarch64", target_arch = "arm")) {
        &data.arch_allowed.arm
    } else if cfg!(target_arch = "riscv64") {
        &data.arch_allowed.riscv64
    } else {
        &[]
    };
    let mut allowed: BTreeSet<&str> = data
        .allowed
        .iter()
        .chain(arch)
        .map(String::as_str)
        .collect();
    for group in &data.by_capability {
        if crate::capabilities::number(&group.capability).is_some_and(has) {
            allowed.extend(group.syscalls.iter().map(String::as_str));
        }
    }
    if has(CAP_SYS_ADMIN) {
        allowed.extend(data.admin_only.iter().map(String::as_str));
    }

    let mut rules = vec![rule(
        allowed.into_iter().map(str::to_owned).collect(),
        LinuxSeccompAction::ScmpActAllow,
        None,
        Vec::new(),
    )];
    // One rule per value: the spec ANDs a rule's arguments.
    for persona in &data.personalities {
        rules.push(rule(
            vec!["personality".to_owned()],
            LinuxSeccompAction::ScmpActAllow,
            None,
            vec![arg(0, *persona, None, LinuxSeccompOperator::ScmpCmpEq)],
        ));
    }
    if !has(CAP_SYS_ADMIN) {
        // s390 swaps clone's first two arguments; Berth builds for no s390 target.
        rules.push(rule(
            vec!["clone".to_owned()],
            LinuxSeccompAction::ScmpActAllow,
            None,
            vec![arg(
                0,
                data.clone_namespace_flags,
                Some(0),
                LinuxSeccompOperator::ScmpCmpMaskedEq,
            )],
        ));
        // clone3's flags sit in memory seccomp cannot read; ENOSYS makes libcs fall back to
        // clone, whose flags the rule above checks.
        rules.push(rule(
            vec!["clone3".to_owned()],
            LinuxSeccompAction::ScmpActErrno,
            Some(libc::ENOSYS as u32),
            Vec::new(),
        ));
    }

    let mut profile = LinuxSeccomp::default();
    profile
        .set_default_action(LinuxSeccompAction::ScmpActErrno)
        .set_default_errno_ret(Some(libc::EPERM as u32))
        .set_architectures(Some(architectures()))
        .set_syscalls(Some(rules));
    profile
}

/// The architectures Docker lists for the machine's family, so 32-bit binaries keep working.
fn architectures() -> Vec<Arch> {
    if cfg!(any(target_arch = "x86_64", target_arch = "x86")) {
        vec![Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32]
    } else if cfg!(any(target_arch = "aarch64", target_arch = "arm")) {
        vec![Arch::ScmpArchAarch64, Arch::ScmpArchArm]
    } else {
        vec![Arch::ScmpArchNative]
    }
}

fn rule(
    names: Vec<String>,
    action: LinuxSeccompAction,
    errno_ret: Option<u32>,
    args: Vec<LinuxSeccompArg>,
) -> LinuxSyscall {
    let mut rule = LinuxSyscall::default();
    rule.set_names(names)
        .set_action(action)
        .set_errno_ret(errno_ret)
        .set_args((!args.is_empty()).then_some(args));
    rule
}

fn arg(
    index: usize,
    value: u64,
    value_two: Option<u64>,
    op: LinuxSeccompOperator,
) -> LinuxSeccompArg {
    let mut builder = LinuxSeccompArgBuilder::default()
        .index(index)
        .value(value)
        .op(op);
    if let Some(two) = value_two {
        builder = builder.value_two(two);
    }
    // LinuxSeccompArg has no setters, and its builder defaults every field, so `build` has
    // nothing to fail on; the tests check the values that come out.
    builder.build().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed(profile: &LinuxSeccomp) -> Vec<String> {
        profile
            .syscalls()
            .iter()
            .flatten()
            .filter(|r| r.action() == LinuxSeccompAction::ScmpActAllow && r.args().is_none())
            .flat_map(|r| r.names().clone())
            .collect()
    }

    #[test]
    fn default_profile_shape() {
        let p = docker_default_profile();
        assert_eq!(p.default_action(), LinuxSeccompAction::ScmpActErrno);
        assert_eq!(p.default_errno_ret(), Some(1));
        let names = allowed(&p);
        for yes in ["read", "execve", "openat", "chroot", "ptrace", "socket"] {
            assert!(names.iter().any(|n| n == yes), "{yes} should be allowed");
        }
        for no in [
            "mount", "unshare", "setns", "keyctl", "add_key", "bpf", "reboot", "clone",
        ] {
            assert!(!names.iter().any(|n| n == no), "{no} should not be allowed");
        }
        let clone3 = p
            .syscalls()
            .iter()
            .flatten()
            .find(|r| r.names() == &["clone3"])
            .unwrap();
        assert_eq!(clone3.errno_ret(), Some(38));
        let clone = p
            .syscalls()
            .iter()
            .flatten()
            .find(|r| r.names() == &["clone"])
            .unwrap();
        let mask = clone.args().as_ref().unwrap()[0];
        assert_eq!(
            (mask.index(), mask.value(), mask.value_two(), mask.op()),
            (
                0,
                0x7e02_0000,
                Some(0),
                LinuxSeccompOperator::ScmpCmpMaskedEq
            )
        );
        let personas: Vec<u64> = p
            .syscalls()
            .iter()
            .flatten()
            .filter(|r| r.names() == &["personality"])
            .map(|r| r.args().as_ref().unwrap()[0].value())
            .collect();
        assert_eq!(personas, data().unwrap().personalities);
        assert_eq!(
            personas,
            [0x0, 0x0008, 0x0002_0000, 0x0002_0008, 0xffff_ffff]
        );
        // Round-trips through JSON, as it would in a config.json.
        let json = serde_json::to_string(&p).unwrap();
        assert_eq!(crate::seccomp::parse_profile(json.as_bytes()).unwrap(), p);
    }

    #[test]
    fn shared_data_parses_and_matches_the_default_capabilities() {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Caps {
            default_capabilities: Vec<String>,
        }
        let d = data().unwrap();
        assert!(d.allowed.len() > 300);
        for g in &d.by_capability {
            assert!(
                crate::capabilities::number(&g.capability).is_some(),
                "{}",
                g.capability
            );
        }
        let caps: Caps = serde_json::from_str(berth_core::seccomp::DOCKER_DEFAULT).unwrap();
        assert_eq!(
            caps.default_capabilities,
            crate::capabilities::docker_default()
        );
    }

    #[test]
    fn capabilities_open_their_groups() {
        let admin = docker_profile(1 << CAP_SYS_ADMIN);
        let names = allowed(&admin);
        for yes in ["mount", "unshare", "clone", "clone3", "setns"] {
            assert!(names.iter().any(|n| n == yes), "{yes} should be allowed");
        }
        assert!(!names.iter().any(|n| n == "chroot"));
        assert!(
            !admin
                .syscalls()
                .iter()
                .flatten()
                .any(|r| r.action() != LinuxSeccompAction::ScmpActAllow)
        );
        // Names are not repeated across groups.
        let mut sorted = names.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), names.len());
    }
}
