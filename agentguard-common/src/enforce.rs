//! In-kernel enforcement: the maps the probes and the cgroup sock_addr
//! programs read to kill or deny without a round trip to userspace.
//!
//! Userspace compiles up to [`MAX_RULES`] policy rules into these maps. A
//! task is subject to rule `r` when bit `r` is set in its entry of
//! `ENFORCE_TASKS` (by tgid, inherited at fork) or of `ENFORCE_CGROUPS` (by
//! cgroup v2 id: every process of a container, whenever it started). The
//! enforcement maps are pinned in bpffs so a network deny outlives the
//! daemon.

/// Rules that can be compiled into the kernel (one bit each).
pub const MAX_RULES: u32 = 32;

/// Subjects with an explicit rule mask.
pub const SUBJECT_ENTRIES: u32 = 16384;

/// Path bytes a kill-path key compares: longer mount points or prefixes
/// stay with userspace.
pub const KILL_PATH_LEN: usize = 64;

/// Port ranges per network entry.
pub const MAX_PORT_RANGES: usize = 8;

/// Bits of `Header::verdict`: the low byte is the acting rule's index + 1.
pub mod verdict {
    /// The probe sent SIGKILL to the process at syscall entry.
    pub const KILLED: u32 = 1 << 8;
    /// An LSM hook refused the operation (-EPERM) before it took effect.
    pub const DENIED: u32 = 1 << 9;
    /// The verdict was reached in an LSM hook, on the kernel object the
    /// syscall acts on (not on the argument string).
    pub const LSM: u32 = 1 << 10;
    /// An alert-only rule matched in the kernel (nothing was refused).
    pub const MATCHED: u32 = 1 << 11;
    /// A kill rule matched but `bpf_send_signal` failed (the task was
    /// exiting, say): userspace must kill it.
    pub const KILL_FAILED: u32 = 1 << 12;
    pub const RULE_MASK: u32 = 0xff;
}

/// Which operations a kill-path entry covers.
pub mod op {
    pub const UNLINK: u32 = 1 << 0;
    pub const RMDIR: u32 = 1 << 1;
    /// Rename whose source is under the prefix and whose target is not
    /// under the same entry (moving a file out of a volume).
    pub const RENAME_AWAY: u32 = 1 << 2;
    pub const EXEC: u32 = 1 << 3;
    pub const OPEN: u32 = 1 << 4;
    /// LSM only: truncate(2), ftruncate(2), open with O_TRUNC.
    pub const TRUNCATE: u32 = 1 << 5;
    /// LSM only: a new hard link to the file (a second name for it).
    pub const LINK: u32 = 1 << 6;
    /// LSM only: connect to the unix stream socket bound at the file.
    pub const UNIX_CONNECT: u32 = 1 << 7;
    /// LSM only: any rename of a covered file (a `path` rule), where
    /// `RENAME_AWAY` (an `under_mount` rule) lets a rename inside the same
    /// entry through.
    pub const RENAME: u32 = 1 << 8;
    /// Number of op bits (`InodeRules::op_rules` has one mask per bit).
    pub const COUNT: usize = 9;
}

/// Quarantined processes and containers at most (LRU: the oldest go).
pub const QUARANTINE_ENTRIES: u32 = 4096;

/// Entries in `INODE_RULES`.
pub const INODE_ENTRIES: u32 = 16384;

/// Key of `INODE_RULES`: a file or directory by identity, as the kernel
/// has it (`inode->i_sb->s_dev` in the kernel's dev_t encoding, `i_ino`).
/// A hard link, a symlink, a bind mount or `/proc/PID/root` all reach the
/// same key.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct InodeKey {
    pub dev: u32,
    pub _pad: u32,
    pub ino: u64,
}

/// The rules that protect one inode. The LSM hooks walk from the object
/// up its parent dentries (inside its filesystem, whatever mount it was
/// reached through): the object itself matches `self_rules`, its
/// ancestors `sub_rules`. `op_rules[i]` is the mask of rules that cover
/// op bit `1 << i` on this entry.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InodeRules {
    pub self_rules: u32,
    pub sub_rules: u32,
    pub op_rules: [u32; op::COUNT],
}

/// Key of `PIPE_PROGS`: a program's file name (the exec path's last
/// component), NUL-padded.
pub const PIPE_PROG_LEN: usize = 16;

