//! The BPF-LSM backend: decisions on the kernel objects a syscall acts on,
//! taken in the security hooks, before anything changes.
//!
//! Each hook costs one subject lookup for a task no rule covers. For a
//! subject it walks from the object (dentry) up its parents inside its
//! filesystem, looking each inode up in `INODE_RULES`: a symlink, a hard
//! link, a bind mount, `/proc/PID/root`, a relative path, a dirfd or an
//! io_uring request all end at the same inode, so they all match. A `deny`
//! or `kill` returns -EPERM (nothing happens); `kill` also SIGKILLs.
//!
//! Every verdict is reported once: stamped into the record the syscall's
//! own tracepoint is building for this thread, or, when there is none
//! (io_uring, a task the filter does not stream), as a record of its own
//! carrying the object's path.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_send_signal},
    macros::{lsm, map},
    maps::{HashMap, PerCpuArray},
    programs::LsmContext,
    Global,
};

use agentguard_common::{
    enforce::{op, rule_action, verdict, InodeKey, InodeRules, INODE_ENTRIES, MAX_INODE_DEPTH},
    event::*,
    filter::{config, counter, LSM_TIME_BUCKETS, LSM_TIME_BUCKET_NS},
};

use crate::enforce::{net_decide, rule_slot, subject_rules};
use crate::kernel::{self, read_path, read_u32, read_u64, KPath};

/// Protected files and directories by identity; filled from the rule plan.
#[map]
static INODE_RULES: HashMap<InodeKey, InodeRules> = HashMap::with_max_entries(INODE_ENTRIES, 0);

/// Decision-time histogram (see `config::LSM_TIMING`).
#[map]
static LSM_TIMES: PerCpuArray<u64> = PerCpuArray::with_max_entries(LSM_TIME_BUCKETS, 0);

/// The daemon's tgid: its subjects may not signal, trace or replace it.
#[no_mangle]
static DAEMON_TGID: Global<u32> = Global::new(0);

const EPERM: i32 = 1;
const SIGKILL: u32 = 9;
const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;
const O_TRUNC: u32 = 0o1000;
const RENAME_EXCHANGE: u32 = 1 << 1;

/// Which rule of the walk matched, and on which entry.
#[derive(Clone, Copy)]
pub struct Hit {
    pub rule: u32,
    entry: InodeKey,
}

/// State of one ancestor walk, shared with the bpf_loop callback.
#[repr(C)]
struct InodeWalk {
    dentry: u64,
    rules: u64,
    ops: u64,
    depth: u64,
    /// Rule index + 1 of the match, 0 while none.
    hit: u64,
    hit_dev: u64,
    hit_ino: u64,
}

#[inline(always)]
fn op_mask(v: &InodeRules, ops: u64) -> u32 {
    let mut m = 0;
    let mut i = 0;
    while i < op::COUNT {
        if ops & (1 << i) != 0 {
            m |= v.op_rules[i];
        }
        i += 1;
    }
    m
}

#[inline(never)]
extern "C" fn inode_step(_index: u32, ctx: *mut core::ffi::c_void) -> i64 {
    // SAFETY: bpf_loop hands back the pointer to walk()'s InodeWalk.
    let w = unsafe { &mut *(ctx as *mut InodeWalk) };
    match inode_step_inner(w) {
        Ok(true) => 1,
        Ok(false) => 0,
        Err(_) => 1,
    }
}

/// Looks one dentry's inode up; `own`: the object itself (self rules),
/// else an ancestor (subtree rules).
#[inline(always)]
pub fn inode_hit(dentry: u64, rules: u32, ops: u64, own: bool) -> Result<Option<Hit>, i32> {
    match inode_key(dentry, None)? {
        Some(key) => Ok(key_hit(key, rules, ops, own)),
        None => Ok(None),
    }
}

/// The (device, inode number) of `dentry`, None for a negative dentry.
/// `dev`: the device when already known (a dentry's parent is always on
/// its superblock), which spares two reads.
#[inline(always)]
pub fn inode_key(dentry: u64, dev: Option<u32>) -> Result<Option<InodeKey>, i32> {
    let inode = read_u64(dentry + kernel::OFF_DENTRY_INODE.load())?;
    if inode == 0 {
        return Ok(None);
    }
    let ino = read_u64(inode + kernel::OFF_INODE_INO.load())?;
    let dev = match dev {
        Some(d) => d,
        None => {
            let sb = read_u64(inode + kernel::OFF_INODE_SB.load())?;
            read_u32(sb + kernel::OFF_SB_DEV.load())?
        }
    };
    Ok(Some(InodeKey { dev, _pad: 0, ino }))
}

