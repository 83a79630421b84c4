//! Notices of interfaces and addresses that come and go (rtnetlink's link and address groups):
//! the daemon's cue to look at its interface again, at once rather than at the next sweep.

use std::{
    io,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
};

use tokio::io::unix::AsyncFd;

/// The multicast groups joined (include/uapi/linux/rtnetlink.h): every link, IPv4 and IPv6
/// address change in this network namespace. Joining them needs no capability.
const GROUPS: u32 = (libc::RTMGRP_LINK | libc::RTMGRP_IPV4_IFADDR | libc::RTMGRP_IPV6_IFADDR) as u32;
/// Bytes read per notice; a read drains one datagram, and the content is not needed.
const BUF: usize = 8192;

/// A NETLINK_ROUTE socket in those groups.
pub struct LinkNotices(AsyncFd<OwnedFd>);

impl LinkNotices {
    pub fn open() -> io::Result<Self> {
        // SAFETY: socket(2) with constant arguments; the descriptor is owned below.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a descriptor just returned by socket(2), owned by nothing else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: sockaddr_nl is plain data; all-zero is a valid value (nl_pid 0: the kernel
        // picks the port id).
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        addr.nl_groups = GROUPS;
        // SAFETY: addr is a sockaddr_nl of the size passed.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&raw const addr).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the AsyncFd owns the descriptor, which stays open and the same socket for the
        // AsyncFd's whole life.
        Ok(Self(unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }?))
    }

    /// Waits until something changed, then reads every notice queued. An overrun (ENOBUFS:
    /// notices were dropped) is a change too: the caller looks at the interface afresh anyway.
    pub async fn changed(&self) -> io::Result<()> {
        let mut guard = self.0.readable().await?;
        let mut buf = [0u8; BUF];
        loop {
            // SAFETY: buf is writable for BUF bytes.
            let n = unsafe { libc::recv(self.0.get_ref().as_raw_fd(), buf.as_mut_ptr().cast(), BUF, 0) };
            if n >= 0 {
                continue;
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EAGAIN) => break,
                Some(libc::ENOBUFS | libc::EINTR) => continue,
                _ => {
                    // Waited for again, not read again at once: no busy loop on an error.
                    guard.clear_ready();
                    return Err(e);
                }
            }
        }
        guard.clear_ready();
        Ok(())
    }
}
