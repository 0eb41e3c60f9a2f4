//! The in-kernel task filter: which processes stream which events.
//!
//! `TASK_FILTER` maps a tgid to a kind mask (bit `k` set = stream events of
//! `kind::k`). A tgid absent from the map gets `CONFIG[config::DEFAULT_MASK]`.
//! Forked children inherit their parent's entry in the kernel, so "this agent
//! and all it spawns" is one map write, and an unwatched process costs one
//! hash lookup per probe and no ring-buffer write.

use crate::event::kind;

/// Mask bit of one event kind.
pub const fn kind_bit(k: u16) -> u32 {
    1u32 << (k as u32)
}

/// Every event kind.
pub const ALL_KINDS: u32 = ((1u32 << kind::MAX) - 1) & !1;

/// Mask value that streams nothing (the daemon's own process, say).
pub const IGNORE: u32 = 0;

/// Indexes of the `CONFIG` array map (runtime-tunable, unlike globals).
pub mod config {
    /// Kind mask for processes absent from `TASK_FILTER`.
    pub const DEFAULT_MASK: u32 = 0;
    /// Wake the ring-buffer reader only once this many bytes wait (0: wake
    /// for every record). Waking per record costs more than the record.
    pub const WAKEUP_BYTES: u32 = 1;
    /// Non-zero once any enforcement rule is loaded: until then the probes
    /// skip the enforcement lookups.
    pub const ENFORCE: u32 = 2;
    /// Rule mask of rules that kill at io_uring_setup.
    pub const IO_URING_RULES: u32 = 3;
    /// Non-zero: the LSM file hooks time each decision for a guarded task
    /// into `LSM_TIMES` (benchmarks only; it costs two clock reads).
    pub const LSM_TIMING: u32 = 4;
    /// Non-zero while the BPF-LSM hooks enforce: the tracepoints then leave
    /// to them what they can refuse (no kill at entry for packet sockets).
    pub const LSM_ACTIVE: u32 = 5;
    /// Rule mask of rules that kill at a 32-bit ABI syscall.
    pub const COMPAT_RULES: u32 = 6;
    /// Kind mask: records of guarded tasks of these kinds wake the reader
    /// at once (a rule userspace decides may kill or deny); others wait
    /// for the batch. [`URGENT_UNIX`] stands for unix-socket connects.
    pub const URGENT_KINDS: u32 = 7;
    /// Kind mask: records of guarded tasks of these kinds leave the kernel
    /// only when a kernel check says a rule could match them (open: the
    /// file or its directory is protected, or its name is in `BASENAMES`;
    /// connect/send: a network rule matches, or the socket is a unix one).
    /// Set only when every rule about the kind can be checked that way.
    pub const PREFILTER_KINDS: u32 = 8;
    /// Kind mask for processes without a `TASK_FILTER` entry that some
    /// rule guards (an agent container's processes from their first
    /// syscall, before the daemon has seen them), when the default mask
    /// lacks the kind.
    pub const GUARDED_MASK: u32 = 9;
    /// Rule mask of the slots holding network rules (the connect/send
    /// prefilter asks all of them, not only the task's own).
    pub const NET_SLOTS: u32 = 10;
    /// Non-zero: opens of guarded containers' processes are prefiltered
    /// too, by the file's first path component below the container's
    /// root (`BASENAMES` entries `/name`) besides its name. Set only when
    /// every open rule's paths start with a plain component.
    pub const ROOTED_OPENS: u32 = 11;
    /// Changed by the daemon whenever `BASENAMES` changes: the kernel's
    /// per-CPU cache of directories whose first component starts no rule
    /// path is then stale.
    pub const TOP_EPOCH: u32 = 12;
    /// Rule mask of the slots holding a rule with a domain list
    /// (`except.domains`): 0 keeps the cgroup skb programs to one lookup
    /// per packet.
    pub const DNS_RULES: u32 = 13;
    /// Flood isolation: records one subject (cgroup) may send per
    /// [`super::flood::WINDOW_SHIFT`] window on one CPU; past it, its own
    /// records are dropped and counted in `FLOOD` (0: no quota).
    pub const FLOOD_QUOTA: u32 = 14;
    /// Flood isolation drops a subject's records past its quota only while
    /// at least this many bytes wait in the ring buffer (0: always): while
    /// the daemon keeps up, a busy subject loses nothing.
    pub const FLOOD_PRESSURE: u32 = 15;
    /// Rule mask of the slots holding a pipe rule (`stdin_from`): 0 keeps
    /// exec to no extra lookup.
    pub const PIPE_RULES: u32 = 16;
    /// Non-zero under raw dispatch while the open-like syscalls have no
    /// entry program: their exit builds the whole record from the saved
    /// registers (one program run per open instead of two, and no parked
    /// record). Off while the BPF-LSM hooks stamp verdicts into records
    /// parked at entry.
    pub const OPENS_AT_EXIT: u32 = 17;