/// [`inode_hit`] for a key already read.
#[inline(always)]
pub fn key_hit(key: InodeKey, rules: u32, ops: u64, own: bool) -> Option<Hit> {
    // SAFETY: value read in place and not kept past this call.
    let v = unsafe { INODE_RULES.get(&key) }?;
    let level = if own { v.self_rules } else { v.sub_rules };
    let m = level & rules & op_mask(v, ops);
    (m != 0).then(|| Hit {
        rule: m.trailing_zeros(),
        entry: key,
    })
}

/// One ancestor. The callback holds no state the verifier could take for
/// a constant: before 6.7 it checks a callback as if run once from the
/// initial state, and would drop branches that only later iterations take.
#[inline(always)]
fn inode_step_inner(w: &mut InodeWalk) -> Result<bool, i32> {
    if let Some(h) = inode_hit(w.dentry, w.rules as u32, w.ops, false)? {
        w.hit = u64::from(h.rule + 1);
        w.hit_dev = u64::from(h.entry.dev);
        w.hit_ino = h.entry.ino;
        return Ok(true);
    }
    let parent = read_u64(w.dentry + kernel::OFF_DENTRY_PARENT.load())?;
    if parent == w.dentry || parent == 0 {
        return Ok(true);
    }
    w.dentry = parent;
    Ok(false)
}

/// First rule of `rules` protecting `dentry` (itself or an ancestor) for
/// any op of `ops`.
#[inline(always)]
fn walk(dentry: u64, rules: u32, ops: u32) -> Option<Hit> {
    if dentry == 0 {
        return None;
    }
    crate::bump(counter::LSM_WALKS);
    let h = protected(dentry, rules, ops);
    if h.is_some() {
        crate::bump(counter::LSM_HITS);
    }
    h
}

/// First rule of `rules` protecting `dentry` for any op of `ops`: its own
/// entry, else an ancestor's subtree entry (a file created under a
/// protected directory since the daemon last listed it has no entry of
/// its own).
#[inline(always)]
pub fn protected(dentry: u64, rules: u32, ops: u32) -> Option<Hit> {
    if let Ok(Some(h)) = inode_hit(dentry, rules, u64::from(ops), true) {
        return Some(h);
    }
    let parent = read_u64(dentry + kernel::OFF_DENTRY_PARENT.load()).ok()?;
    if parent == dentry || parent == 0 {
        return None;
    }
    walk_below(parent, rules, ops)
}

/// First rule of `rules` protecting the subtree `dir` is in (`dir` itself
/// or an ancestor) for any op of `ops`: what protects a name inside `dir`.
#[inline(always)]
pub fn walk_below(dir: u64, rules: u32, ops: u32) -> Option<Hit> {
    let mut w = InodeWalk {
        dentry: dir,
        rules: u64::from(rules),
        ops: u64::from(ops),
        depth: 0,
        hit: 0,
        hit_dev: 0,
        hit_ino: 0,
    };
    // SAFETY: helper 181 with a static callback and a pointer to our stack.
    unsafe {
        aya_ebpf::helpers::generated::bpf_loop(
            MAX_INODE_DEPTH,
            inode_step as *mut core::ffi::c_void,
            (&mut w as *mut InodeWalk).cast(),
            0,
        );
    }
    if w.hit == 0 {
        return None;
    }
    Some(Hit {
        rule: (w.hit - 1) as u32,
        entry: InodeKey {
            dev: w.hit_dev as u32,
            _pad: 0,
            ino: w.hit_ino,
        },
    })
}

