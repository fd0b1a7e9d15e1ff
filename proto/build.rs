//! Generates the prost messages and tonic clients/servers from every .proto under `protos/`.

use std::error::Error;
use std::path::{Path, PathBuf};
use std::process::Command;

const PROTO_ROOT: &str = "protos";

fn main() -> Result<(), Box<dyn Error>> {
    // One directory-level line covers added, removed and edited files alike.
    println!("cargo:rerun-if-changed={PROTO_ROOT}");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=PROTOC");

    check_protoc()?;

    let mut protos = Vec::new();
    collect_protos(Path::new(PROTO_ROOT), &mut protos)?;
    // Sorted so that generated output does not depend on directory iteration order.
    protos.sort();
    if protos.is_empty() {
        return Err(format!("no .proto files found under {PROTO_ROOT}/").into());
    }

    let mut config = tonic_prost_build::Config::new();
    // `Name` impls give every message its full proto name, which containerd uses as the Any
    // type URL; see `berth_proto::any_of` for why `type_url()` itself is not used.
    config.enable_type_names();

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .emit_rerun_if_changed(false)
        .compile_with_config(config, &protos, &[PathBuf::from(PROTO_ROOT)])
        .map_err(|e| format!("compiling the .proto files under {PROTO_ROOT}/: {e}"))?;
    Ok(())
}

/// Fails early with an actionable message instead of prost-build's generic one.
fn check_protoc() -> Result<(), Box<dyn Error>> {
    let protoc = std::env::var_os("PROTOC").unwrap_or_else(|| "protoc".into());
    match Command::new(&protoc).arg("--version").output() {
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => Err(format!(
            "`{} --version` failed ({}); berth-proto needs a working protoc: run \
             `scripts/setup.sh` (or `apt-get install protobuf-compiler`)",
            protoc.to_string_lossy(),
            out.status
        )
        .into()),
        Err(e) => Err(format!(
            "protoc not found ({}: {e}); berth-proto needs it to generate the gRPC API: run \
             `scripts/setup.sh` (or `apt-get install protobuf-compiler`), or set PROTOC to its path",
            protoc.to_string_lossy()
        )
        .into()),
    }
}

fn collect_protos(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), Box<dyn Error>> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| format!("reading directory {}: {e}", dir.display()))?;
    for entry in entries {
        let entry = entry.map_err(|e| format!("reading directory {}: {e}", dir.display()))?;
        let path = entry.path();
        let file_type = entry
            .file_type()
            .map_err(|e| format!("inspecting {}: {e}", path.display()))?;
        if file_type.is_dir() {
            collect_protos(&path, out)?;
        } else if path.extension().is_some_and(|ext| ext == "proto") {
            out.push(path);
        }
    }
    Ok(())
}
