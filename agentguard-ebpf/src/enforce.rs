//! In-kernel enforcement: kill at syscall entry (tracepoints, with
//! `bpf_send_signal`) and deny in the cgroup sock_addr hooks. Maps are laid
//! out in agentguard_common::enforce; userspace fills them from policy.
//!
//! Everything here costs one array lookup while no rule is loaded (the
//! CONFIG switch), and two hash lookups per syscall for a task otherwise.

use aya_ebpf::{
    bindings::bpf_sock_addr,
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid,
        bpf_get_socket_cookie, bpf_send_signal,
    },
    macros::{cgroup_sock, cgroup_sock_addr, map},
    maps::{lpm_trie::Key, Array, HashMap, LpmTrie, LruHashMap},
    programs::{SockAddrContext, SockContext},
};

use agentguard_common::{enforce::*, event::PATH_LEN, filter::config};

use crate::CONFIG;

/// tgid -> rule mask (inherited at fork, dropped at exit).
#[map]
pub static ENFORCE_TASKS: HashMap<u32, u32> = HashMap::pinned(SUBJECT_ENTRIES, 0);
/// cgroup v2 id -> rule mask (a container's every process).
#[map]
pub static ENFORCE_CGROUPS: HashMap<u64, u32> = HashMap::pinned(SUBJECT_ENTRIES, 0);
#[map]
static KILL_PATHS: LpmTrie<PathKey, PathVerdict> = LpmTrie::pinned(4096, 0);
#[map]
static NET_RULES: LpmTrie<NetKey, NetVerdict> = LpmTrie::pinned(4096, 0);
#[map]
static RULES: Array<RuleSlot> = Array::pinned(MAX_RULES, 0);
/// Containment after an in-kernel kill: tgid (or container cgroup id) ->
/// rule + 1. A quarantined task is killed at its next probed syscall or
/// fork, and its new children inherit the quarantine: a loop that runs one
/// `rm` per file loses at most the file of the first kill.
#[map]
static QUARANTINE: LruHashMap<u32, u32> = LruHashMap::with_max_entries(QUARANTINE_ENTRIES, 0);
/// Agent processes found by ancestry (the agent itself, e.g. `claude`):
/// a kill of one of its direct children does not quarantine it — the
/// agent goes on, the tool call it started is what is contained.
/// `[0]`: CLOCK_BOOTTIME ns when the daemon last said it was alive (a
/// thread of its own writes it every second). Pinned with the maps it
/// vouches for.
#[map]
pub static ALIVE: HashMap<u32, u64> = HashMap::pinned(1, 0);

/// The daemon counts as gone once its heartbeat is this old.
const GONE_AFTER_NS: u64 = 10_000_000_000;

/// Is a tgid-keyed entry (ENFORCE_TASKS, TAINTS) found for the current
/// process another process's, left behind under a reused pid? While the
/// daemon runs, its exit probe forgets every entry at the process's exit.
/// Once it is gone, nothing adds tgid entries (its fork probe is gone
/// too), so a process that started after its last heartbeat owns none.
/// Asked only where an entry was found, by the programs that outlive the
/// daemon (sock_addr).
#[inline(always)]
fn stale_task_entry() -> bool {
    // The key on the stack: a literal `&0` becomes a .rodata constant
    // that LLVM may share with a zero-initialised global the loader then
    // patches (it did: the lookup used the daemon's pid as key).
    let mut key = 0u32;
    // SAFETY: a write to a local.
    unsafe { core::ptr::write_volatile(&mut key, 0) };
    // SAFETY: value copied out at once.
    let alive = unsafe { ALIVE.get(&key) }.copied().unwrap_or(0);
    if alive == 0 {
        return false;
    }
    // SAFETY: helper without preconditions.
    let now = unsafe { aya_ebpf::helpers::bpf_ktime_get_boot_ns() };
    if now.saturating_sub(alive) < GONE_AFTER_NS {
        return false;
    }
    crate::kernel::current_start_boottime().is_some_and(|start| start > alive)
}

