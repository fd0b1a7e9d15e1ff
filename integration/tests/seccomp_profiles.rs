//! berthctl writes Docker's default seccomp profile into the specs it builds
//! (`berth_client::spec::seccomp_profile`), and the runtime applies the same profile to
//! containers that ask for none (`berth_runtime::seccomp::docker_profile`). Both render it from
//! one data file in berth-core, in two places because the client must not link the runtime;
//! this test keeps the two renderings equal for the capability sets that change the rules.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::Value;

fn mask(caps: &[String]) -> u64 {
    caps.iter()
        .map(|c| berth_runtime::capabilities::number(c).unwrap_or_else(|| panic!("{c}")))
        .fold(0, |m, n| m | 1u64 << n)
}

#[test]
fn client_and_runtime_render_the_same_docker_profile() {
    let default = berth_client::spec::default_capabilities().unwrap();
    let mut admin = default.clone();
    admin.push("CAP_SYS_ADMIN".to_owned());
    let mut tracing = default.clone();
    tracing.extend(["CAP_SYS_PTRACE", "CAP_SYS_TIME", "CAP_SYS_MODULE"].map(str::to_owned));
    for (what, caps) in [
        ("docker's default set", default),
        ("with CAP_SYS_ADMIN", admin),
        ("with ptrace, time, module", tracing),
        ("no capabilities", Vec::new()),
    ] {
        let client = berth_client::spec::seccomp_profile(&caps).unwrap();
        let runtime: Value =
            serde_json::to_value(berth_runtime::seccomp::docker_profile(mask(&caps))).unwrap();
        assert_eq!(client, runtime, "{what}");
        // Not vacuous: the rules really follow the capabilities.
        assert!(
            client["syscalls"].as_array().is_some_and(|r| !r.is_empty()),
            "{what}"
        );
    }
    let none = berth_client::spec::seccomp_profile(&[]).unwrap();
    let admin = berth_client::spec::seccomp_profile(&["CAP_SYS_ADMIN".to_owned()]).unwrap();
    assert_ne!(none, admin);
}