    pub const MAX: u32 = 18;
}

/// In `CONFIG[URGENT_KINDS]`: unix-socket connects (the connect kind bit
/// covers every family).
pub const URGENT_UNIX: u32 = 1 << 31;

/// `BASENAMES` key bytes: a file name, NUL-padded. An exact name is stored
/// with its NUL (prefix length = name + 1), a name prefix (`.env.*`)
/// without. A first path component is stored after a `/` (`/root`): no
/// file name holds one.
pub const BASENAME_LEN: usize = 64;
/// `BASENAMES` entries.
pub const BASENAME_ENTRIES: u32 = 256;
/// u32 words of the bit set of the entries' first two bytes (65536 bits).
pub const BASENAME_PAIR_WORDS: u32 = 2048;

/// The bits of `BASENAME_PAIRS` a `BASENAMES` entry sets: its first two
/// bytes (an exact one-byte name: the byte and the NUL after it); a
/// one-byte prefix, every pair it starts. Yields (word, bit mask).
pub fn basename_pairs(name: &[u8], exact: bool) -> impl Iterator<Item = (u32, u32)> + '_ {
    let first = u32::from(name.first().copied().unwrap_or(0));
    let seconds: core::ops::RangeInclusive<u32> = match (name.get(1), exact) {
        (Some(&b), _) => u32::from(b)..=u32::from(b),
        (None, true) => 0..=0,
        (None, false) => 0..=255,
    };
    seconds.map(move |b| {
        let pair = first << 8 | b;
        (pair >> 5, 1 << (pair & 31))
    })
}

/// `LSM_TIMES` buckets: decision time in units of `LSM_TIME_BUCKET_NS`,
/// the last bucket holding everything longer.
pub const LSM_TIME_BUCKETS: u32 = 2048;
pub const LSM_TIME_BUCKET_NS: u64 = 100;

/// Max processes with an explicit verdict.
pub const TASK_FILTER_ENTRIES: u32 = 65536;

/// `CGROUP_PATHS`: each cgroup2 directory's path below the mount, as the
/// kernel wrote it at mkdir (NUL-padded), so a container's id is known
/// from an event's cgroup id even after its processes and cgroup are gone.
pub const CGROUP_PATH_LEN: usize = 256;
pub const CGROUP_PATHS_ENTRIES: u32 = 8192;

/// Max cgroups the daemon has classified (`CGROUP_MASK`); it removes the
/// entries of cgroups that are gone.
pub const CGROUP_MASK_ENTRIES: u32 = 65536;