/// Which pipe rules a program takes part in (`PIPE_PROGS` value): as the
/// reader (its stdin is the pipe: a shell) or the writer (its stdout is
/// the pipe: a downloader).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PipeProg {
    pub reader_rules: u32,
    pub writer_rules: u32,
}

/// One pipe an exec of a guarded task has one end of (`PIPES`, by the
/// pipe's inode number): the rules its reader or writer take part in and
/// their process.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PipeEnds {
    pub reader_rules: u32,
    pub reader_tgid: u32,
    pub writer_rules: u32,
    pub writer_tgid: u32,
}

/// Deepest ancestor walk in the LSM hooks (a path deeper than this is
/// matched on its innermost levels only).
pub const MAX_INODE_DEPTH: u32 = 48;

/// LPM key data of `KILL_PATHS`: a cgroup id (0: any task) then the
/// absolute path. Entries always cover the whole cgroup id.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PathKey {
    pub cgroup_id: u64,
    pub path: [u8; KILL_PATH_LEN],
}

/// Bits in the trie's key-prefix length that the cgroup id takes.
pub const PATH_KEY_CGROUP_BITS: u32 = 64;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PathVerdict {
    /// Rules (bits) this prefix belongs to.
    pub rules: u32,
    /// `op` bits covered.
    pub ops: u32,
    /// Tells entries apart (rename-away compares source and target).
    pub entry_id: u32,
    /// Index of the first rule, for the event's verdict.
    pub rule: u32,
}

/// LPM key data of `NET_RULES`: rule index (big-endian, always fully
/// matched) then an IPv6 address (IPv4 as `::ffff:a.b.c.d`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NetKey {
    pub rule: [u8; 4],
    pub addr: [u8; 16],
}

/// Bits in the trie's key-prefix length that the rule index takes.
pub const NET_KEY_RULE_BITS: u32 = 32;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortRange {
    pub lo: u16,
    pub hi: u16,
}

pub mod net_flags {
    /// The prefix is an exception of the rule (for `except_ports`).
    pub const EXCEPT: u32 = 1 << 0;
    /// The prefix lies in one of the rule's destination CIDRs (for
    /// `match_ports`): an exception entry carries its covering match.
    pub const MATCH: u32 = 1 << 1;
}

/// The longest prefix of a rule that covers an address decides: an
/// exception whose ports fit lets it through; else a match whose ports fit
/// fires the rule. Ranges are inclusive; none given means every port.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetVerdict {
    pub flags: u32,
    pub n_except: u32,
    pub n_match: u32,
    pub _pad: u32,
    pub except_ports: [PortRange; MAX_PORT_RANGES],
    pub match_ports: [PortRange; MAX_PORT_RANGES],
}

/// Per-rule settings, indexed by rule (`RULES` array map).
pub mod rule_action {
    /// Slot unused.
    pub const NONE: u32 = 0;
    /// Network: refuse the connect/sendmsg in the cgroup hook (EPERM).
    pub const DENY: u32 = 1;
    /// SIGKILL the process at syscall entry (and, in an LSM hook, refuse
    /// the operation too).
    pub const KILL: u32 = 2;
    /// Report a kernel match without acting (LSM hooks).
    pub const ALERT: u32 = 3;
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RuleSlot {
    pub action: u32,
    /// Ports excepted whatever the address (`except.ports`).
    pub n_except_ports: u32,
    pub except_ports: [PortRange; MAX_PORT_RANGES],
    /// Set: this rule kills at io_uring_setup.
    pub io_uring: u32,
    /// Set: raw and packet sockets are refused to this rule's subjects
    /// (they would send around the sock_addr hooks). LSM only.
    pub raw_sockets: u32,
    /// Set: an in-kernel kill by this rule quarantines the whole container
    /// (its cgroup), not only the process tree (`kill_scope: container`).
    pub contain_cgroup: u32,
    /// Set: a kernel match of this rule (an open of a protected file)
    /// takes the subject's network away from that moment (`taint: true`).
    pub taint: u32,
    /// Set: the rule has a domain list (`except.domains`): an address a
    /// DNS answer for a listed name gave the subject is let through.
    pub domains: u32,
    /// Identity of the rule in this slot (a hash of its content; 0: none).
    /// A restarted daemon keeps a slot whose rule is unchanged and clears
    /// every entry of one that changed, so no stale entry fires another rule.
    pub id: u32,
}

/// `TAINTS` entries: subjects (a process tree's tgids, a container's
/// cgroup) whose network a taint rule took away.
pub const TAINT_ENTRIES: u32 = 8192;
/// `TAINTS` key bit for a container's cgroup id (else a tgid).
pub const TAINT_CGROUP: u64 = 1 << 63;

/// Why a subject is tainted: the rule's slot and when (boot clock).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Taint {
    pub rule: u32,
    pub _pad: u32,
    pub ts_ns: u64,
}

