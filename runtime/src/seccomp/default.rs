//! Docker's default seccomp profile, as an OCI `linux.seccomp` value.
//!
//! The profile denies (EPERM) every syscall it does not list. The list is Docker's allow-list;
//! Docker's groups conditioned on capabilities are kept (a container granted `CAP_SYS_ADMIN` may
//! mount), those conditioned on a kernel version are taken as met (Berth needs a far newer kernel
//! than 4.8 anyway), and the architecture groups follow the machine the runtime is built for.

use std::collections::BTreeSet;

use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompArgBuilder,
    LinuxSeccompOperator, LinuxSyscall,
};

/// Syscalls every container may make.
const ALLOWED: &[&str] = &[
    "accept",
    "accept4",
    "access",
    "adjtimex",
    "alarm",
    "bind",
    "brk",
    "cachestat",
    "capget",
    "capset",
    "chdir",
    "chmod",
    "chown",
    "chown32",
    "clock_adjtime",
    "clock_adjtime64",
    "clock_getres",
    "clock_getres_time64",
    "clock_gettime",
    "clock_gettime64",
    "clock_nanosleep",
    "clock_nanosleep_time64",
    "close",
    "close_range",
    "connect",
    "copy_file_range",
    "creat",
    "dup",
    "dup2",
    "dup3",
    "epoll_create",
    "epoll_create1",
    "epoll_ctl",
    "epoll_ctl_old",
    "epoll_pwait",
    "epoll_pwait2",
    "epoll_wait",
    "epoll_wait_old",
    "eventfd",
    "eventfd2",
    "execve",
    "execveat",
    "exit",
    "exit_group",
    "faccessat",
    "faccessat2",
    "fadvise64",
    "fadvise64_64",
    "fallocate",
    "fanotify_mark",
    "fchdir",
    "fchmod",
    "fchmodat",
    "fchmodat2",
    "fchown",
    "fchown32",
    "fchownat",
    "fcntl",
    "fcntl64",
    "fdatasync",
    "fgetxattr",
    "flistxattr",
    "flock",
    "fork",
    "fremovexattr",
    "fsetxattr",
    "fstat",
    "fstat64",
    "fstatat64",
    "fstatfs",
    "fstatfs64",
    "fsync",
    "ftruncate",
    "ftruncate64",
    "futex",
    "futex_requeue",
    "futex_time64",
    "futex_wait",
    "futex_waitv",
    "futex_wake",
    "futimesat",
    "getcpu",
    "getcwd",
    "getdents",
    "getdents64",
    "getegid",
    "getegid32",
    "geteuid",
    "geteuid32",
    "getgid",
    "getgid32",
    "getgroups",
    "getgroups32",
    "getitimer",
    "getpeername",
    "getpgid",
    "getpgrp",
    "getpid",
    "getppid",
    "getpriority",
    "getrandom",
    "getresgid",
    "getresgid32",
    "getresuid",
    "getresuid32",
    "getrlimit",
    "get_robust_list",
    "getrusage",
    "getsid",
    "getsockname",
    "getsockopt",
    "get_thread_area",
    "gettid",
    "gettimeofday",
    "getuid",
    "getuid32",
    "getxattr",
    "inotify_add_watch",
    "inotify_init",
    "inotify_init1",
    "inotify_rm_watch",
    "io_cancel",
    "ioctl",
    "io_destroy",
    "io_getevents",
    "io_pgetevents",
    "io_pgetevents_time64",
    "ioprio_get",
    "ioprio_set",
    "io_setup",
    "io_submit",
    "ipc",
    "kill",
    "landlock_add_rule",
    "landlock_create_ruleset",
    "landlock_restrict_self",
    "lchown",
    "lchown32",
    "lgetxattr",
    "link",
    "linkat",
    "listen",
    "listxattr",
    "llistxattr",
    "_llseek",
    "lremovexattr",
    "lseek",
    "lsetxattr",
    "lstat",
    "lstat64",
    "madvise",
    "map_shadow_stack",
    "membarrier",
    "memfd_create",
    "memfd_secret",
    "mincore",
    "mkdir",
    "mkdirat",
    "mknod",
    "mknodat",
    "mlock",
    "mlock2",
    "mlockall",
    "mmap",
    "mmap2",
    "mprotect",
    "mq_getsetattr",
    "mq_notify",
    "mq_open",
    "mq_timedreceive",
    "mq_timedreceive_time64",
    "mq_timedsend",
    "mq_timedsend_time64",
    "mq_unlink",
    "mremap",
    "msgctl",
    "msgget",
    "msgrcv",
    "msgsnd",
    "msync",
    "munlock",
    "munlockall",
    "munmap",
    "name_to_handle_at",
    "nanosleep",
    "newfstatat",
    "_newselect",
    "open",
    "openat",
    "openat2",
    "pause",
    "pidfd_open",
    "pidfd_send_signal",
    "pipe",
    "pipe2",
    "pkey_alloc",
    "pkey_free",
    "pkey_mprotect",
    "poll",
    "ppoll",
    "ppoll_time64",
    "prctl",
    "pread64",
    "preadv",
    "preadv2",
    "prlimit64",
    "process_mrelease",
    // Docker allows these three from kernel 4.8 on, once ptrace could no longer bypass seccomp.
    "process_vm_readv",
    "process_vm_writev",
    "ptrace",
    "pselect6",
    "pselect6_time64",
    "pwrite64",
    "pwritev",
    "pwritev2",
    "read",
    "readahead",
    "readlink",
    "readlinkat",
    "readv",
    "recv",
    "recvfrom",
    "recvmmsg",
    "recvmmsg_time64",
    "recvmsg",
    "remap_file_pages",
    "removexattr",
    "rename",
    "renameat",
    "renameat2",
    "restart_syscall",
    "rmdir",
    "rseq",
    "rt_sigaction",
    "rt_sigpending",
    "rt_sigprocmask",
    "rt_sigqueueinfo",
    "rt_sigreturn",
    "rt_sigsuspend",
    "rt_sigtimedwait",
    "rt_sigtimedwait_time64",
    "rt_tgsigqueueinfo",
    "sched_getaffinity",
    "sched_getattr",
    "sched_getparam",
    "sched_get_priority_max",
    "sched_get_priority_min",
    "sched_getscheduler",
    "sched_rr_get_interval",
    "sched_rr_get_interval_time64",
    "sched_setaffinity",
    "sched_setattr",
    "sched_setparam",
    "sched_setscheduler",
    "sched_yield",
    "seccomp",
    "select",
    "semctl",
    "semget",
    "semop",
    "semtimedop",
    "semtimedop_time64",
    "send",
    "sendfile",
    "sendfile64",
    "sendmmsg",
    "sendmsg",
    "sendto",
    "setfsgid",
    "setfsgid32",
    "setfsuid",
    "setfsuid32",
    "setgid",
    "setgid32",
    "setgroups",
    "setgroups32",
    "setitimer",
    "setpgid",
    "setpriority",
    "setregid",
    "setregid32",
    "setresgid",
    "setresgid32",
    "setresuid",
    "setresuid32",
    "setreuid",
    "setreuid32",
    "setrlimit",
    "set_robust_list",
    "setsid",
    "setsockopt",
    "set_thread_area",
    "set_tid_address",
    "setuid",
    "setuid32",
    "setxattr",
    "shmat",
    "shmctl",
    "shmdt",
    "shmget",
    "shutdown",
    "sigaltstack",
    "signalfd",
    "signalfd4",
    "sigprocmask",
    "sigreturn",
    "socket",
    "socketcall",
    "socketpair",
    "splice",
    "stat",
    "stat64",
    "statfs",
    "statfs64",
    "statx",
    "symlink",
    "symlinkat",
    "sync",
    "sync_file_range",
    "syncfs",
    "sysinfo",
    "tee",
    "tgkill",
    "time",
    "timer_create",
    "timer_delete",
    "timer_getoverrun",
    "timer_gettime",
    "timer_gettime64",
    "timer_settime",
    "timer_settime64",
    "timerfd_create",
    "timerfd_gettime",
    "timerfd_gettime64",
    "timerfd_settime",
    "timerfd_settime64",
    "times",
    "tkill",
    "truncate",
    "truncate64",
    "ugetrlimit",
    "umask",
    "uname",
    "unlink",
    "unlinkat",
    "utime",
    "utimensat",
    "utimensat_time64",
    "utimes",
    "vfork",
    "vmsplice",
    "wait4",
    "waitid",
    "waitpid",
    "write",
    "writev",
];