/// The rule's action, and the verdict bits and hook return value for it.
#[inline(always)]
fn act(rule: u32) -> (u32, i32) {
    let slot = rule_slot(rule);
    if slot.is_some_and(|s| s.taint != 0) {
        crate::enforce::taint(rule);
    }
    let action = slot.map_or(rule_action::NONE, |s| s.action);
    let base = verdict::LSM | ((rule + 1) & verdict::RULE_MASK);
    match action {
        rule_action::KILL => {
            // SAFETY: helper without memory arguments; it signals the
            // current process (the one making the refused request).
            let sent = unsafe { bpf_send_signal(SIGKILL) } == 0;
            let how = if sent {
                verdict::KILLED
            } else {
                verdict::KILL_FAILED
            };
            (base | verdict::DENIED | how, -EPERM)
        }
        rule_action::DENY => (base | verdict::DENIED, -EPERM),
        rule_action::ALERT => (base | verdict::MATCHED, 0),
        _ => (0, 0),
    }
}

#[inline(always)]
fn subject() -> (u64, u32) {
    let pid_tgid = bpf_get_current_pid_tgid();
    (pid_tgid, subject_rules((pid_tgid >> 32) as u32))
}

/// Stamps `v` into this thread's pending record of kind `k` (the syscall
/// probe reports it at exit), or emits a file record of the object `obj`.
#[inline(always)]
fn report_file(pid_tgid: u64, k: u16, hook: u16, obj: KPath, v: u32, ret: i32) {
    let tid = pid_tgid as u32;
    let pending = match k {
        kind::EXEC => crate::PENDING_EXEC
            .get_ptr_mut(&tid)
            // SAFETY: this thread's own entry; only it writes it.
            .map(|e| unsafe { &raw mut (*e).header }),
        kind::RENAME => crate::PENDING_RENAME
            .get_ptr_mut(&tid)
            // SAFETY: as above.
            .map(|e| unsafe { &raw mut (*e).header }),
        _ => crate::PENDING_FILE
            .get_ptr_mut(&tid)
            // SAFETY: as above.
            .map(|e| unsafe { &raw mut (*e).header }),
    };
    if let Some(h) = pending {
        // SAFETY: as above.
        unsafe {
            if (*h).kind == k {
                (*h).verdict |= v;
                return;
            }
        }
    }
    match k {
        kind::EXEC => {
            let Some(ev) = crate::SCRATCH_EXEC.get_ptr_mut(0) else {
                return;
            };
            // SAFETY: per-CPU scratch slot of this program run.
            let ev = unsafe { &mut *ev };
            crate::fill_header(&mut ev.header, k, hook, pid_tgid);
            ev.header.verdict = v;
            ev.header.ret = i64::from(ret);
            ev.dirfd = AT_FDCWD;
            ev.flags = 0;
            ev.argc = 0;
            ev.argv_len = 0;
            ev.stdin_pipe = 0;
            ev.stdout_pipe = 0;
            ev.path[0] = 0;
            kernel::capture_object(obj, kernel::slot::EXEC);
            crate::output_prefix(&*ev, EXEC_EVENT_MIN + ev.dir.len as usize);
        }
        _ => {
            let Some(ev) = crate::SCRATCH_FILE.get_ptr_mut(0) else {
                return;
            };
            // SAFETY: per-CPU scratch slot of this program run.
            let ev = unsafe { &mut *ev };
            crate::fill_header(&mut ev.header, k, hook, pid_tgid);
            ev.header.verdict = v;
            ev.header.ret = i64::from(ret);
            ev.dirfd = AT_FDCWD;
            ev.flags = 0;
            ev.mode = 0;
            ev.size = 0;
            ev.path[0] = 0;
            kernel::capture_object(obj, kernel::slot::FILE);
            crate::output_prefix(&*ev, FILE_EVENT_MIN + ev.dir.len as usize);
        }
    }
}

#[inline(always)]
fn timing_start() -> u64 {
    if crate::enforce::config_value(config::LSM_TIMING) == 0 {
        return 0;
    }
    // SAFETY: helper without preconditions.
    unsafe { aya_ebpf::helpers::bpf_ktime_get_ns() }
}

#[inline(always)]
fn timing_end(t0: u64) {
    if t0 == 0 {
        return;
    }
    // SAFETY: helper without preconditions.
    let dt = unsafe { aya_ebpf::helpers::bpf_ktime_get_ns() }.wrapping_sub(t0);
    let b = (dt / LSM_TIME_BUCKET_NS).min(u64::from(LSM_TIME_BUCKETS - 1)) as u32;
    if let Some(c) = LSM_TIMES.get_ptr_mut(b) {
        // SAFETY: per-CPU slot; LSM programs here are not preempted by one
        // another on the same CPU mid-update.
        unsafe { *c += 1 };
    }
}