#[map]
static AGENT_ROOTS: HashMap<u32, u32> = HashMap::with_max_entries(SUBJECT_ENTRIES, 0);
/// [0]: non-zero once anything was quarantined (by the kernel or by the
/// daemon after a userspace kill); until then the probes skip the lookups.
#[map]
static QUARANTINE_ON: Array<u32> = Array::with_max_entries(1, 0);
/// Tainted subjects (`TAINT_CGROUP | cgroup id`, or a tgid) -> why. Pinned:
/// the sock_addr hooks keep refusing after the daemon is gone.
#[map]
pub static TAINTS: LruHashMap<u64, Taint> = LruHashMap::pinned(TAINT_ENTRIES, 0);
#[map]
static QUARANTINE_CGROUPS: LruHashMap<u64, u32> =
    LruHashMap::with_max_entries(QUARANTINE_ENTRIES, 0);

const SIGKILL: u32 = 9;

pub const UNLINK_OP: u32 = op::UNLINK;
pub const RMDIR_OP: u32 = op::RMDIR;
pub const RENAME_OP: u32 = op::RENAME_AWAY;
pub const EXEC_OP: u32 = op::EXEC;
pub const OPEN_OP: u32 = op::OPEN;

/// `CONFIG[idx]`, 0 when unset.
#[inline(always)]
pub fn config_value(idx: u32) -> u32 {
    CONFIG.get(idx).copied().unwrap_or(0)
}

/// The rule mask of the current task, 0 when none applies (or nothing is
/// enforced at all).
#[inline(always)]
pub fn subject_rules(tgid: u32) -> u32 {
    let (t, c) = subject_rules_split(tgid);
    t | c
}

/// (rules by process, rules by container cgroup) of the current task; (0,
/// 0) while nothing is enforced.
#[inline(always)]
pub fn subject_rules_split(tgid: u32) -> (u32, u32) {
    if config_value(config::ENFORCE) == 0 {
        return (0, 0);
    }
    subject_split_always(tgid)
}

/// [`subject_rules`] without the global switch: the sock_addr hooks are
/// attached only while rules exist, and must keep working from their pinned
/// maps after the daemon is gone.
#[inline(always)]
fn subject_rules_always(tgid: u32) -> u32 {
    let (t, c) = subject_split_always(tgid);
    // The daemon may be gone: the task entry may be a dead process's.
    if t != 0 && stale_task_entry() {
        return c;
    }
    t | c
}

#[inline(always)]
fn subject_split_always(tgid: u32) -> (u32, u32) {
    // SAFETY: values copied out at once; map values are not freed under a
    // running program.
    let t = unsafe { ENFORCE_TASKS.get(&tgid) }.copied().unwrap_or(0);
    // SAFETY: helper without preconditions.
    let cg = unsafe { bpf_get_current_cgroup_id() };
    // SAFETY: as above.
    let c = unsafe { ENFORCE_CGROUPS.get(&cg) }.copied().unwrap_or(0);
    (t, c)
}

/// A copy of rule slot `r`.
#[inline(always)]
pub fn rule_slot(r: u32) -> Option<RuleSlot> {
    RULES.get(r).copied()
}

/// SIGKILLs the current process for rule `rule` and quarantines its
/// parent (the loop that started it) or its container; returns the header
/// verdict.
#[inline(always)]
pub fn kill(rule: u32) -> u32 {
    // SAFETY: helper without memory arguments; it signals the current
    // process (the one making the offending syscall).
    let sent = unsafe { bpf_send_signal(SIGKILL) } == 0;
    quarantine(rule);
    // A failed send is said as such: userspace kills it then.
    let how = if sent {
        verdict::KILLED
    } else {
        verdict::KILL_FAILED
    };
    how | ((rule + 1) & verdict::RULE_MASK)
}

#[inline(always)]
fn quarantine(rule: u32) {
    let v = rule + 1;
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    let _ = QUARANTINE.insert(&tgid, &v, 0);
    // The parent too (the shell loop that would start the next `rm`), but
    // only a guarded one: never a container runtime's shim or init.
    let ppid = crate::kernel::current_ppid();
    // SAFETY: value copied out at once.
    let parent_guarded = ppid > 1
        && unsafe { ENFORCE_TASKS.get(&ppid) }.is_some_and(|m| *m != 0)
        // SAFETY: presence test only.
        && unsafe { AGENT_ROOTS.get(&ppid) }.is_none();
    if parent_guarded {
        let _ = QUARANTINE.insert(&ppid, &v, 0);
    }
    if rule_slot(rule).is_some_and(|s| s.contain_cgroup != 0) {
        // SAFETY: helper without preconditions.
        let cg = unsafe { bpf_get_current_cgroup_id() };
        let _ = QUARANTINE_CGROUPS.insert(&cg, &v, 0);
    }
    if let Some(on) = QUARANTINE_ON.get_ptr_mut(0) {
        // SAFETY: array value of a live map; a racing writer writes 1 too.
        unsafe { *on = 1 };
    }
}

