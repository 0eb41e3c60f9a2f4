//! The in-kernel task filter: which processes stream events.
//!
//! `TASK_FILTER` maps a tgid to a [`Verdict`]. A tgid absent from the map
//! gets the loader's default (`DEFAULT_WATCH` global). Forked children inherit
//! their parent's entry in the kernel, so "this agent and all it spawns" is one
//! map write.

/// Stored value of `TASK_FILTER`.
pub mod verdict {
    /// Never stream events of this process (the daemon itself, say).
    pub const IGNORE: u32 = 0;
    /// Stream every enabled event of this process.
    pub const WATCH: u32 = 1;
}

/// Max processes with an explicit verdict.
pub const TASK_FILTER_ENTRIES: u32 = 65536;

/// Index into the `COUNTERS` per-CPU array.
pub mod counter {
    /// Records that did not fit in the ring buffer.
    pub const LOST: u32 = 0;
    /// Syscall exits whose entry record was missing (evicted or raced).
    pub const ORPHAN_EXIT: u32 = 1;
    pub const MAX: u32 = 4;
}

/// Load-time constants (kernel struct offsets, taken from the running
/// kernel's BTF because rustc emits no CO-RE relocations). Names match the
/// globals in the eBPF object.
pub const OFFSET_GLOBALS: &[&str] = &[
    "OFF_TASK_REAL_PARENT",
    "OFF_TASK_TGID",
    "OFF_TASK_EXIT_CODE",
    "OFF_TASK_FS",
    "OFF_TASK_FILES",
    "OFF_FS_ROOT",
    "OFF_FS_PWD",
    "OFF_PATH_MNT",
    "OFF_PATH_DENTRY",
    "OFF_DENTRY_PARENT",
    "OFF_DENTRY_NAME",
    "OFF_QSTR_NAME",
    "OFF_MOUNT_MNT",
    "OFF_MOUNT_PARENT",
    "OFF_MOUNT_MOUNTPOINT",
    "OFF_VFSMOUNT_ROOT",
    "OFF_FILES_FDT",
    "OFF_FDT_MAX_FDS",
    "OFF_FDT_FD",
    "OFF_FILE_PATH",
];
