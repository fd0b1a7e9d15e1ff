//! Link options for the shim, whose resident memory is counted once per running container.

fn main() {
    // Pack the PIE's relative relocations (DT_RELR, glibc >= 2.36): the dynamic loader reads
    // every relocation entry at start-up, and the plain RELA table (~350 KiB, one 24-byte
    // entry per pointer in the binary's data) would stay resident for the shim's lifetime.
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux")
        && std::env::var("CARGO_CFG_TARGET_ENV").as_deref() == Ok("gnu")
    {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}
