#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The same bundles under every runtime in [`RUNTIMES`], compared with runc (the reference, the
//! first entry) after normalizing what legitimately differs between two runs: namespace inode
//! numbers (kept only as "host" or "new"), pids other than 1, the bundle path, the container id
//! and cgroup path, and peer-group numbers of shared mounts.
//!
//! Until berth-runc is in [`RUNTIMES`] there is no pair to compare; the test still runs every
//! config under runc twice, in different bundles with different ids and cgroups, and checks that
//! the normalized outputs agree, so the normalization is known to remove only run-to-run noise.

use berth_integration::bundle::{
    Bundle, RUNTIMES, Runtime, RuntimeKind, native_seccomp_arch, runtimes,
};
use serde_json::{Value, json};

/// One config: a name and the edits made to the default bundle.
struct Config {
    name: &'static str,
    edit: fn(&mut Bundle),
}

/// What each container runs: the probe's full status, then the contents of /dev and the mode of
/// /dev/shm (default devices and symlinks), separated by the JSON stream.
const SCRIPT: &str = "/probe status; /probe ls /dev; /probe stat /dev/shm; /probe ls /dev/pts";

const CONFIGS: &[Config] = &[
    Config {
        name: "default",
        edit: |_| {},
    },
    Config {
        name: "identity",
        edit: |b| {
            b.hostname("differential")
                .env(&["PATH=/bin", "A=1", "HOME=/home/x"])
                .cwd("/tmp")
                .readonly_root(false);
        },
    },
    Config {
        name: "user",
        edit: |b| {
            b.user(1000, 1001)
                .additional_gids(&[5, 10, 20])
                .umask(0o027);
        },
    },
    Config {
        name: "capabilities",
        edit: |b| {
            b.capabilities(&["CAP_CHOWN", "CAP_NET_RAW", "CAP_SYS_ADMIN"])
                .capability_set(
                    "bounding",
                    &["CAP_CHOWN", "CAP_NET_RAW", "CAP_SYS_ADMIN", "CAP_KILL"],
                )
                .no_new_privileges(false);
        },
    },
    Config {
        name: "rlimits",
        edit: |b| {
            b.rlimit("RLIMIT_NOFILE", 100, 200)
                .rlimit("RLIMIT_CORE", 0, 0)
                .rlimit("RLIMIT_NPROC", 300, 400)
                .oom_score_adj(300);
        },
    },
    Config {
        name: "seccomp",
        edit: |b| {
            b.seccomp(json!({
                "defaultAction": "SCMP_ACT_ALLOW",
                "architectures": [native_seccomp_arch()],
                "syscalls": [
                    {"names": ["mkdir", "keyctl"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1},
                ],
            }));
        },
    },
    Config {
        name: "user-namespace",
        edit: |b| {
            b.user_namespace(200_000, 65_536);
        },
    },
    Config {
        name: "mounts-and-paths",
        edit: |b| {
            let host = b.path().join("host-data");
            std::fs::create_dir_all(&host).unwrap();
            b.bind_mount(&host, "/data", &["rbind", "ro", "rprivate"])
                .mount(
                    "/mnt/scratch",
                    "tmpfs",
                    "tmpfs",
                    &["nosuid", "nodev", "mode=700", "size=1m"],
                )
                .masked_paths(&[
                    "/proc/keys",
                    "/proc/timer_list",
                    "/sys/firmware",
                    "/proc/missing",
                ])
                .readonly_paths(&["/proc/sys", "/proc/bus"]);
        },
    },
    Config {
        name: "namespaces",
        edit: |b| {
            b.remove_namespace("network")
                .remove_namespace("ipc")
                .namespace("cgroup", None);
        },
    },
    Config {
        name: "resources",
        edit: |b| {
            b.memory_limit(64 << 20).pids_limit(100);
        },
    },
    Config {
        name: "minimal-mounts",
        edit: |b| {
            b.config_mut()["mounts"] = json!([
                {"destination": "/proc", "type": "proc", "source": "proc"},
                {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
                 "options": ["nosuid", "mode=755"]},
            ]);
            b.masked_paths(&[]).readonly_paths(&[]);
        },
    },
];

/// Runs `config` under `rt` in a fresh bundle and returns the normalized observations.
fn observe(rt: &Runtime, config: &Config) -> Value {
    let mut b = Bundle::new(&format!("diff-{}", config.name));
    (config.edit)(&mut b);
    b.args(&["/bin/sh", "-c", SCRIPT]);
    let out = rt.run(b.id(), &b);
    out.ok();
    let values = out.json_values();
    let raw = json!({
        "status": values[0],
        "dev": values[1],
        "dev_shm": values[2],
        "dev_pts": values[3],
    });
    normalize(raw, &b)
}

fn host_namespaces() -> serde_json::Map<String, Value> {
    std::fs::read_dir("/proc/self/ns")
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let link = std::fs::read_link(e.path()).unwrap();
            let inode: u64 = link
                .to_string_lossy()
                .split_once(":[")
                .unwrap()
                .1
                .trim_end_matches(']')
                .parse()
                .unwrap();
            (e.file_name().to_string_lossy().into_owned(), json!(inode))
        })
        .collect()
}