/// Syscalls only the machine's own architecture family has.
const ARCH_ALLOWED: &[&str] = if cfg!(any(target_arch = "x86_64", target_arch = "x86")) {
    &["arch_prctl", "modify_ldt"]
} else if cfg!(any(target_arch = "aarch64", target_arch = "arm")) {
    &[
        "arm_fadvise64_64",
        "arm_sync_file_range",
        "breakpoint",
        "cacheflush",
        "set_tls",
        "sync_file_range2",
    ]
} else if cfg!(target_arch = "riscv64") {
    &["riscv_flush_icache"]
} else {
    &[]
};

/// Syscalls allowed to a container that holds a capability (by number), as Docker groups them.
const BY_CAPABILITY: &[(u8, &[&str])] = &[
    // CAP_DAC_READ_SEARCH
    (2, &["open_by_handle_at"]),
    // CAP_SYS_MODULE
    (16, &["delete_module", "finit_module", "init_module"]),
    // CAP_SYS_RAWIO
    (17, &["ioperm", "iopl"]),
    // CAP_SYS_CHROOT
    (18, &["chroot"]),
    // CAP_SYS_PTRACE
    (
        19,
        &[
            "kcmp",
            "pidfd_getfd",
            "process_madvise",
            "process_vm_readv",
            "process_vm_writev",
            "ptrace",
        ],
    ),
    // CAP_SYS_PACCT
    (20, &["acct"]),
    // CAP_SYS_ADMIN (clone and clone3 without restriction are handled apart).
    (
        21,
        &[
            "bpf",
            "fanotify_init",
            "fsconfig",
            "fsmount",
            "fsopen",
            "fspick",
            "lookup_dcookie",
            "mount",
            "mount_setattr",
            "move_mount",
            "open_tree",
            "perf_event_open",
            "quotactl",
            "quotactl_fd",
            "setdomainname",
            "sethostname",
            "setns",
            "syslog",
            "umount",
            "umount2",
            "unshare",
        ],
    ),
    // CAP_SYS_BOOT
    (22, &["reboot"]),
    // CAP_SYS_NICE
    (
        23,
        &[
            "get_mempolicy",
            "mbind",
            "set_mempolicy",
            "set_mempolicy_home_node",
        ],
    ),
    // CAP_SYS_TIME
    (
        25,
        &["clock_settime", "clock_settime64", "settimeofday", "stime"],
    ),
    // CAP_SYS_TTY_CONFIG
    (26, &["vhangup"]),
    // CAP_SYSLOG
    (34, &["syslog"]),
    // CAP_PERFMON
    (38, &["perf_event_open"]),
    // CAP_BPF
    (39, &["bpf"]),
];

