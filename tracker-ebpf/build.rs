//! Rebuild the programs when bpf-linker changes (a new LLVM can change the emitted code), and fail
//! early with a pointer to the setup step when it is missing.
fn main() {
    match which::which("bpf-linker") {
        Ok(path) => println!("cargo:rerun-if-changed={}", path.display()),
        Err(err) => panic!("bpf-linker not found ({err}); run `cargo xtask setup`"),
    }
}