/// A file hook's whole decision: walk, act, report.
#[inline(always)]
fn file_hook(k: u16, hook: u16, obj: KPath, ops: u32) -> i32 {
    let (pid_tgid, rules) = subject();
    if rules == 0 {
        return 0;
    }
    let t0 = timing_start();
    let ret = file_decide(pid_tgid, rules, k, hook, obj, ops);
    timing_end(t0);
    ret
}

#[inline(always)]
fn file_decide(pid_tgid: u64, rules: u32, k: u16, hook: u16, obj: KPath, ops: u32) -> i32 {
    let Some(hit) = walk(obj.dentry, rules, ops) else {
        return 0;
    };
    let (v, ret) = act(hit.rule);
    if v != 0 {
        report_file(pid_tgid, k, hook, obj, v, ret);
    }
    ret
}

#[inline(always)]
fn path_at(addr: u64) -> KPath {
    read_path(addr).unwrap_or(KPath { mnt: 0, dentry: 0 })
}

// ------------------------------------------------------------------ files

#[lsm(hook = "file_open")]
pub fn agentguard_file_open(ctx: LsmContext) -> i32 {
    let prev: i32 = ctx.arg(1);
    if prev != 0 {
        return prev;
    }
    let file: u64 = ctx.arg(0);
    let obj = path_at(file + kernel::OFF_FILE_PATH.load());
    // O_TRUNC empties the file right after this hook allows the open.
    let flags = read_u32(file + kernel::OFF_FILE_FLAGS.load()).unwrap_or(0);
    let ops = if flags & O_TRUNC != 0 {
        op::OPEN | op::TRUNCATE
    } else {
        op::OPEN
    };
    file_hook(kind::OPEN, syscall::LSM_FILE_OPEN, obj, ops)
}

/// unlink and rmdir: the parent directory's path and the victim's dentry.
#[inline(always)]
fn dir_entry_hook(ctx: &LsmContext, k: u16, hook: u16, ops: u32) -> i32 {
    let prev: i32 = ctx.arg(2);
    if prev != 0 {
        return prev;
    }
    let dir = path_at(ctx.arg::<u64>(0));
    let obj = KPath {
        mnt: dir.mnt,
        dentry: ctx.arg(1),
    };
    file_hook(k, hook, obj, ops)
}

#[lsm(hook = "path_unlink")]
pub fn agentguard_path_unlink(ctx: LsmContext) -> i32 {
    dir_entry_hook(&ctx, kind::UNLINK, syscall::LSM_PATH_UNLINK, op::UNLINK)
}

#[lsm(hook = "path_rmdir")]
pub fn agentguard_path_rmdir(ctx: LsmContext) -> i32 {
    dir_entry_hook(&ctx, kind::RMDIR, syscall::LSM_PATH_RMDIR, op::RMDIR)
}

#[lsm(hook = "path_truncate")]
pub fn agentguard_path_truncate(ctx: LsmContext) -> i32 {
    let prev: i32 = ctx.arg(1);
    if prev != 0 {
        return prev;
    }
    let obj = path_at(ctx.arg::<u64>(0));
    file_hook(
        kind::TRUNCATE,
        syscall::LSM_PATH_TRUNCATE,
        obj,
        op::TRUNCATE,
    )
}

/// ftruncate(2) on kernels that have the hook (6.2+; before, ftruncate
/// goes through path_truncate).
#[lsm(hook = "file_truncate")]
pub fn agentguard_file_truncate(ctx: LsmContext) -> i32 {
    let prev: i32 = ctx.arg(1);
    if prev != 0 {
        return prev;
    }
    let file: u64 = ctx.arg(0);
    let obj = path_at(file + kernel::OFF_FILE_PATH.load());
    file_hook(
        kind::TRUNCATE,
        syscall::LSM_FILE_TRUNCATE,
        obj,
        op::TRUNCATE,
    )
}