/// Whether anything was ever quarantined (until then the checks are skipped).
#[inline(always)]
fn quarantine_on() -> bool {
    QUARANTINE_ON.get(0).is_some_and(|v| *v != 0)
}

/// Kills the current task if it is quarantined. One array lookup while no
/// in-kernel kill ever happened.
#[inline(always)]
pub fn contain(tgid: u32) {
    if !quarantine_on() {
        return;
    }
    // SAFETY: values only tested for presence.
    let hit = unsafe { QUARANTINE.get(&tgid) }.is_some() || {
        // SAFETY: helper without preconditions.
        let cg = unsafe { bpf_get_current_cgroup_id() };
        unsafe { QUARANTINE_CGROUPS.get(&cg) }.is_some()
    };
    if hit {
        // SAFETY: as in kill().
        unsafe { bpf_send_signal(SIGKILL) };
    }
}

/// At fork: a quarantined parent dies, and its child inherits the
/// quarantine (it dies at its first probed syscall).
#[inline(always)]
pub fn inherit_quarantine(parent: u32, child: u32) {
    if !quarantine_on() {
        return;
    }
    // SAFETY: value copied out at once.
    if let Some(v) = unsafe { QUARANTINE.get(&parent) }.copied() {
        let _ = QUARANTINE.insert(&child, &v, 0);
        // SAFETY: as in kill().
        unsafe { bpf_send_signal(SIGKILL) };
    }
}

#[inline(always)]
fn path_lookup(cgroup_id: u64, path: &[u8; PATH_LEN]) -> Option<PathVerdict> {
    let mut key = Key::new(
        PATH_KEY_CGROUP_BITS + (KILL_PATH_LEN as u32) * 8,
        PathKey {
            cgroup_id,
            path: [0; KILL_PATH_LEN],
        },
    );
    // Bytes after the string's NUL may be stale; entries never hold a NUL,
    // so they can only match within the string.
    key.data.path.copy_from_slice(&path[..KILL_PATH_LEN]);
    KILL_PATHS.get(&key).copied()
}

/// Does a volume rule of the current container (one of `rules`) guard
/// removals at the absolute `path`? Then a file created there is recorded
/// as the container's own (`crate::own`).
#[inline(always)]
pub fn volume_guards(rules: u32, path: &[u8; PATH_LEN]) -> bool {
    if rules == 0 || path[0] != b'/' {
        return false;
    }
    // SAFETY: helper without preconditions.
    let cg = unsafe { bpf_get_current_cgroup_id() };
    path_lookup(cg, path).is_some_and(|v| v.rules & rules != 0 && v.ops & UNLINK_OP != 0)
}

/// Kill-path decision for an absolute `path` and operation `op` by a task
/// subject to `rules`. `other` is a rename's target: a move inside the same
/// entry (an atomic save in a volume) is not a removal. A volume entry
/// (per container) lets the container's own files go, and says so in
/// `hflags` (`flags::OWN_FILE`).
#[inline(always)]
pub fn check_path(
    rules: u32,
    op: u32,
    path: &[u8; PATH_LEN],
    other: Option<&[u8; PATH_LEN]>,
    hflags: &mut u32,
) -> u32 {
    if rules == 0 || path[0] != b'/' {
        return 0;
    }
    // SAFETY: helper without preconditions.
    let cg = unsafe { bpf_get_current_cgroup_id() };
    let hit = match path_lookup(cg, path) {
        Some(v) if v.rules & rules != 0 && v.ops & op != 0 => Some((v, cg)),
        _ => match path_lookup(0, path) {
            Some(v) if v.rules & rules != 0 && v.ops & op != 0 => Some((v, 0)),
            _ => None,
        },
    };
    let Some((v, scope)) = hit else {
        return 0;
    };
    // The slot must still hold a kill rule: an entry left from a rule
    // that was removed or changed must not fire.
    let r = (v.rules & rules).trailing_zeros();
    if rule_slot(r).is_none_or(|s| s.action != rule_action::KILL) {
        return 0;
    }
    if let Some(target) = other {
        // A relative target can't be compared here: leave it to userspace
        // rather than kill a rename that may stay inside the volume.
        if target[0] != b'/' {
            return 0;
        }
        if let Some(t) = path_lookup(scope, target) {
            if t.entry_id == v.entry_id {
                return 0;
            }
        }
    }
    if scope != 0 && op & (UNLINK_OP | RENAME_OP) != 0 && crate::own::is_own(path) {
        *hflags |= agentguard_common::event::flags::OWN_FILE;
        return 0;
    }
    kill(r)
}

