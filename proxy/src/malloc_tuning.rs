//! glibc malloc thresholds for a process that allocates and frees the same
//! few kilobytes for every request.
//!
//! With glibc's defaults the heap's free top is returned to the kernel
//! (`brk`) whenever it passes 128 KiB, and taken back a moment later: every
//! hundred requests or so the proxy paid a `brk` pair, page faults on the
//! pages it took back, and a TLB flush (seen as `__brk`, `exc_page_fault` and
//! `flush_tlb_mm_range` in profiles of the outbound path with a full policy).
//! Keeping up to 1 MiB of free top (and serving requests under 512 KiB from
//! the heap rather than `mmap`, as glibc's own adaptive rule would after its
//! first large free) removes that churn: measured side by side with one
//! binary, wrk -c50 against a local nginx, 3 rounds, CPU per request plain
//! 14.63 → 14.14 µs, full policy 17.96 → 17.01 µs (BENCHMARKS.md, "The
//! resilience stack's cost"). The price is at most 1 MiB of freed memory kept
//! resident after a burst.

/// The largest free heap top kept rather than returned to the kernel.
pub const TRIM_THRESHOLD: usize = 1 << 20;
/// Allocations from this size up are `mmap`ed on their own.
pub const MMAP_THRESHOLD: usize = 512 << 10;

/// Sets the thresholds; call once at start, before the runtime exists.
/// Elsewhere than glibc it does nothing.
pub fn tune() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[allow(unsafe_code)]
    // SAFETY: mallopt only adjusts allocator parameters; it is called before
    // any other thread exists, and the values are within glibc's limits.
    unsafe {
        libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD as libc::c_int);
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD as libc::c_int);
    }
}
