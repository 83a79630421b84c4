//! The empty XDP program that benchmarks compare against: it returns XDP_PASS and touches
//! nothing, so its BPF_PROG_TEST_RUN time is the fixed cost of running any XDP program (the
//! call and the test harness's loop), the floor under every other figure of `cargo xtask bench`.
//! tracker-user's build script builds it as an object of its own (`OUT_DIR/baseline`), so it
//! shares no code, maps or globals with tracker's programs.
#![no_std]
#![no_main]

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};

#[xdp]
pub fn baseline_pass(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