/// Index into the `COUNTERS` per-CPU array.
pub mod counter {
    /// Records that did not fit in the ring buffer.
    pub const LOST: u32 = 0;
    /// Requests of guarded tasks against the daemon (signal, ptrace, bpf)
    /// the LSM hooks refused.
    pub const SELF_PROTECT: u32 = 1;
    /// Ancestor walks the LSM hooks ran for guarded tasks.
    pub const LSM_WALKS: u32 = 2;
    /// Walks that found a protecting rule.
    pub const LSM_HITS: u32 = 3;
    /// Inserts refused because the map was full: TASK_FILTER at fork (the
    /// child streams the default kinds), ENFORCE_TASKS at fork (the child
    /// of a guarded task is not guarded by tgid; its container still is).
    pub const FULL_TASK_FILTER: u32 = 4;
    pub const FULL_ENFORCE_TASKS: u32 = 5;
    /// Pending syscall records (LRU maps: a flood evicts, never refuses)
    /// put in at syscall entry and taken out at exit, per map in the order
    /// file, net, exec, rename. Userspace derives the records lost to
    /// eviction: put in − taken out − still there.
    pub const PENDING_IN: u32 = 6;
    pub const PENDING_OUT: u32 = 10;
    /// Records of guarded tasks the prefilter kept in the kernel (no rule
    /// could match them).
    pub const PREFILTERED: u32 = 14;
    /// DNS queries of subjects under a domain rule dropped at egress.
    pub const DNS_DROPPED: u32 = 15;
    /// Records dropped by flood isolation (all subjects; `FLOOD` has them
    /// per subject and kind).
    pub const FLOODED: u32 = 16;
    pub const MAX: u32 = 17;
}

/// Flood isolation: each subject (a cgroup: a container, a host session)
/// has a quota of records per window and CPU, so one that floods loses
/// its own records, not everyone's. Process lifecycle records (exec, fork,
/// exit) are never dropped: identity and enforcement state rest on them.
pub mod flood {
    /// Window: 2^27 ns (about 134 ms) of the record's own timestamp.
    pub const WINDOW_SHIFT: u32 = 27;
    /// Subjects tracked (LRU: the least recent one makes room).
    pub const SUBJECTS: u32 = 4096;
    /// `dropped` slots: kind & (KINDS - 1).
    pub const KINDS: usize = 16;
}

/// `FLOOD` value, per CPU, keyed by cgroup id.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct FloodState {
    /// Window number (timestamp >> WINDOW_SHIFT) `count` is for.
    pub window: u64,
    /// Records sent in that window.
    pub count: u32,
    /// The last process whose record was dropped (names the subject).
    pub last_pid: u32,
    /// Records dropped since the subject's entry was made, by kind.
    pub dropped: [u32; flood::KINDS],
}

/// The pending-record maps, as offsets from [`counter::PENDING_IN`] and
/// [`counter::PENDING_OUT`]; `NAMES` gives each its metric label and
/// `MAPS` its map in the eBPF object.
pub mod pending {
    pub const FILE: u32 = 0;
    pub const NET: u32 = 1;
    pub const EXEC: u32 = 2;
    pub const RENAME: u32 = 3;
    pub const NAMES: [&str; 4] = [
        "pending_file",
        "pending_net",
        "pending_exec",
        "pending_rename",
    ];
    pub const MAPS: [&str; 4] = [
        "PENDING_FILE",
        "PENDING_NET",
        "PENDING_EXEC",
        "PENDING_RENAME",
    ];
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
    "OFF_DENTRY_INODE",
    "OFF_INODE_INO",
    "OFF_INODE_SB",
    "OFF_SB_DEV",
    "OFF_BPRM_FILE",
    "OFF_UNIX_SOCK_PATH",
    "OFF_MSGHDR_NAME",
    "OFF_FILE_FLAGS",
];

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::vec::Vec;

    fn bits(name: &str, exact: bool) -> Vec<u32> {
        basename_pairs(name.as_bytes(), exact)
            .map(|(w, b)| w * 32 + b.trailing_zeros())
            .collect()
    }

    #[test]
    fn basename_pairs_are_the_first_two_bytes() {
        let pair = |a: u8, b: u8| u32::from(a) << 8 | u32::from(b);
        assert_eq!(bits(".env", true), [pair(b'.', b'e')]);
        assert_eq!(bits(".env.", false), [pair(b'.', b'e')]);
        assert_eq!(bits("/root", true), [pair(b'/', b'r')]);
        // An exact one-byte name: the byte and its NUL.
        assert_eq!(bits("x", true), [pair(b'x', 0)]);
        // A one-byte prefix starts every pair.
        let all = bits("x", false);
        assert_eq!(all.len(), 256);
        assert!(all.contains(&pair(b'x', 0)) && all.contains(&pair(b'x', 255)));
        // Every bit lands inside the map.
        assert!(all.iter().all(|b| b / 32 < BASENAME_PAIR_WORDS));
    }
}
