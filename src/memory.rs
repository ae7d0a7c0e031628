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

#[cfg(test)]
mod tests {
    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn glibc_takes_the_cap() {
        // mallopt returns 0 for a parameter it does not know or a value it refuses.
        assert!(super::set_arena_max(super::MALLOC_ARENAS));
    }
}