fn normalize(mut v: Value, b: &Bundle) -> Value {
    let status = &mut v["status"];
    if status["pid"] != 1 {
        status["pid"] = json!("<pid>");
    }
    if status["ppid"] != 0 {
        status["ppid"] = json!("<ppid>");
    }
    let host = host_namespaces();
    if let Some(ns) = status["namespaces"].as_object_mut() {
        for (name, inode) in ns.iter_mut() {
            let shared = host.get(name) == Some(inode);
            *inode = json!(if shared { "host" } else { "new" });
        }
    }
    if let Some(mounts) = status["mounts"].as_array_mut() {
        for m in mounts {
            if let Some(fields) = m["optional"].as_array_mut() {
                for f in fields {
                    let kind = f.as_str().unwrap().split(':').next().unwrap().to_owned();
                    *f = json!(kind);
                }
            }
        }
    }
    // The bundle path, then the id (which the cgroup path is made of).
    let text = serde_json::to_string(&v).unwrap();
    let text = text
        .replace(b.path().to_str().unwrap(), "<bundle>")
        .replace(b.id(), "<id>");
    serde_json::from_str(&text).unwrap()
}

/// The JSON paths at which `a` and `b` differ, with both values.
fn differences(path: &str, a: &Value, b: &Value, out: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                let null = Value::Null;
                differences(
                    &format!("{path}/{k}"),
                    x.get(k).unwrap_or(&null),
                    y.get(k).unwrap_or(&null),
                    out,
                );
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (p, q)) in x.iter().zip(y).enumerate() {
                differences(&format!("{path}/{i}"), p, q, out);
            }
        }
        _ if a == b => {}
        _ => out.push(format!("{path}: {a} != {b}")),
    }
}

/// Runs `config` under the reference twice and under each other runtime once; returns the pairs
/// compared and the differences found.
fn compare(config: &Config, reference: &Runtime, others: &[Runtime]) -> (Vec<String>, Vec<String>) {
    let mut pairs = Vec::new();
    let mut failures = Vec::new();
    let expected = observe(reference, config);

    // Normalizer self-check: a second run of the reference in another bundle, with another id
    // and cgroup, must normalize to the same observations.
    let again = observe(reference, config);
    let mut diff = Vec::new();
    differences("", &expected, &again, &mut diff);
    if !diff.is_empty() {
        failures.push(format!(
            "config {}: two runs of {} differ after normalization (fix `normalize`):\n  {}",
            config.name,
            reference.name(),
            diff.join("\n  ")
        ));
    }

    for rt in others {
        pairs.push(format!(
            "{} vs {} [{}]",
            rt.name(),
            reference.name(),
            config.name
        ));
        let actual = observe(rt, config);
        let mut diff = Vec::new();
        differences("", &expected, &actual, &mut diff);
        if !diff.is_empty() {
            failures.push(format!(
                "config {}: {} differs from {}:\n  {}",
                config.name,
                rt.name(),
                reference.name(),
                diff.join("\n  ")
            ));
        }
    }
    (pairs, failures)
}

/// The comparison can fail: two different configs do not normalize to the same observations.
#[test]
fn normalization_keeps_real_differences() {
    let rt = Runtime::runc();
    let a = observe(&rt, &CONFIGS[0]);
    let b = observe(&rt, CONFIGS.iter().find(|c| c.name == "identity").unwrap());
    let mut diff = Vec::new();
    differences("", &a, &b, &mut diff);
    for wanted in ["/status/hostname", "/status/cwd", "/status/env"] {
        assert!(
            diff.iter().any(|d| d.starts_with(wanted)),
            "{wanted} not reported in {diff:#?}"
        );
    }
}

#[test]
fn every_runtime_matches_runc() {
    assert_eq!(
        RUNTIMES.first(),
        Some(&RuntimeKind::Runc),
        "runc is the reference and comes first"
    );
    let all = runtimes();
    let (reference, others) = all.split_first().unwrap();
    if RUNTIMES.contains(&RuntimeKind::BerthRunc) {
        assert!(
            !others.is_empty(),
            "berth-runc must be compared, not be the reference"
        );
    }
    // Configs run in parallel; each compares its own runs.
    let results: Vec<(Vec<String>, Vec<String>)> = std::thread::scope(|scope| {
        let handles: Vec<_> = CONFIGS
            .iter()
            .map(|config| scope.spawn(move || compare(config, reference, others)))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let pairs: Vec<String> = results.iter().flat_map(|r| r.0.clone()).collect();
    let failures: Vec<String> = results.iter().flat_map(|r| r.1.clone()).collect();
    if others.is_empty() {
        println!(
            "compared no pairs: {} is the only runtime in RUNTIMES (berth-runc is not added yet); \
             {} configs ran twice under it and normalized identically",
            reference.name(),
            CONFIGS.len()
        );
    } else {
        println!("compared {} pairs:\n{}", pairs.len(), pairs.join("\n"));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