/// A hard link is a second name for a protected file: refused to the
/// rules that protect opening it.
#[lsm(hook = "path_link")]
pub fn agentguard_path_link(ctx: LsmContext) -> i32 {
    let prev: i32 = ctx.arg(3);
    if prev != 0 {
        return prev;
    }
    let dir = path_at(ctx.arg::<u64>(1));
    let obj = KPath {
        mnt: dir.mnt,
        dentry: ctx.arg(0),
    };
    file_hook(kind::OPEN, syscall::LSM_PATH_LINK, obj, op::LINK)
}

/// Rename: moving a protected file out of its entry, or onto a protected
/// file (which destroys it), is refused; a move inside one entry (an
/// atomic save inside a volume) is not.
#[lsm(hook = "path_rename")]
pub fn agentguard_path_rename(ctx: LsmContext) -> i32 {
    let prev: i32 = ctx.arg(5);
    if prev != 0 {
        return prev;
    }
    let (pid_tgid, rules) = subject();
    if rules == 0 {
        return 0;
    }
    let old_dir = path_at(ctx.arg::<u64>(0));
    let new_dir = path_at(ctx.arg::<u64>(2));
    let old = KPath {
        mnt: old_dir.mnt,
        dentry: ctx.arg(1),
    };
    let new = KPath {
        mnt: new_dir.mnt,
        dentry: ctx.arg(3),
    };
    let flags: u32 = ctx.arg(4);
    let exchange = flags & RENAME_EXCHANGE != 0;
    let hit = match walk(old.dentry, rules, op::RENAME) {
        // A `path` rule covers any rename of its files.
        Some(h) => Some(h),
        None => match walk(old.dentry, rules, op::RENAME_AWAY) {
            // A volume rule lets a move inside the same entry through.
            Some(s) => {
                let dst = walk(new.dentry, rules, op::RENAME_AWAY);
                if dst.is_some_and(|d| d.rule == s.rule && d.entry == s.entry) {
                    None
                } else {
                    Some(s)
                }
            }
            None => {
                let target_exists =
                    read_u64(new.dentry + kernel::OFF_DENTRY_INODE.load()).is_ok_and(|i| i != 0);
                if exchange {
                    walk(new.dentry, rules, op::RENAME | op::RENAME_AWAY)
                } else if target_exists {
                    // Renaming onto a covered file destroys it.
                    walk(new.dentry, rules, op::UNLINK | op::RENAME | op::RENAME_AWAY)
                } else {
                    None
                }
            }
        },
    };
    let Some(hit) = hit else {
        return 0;
    };
    let (v, ret) = act(hit.rule);
    if v != 0 {
        report_rename(pid_tgid, old, new, v, ret);
    }
    ret
}

#[inline(always)]
fn report_rename(pid_tgid: u64, old: KPath, new: KPath, v: u32, ret: i32) {
    let tid = pid_tgid as u32;
    if let Some(e) = crate::PENDING_RENAME.get_ptr_mut(&tid) {
        // SAFETY: this thread's own pending record.
        unsafe {
            if (*e).header.kind == kind::RENAME {
                (*e).header.verdict |= v;
                return;
            }
        }
    }
    let Some(ev) = crate::SCRATCH_RENAME.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: per-CPU scratch slot of this program run.
    let ev = unsafe { &mut *ev };
    crate::fill_header(
        &mut ev.header,
        kind::RENAME,
        syscall::LSM_PATH_RENAME,
        pid_tgid,
    );
    ev.header.verdict = v;
    ev.header.ret = i64::from(ret);
    ev.olddirfd = AT_FDCWD;
    ev.newdirfd = AT_FDCWD;
    ev.flags = 0;
    ev.oldpath[0] = 0;
    ev.newpath[0] = 0;
    kernel::capture_object(old, kernel::slot::RENAME_OLD);
    kernel::capture_object(new, kernel::slot::RENAME_NEW);
    crate::output_prefix(&*ev, RENAME_EVENT_MIN + ev.newdir.len as usize);
}

/// The binary the kernel is about to run (after symlinks, for fexecve and
/// memfds too): exec rules match the real file.
#[lsm(hook = "bprm_check_security")]
pub fn agentguard_bprm_check(ctx: LsmContext) -> i32 {
    let prev: i32 = ctx.arg(1);
    if prev != 0 {
        return prev;
    }
    let bprm: u64 = ctx.arg(0);
    let Ok(file) = read_u64(bprm + kernel::OFF_BPRM_FILE.load()) else {
        return 0;
    };
    let obj = path_at(file + kernel::OFF_FILE_PATH.load());
    file_hook(kind::EXEC, syscall::LSM_BPRM_CHECK, obj, op::EXEC)
}

