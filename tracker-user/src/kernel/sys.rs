//! Raw bpf(2) commands that aya 0.14 does not wrap: the shared call, the flow tables' batch
//! read and lookup-and-delete, and the TCX query by program id.

use std::os::fd::{AsRawFd as _, BorrowedFd};

/// `BPF_MAP_LOOKUP_AND_DELETE_ELEM`, `BPF_MAP_LOOKUP_BATCH` (include/uapi/linux/bpf.h, enum
/// bpf_cmd).
const BPF_MAP_LOOKUP_AND_DELETE_ELEM: libc::c_long = 21;
const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
/// `BPF_PROG_QUERY` (enum bpf_cmd) and `BPF_TCX_EGRESS` (enum bpf_attach_type).
const BPF_PROG_QUERY: libc::c_long = 16;
const BPF_TCX_EGRESS: u32 = 47;
/// More TC egress programs than any interface has: the kernel says how many there are when the
/// buffer is too small, and the query is then an error, never a short list.
const TCX_QUERY_MAX: usize = 64;
/// Bytes of `union bpf_attr` passed: enough for the fields used; the kernel reads only as much
/// as it is given and requires the rest of what it is given to be zero.
pub(super) const ATTR_BYTES: usize = 128;

pub(super) fn sys_bpf(cmd: libc::c_long, attr: &mut [u8; ATTR_BYTES]) -> std::io::Result<libc::c_long> {
    // SAFETY: attr is a valid, writable buffer of ATTR_BYTES bytes laid out as the command's
    // member of union bpf_attr; the kernel copies at most that many bytes.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), ATTR_BYTES as libc::c_uint) };
    if rc < 0 { Err(std::io::Error::last_os_error()) } else { Ok(rc) }
}

fn put_u32(attr: &mut [u8; ATTR_BYTES], off: usize, v: u32) {
    attr[off..off + 4].copy_from_slice(&v.to_ne_bytes());
}

fn put_u64(attr: &mut [u8; ATTR_BYTES], off: usize, v: u64) {
    attr[off..off + 8].copy_from_slice(&v.to_ne_bytes());
}

/// The ids of the TCX egress programs attached to interface `ifindex` of this network
/// namespace. `BPF_PROG_QUERY` needs only CAP_NET_ADMIN; aya's `query_tcx` also opens each
/// program by id, which takes CAP_SYS_ADMIN, more than the daemon's unit grants.
pub(super) fn tcx_egress_prog_ids(ifindex: u32) -> std::io::Result<Vec<u32>> {
    let mut ids = [0u32; TCX_QUERY_MAX];
    let mut attr = [0u8; ATTR_BYTES];
    // struct { __u32 target_ifindex, attach_type, query_flags, attach_flags;
    // __aligned_u64 prog_ids; __u32 prog_cnt; ... } query;
    put_u32(&mut attr, 0, ifindex);
    put_u32(&mut attr, 4, BPF_TCX_EGRESS);
    put_u64(&mut attr, 16, ids.as_mut_ptr() as u64);
    put_u32(&mut attr, 24, TCX_QUERY_MAX as u32);
    sys_bpf(BPF_PROG_QUERY, &mut attr)?;
    let mut count = [0u8; 4];
    count.copy_from_slice(&attr[24..28]);
    let count = (u32::from_ne_bytes(count) as usize).min(TCX_QUERY_MAX);
    Ok(ids[..count].to_vec())
}

/// One `BPF_MAP_LOOKUP_BATCH` call on a hash map: up to `count` entries after the bucket
/// `token` names (`None`: from the start) into `keys` and `values` (each `count` elements of
/// the map's key and value size; a per-CPU value is one slot per possible CPU). Returns the
/// entries read and the token for the next call, or `None` when the map is done.
///
/// For hash maps the token is a bucket index (a `u32`, kernel/bpf/hashtab.c
/// `__htab_map_lookup_and_delete_batch`); a bucket is never split across calls, and the call
/// fails with ENOSPC if one holds more than `count` entries, which a `count` of thousands
/// never meets.
pub(super) fn lookup_batch(
    fd: BorrowedFd<'_>,
    token: Option<u32>,
    keys: &mut [u8],
    values: &mut [u8],
    count: u32,
) -> std::io::Result<(u32, Option<u32>)> {
    let in_batch = token.unwrap_or(0);
    let mut out_batch = 0u32;
    let mut attr = [0u8; ATTR_BYTES];
    // struct { __aligned_u64 in_batch, out_batch, keys, values; __u32 count, map_fd;
    // __u64 elem_flags, flags; } batch;
    let in_ptr = if token.is_some() { (&raw const in_batch) as u64 } else { 0 };
    put_u64(&mut attr, 0, in_ptr);
    put_u64(&mut attr, 8, (&raw mut out_batch) as u64);
    put_u64(&mut attr, 16, keys.as_mut_ptr() as u64);
    put_u64(&mut attr, 24, values.as_mut_ptr() as u64);
    put_u32(&mut attr, 32, count);
    put_u32(&mut attr, 36, fd.as_raw_fd() as u32);
    // ENOENT marks the last batch, which may still have filled some entries.
    let more = match sys_bpf(BPF_MAP_LOOKUP_BATCH, &mut attr) {
        Ok(_) => true,
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => false,
        Err(e) => return Err(e),
    };
    // The kernel writes back how many entries it filled in `count`.
    let mut filled = [0u8; 4];
    filled.copy_from_slice(&attr[32..36]);
    Ok((u32::from_ne_bytes(filled), more.then_some(out_batch)))
}

/// `BPF_MAP_LOOKUP_AND_DELETE_ELEM`: deletes `key` and copies out what it held at that moment
/// (per-CPU hash maps since Linux 5.14). `Ok(false)` when the key is not there (evicted).
pub(super) fn lookup_and_delete(fd: BorrowedFd<'_>, key: &[u8], value: &mut [u8]) -> std::io::Result<bool> {
    let mut attr = [0u8; ATTR_BYTES];
    // struct { __u32 map_fd; __aligned_u64 key; union { value, next_key }; __u64 flags; }
    put_u32(&mut attr, 0, fd.as_raw_fd() as u32);
    put_u64(&mut attr, 8, key.as_ptr() as u64);
    put_u64(&mut attr, 16, value.as_mut_ptr() as u64);
    match sys_bpf(BPF_MAP_LOOKUP_AND_DELETE_ELEM, &mut attr) {
        Ok(_) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
        Err(e) => Err(e),
    }
}
