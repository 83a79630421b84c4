//! Builds tracker-ebpf with the nightly toolchain and bpf-linker (via aya-build) and leaves the
//! object in OUT_DIR, where `src/kernel` embeds it with `include_bytes_aligned!`.
fn main() -> anyhow::Result<()> {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../tracker-ebpf");
    aya_build::build_ebpf(
        [aya_build::Package { name: "tracker-ebpf", root_dir: root, ..Default::default() }],
        aya_build::Toolchain::default(),
    )
}