// ---------------------------------------------------------------- network

#[inline(always)]
fn report_net(
    pid_tgid: u64,
    k: u16,
    hook: u16,
    family: u16,
    port: u16,
    addr: &[u8; 16],
    extra: (i32, u32),
    v: u32,
    ret: i32,
) {
    let tid = pid_tgid as u32;
    if let Some(e) = crate::PENDING_NET.get_ptr_mut(&tid) {
        // SAFETY: this thread's own pending record.
        unsafe {
            if (*e).header.kind == k {
                (*e).header.verdict |= v;
                return;
            }
        }
    }
    let Some(ev) = crate::SCRATCH_NET.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: per-CPU scratch slot of this program run.
    let ev = unsafe { &mut *ev };
    crate::fill_header(&mut ev.header, k, hook, pid_tgid);
    ev.header.verdict = v;
    ev.header.ret = i64::from(ret);
    ev.fd = extra.0;
    ev.msg_flags = extra.1;
    ev.len = 0;
    ev.family = family;
    ev.port = port;
    ev.addrlen = 0;
    ev.addr = [0; 16];
    if family == AF_INET {
        ev.addr[..4].copy_from_slice(&addr[12..]);
    } else {
        ev.addr = *addr;
    }
    ev.unix_path[0] = 0;
    crate::output_prefix(&*ev, core::mem::size_of::<NetEvent>());
}

/// Destination of a kernel copy of a sockaddr: (family, port, v6 address).
#[inline(always)]
fn sockaddr(sa: u64) -> Option<(u16, u16, [u8; 16])> {
    if sa == 0 {
        return None;
    }
    // SAFETY (reads below): bpf_probe_read_kernel faults safely.
    let family: u16 = unsafe { aya_ebpf::helpers::bpf_probe_read_kernel(sa as *const u16) }.ok()?;
    let port: u16 = u16::from_be(
        unsafe { aya_ebpf::helpers::bpf_probe_read_kernel((sa + 2) as *const u16) }.ok()?,
    );
    let mut addr = [0u8; 16];
    match family {
        AF_INET => {
            let a: [u8; 4] =
                unsafe { aya_ebpf::helpers::bpf_probe_read_kernel((sa + 4) as *const [u8; 4]) }
                    .ok()?;
            addr[10] = 0xff;
            addr[11] = 0xff;
            addr[12..].copy_from_slice(&a);
        }
        AF_INET6 => {
            addr = unsafe { aya_ebpf::helpers::bpf_probe_read_kernel((sa + 8) as *const [u8; 16]) }
                .ok()?;
        }
        _ => return None,
    }
    Some((family, port, addr))
}

#[inline(always)]
fn net_hook(k: u16, hook: u16, sa: u64) -> i32 {
    let (pid_tgid, rules) = subject();
    if rules == 0 {
        return 0;
    }
    let Some((family, port, addr)) = sockaddr(sa) else {
        return 0;
    };
    let Some((r, action)) = net_decide(rules, &addr, port) else {
        return 0;
    };
    if action != rule_action::DENY && action != rule_action::KILL {
        return 0;
    }
    let (v, ret) = act(r);
    if v != 0 {
        report_net(pid_tgid, k, hook, family, port, &addr, (-1, 0), v, ret);
    }
    ret
}

/// The address is the kernel's own copy (taken before this hook), so a
/// thread rewriting the caller's buffer can't change what is decided.
#[lsm(hook = "socket_connect")]
pub fn agentguard_socket_connect(ctx: LsmContext) -> i32 {
    let prev: i32 = ctx.arg(3);
    if prev != 0 {
        return prev;
    }
    net_hook(kind::CONNECT, syscall::LSM_SOCKET_CONNECT, ctx.arg(1))
}

#[lsm(hook = "socket_sendmsg")]
pub fn agentguard_socket_sendmsg(ctx: LsmContext) -> i32 {
    let prev: i32 = ctx.arg(3);
    if prev != 0 {
        return prev;
    }
    let msg: u64 = ctx.arg(1);
    let Ok(name) = read_u64(msg + kernel::OFF_MSGHDR_NAME.load()) else {
        return 0;
    };
    net_hook(kind::SEND, syscall::LSM_SOCKET_SENDMSG, name)
}

