//! Writes a benchmark image of incompressible data as an OCI layout (for bench/pull.sh).
//!
//! Usage: `make_big_image <dir> [layers=5] [total_bytes=104857600]`. Prints one JSON line: the
//! image name in the layout, its manifest digest and its compressed and uncompressed sizes.

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(dir) = args.first().map(PathBuf::from) else {
        eprintln!("usage: make_big_image <dir> [layers] [total_bytes]");
        return ExitCode::from(2);
    };
    let layers = match args.get(1).map(|s| s.parse::<usize>()) {
        None => 5,
        Some(Ok(n)) if n > 0 => n,
        Some(_) => {
            eprintln!("make_big_image: layers must be a positive integer");
            return ExitCode::from(2);
        }
    };
    let total_bytes = match args.get(2).map(|s| s.parse::<u64>()) {
        None => 100 << 20,
        Some(Ok(n)) => n,
        Some(Err(e)) => {
            eprintln!("make_big_image: total_bytes: {e}");
            return ExitCode::from(2);
        }
    };
    let image = berth_integration::testimage::big_image(&dir, layers, total_bytes);
    let uncompressed: u64 = image.layers.iter().map(|l| l.2).sum();
    let summary = serde_json::json!({
        "layout": image.layout.display().to_string(),
        "name": image.name,
        "manifest": image.root.digest.to_string(),
        "layers": image.layers.len(),
        "compressed_bytes": image.compressed_size(),
        "uncompressed_bytes": uncompressed,
    });
    println!("{summary}");
    ExitCode::SUCCESS
}