#[inline(always)]
fn in_ranges(ranges: &[PortRange; MAX_PORT_RANGES], n: u32, port: u16) -> bool {
    if n == 0 {
        return true;
    }
    let mut i = 0;
    while i < MAX_PORT_RANGES {
        if (i as u32) < n && ranges[i].lo <= port && port <= ranges[i].hi {
            return true;
        }
        i += 1;
    }
    false
}

/// First rule of `rules` whose network entries fire for `addr`:`port`, and
/// that rule's action. `addr` is IPv6 (IPv4 mapped).
#[inline(always)]
pub fn net_decide(rules: u32, addr: &[u8; 16], port: u16) -> Option<(u32, u32)> {
    let mut subject = 0u64;
    let mut r: u32 = 0;
    while r < MAX_RULES {
        if rules & (1 << r) != 0 {
            if let Some(slot) = RULES.get(r) {
                let excepted = slot.n_except_ports > 0
                    && in_ranges(&slot.except_ports, slot.n_except_ports, port);
                if slot.action != rule_action::NONE && !excepted {
                    let key = Key::new(
                        NET_KEY_RULE_BITS + 128,
                        NetKey {
                            rule: r.to_be_bytes(),
                            addr: *addr,
                        },
                    );
                    if let Some(v) = NET_RULES.get(&key) {
                        let pass = v.flags & net_flags::EXCEPT != 0
                            && in_ranges(&v.except_ports, v.n_except, port);
                        let fire = !pass
                            && v.flags & net_flags::MATCH != 0
                            && in_ranges(&v.match_ports, v.n_match, port);
                        // A domain rule lets through what a DNS answer for
                        // one of its names gave this subject.
                        let resolved = fire && slot.domains != 0 && {
                            if subject == 0 {
                                subject = subject_key();
                            }
                            crate::dns::allowed(subject, addr) & (1 << r) != 0
                        };
                        if fire && !resolved {
                            return Some((r, slot.action));
                        }
                    }
                }
            }
        }
        r += 1;
    }
    None
}

/// Kill decision for a connect/send seen by the tracepoint, and whether
/// any network rule of the task matched (the prefilter keeps the rest).
#[inline(always)]
pub fn check_net(rules: u32, addr: &[u8; 16], port: u16) -> (u32, bool) {
    if rules == 0 {
        return (0, false);
    }
    match net_decide(rules, addr, port) {
        Some((r, rule_action::KILL)) => (kill(r), true),
        Some(_) => (0, true),
        None => (0, false),
    }
}

/// Kill decision at io_uring_setup.
#[inline(always)]
pub fn check_io_uring(rules: u32) -> u32 {
    kill_if_armed(rules, config::IO_URING_RULES)
}

/// Kills for the first of `rules` armed in the `CONFIG[armed]` rule mask
/// (rules that kill at one syscall whatever its arguments).
#[inline(always)]
fn kill_if_armed(rules: u32, armed: u32) -> u32 {
    let hit = rules & config_value(armed);
    if hit == 0 {
        return 0;
    }
    kill(hit.trailing_zeros())
}

/// Pipe rules (`stdin_from`): the programs that read or write the pipe.
#[map]
static PIPE_PROGS: HashMap<[u8; PIPE_PROG_LEN], PipeProg> = HashMap::with_max_entries(256, 0);

/// Pipes a guarded task's exec has one end of, by inode number.
#[map]
static PIPES: LruHashMap<u64, PipeEnds> = LruHashMap::with_max_entries(4096, 0);

/// The verdict of pipe rule(s) `hit`: kill (and quarantine `other`, the
/// process at the pipe's other end, already running) or mark.
#[inline(always)]
fn pipe_verdict(hit: u32, other: u32) -> u32 {
    let r = hit.trailing_zeros();
    match rule_slot(r).map_or(rule_action::NONE, |s| s.action) {
        rule_action::KILL => {
            if other > 1 {
                let _ = QUARANTINE.insert(&other, &(r + 1), 0);
            }
            kill(r)
        }
        rule_action::ALERT => verdict::MATCHED | ((r + 1) & verdict::RULE_MASK),
        _ => 0,
    }
}

