//! What the process does so that its resident set follows what it holds.
//!
//! glibc's allocator keeps freed memory for reuse: each arena keeps the
//! high-water mark of what its threads once held, and it gives pages back
//! to the system only from the top of the main heap. allot's threads are
//! the runtime's workers, one thread per SQLite connection and short-lived
//! blocking ones; SQLite allocates and frees buffers of every size on them.
//! Under steady load the resident set of a SQLite server climbed for
//! minutes while what was live stayed level (see the soak in
//! `docs/benchmarks.md`). Two steps bound it: one arena per core, set before
//! any thread starts, and free pages handed back at each housekeeping tick.
//! Elsewhere than glibc on Linux both are no-ops.

/// Caps glibc's arenas at one per core (its default is eight per core).
/// Allocation stays parallel; what the arenas can hold back is bounded.
/// Call it first thing in `main`, before any thread exists.
pub fn bound_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let arenas = libc::c_int::try_from(cores.max(2)).unwrap_or(libc::c_int::MAX);
        // SAFETY: mallopt only sets a tunable of the allocator; the caller
        // runs it before other threads exist.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, arenas);
        }
    }
}

/// Hands the free pages inside every arena back to the system
/// (`malloc_trim(0)`: whole free pages in the middle of a heap too, not only
/// at its top). Live memory is untouched, so a real leak still shows in the
/// resident set. It walks the arenas under their locks, a millisecond or so
/// for allot's heap, hence on a blocking thread and only every few seconds.
pub async fn release_free_pages() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let trimmed = tokio::task::spawn_blocking(|| {
            // SAFETY: malloc_trim takes the allocator's own locks; it is
            // safe to call from any thread at any time.
            unsafe { libc::malloc_trim(0) }
        })
        .await;
        if let Err(error) = trimmed {
            tracing::debug!(%error, "could not hand free memory back");
        }
    }
}
