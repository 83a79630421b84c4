//! The `tracker` command; everything lives in the library (see lib.rs for the map of modules).
fn main() -> std::process::ExitCode {
    tracker::cli::main()
}