/// One end of `pipe` taken by the current task (`tgid`), as its reader or
/// its writer, for pipe rules `mine`: the verdict when the other end of
/// the same rules is already there, else this end is recorded.
#[inline(always)]
fn pipe_end(pipe: u64, mine: u32, reader: bool, tgid: u32) -> Option<u32> {
    match PIPES.get_ptr_mut(&pipe) {
        Some(e) => {
            // SAFETY: value of a live map entry; racing updates only add
            // bits.
            let e = unsafe { &mut *e };
            let (hit, other) = if reader {
                (e.writer_rules & mine, e.writer_tgid)
            } else {
                (e.reader_rules & mine, e.reader_tgid)
            };
            if hit != 0 {
                return Some(pipe_verdict(hit, other));
            }
            if reader {
                e.reader_rules |= mine;
                e.reader_tgid = tgid;
            } else {
                e.writer_rules |= mine;
                e.writer_tgid = tgid;
            }
        }
        None => {
            let v = if reader {
                PipeEnds {
                    reader_rules: mine,
                    reader_tgid: tgid,
                    ..Default::default()
                }
            } else {
                PipeEnds {
                    writer_rules: mine,
                    writer_tgid: tgid,
                    ..Default::default()
                }
            };
            let _ = PIPES.insert(&pipe, &v, 0);
        }
    }
    None
}

/// At the exit of a guarded task's exec (the new program, named `comm`,
/// has not run a byte yet) with these stdin/stdout pipes: a
/// reader (a shell) whose stdin is a pipe a writer of the same rule (a
/// downloader) already writes, or a writer whose stdout is a pipe such a
/// reader already reads, is decided here, before the new program runs a
/// byte: `curl URL | sh` is one pipe at both ends, whatever the command
/// line said and in whichever order the two started.
#[inline(always)]
pub fn check_pipes(rules: u32, stdin: u64, stdout: u64, tgid: u32) -> u32 {
    let armed = config_value(config::PIPE_RULES) & rules;
    if armed == 0 || (stdin == 0 && stdout == 0) {
        return 0;
    }
    // The new program's name (the exec path's last component, as the
    // kernel set it): the key format of PIPE_PROGS.
    let Ok(key) = bpf_get_current_comm() else {
        return 0;
    };
    // SAFETY: value copied out at once.
    let Some(prog) = (unsafe { PIPE_PROGS.get(&key) }).copied() else {
        return 0;
    };
    let (rd, wr) = (prog.reader_rules & armed, prog.writer_rules & armed);
    if rd != 0 && stdin != 0 {
        if let Some(v) = pipe_end(stdin, rd, true, tgid) {
            return v;
        }
    }
    if wr != 0 && stdout != 0 {
        if let Some(v) = pipe_end(stdout, wr, false, tgid) {
            return v;
        }
    }
    0
}

/// Without BPF-LSM, a removal by a bare name relative to a directory
/// (`unlinkat(dirfd, "f")` as `rm -rf` and `find -delete` do, or `rm f`
/// in the cwd): the string says nothing of where the file is, so the
/// decision walks up from the directory object to the protected trees
/// (`INODE_RULES`). A name with a directory part is left to userspace: a
/// `..` or a symlink in it could lead out of the directory's tree.
#[inline(always)]
pub fn check_bare_removal(rules: u32, op: u32, dirfd: i32, path: &[u8; PATH_LEN]) -> u32 {
    if rules == 0 || path[0] == b'/' || path[0] == 0 || config_value(config::LSM_ACTIVE) != 0 {
        return 0;
    }
    let mut i = 0;
    while i < PATH_LEN {
        let c = path[i];
        if c == 0 {
            break;
        }
        if c == b'/' {
            return 0;
        }
        i += 1;
    }
    let task = crate::kernel::current_task();
    let dir = if dirfd == agentguard_common::event::AT_FDCWD {
        match crate::kernel::fs_paths(task) {
            Ok((_, cwd)) => cwd,
            Err(_) => return 0,
        }
    } else {
        match crate::kernel::fd_path(task, dirfd) {
            Ok(p) => p,
            Err(_) => return 0,
        }
    };
    let Some(hit) = crate::lsm::walk_below(dir.dentry, rules, op) else {
        return 0;
    };
    if rule_slot(hit.rule).is_none_or(|s| s.action != rule_action::KILL) {
        return 0;
    }
    kill(hit.rule)
}

