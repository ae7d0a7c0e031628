//! Process-wide memory settings, applied once at start.

/// Arenas glibc's malloc may use ([`limit_malloc_arenas`]).
pub const MALLOC_ARENAS: i32 = 2;

/// Caps glibc's malloc at `arenas` arenas, unless the user set `MALLOC_ARENA_MAX` (glibc then applies theirs).
/// Returns whether the cap was set.
///
/// glibc gives a thread that meets contention an arena of its own, up to 8 per core, and memory freed into one
/// arena is not handed to the others. `watch` starts and stops threads all the time (GStreamer's streaming threads
/// of every clip and evidence pipeline, x264's), so with the default the resident size keeps growing far past what
/// is in use. Measured on the benchmark's 10-minute loop with the tiny model, `--every 2 --annotate`, clips on
/// (an event storm): RSS 144 → 600 MiB and still rising after two minutes with the default; 280–320 MiB, flat,
/// with 2 arenas (390 MiB with 4); 137 MiB flat with `--no-clips`; wall time unchanged (124 s vs 127 s).
///
/// Call it first thing in `main`, before any thread exists.
pub fn limit_malloc_arenas(arenas: i32) -> bool {
    if std::env::var_os("MALLOC_ARENA_MAX").is_some() {
        return false;
    }
    set_arena_max(arenas)
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn set_arena_max(arenas: i32) -> bool {
    // SAFETY: mallopt only changes malloc's tunables; M_ARENA_MAX takes any positive count.
    unsafe { libc::mallopt(libc::M_ARENA_MAX, arenas.max(1)) == 1 }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn set_arena_max(_arenas: i32) -> bool {
    false
}

/// Hands the free pages of malloc's heaps back to the system (glibc's `malloc_trim`, every arena); a no-op
/// elsewhere. Returns whether anything was released.
///
/// Called after each clip's evidence: its decoder and x264 encoder allocate tens of MB in threads that end with
/// the pipeline, and glibc keeps what they freed mapped. Measured on a 30-minute loop of bikes with the tiny
/// model, `--every 1 --annotate` (45 000 frames, about 80 000 events, clips on with evidence): RSS without it
/// wandered between 340 and 425 MiB, with it between 280 and 316 MiB; with `evidence = false` it stayed at
/// 142–144 MiB (BENCHMARKS.md).
pub fn release_free_heap() -> bool {
    trim()
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim() -> bool {
    // SAFETY: malloc_trim only returns free pages to the kernel; any pad is valid.
    unsafe { libc::malloc_trim(0) == 1 }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() -> bool {
    false
}

#[cfg(test)]
mod tests {
    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn freed_memory_goes_back_to_the_system() {
        // Many mid-sized blocks (under the mmap threshold, so they live in the heap), freed: trim has pages to
        // release. Whether the kernel's RSS drops is not asserted (other tests allocate at the same time).
        let blocks: Vec<Vec<u8>> = (0..2000).map(|i| vec![i as u8; 64 * 1024]).collect();
        drop(blocks);
        assert!(super::release_free_heap());
    }

    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn glibc_takes_the_cap() {
        // mallopt returns 0 for a parameter it does not know or a value it refuses.
        assert!(super::set_arena_max(super::MALLOC_ARENAS));
    }
}