/// Raw and packet sockets send around every address hook: refused to the
/// subjects of a network rule that asks for it.
#[lsm(hook = "socket_create")]
pub fn agentguard_socket_create(ctx: LsmContext) -> i32 {
    let prev: i32 = ctx.arg(4);
    if prev != 0 {
        return prev;
    }
    let family: i32 = ctx.arg(0);
    let ty: i32 = ctx.arg(1);
    let protocol: i32 = ctx.arg(2);
    let kern: i32 = ctx.arg(3);
    if kern != 0 || !crate::enforce::raw_socket(family, ty) {
        return 0;
    }
    let (pid_tgid, rules) = subject();
    if rules == 0 {
        return 0;
    }
    let Some(r) = crate::enforce::raw_socket_rule(rules) else {
        return 0;
    };
    let (v, ret) = act(r);
    report_net(
        pid_tgid,
        kind::SOCKET,
        syscall::LSM_SOCKET_CREATE,
        family as u16,
        0,
        &[0; 16],
        (ty, protocol as u32),
        v,
        ret,
    );
    ret
}

/// A unix stream socket is the file it is bound to (the Docker socket):
/// matched by that file's identity, so another path to it (a symlink, a
/// bind mount) is the same socket.
#[lsm(hook = "unix_stream_connect")]
pub fn agentguard_unix_connect(ctx: LsmContext) -> i32 {
    let prev: i32 = ctx.arg(3);
    if prev != 0 {
        return prev;
    }
    let other: u64 = ctx.arg(1);
    let obj = path_at(other + kernel::OFF_UNIX_SOCK_PATH.load());
    if obj.dentry == 0 {
        // Abstract or unbound: no file to protect.
        return 0;
    }
    let (pid_tgid, rules) = subject();
    if rules == 0 {
        return 0;
    }
    let Some(hit) = walk(obj.dentry, rules, op::UNIX_CONNECT) else {
        return 0;
    };
    let (v, ret) = act(hit.rule);
    if v != 0 {
        report_net(
            pid_tgid,
            kind::CONNECT,
            syscall::LSM_UNIX_CONNECT,
            1,
            0,
            &[0; 16],
            (-1, 0),
            v,
            ret,
        );
    }
    ret
}

// ------------------------------------------------------- self-protection

#[inline(always)]
fn guard_daemon(target_task: u64) -> i32 {
    let daemon = DAEMON_TGID.load();
    if daemon == 0 || target_task == 0 {
        return 0;
    }
    let Ok(tgid) = read_u32(target_task + kernel::OFF_TASK_TGID.load()) else {
        return 0;
    };
    if tgid != daemon {
        return 0;
    }
    let (_, rules) = subject();
    if rules == 0 {
        return 0;
    }
    crate::bump(counter::SELF_PROTECT);
    -EPERM
}

/// A guarded task may not signal the daemon.
#[lsm(hook = "task_kill")]
pub fn agentguard_task_kill(ctx: LsmContext) -> i32 {
    let prev: i32 = ctx.arg(4);
    if prev != 0 {
        return prev;
    }
    let sig: i32 = ctx.arg(2);
    if sig == 0 {
        return 0;
    }
    guard_daemon(ctx.arg(0))
}

/// ... nor trace it (ptrace, /proc/PID/mem).
#[lsm(hook = "ptrace_access_check")]
pub fn agentguard_ptrace(ctx: LsmContext) -> i32 {
    let prev: i32 = ctx.arg(2);
    if prev != 0 {
        return prev;
    }
    guard_daemon(ctx.arg(0))
}

/// ... nor use bpf(2) at all (load programs, or rewrite our maps).
/// (The hook's argument count changed across kernels, so the previous
/// program's verdict is not read; refusing is never weaker.)
#[lsm(hook = "bpf")]
pub fn agentguard_bpf(_ctx: LsmContext) -> i32 {
    let (_, rules) = subject();
    if rules == 0 {
        return 0;
    }
    crate::bump(counter::SELF_PROTECT);
    -EPERM
}
