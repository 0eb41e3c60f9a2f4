//! The heap. The `agentguard` binary runs on mimalloc: events are decoded
//! on the reader thread and freed on the writer's, which glibc's malloc
//! serves under its arena lock on every call, while mimalloc frees across
//! threads without one (`cargo xtask bench throughput`: see the README).

use std::os::raw::c_int;

/// mimalloc's `arena_eager_commit` and `purge_delay` options: their places
/// in `mi_option_e` (the same in mimalloc 2 and 3; the crate does not name
/// them). `arena_eager_commit` defaults to 2.
const ARENA_EAGER_COMMIT: c_int = 4;
const PURGE_DELAY: c_int = 15;

/// Start-up settings, before the heap grows: arenas commit memory as it is
/// used, not when reserved, so what start-up frees (the kernel's BTF, tens
/// of MB parsed once) can leave the resident set. Changed only while the
/// option still holds its documented default, so a mimalloc that
/// renumbered its options is left alone.
pub fn tune() {
    // SAFETY: reads and sets a plain option value; no pointers involved.
    unsafe {
        if libmimalloc_sys::mi_option_get(ARENA_EAGER_COMMIT) == 2 {
            libmimalloc_sys::mi_option_set(ARENA_EAGER_COMMIT, 0);
            libmimalloc_sys::mi_option_set(PURGE_DELAY, 0);
        }
    }
}

/// Gives freed heap memory back to the kernel (after loading the eBPF
/// object, after a policy reload): mimalloc's, and glibc's, which the C
/// libraries and the system allocator of tests still use.
pub fn release_free_memory() {
    // SAFETY: both only release memory already freed.
    unsafe {
        libmimalloc_sys::mi_collect(true);
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    /// The option number still names `arena_eager_commit`: among the
    /// first options only it defaults to 2 (this test binary never calls
    /// `tune`).
    #[test]
    fn arena_eager_commit_is_where_tune_looks() {
        // SAFETY: reads a plain option value.
        let v = unsafe { libmimalloc_sys::mi_option_get(super::ARENA_EAGER_COMMIT) };
        assert_eq!(v, 2, "option {}", super::ARENA_EAGER_COMMIT);
    }
}
