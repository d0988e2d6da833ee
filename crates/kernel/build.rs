//! Picks the linker script of the target: `link32.ld` (Multiboot 1, i686)
//! or `link64.ld` (PVH, x86_64).
use std::env;

fn main() {
    let target = env::var("TARGET").unwrap_or_default();
    let dir = env::var("CARGO_MANIFEST_DIR").unwrap_or_default();
    let script = if target.starts_with("i686") || target.starts_with("i586") {
        "link32.ld"
    } else {
        "link64.ld"
    };
    println!("cargo:rustc-link-arg-bins=-T{dir}/src/arch/{script}");
    println!("cargo:rustc-link-arg-bins=--no-pie");
    println!("cargo:rustc-link-arg-bins=-nostdlib");
    println!("cargo:rustc-link-arg-bins=--gc-sections");
    println!("cargo:rerun-if-changed=src/arch/{script}");
    println!("cargo:rerun-if-changed=build.rs");
}