/// Without BPF-LSM: is the file a guarded task just opened a protected one
/// by identity (a hard link, any path), or inside a protected directory?
/// A deny or kill rule kills the task before it returns to userspace, so
/// it never reads through the fd; an alert rule marks the record. Returns
/// the header verdict.
#[inline(always)]
pub fn check_opened(p: crate::kernel::KPath, rules: u32) -> u32 {
    if config_value(config::LSM_ACTIVE) != 0 || rules == 0 {
        return 0;
    }
    let Some(hit) = crate::lsm::protected(p.dentry, rules, op::OPEN) else {
        return 0;
    };
    let slot = rule_slot(hit.rule);
    if slot.is_some_and(|s| s.taint != 0) {
        taint(hit.rule);
    }
    match slot.map_or(rule_action::NONE, |s| s.action) {
        rule_action::KILL | rule_action::DENY => kill(hit.rule),
        rule_action::ALERT => verdict::MATCHED | ((hit.rule + 1) & verdict::RULE_MASK),
        _ => 0,
    }
}

/// Kill decision at a 32-bit ABI syscall.
#[inline(always)]
pub fn check_compat(rules: u32) -> u32 {
    kill_if_armed(rules, config::COMPAT_RULES)
}

/// Copies the parent's rule mask to a new child process; false when the
/// map was full (the child is not guarded by its own entry).
#[inline(always)]
pub fn inherit(parent: u32, child: u32) -> bool {
    // SAFETY: value copied out at once.
    if let Some(m) = unsafe { ENFORCE_TASKS.get(&parent) }.copied() {
        if ENFORCE_TASKS.insert(&child, &m, 0).is_err() {
            crate::bump(agentguard_common::filter::counter::FULL_ENFORCE_TASKS);
            return false;
        }
    }
    true
}

/// A taint rule matched: the current subject loses its network. In a
/// guarded container, the whole container (its cgroup); else the process
/// and its guarded ancestors up to the agent itself (the secret flows
/// back to whoever ran the tool), and every child forked from then on.
#[inline(always)]
pub fn taint(rule: u32) {
    let t = Taint {
        rule,
        _pad: 0,
        // SAFETY: helper without preconditions.
        ts_ns: unsafe { aya_ebpf::helpers::bpf_ktime_get_boot_ns() },
    };
    // SAFETY: helper without preconditions.
    let cg = unsafe { bpf_get_current_cgroup_id() };
    // SAFETY: presence test only.
    if unsafe { ENFORCE_CGROUPS.get(&cg) }.is_some_and(|m| *m != 0) {
        let _ = TAINTS.insert(&(TAINT_CGROUP | cg), &t, 0);
        return;
    }
    let mut task = crate::kernel::current_task();
    let mut i = 0;
    while i < 8 {
        let Ok(tgid) = crate::kernel::read_u32(task + crate::kernel::OFF_TASK_TGID.load()) else {
            return;
        };
        // SAFETY: presence tests only.
        if tgid <= 1 || unsafe { ENFORCE_TASKS.get(&tgid) }.is_none_or(|m| *m == 0) {
            return;
        }
        let _ = TAINTS.insert(&u64::from(tgid), &t, 0);
        // SAFETY: as above.
        if unsafe { AGENT_ROOTS.get(&tgid) }.is_some() {
            return;
        }
        let Ok(parent) = crate::kernel::read_u64(task + crate::kernel::OFF_TASK_REAL_PARENT.load())
        else {
            return;
        };
        task = parent;
        i += 1;
    }
}

/// Why the current task may not use the network, if it is tainted.
#[inline(always)]
pub fn tainted(tgid: u32) -> bool {
    // SAFETY: presence tests only.
    (unsafe { TAINTS.get(&u64::from(tgid)) }.is_some() && !stale_task_entry()) || {
        // SAFETY: helper without preconditions.
        let cg = unsafe { bpf_get_current_cgroup_id() };
        // SAFETY: as above.
        unsafe { TAINTS.get(&(TAINT_CGROUP | cg)) }.is_some()
    }
}