const CAP_SYS_ADMIN: u8 = 21;

/// personality(2) values a container may set: PER_LINUX, UNAME26, PER_LINUX32, UNAME26 with
/// PER_LINUX32, and the query 0xffffffff.
const PERSONALITIES: [u64; 5] = [0x0, 0x0008, 0x0002_0000, 0x0002_0008, 0xffff_ffff];

/// CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID |
/// CLONE_NEWNET: the flags clone(2) may not carry without `CAP_SYS_ADMIN`.
const CLONE_NAMESPACE_FLAGS: u64 = 0x7e02_0000;

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
    let has = |cap: u8| capabilities & (1u64 << cap) != 0;
    let mut allowed: BTreeSet<&str> = ALLOWED.iter().chain(ARCH_ALLOWED).copied().collect();
    for (cap, names) in BY_CAPABILITY {
        if has(*cap) {
            allowed.extend(names.iter().copied());
        }
    }
    if has(CAP_SYS_ADMIN) {
        allowed.extend(["clone", "clone3"]);
    }

    let mut rules = vec![rule(
        allowed.into_iter().map(str::to_owned).collect(),
        LinuxSeccompAction::ScmpActAllow,
        None,
        Vec::new(),
    )];
    // One rule per value: the spec ANDs a rule's arguments.
    for persona in PERSONALITIES {
        rules.push(rule(
            vec!["personality".to_owned()],
            LinuxSeccompAction::ScmpActAllow,
            None,
            vec![arg(0, persona, None, LinuxSeccompOperator::ScmpCmpEq)],
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
                CLONE_NAMESPACE_FLAGS,
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
        assert_eq!(personas, PERSONALITIES);
        // Round-trips through JSON, as it would in a config.json.
        let json = serde_json::to_string(&p).unwrap();
        assert_eq!(crate::seccomp::parse_profile(json.as_bytes()).unwrap(), p);
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
