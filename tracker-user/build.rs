//! Builds tracker-ebpf with the nightly toolchain and bpf-linker and leaves its objects in
//! OUT_DIR (`tracker-ebpf`, `baseline`), where `src/kernel` embeds them with
//! `include_bytes_aligned!`.
//!
//! This is aya-build 0.2's `build_ebpf`, cut to what tracker needs, with one difference: the
//! nested cargo's output is kept, not relayed. aya-build turns every stderr line ("Compiling
//! ...", "Finished ...") into a `cargo:warning`, and cargo replays a build script's warnings on
//! every build, so even a no-op build printed ~66 warnings. Here the output is shown only when
//! the nested build fails (on stderr), and a compiler warning in the eBPF code is still relayed
//! as a cargo warning.
use anyhow::{Context as _, Result, bail};
use cargo_metadata::{Message, diagnostic::DiagnosticLevel};
use std::io::{BufReader, Read as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::{env, fs, thread};

/// The bpfel objects to embed, by bin name (tracker-ebpf's `[[bin]]` and `src/bin/`).
const BINS: &[&str] = &["tracker-ebpf", "baseline"];

fn main() -> Result<()> {
    let manifest_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let workspace = manifest_dir.parent().context("tracker-user has no parent directory")?;
    // Cargo reruns a build script only for what it names here. The eBPF programs are built from
    // tracker-ebpf and tracker-common (the kernel/userspace ABI), with the workspace's
    // tracker-ebpf profile and locked versions; a new bpf-linker can change the code too. The
    // nested cargo then decides itself what, if anything, to recompile.
    for path in ["tracker-ebpf", "tracker-common", "Cargo.toml", "Cargo.lock"] {
        println!("cargo:rerun-if-changed={}", workspace.join(path).display());
    }
    // `cargo fuzz` compiles every crate with `--cfg fuzzing`; the crate's fuzzing module (the
    // fuzz targets' bodies) exists only then and under test.
    println!("cargo::rustc-check-cfg=cfg(fuzzing)");
    if let Some(linker) = find_in_path("bpf-linker") {
        println!("cargo:rerun-if-changed={}", linker.display());
    }

    let out_dir = PathBuf::from(env::var_os("OUT_DIR").context("OUT_DIR not set")?);
    // Its own target dir: the outer cargo holds the lock on target/ (cargo issue 6412), and
    // kept apart from the copies below so that no bin name collides with a directory.
    let target_dir = out_dir.join("ebpf-target");
    let mut cargo = Command::new("rustup");
    cargo
        .args("run nightly cargo build --package tracker-ebpf --bins --release".split(' '))
        // core for the bpf target, which has no prebuilt standard library.
        .args("--target bpfel-unknown-none -Z build-std=core".split(' '))
        .args(["--message-format=json", "--target-dir"])
        .arg(&target_dir)
        .current_dir(workspace)
        // The same flags aya-build passes (0x1f separates them): the cfg aya-ebpf's helpers
        // dispatch on, and BTF with debug info, which the kernel's loader needs for the maps.
        .env(
            "CARGO_ENCODED_RUSTFLAGS",
            format!("--cfg=bpf_target_arch=\"{}\"\x1f-Cdebuginfo=2\x1f-Clink-arg=--btf", bpf_target_arch()?),
        )
        // Set by the outer (stable) cargo; left in place they would pick stable's rustc.
        .env_remove("RUSTC")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cargo.spawn().context("cannot run `rustup run nightly cargo`")?;

    // stderr is cargo's progress ("Compiling ...") and its own errors: kept for a failure.
    let mut stderr = child.stderr.take().context("no stderr")?;
    let stderr = thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    // stdout is JSON: the artifacts built, and rustc's diagnostics.
    let mut artifacts = Vec::new();
    let mut diagnostics = Vec::new();
    for message in Message::parse_stream(BufReader::new(child.stdout.take().context("no stdout")?)) {
        match message.context("the nested cargo wrote invalid JSON")? {
            Message::CompilerArtifact(artifact) => {
                if let Some(exe) = artifact.executable {
                    artifacts.push((artifact.target.name, exe.into_std_path_buf()));
                }
            }
            Message::CompilerMessage(msg) => {
                let level = msg.message.level;
                let text = msg.message.rendered.unwrap_or(msg.message.message);
                diagnostics.push((level, text));
            }
            _ => {}
        }
    }
    let status = child.wait().context("cannot wait for the nested cargo")?;
    let stderr = stderr.join().unwrap_or_default();

    if !status.success() {
        // On stderr, not as cargo:warning lines: cargo shows a failed build script's stdout
        // and its warnings both, so the errors would be printed twice. No anyhow error either:
        // with RUST_BACKTRACE set it would add a backtrace of this script to the compiler's
        // message.
        for (_, text) in &diagnostics {
            eprintln!("{}", text.trim_end());
        }
        eprintln!("{}", stderr.trim_end());
        eprintln!("error: building the eBPF programs failed ({status}): {cargo:?}");
        std::process::exit(1);
    }
    // Dependencies' warnings are capped by cargo, so what remains is our own code's. The
    // closing "N warnings emitted" adds nothing to the warnings themselves.
    for (level, text) in &diagnostics {
        let summary = text.trim_end().ends_with("emitted");
        if *level == DiagnosticLevel::Warning && !summary {
            for line in text.trim_end().lines() {
                println!("cargo:warning={line}");
            }
        }
    }

    for bin in BINS {
        let Some((_, built)) = artifacts.iter().find(|(name, _)| name == bin) else {
            bail!("the nested cargo built no `{bin}` (built: {artifacts:?})");
        };
        let copy = out_dir.join(bin);
        fs::copy(built, &copy).with_context(|| format!("cannot copy {} to {}", built.display(), copy.display()))?;
    }
    Ok(())
}

/// The host's architecture as aya-ebpf names it (aya-build's mapping: riscv64gc is riscv64).
fn bpf_target_arch() -> Result<String> {
    let arch = env::var("CARGO_CFG_TARGET_ARCH").context("CARGO_CFG_TARGET_ARCH not set")?;
    Ok(if arch.starts_with("riscv64") { "riscv64".to_owned() } else { arch })
}

fn find_in_path(program: &str) -> Option<PathBuf> {
    env::split_paths(&env::var_os("PATH")?).map(|dir| dir.join(program)).find(|path| Path::is_file(path))
}