/// The current task's subject for domain rules and their DNS answers: its
/// guarded container (`TAINT_CGROUP | cgroup id`), else the agent process
/// its guarded ancestry leads to (the topmost guarded one if no agent is
/// marked), so one agent's lookups serve its whole tree and no other.
#[inline(always)]
pub fn subject_key() -> u64 {
    // SAFETY: helper without preconditions.
    let cg = unsafe { bpf_get_current_cgroup_id() };
    // SAFETY: presence test only.
    if unsafe { ENFORCE_CGROUPS.get(&cg) }.is_some_and(|m| *m != 0) {
        return TAINT_CGROUP | cg;
    }
    let own = u64::from((bpf_get_current_pid_tgid() >> 32) as u32);
    let mut last = own;
    let mut task = crate::kernel::current_task();
    let mut i = 0;
    while i < 8 {
        let Ok(tgid) = crate::kernel::read_u32(task + crate::kernel::OFF_TASK_TGID.load()) else {
            break;
        };
        // SAFETY: presence tests only.
        if tgid <= 1 || unsafe { ENFORCE_TASKS.get(&tgid) }.is_none_or(|m| *m == 0) {
            break;
        }
        last = u64::from(tgid);
        // SAFETY: as above.
        if unsafe { AGENT_ROOTS.get(&tgid) }.is_some() {
            break;
        }
        let Ok(parent) = crate::kernel::read_u64(task + crate::kernel::OFF_TASK_REAL_PARENT.load())
        else {
            break;
        };
        task = parent;
        i += 1;
    }
    last
}

/// At fork: a tainted process's child is tainted too.
#[inline(always)]
pub fn inherit_taint(parent: u32, child: u32) {
    // SAFETY: value copied out at once.
    if let Some(t) = unsafe { TAINTS.get(&u64::from(parent)) }.copied() {
        let _ = TAINTS.insert(&u64::from(child), &t, 0);
    }
}

#[inline(always)]
pub fn forget(tgid: u32) {
    let _ = TAINTS.remove(&u64::from(tgid));
    let _ = ENFORCE_TASKS.remove(&tgid);
    let _ = QUARANTINE.remove(&tgid);
    let _ = AGENT_ROOTS.remove(&tgid);
}

// ------------------------------------------------ cgroup sock_addr hooks
//
// Attached at the cgroup v2 root, they see every task's connect/sendmsg;
// the task is identified by tgid and cgroup id, like the tracepoints (the
// container's cgroup v2 id is distinct even on hybrid hosts). 1 allows,
// 0 makes the syscall fail with EPERM before any packet leaves.

/// The verifier lets a v4 hook read only `user_ip4` and a v6 hook only
/// `user_ip6`: each reads its own and shares the decision.
#[inline(always)]
fn sock_verdict(ctx: &SockAddrContext, v6: bool) -> i32 {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    let rules = subject_rules_always(tgid);
    if rules == 0 {
        return 1;
    }
    // A tainted subject reaches no address at all, loopback included.
    if tainted(tgid) {
        return 0;
    }
    // SAFETY: the kernel passes a valid bpf_sock_addr context.
    let sa: &bpf_sock_addr = unsafe { &*ctx.sock_addr };
    let mut addr = [0u8; 16];
    if v6 {
        let mut i = 0;
        while i < 4 {
            addr[i * 4..i * 4 + 4].copy_from_slice(&sa.user_ip6[i].to_ne_bytes());
            i += 1;
        }
    } else {
        addr[10] = 0xff;
        addr[11] = 0xff;
        addr[12..].copy_from_slice(&sa.user_ip4.to_ne_bytes());
    }
    // user_port holds the port in network byte order in its low 16 bits.
    let port = u16::from_be(sa.user_port as u16);
    let dns = rules & crate::dns::domain_rules();
    if port == 53 && dns != 0 {
        note_dns_sock(ctx, dns, &addr);
    }
    match net_decide(rules, &addr, port) {
        Some((_, rule_action::DENY)) => 0,
        _ => 1,
    }
}

