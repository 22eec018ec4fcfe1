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

/// Free heap memory the proxy keeps as its own; more than this is handed
/// back to the kernel.
pub const KEEP_FREE: usize = 2 << 20;
/// How often the free heap is checked.
pub const CHECK_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Hands memory freed after a burst back to the kernel.
///
/// glibc returns only the free top of the heap (above `TRIM_THRESHOLD`);
/// chunks freed in the middle stay resident. A burst of connections, each
/// holding hyper's buffers until it has been idle for a second and is set
/// aside (`outrigger_http::idle`), leaves the heap at its peak with most of
/// it free: 22 KiB of RSS per idle connection stayed after 1,000 of them,
/// where their live heap is under 3 KiB (BENCHMARKS.md, "Idle keep-alive
/// connections"). Once a second this looks at the free heap and, when it
/// holds more than [`KEEP_FREE`], asks glibc to give back every free page
/// (`malloc_trim`). Under steady load the free heap stays small, so this
/// rarely runs; when it does, the pages are faulted in again only if a new
/// burst needs them.
pub async fn release_after_bursts(stop: tokio_util::sync::CancellationToken) {
    let mut every = tokio::time::interval(CHECK_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = every.tick() => {}
        }
        if free_heap_bytes().is_some_and(|free| free > KEEP_FREE) {
            // Trimming walks the heap: off the forwarding threads.
            let _ = tokio::task::spawn_blocking(release_free_pages).await;
        }
    }
}

/// Free bytes in the heap's chunks (glibc's `mallinfo2().fordblks`); None
/// where that is not known.
pub fn free_heap_bytes() -> Option<usize> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        #[allow(unsafe_code)]
        // SAFETY: mallinfo2 only reads the allocator's statistics.
        let info = unsafe { libc::mallinfo2() };
        Some(info.fordblks)
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        None
    }
}

/// Gives every whole free page of the heap back to the kernel.
pub fn release_free_pages() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[allow(unsafe_code)]
    // SAFETY: malloc_trim takes a padding size and only returns free
    // memory; glibc locks each arena while it does.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn freed_memory_is_seen_and_given_back() {
        // 32 MiB in small chunks, freed but one in 64 (so the heap's top
        // cannot simply shrink): free in the middle of the heap.
        let chunks: Vec<Vec<u8>> = (0..8192).map(|i| vec![i as u8; 4096]).collect();
        let kept: Vec<Vec<u8>> = chunks
            .into_iter()
            .enumerate()
            .filter_map(|(i, chunk)| (i % 64 == 0).then_some(chunk))
            .collect();
        let free = free_heap_bytes().expect("glibc");
        assert!(free > 16 << 20, "{free}");
        let rss_before = rss_kib();
        release_free_pages();
        let rss_after = rss_kib();
        assert!(
            rss_after + 8 * 1024 < rss_before,
            "{rss_before} KiB -> {rss_after} KiB"
        );
        drop(kept);
    }

    fn rss_kib() -> usize {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }
}