// ------------------------------------------------ egress by domain name
//
// A rule with `except.domains` lets its subjects reach an address only
// if a DNS answer they received for an allowed name gave it. The cgroup
// skb programs read DNS on the wire (UDP and TCP port 53): queries of a
// subject for names outside its rules' lists are dropped at egress;
// answers for allowed names write `DNS_ALLOW` at ingress, before the
// socket can deliver them, so the connect right after the lookup passes.

/// Dotted name bytes a `DNS_NAMES` key holds (with its terminating NUL):
/// longer names never match an allowlist.
pub const DNS_NAME_LEN: usize = 252;

/// LPM key data of `DNS_NAMES`: rule index (big-endian, always matched in
/// full), then the dotted, lower-case name written back to front
/// ("api.example.com" -> "moc.elpmaxe.ipa"). An exact name is stored with
/// its NUL (matches only itself); `*.example.com` as "moc.elpmaxe." with
/// no NUL (matches every name below it, not the name itself).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DnsKey {
    pub rule: [u8; 4],
    pub name: [u8; DNS_NAME_LEN],
}

/// Bits of a `DNS_NAMES` prefix that the rule index takes.
pub const DNS_KEY_RULE_BITS: u32 = 32;

/// `DNS_NAMES` entries (names of every rule together).
pub const DNS_NAME_ENTRIES: u32 = 4096;

/// Key of `DNS_ALLOW`: a subject (`TAINT_CGROUP | cgroup id` for a guarded
/// container, else the agent's tgid) and an address it resolved (IPv6,
/// IPv4 mapped).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct DnsAllowKey {
    pub subject: u64,
    pub addr: [u8; 16],
}

/// Until when (boot clock, ns) which rules let the subject reach the address.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DnsAllow {
    pub expires_ns: u64,
    pub rules: u32,
    pub _pad: u32,
}

/// `DNS_ALLOW` entries (LRU: the least recently used addresses go first).
pub const DNS_ALLOW_ENTRIES: u32 = 65536;

/// An answer's TTL is clamped to this range: a name with TTL 0 still lets
/// the connect right after the lookup through; a week-long TTL does not
/// keep an address open after its owner moved.
pub const DNS_TTL_FLOOR_S: u32 = 5;
pub const DNS_TTL_CEILING_S: u32 = 3600;

/// A socket of a subject under a domain rule that talked to port 53
/// (recorded by the connect/sendmsg hooks, in the process's context): the
/// skb programs, which run where the process is not known, read it by
/// socket cookie.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DnsSock {
    pub subject: u64,
    /// The subject's domain rules (bits).
    pub rules: u32,
    /// The process that last sent on it.
    pub tgid: u32,
    /// The resolver it last addressed (IPv6, IPv4 mapped): answers from
    /// anywhere else are not believed.
    pub resolver: [u8; 16],
    pub comm: [u8; 16],
}

/// `DNS_SOCKS` entries (LRU).
pub const DNS_SOCK_ENTRIES: u32 = 16384;

/// Most addresses of one answer written to `DNS_ALLOW` (and reported).
pub const DNS_MAX_ADDRS: usize = 8;
/// Most answer records read from one response.
pub const DNS_MAX_ANSWERS: u32 = 16;

/// Files a guarded container created itself (`OWN_FILES`): room for this
/// many at once, least recently used first out.
pub const OWN_FILE_ENTRIES: u32 = 8192;

/// Key of `OWN_FILES`: the container's cgroup id and the absolute path its
/// creating open passed, zero-padded (the whole key is hashed).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OwnKey {
    pub cgroup_id: u64,
    pub path: [u8; crate::event::PATH_LEN],
}

/// What the creating open got: the removal of the same path is the
/// container's own file only while this dentry still holds that name
/// (`hash_len`, `parent`), is hashed, and holds the same inode.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OwnFile {
    pub dentry: u64,
    pub parent: u64,
    /// `qstr.hash_len` of the name (salted with the parent).
    pub hash_len: u64,
    pub ino: u64,
    pub generation: u32,
    pub _pad: u32,
    /// CLOCK_BOOTTIME ns of the creation (see `OWN_EPOCH`).
    pub at: u64,
}
