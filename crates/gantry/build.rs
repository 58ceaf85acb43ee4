//! Links the `gantry` binary as a position-dependent executable (`-no-pie`)
//! on GNU/Linux, as Go links gitlab-runner and Woodpecker.
//!
//! Why: a position-independent Rust binary of this size has ~2 MB of
//! `.data.rel.ro` (vtables, `&'static str` tables, panic locations) that the
//! loader must relocate at every start, dirtying every page of it; each
//! `gantry run` then carried those 2 MB as private memory before running a
//! job. Linked at a fixed address the section needs no relocation, stays
//! clean, and only the pages actually read are mapped. The cost is that the
//! binary's own image is not randomized by ASLR (its stack, heap and
//! libraries still are). Packed relative relocations (DT_RELR) stay on for
//! the few relocations left; they need binutils >= 2.38 to link and glibc >=
//! 2.36 to run (Debian 12 has both).

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    if os == "linux" && env == "gnu" {
        println!("cargo:rustc-link-arg-bins=-no-pie");
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}
