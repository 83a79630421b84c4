//! The empty programs that benchmarks compare against. `baseline_pass` (XDP) returns XDP_PASS
//! and touches nothing, so its BPF_PROG_TEST_RUN time is the fixed cost of running any XDP
//! program (the call and the test harness's loop), the floor under every other figure of
//! `cargo xtask bench`. `baseline_tc_pass` (TC classifier) is its egress twin: the lab's swap
//! benchmark puts both into the daemon's pinned XDP and TCX links in place of tracker's
//! programs, so both hooks stay occupied and only the programs' work differs.
//! tracker-user's build script builds them as an object of their own (`OUT_DIR/baseline`), so
//! they share no code, maps or globals with tracker's programs.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::{TC_ACT_UNSPEC, xdp_action},
    macros::{classifier, xdp},
    programs::{TcContext, XdpContext},
};

#[xdp]
pub fn baseline_pass(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

/// The verdict tracker's TC program gives a packet it passes: TC_ACT_UNSPEC (TCX_NEXT), so the
/// kernel goes on exactly as after tracker's own program (with nothing after it in the TCX
/// chain, the packet is sent, as with TC_ACT_OK).
#[classifier]
pub fn baseline_tc_pass(_ctx: TcContext) -> i32 {
    TC_ACT_UNSPEC
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