/// A subject under a domain rule talks to a resolver on this socket: the
/// skb programs read its queries and answers by socket cookie.
#[inline(always)]
fn note_dns_sock(ctx: &SockAddrContext, rules: u32, resolver: &[u8; 16]) {
    // SAFETY: helper taking the program's own context.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.sock_addr as *mut _) };
    let s = DnsSock {
        subject: subject_key(),
        rules,
        tgid: (bpf_get_current_pid_tgid() >> 32) as u32,
        resolver: *resolver,
        comm: bpf_get_current_comm().unwrap_or_default(),
    };
    let _ = crate::dns::DNS_SOCKS.insert(&cookie, &s, 0);
}

/// bind(2) to port 53 by a subject under a domain rule is refused: from
/// such a socket it could answer its own query with a forged address.
#[inline(always)]
fn bind_verdict(ctx: &SockAddrContext) -> i32 {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    // SAFETY: the kernel passes a valid bpf_sock_addr context.
    let sa: &bpf_sock_addr = unsafe { &*ctx.sock_addr };
    if u16::from_be(sa.user_port as u16) != 53 {
        return 1;
    }
    let rules = subject_rules_always(tgid);
    i32::from(rules & crate::dns::domain_rules() == 0)
}

#[cgroup_sock_addr(bind4)]
pub fn agentguard_bind4(ctx: SockAddrContext) -> i32 {
    bind_verdict(&ctx)
}

#[cgroup_sock_addr(bind6)]
pub fn agentguard_bind6(ctx: SockAddrContext) -> i32 {
    bind_verdict(&ctx)
}

#[cgroup_sock_addr(connect4)]
pub fn agentguard_connect4(ctx: SockAddrContext) -> i32 {
    sock_verdict(&ctx, false)
}

#[cgroup_sock_addr(connect6)]
pub fn agentguard_connect6(ctx: SockAddrContext) -> i32 {
    sock_verdict(&ctx, true)
}

#[cgroup_sock_addr(sendmsg4)]
pub fn agentguard_sendmsg4(ctx: SockAddrContext) -> i32 {
    sock_verdict(&ctx, false)
}

#[cgroup_sock_addr(sendmsg6)]
pub fn agentguard_sendmsg6(ctx: SockAddrContext) -> i32 {
    sock_verdict(&ctx, true)
}

// ------------------------------------------------ raw and packet sockets

const AF_INET: i32 = 2;
const AF_INET6: i32 = 10;
const AF_PACKET: i32 = 17;
const SOCK_RAW: i32 = 3;

/// A raw IP or packet socket: it sends around every address hook.
#[inline(always)]
pub fn raw_socket(family: i32, ty: i32) -> bool {
    family == AF_PACKET || ((family == AF_INET || family == AF_INET6) && ty & 0xf == SOCK_RAW)
}

/// First rule of `rules` that refuses raw sockets.
#[inline(always)]
pub fn raw_socket_rule(rules: u32) -> Option<u32> {
    let mut r: u32 = 0;
    while r < MAX_RULES {
        if rules & (1 << r) != 0 {
            if let Some(s) = RULES.get(r) {
                if s.raw_sockets != 0
                    && (s.action == rule_action::DENY || s.action == rule_action::KILL)
                {
                    return Some(r);
                }
            }
        }
        r += 1;
    }
    None
}

/// Packet sockets never reach the cgroup sock_create hook (only inet
/// sockets do): without BPF-LSM, a subject of a raw-socket rule creating
/// one is killed at socket() entry, so it never sends a packet.
#[inline(always)]
pub fn check_packet_socket(rules: u32, family: i32) -> u32 {
    if rules == 0 || family != AF_PACKET {
        return 0;
    }
    let lsm = config_value(config::LSM_ACTIVE);
    if lsm != 0 {
        return 0;
    }
    match raw_socket_rule(rules) {
        Some(r) => kill(r),
        None => 0,
    }
}

/// cgroup `sock_create` at the cgroup v2 root: refuses raw and packet
/// sockets to the subjects of a `socket` deny rule (EPERM), on hosts
/// without BPF-LSM too. Pinned like the sock_addr hooks.
#[cgroup_sock(sock_create)]
pub fn agentguard_sock_create(ctx: SockContext) -> i32 {
    // SAFETY: the kernel passes a valid bpf_sock context.
    let sk = unsafe { &*ctx.sock };
    if !raw_socket(sk.family as i32, sk.type_ as i32) {
        return 1;
    }
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    let rules = subject_rules_always(tgid);
    if rules == 0 {
        return 1;
    }
    match raw_socket_rule(rules) {
        Some(_) => 0,
        None => 1,
    }
}
