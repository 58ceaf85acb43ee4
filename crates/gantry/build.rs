//! Links the `gantry` binary with packed relative relocations (DT_RELR) on
//! GNU/Linux: a position-independent Rust binary of this size carries ~100,000
//! relative relocations (2.4 MB of `.rela.dyn`) that the loader reads at every
//! start, and that every `gantry run` then counts in its resident memory.
//! Packed, they take a few kilobytes. Needs binutils >= 2.38 to link and
//! glibc >= 2.36 to run (Debian 12 has both).

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    if os == "linux" && env == "gnu" {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
        println!("cargo:rustc-link-arg-bins=-no-pie");
    }
}
