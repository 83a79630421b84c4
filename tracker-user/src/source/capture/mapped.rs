//! A capture file mapped read-only into memory, so an import reads it without copying it.
//!
//! Copying a warm 650 MB capture out of the page cache with read(2) cost about 0.1 s of CPU,
//! and an import read it twice (its hash, its packets); mapping it costs a millisecond (the
//! page cache's large folios are mapped a few at a fault). A few lines of libc rather than a
//! crate: one read-only mapping, its release and its unmapping are all tracker needs.
//!
//! A file truncated by another process while it is mapped raises SIGBUS when the missing pages
//! are read: captures are appended to, or replaced by a new file, so an import of one still
//! being written is safe; one cut short underneath the import stops the process.

use std::{fs::File, io, ops::Range, os::fd::AsRawFd as _};

/// The whole of a regular file as it was when mapped.
pub struct Mapped {
    ptr: *mut libc::c_void,
    len: usize,
}

// The mapping is read-only and owned: it can move to, and be read from, any thread.
unsafe impl Send for Mapped {}
unsafe impl Sync for Mapped {}

impl Mapped {
    /// Maps `file` whole; an error for what cannot be mapped (an empty file, a pipe), which the
    /// caller then reads with read(2).
    pub fn new(file: &File) -> io::Result<Self> {
        let meta = file.metadata()?;
        let len = usize::try_from(meta.len()).map_err(|_| io::Error::other("too large to map"))?;
        if !meta.is_file() || len == 0 {
            return Err(io::Error::other("not a non-empty regular file"));
        }
        // SAFETY: a new read-only mapping of a file descriptor we hold; the kernel picks the
        // address and nothing else refers to it.
        let ptr =
            unsafe { libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ, libc::MAP_PRIVATE, file.as_raw_fd(), 0) };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        // Read front to back: a cold file is read ahead further. Only advice.
        // SAFETY: the range is the mapping just made.
        unsafe { libc::madvise(ptr, len, libc::MADV_SEQUENTIAL) };
        Ok(Self { ptr, len })
    }

    pub fn bytes(&self) -> &[u8] {
        // SAFETY: `len` readable bytes from `ptr` for as long as `self` lives (see the module's
        // documentation about truncation).
        unsafe { std::slice::from_raw_parts(self.ptr.cast::<u8>(), self.len) }
    }

    /// Unmaps the whole pages inside `range`, which the caller has read: they stay in the page
    /// cache, and reading them again maps them again. Keeps the process's resident memory to
    /// what it has not read yet rather than the whole file.
    pub fn release(&self, range: Range<usize>) {
        // SAFETY: sysconf has no preconditions.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
        let from = range.start.next_multiple_of(page);
        let to = range.end.min(self.len) / page * page;
        if to > from {
            // SAFETY: whole pages inside the mapping; MADV_DONTNEED on a read-only file mapping
            // only drops the page table entries, so the bytes read the same afterwards.
            unsafe { libc::madvise(self.ptr.cast::<u8>().add(from).cast(), to - from, libc::MADV_DONTNEED) };
        }
    }
}

impl Drop for Mapped {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, unmapped once; no borrow of it outlives `self`.
        unsafe { libc::munmap(self.ptr, self.len) };
    }
}
