//! BPF_PROG_TEST_RUN on a program fd of any origin (one another tool loaded, or a running
//! daemon's): aya 0.14 runs only programs it loaded itself or opens with types it does not
//! export, and the command is one bpf(2) call.

use std::os::fd::{AsRawFd as _, BorrowedFd};

use anyhow::{Context as _, Result};

/// The BPF_PROG_TEST_RUN member of `union bpf_attr` (include/uapi/linux/bpf.h); the kernel
/// treats the rest of the union as zero.
#[repr(C)]
#[derive(Default)]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
    batch_size: u32,
    _pad: u32,
}

const BPF_PROG_TEST_RUN: libc::c_long = 10;

/// Runs `prog` on `pkt` `repeat` times in one test run: its verdict and the kernel's average
/// time per run in ns. The program's maps are the real ones: what it records stays recorded.
pub fn test_run(prog: BorrowedFd<'_>, pkt: &[u8], repeat: u32) -> Result<(u32, f64)> {
    let mut attr = TestRunAttr {
        prog_fd: u32::try_from(prog.as_raw_fd()).context("negative fd")?,
        data_in: pkt.as_ptr() as u64,
        data_size_in: u32::try_from(pkt.len()).context("packet too large")?,
        repeat,
        ..TestRunAttr::default()
    };
    // SAFETY: `attr` is a valid prefix of bpf_attr for this command; the kernel reads
    // data_size_in bytes at data_in (our packet, alive for the call) and writes only into
    // `attr`, as no output buffers are given.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, BPF_PROG_TEST_RUN, &raw mut attr, size_of::<TestRunAttr>()) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error()).context("BPF_PROG_TEST_RUN");
    }
    Ok((attr.retval, f64::from(attr.duration)))
}
