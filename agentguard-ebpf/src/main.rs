//! agentguard's eBPF programs: syscall and scheduler tracepoints that stream
//! process, file and network events to userspace over one ring buffer.
//!
//! Pattern for syscalls: `sys_enter_*` checks the task filter, builds the
//! record in a per-CPU scratch slot (records are larger than the 512-byte
//! stack) and parks it in a per-thread pending map; `sys_exit_*` adds the
//! result and emits it. One record per syscall, with its outcome.
#![no_std]
#![no_main]

mod dns;
mod enforce;
mod kernel;
mod lsm;
mod own;

use aya_ebpf::{
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid,
        bpf_get_current_uid_gid, bpf_ktime_get_boot_ns, bpf_probe_read_user,
        bpf_probe_read_user_buf, bpf_probe_read_user_str_bytes,
    },
    macros::{map, raw_tracepoint, tracepoint},
    maps::{
        lpm_trie::Key, Array, HashMap, LpmTrie, LruHashMap, LruPerCpuHashMap, PerCpuArray,
        ProgramArray, RingBuf,
    },
    programs::{RawTracePointContext, TracePointContext},
    Global,
};
use aya_log_ebpf::debug;

use agentguard_common::{
    event::*,
    filter::{
        config, counter, flood, kind_bit, pending, FloodState, ALL_KINDS, BASENAME_ENTRIES,
        BASENAME_LEN, BASENAME_PAIR_WORDS, CGROUP_MASK_ENTRIES, CGROUP_PATHS_ENTRIES,
        CGROUP_PATH_LEN, TASK_FILTER_ENTRIES, URGENT_UNIX,
    },
};

/// Ring buffer to userspace. Userspace may resize it before load.
#[map]
pub(crate) static EVENTS: RingBuf = RingBuf::with_byte_size(8 << 20, 0);

/// tgid -> kind mask; see agentguard_common::filter.
#[map]
static TASK_FILTER: HashMap<u32, u32> = HashMap::with_max_entries(TASK_FILTER_ENTRIES, 0);

/// cgroup v2 id -> kind mask for its tasks without an entry of their own,
/// written once the daemon has classified the cgroup (an agent container:
/// what the rules need; anything else: the default). A cgroup not classified
/// yet streams what the rules need: a new container is watched as an
/// agent's until the daemon knows it is not, so an agent's first actions are
/// not filtered out while its labels are still being looked up.
#[map]
static CGROUP_MASK: HashMap<u64, u32> = HashMap::with_max_entries(CGROUP_MASK_ENTRIES, 0);

/// Runtime settings, indexed by agentguard_common::filter::config.
#[map]
static CONFIG: Array<u32> = Array::with_max_entries(config::MAX, 0);

/// Per-CPU counters, indexed by agentguard_common::filter::counter.
#[map]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::MAX, 0);

/// Flood isolation, per subject (cgroup id) and CPU: see
/// agentguard_common::filter::flood. Per CPU, so counting needs no atomics.
#[map]
static FLOOD: LruPerCpuHashMap<u64, FloodState> =
    LruPerCpuHashMap::with_max_entries(flood::SUBJECTS, 0);

/// File names rules name wherever they are (`.env`, `.env.*`): exact
/// names and name prefixes, see `BASENAME_LEN`.
#[map]
static BASENAMES: LpmTrie<[u8; BASENAME_LEN], u8> = LpmTrie::with_max_entries(BASENAME_ENTRIES, 0);

/// The first two bytes of every `BASENAMES` entry, as a bit set (bit
/// `b0 * 256 + b1`): most names start no entry, and this one array read
/// spares them the name copy and the trie walk.
#[map]
static BASENAME_PAIRS: Array<u32> = Array::with_max_entries(BASENAME_PAIR_WORDS, 0);

/// The lookup key for `BASENAMES` (64 bytes: too big for the stack budget
/// next to the rest).
#[map]
static BASENAME_KEY: PerCpuArray<Key<[u8; BASENAME_LEN]>> = PerCpuArray::with_max_entries(1, 0);

#[map]
static SCRATCH_FILE: PerCpuArray<FileEvent> = PerCpuArray::with_max_entries(1, 0);
#[map]
static SCRATCH_RENAME: PerCpuArray<RenameEvent> = PerCpuArray::with_max_entries(1, 0);
#[map]
static SCRATCH_EXEC: PerCpuArray<ExecEvent> = PerCpuArray::with_max_entries(1, 0);
#[map]
static SCRATCH_NET: PerCpuArray<NetEvent> = PerCpuArray::with_max_entries(1, 0);

// Entry records waiting for their syscall's exit, by thread id. LRU so a
// thread that never returns (killed mid-syscall) can't leak an entry.
#[map]
static PENDING_FILE: LruHashMap<u32, FileEvent> = LruHashMap::with_max_entries(16384, 0);
#[map]
static PENDING_RENAME: LruHashMap<u32, RenameEvent> = LruHashMap::with_max_entries(2048, 0);
#[map]
static PENDING_EXEC: LruHashMap<u32, ExecEvent> = LruHashMap::with_max_entries(4096, 0);
#[map]
static PENDING_NET: LruHashMap<u32, NetEvent> = LruHashMap::with_max_entries(16384, 0);

/// Offset of `clone_flags` in task:task_newtask (from its tracefs format).
#[no_mangle]
static TP_NEWTASK_FLAGS: Global<u64> = Global::new(32);
/// Offset of `group_dead` in sched:sched_process_exit, or u64::MAX when the
/// kernel's record has no such field (then the leader's exit stands for it).
#[no_mangle]
static TP_EXIT_GROUP_DEAD: Global<u64> = Global::new(u64::MAX);

const CLONE_THREAD: u64 = 0x0001_0000;
const AT_REMOVEDIR: u64 = 0x200;
const O_CREAT_WRONLY_TRUNC: u32 = 0o1101;
const AF_UNIX: u16 = 1;
const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;

const BPF_RB_NO_WAKEUP: u64 = 1;
pub(crate) const BPF_RB_FORCE_WAKEUP: u64 = 2;
const BPF_RB_AVAIL_DATA: u64 = 0;

/// Wake the reader only when enough is queued (userspace also drains on a
/// short timer): a wakeup per record would cost more than the record.
/// Records of a guarded task that a rule decided in userspace may kill or
/// deny wake the reader at once: that kill must not wait for a batch.
/// Everything else is batched (one wakeup per `WAKEUP_BYTES`).
/// `bit`: the record's kind bit, plus `URGENT_UNIX` for a unix connect.
#[inline(always)]
fn out_flags(bit: u32) -> u64 {
    if enforce::config_value(config::URGENT_KINDS) & bit != 0 {
        let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
        if enforce::subject_rules(tgid) != 0 {
            return BPF_RB_FORCE_WAKEUP;
        }
    }
    batch_flags()
}

/// Output flags of a record that need not wake the reader at once: a
/// wakeup only once `WAKEUP_BYTES` are queued.
#[inline(always)]
pub(crate) fn batch_flags() -> u64 {
    let threshold = match CONFIG.get(config::WAKEUP_BYTES) {
        Some(t) => *t as u64,
        None => 0,
    };
    if threshold == 0 {
        0
    } else if EVENTS.query(BPF_RB_AVAIL_DATA) >= threshold {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    }
}

/// Emits the first `used` bytes of `rec` (the rest is unused DirChain
/// buffer), bounded by the record size for the verifier.
#[inline(always)]
fn output_prefix<T>(rec: &T, used: usize) {
    let size = core::mem::size_of::<T>();
    let n = if used > size { size } else { used };
    // SAFETY: every record type starts with its Header (repr(C)).
    let header = unsafe { &*(rec as *const T).cast::<Header>() };
    if !admit(header) {
        return;
    }
    let kind = header.kind;
    // SAFETY: n <= size_of::<T>() bytes of a live record.
    let bytes = unsafe { core::slice::from_raw_parts((rec as *const T).cast::<u8>(), n) };
    if EVENTS
        .output::<[u8]>(bytes, out_flags(kind_bit(kind)))
        .is_err()
    {
        bump(counter::LOST);
    }
}

/// May this record leave the kernel? No when its subject has used up its
/// quota for this window on this CPU and the ring buffer is filling up:
/// then it is counted against the subject and kind, so a flooding subject
/// loses its own records first and the ring buffer keeps room for
/// everyone else. Exec, fork and exit
/// always pass (identity and enforcement state rest on them).
#[inline(always)]
pub(crate) fn admit(h: &Header) -> bool {
    let quota = enforce::config_value(config::FLOOD_QUOTA);
    if quota == 0 || matches!(h.kind, kind::EXEC | kind::FORK | kind::EXIT) {
        return true;
    }
    let window = h.ts_ns >> flood::WINDOW_SHIFT;
    let Some(st) = FLOOD.get_ptr_mut(&h.cgroup_id) else {
        let fresh = FloodState {
            window,
            count: 1,
            ..FloodState::default()
        };
        let _ = FLOOD.insert(&h.cgroup_id, &fresh, 0);
        return true;
    };
    // SAFETY: this CPU's own value; no other program runs on this CPU
    // meanwhile (tracepoint and LSM programs are not preempted).
    let st = unsafe { &mut *st };
    if st.window != window {
        st.window = window;
        st.count = 1;
        return true;
    }
    if st.count < quota {
        st.count += 1;
        return true;
    }
    // Past its quota: dropped only while the reader is falling behind.
    let pressure = enforce::config_value(config::FLOOD_PRESSURE);
    if pressure != 0 && EVENTS.query(BPF_RB_AVAIL_DATA) < u64::from(pressure) {
        return true;
    }
    let i = (h.kind as usize) & (flood::KINDS - 1);
    if let Some(d) = st.dropped.get_mut(i) {
        *d = d.wrapping_add(1);
    }
    st.last_pid = h.tgid;
    bump(counter::FLOODED);
    false
}

#[inline(always)]
pub(crate) fn bump(idx: u32) {
    if let Some(c) = COUNTERS.get_ptr_mut(idx) {
        // SAFETY: per-CPU slot; nothing else on this CPU runs concurrently
        // with a tracepoint program.
        unsafe { *c += 1 };
    }
}

/// Does process `tgid` stream events of kind `k`? One hash lookup (plus an
/// array lookup, inlined by the verifier, for processes without an entry).
#[inline(always)]
fn wants(tgid: u32, k: u16) -> bool {
    wants_with(tgid, k, None)
}

/// [`wants`] for a caller that already has the task's rule mask (one
/// subject lookup per probe, not two).
#[inline(always)]
fn wants_with(tgid: u32, k: u16, rules: Option<u32>) -> bool {
    enforce::contain(tgid);
    // SAFETY: the value is a u32 read by copy; map values are never freed
    // under a running program.
    let bit = kind_bit(k);
    let mask = match unsafe { TASK_FILTER.get(&tgid) } {
        Some(m) => *m,
        None => {
            let d = match CONFIG.get(config::DEFAULT_MASK) {
                Some(m) => *m,
                None => ALL_KINDS,
            };
            // A guarded task streams what the rules need even before the
            // daemon gave it an entry of its own; so does a task of a cgroup
            // the daemon has not classified yet.
            if d & bit != 0 {
                d
            } else if rules.unwrap_or_else(|| enforce::subject_rules(tgid)) != 0 {
                enforce::config_value(config::GUARDED_MASK)
            } else {
                // SAFETY: helper without preconditions.
                let cg = unsafe { bpf_get_current_cgroup_id() };
                // SAFETY: the value is a u32 read by copy.
                match unsafe { CGROUP_MASK.get(&cg) } {
                    Some(m) => *m,
                    None => enforce::config_value(config::GUARDED_MASK),
                }
            }
        }
    };
    mask & bit != 0
}

/// Where a syscall handler gets the syscall's arguments and result: a
/// per-syscall tracepoint's record, or (raw dispatch) the task's saved
/// registers. Every handler is written once over this.
trait Sys {
    fn arg(&self, n: usize) -> u64;
    fn ret(&self) -> i64;
    /// The exit can read the call's arguments again (`open_at_exit`).
    fn args_at_exit(&self) -> bool {
        false
    }
    /// At an open's exit: what it was called with (from the registers
    /// the syscall saved at entry, unchanged during the call).
    fn open_at_exit(&self) -> Option<OpenCall> {
        None
    }
}

/// An open's arguments, normalised over open, openat, openat2 and creat.
#[derive(Clone, Copy)]
struct OpenCall {
    syscall: u16,
    dirfd: i32,
    path: u64,
    flags: u32,
    mode: u32,
}

/// Normalises the arguments of open-like syscall `syscall` (as the
/// handlers `enter_open`.. pass them to `file_enter`).
#[inline(always)]
fn open_call(syscall: u16, ctx: &impl Sys) -> OpenCall {
    match syscall {
        syscall::OPEN => OpenCall {
            syscall,
            dirfd: AT_FDCWD,
            path: arg(ctx, 0),
            flags: arg(ctx, 1) as u32,
            mode: arg(ctx, 2) as u32,
        },
        syscall::CREAT => OpenCall {
            syscall,
            dirfd: AT_FDCWD,
            path: arg(ctx, 0),
            flags: O_CREAT_WRONLY_TRUNC,
            mode: arg(ctx, 1) as u32,
        },
        syscall::OPENAT2 => {
            // struct open_how { u64 flags; u64 mode; u64 resolve; } in user memory.
            let how = arg(ctx, 2);
            // SAFETY: user read through the helper; faults become errors.
            let flags = unsafe { bpf_probe_read_user(how as *const u64) }.unwrap_or(0);
            // SAFETY: as above.
            let mode = unsafe { bpf_probe_read_user((how + 8) as *const u64) }.unwrap_or(0);
            OpenCall {
                syscall,
                dirfd: arg(ctx, 0) as i32,
                path: arg(ctx, 1),
                flags: flags as u32,
                mode: mode as u32,
            }
        }
        _ => OpenCall {
            syscall,
            dirfd: arg(ctx, 0) as i32,
            path: arg(ctx, 1),
            flags: arg(ctx, 2) as u32,
            mode: arg(ctx, 3) as u32,
        },
    }
}

impl Sys for TracePointContext {
    #[inline(always)]
    fn arg(&self, n: usize) -> u64 {
        // Syscall tracepoint records: 8-byte common header, 4-byte nr + pad,
        // then six 8-byte arguments from offset 16 (ABI-stable).
        // SAFETY: an aligned load inside the tracepoint record, which the
        // verifier lets a tracepoint program read directly (no helper call).
        unsafe {
            core::ptr::read(
                (aya_ebpf::EbpfContext::as_ptr(self) as *const u8).add(16 + 8 * n) as *const u64,
            )
        }
    }

    #[inline(always)]
    fn ret(&self) -> i64 {
        // SAFETY: sys_exit records hold `long ret` at offset 16; a direct,
        // aligned load as in `arg`.
        unsafe {
            core::ptr::read((aya_ebpf::EbpfContext::as_ptr(self) as *const u8).add(16) as *const i64)
        }
    }
}

/// x86-64 `struct pt_regs` from `r10` (offset 56) to `di` (offset 112):
/// the six syscall argument registers in one kernel read.
const REGS_FROM: u64 = 56;
/// x86-64 numbers of the open-like syscalls (`open_at_exit`).
const NR_OPEN: u64 = 2;
const NR_CREAT: u64 = 85;
const NR_OPENAT: u64 = 257;
const NR_OPENAT2: u64 = 437;
/// Index in that window of each syscall argument (di, si, dx, r10, r8, r9).
const ARG_REG: [usize; 6] = [7, 6, 5, 0, 2, 1];
/// `orig_ax`: the syscall number, kept for the exit.
const REGS_ORIG_AX: u64 = 120;

/// A raw `sys_enter` program's view (see `raw_sys_enter`): the arguments
/// as the task passed them in its registers (x86-64 only: userspace picks
/// this backend on x86-64 alone).
struct RawEnter {
    regs: [u64; 8],
}

impl RawEnter {
    #[inline(always)]
    fn new(ctx: &RawTracePointContext) -> RawEnter {
        let regs: u64 = ctx.arg(0);
        // SAFETY: the helper checks the kernel address and reports faults;
        // a fault leaves zeroes (an argument nothing matches).
        let regs = unsafe {
            aya_ebpf::helpers::bpf_probe_read_kernel((regs + REGS_FROM) as *const [u64; 8])
        }
        .unwrap_or([0; 8]);
        RawEnter { regs }
    }
}

impl Sys for RawEnter {
    #[inline(always)]
    fn arg(&self, n: usize) -> u64 {
        match ARG_REG.get(n) {
            Some(&i) => self.regs.get(i).copied().unwrap_or(0),
            None => 0,
        }
    }

    fn ret(&self) -> i64 {
        0
    }

    fn args_at_exit(&self) -> bool {
        true
    }
}

/// A raw `sys_exit` program's view: the result, and the saved registers
/// (read only when needed).
struct RawExit {
    ret: i64,
    regs: u64,
}

impl Sys for RawExit {
    fn arg(&self, _n: usize) -> u64 {
        0
    }

    #[inline(always)]
    fn ret(&self) -> i64 {
        self.ret
    }

    fn args_at_exit(&self) -> bool {
        true
    }

    #[inline(always)]
    fn open_at_exit(&self) -> Option<OpenCall> {
        // The argument window and orig_ax (the syscall number) after it.
        // SAFETY: the helper checks the kernel address and reports faults.
        let w = unsafe {
            aya_ebpf::helpers::bpf_probe_read_kernel((self.regs + REGS_FROM) as *const [u64; 9])
        }
        .ok()?;
        let syscall = match w[8] {
            NR_OPEN => syscall::OPEN,
            NR_CREAT => syscall::CREAT,
            NR_OPENAT => syscall::OPENAT,
            NR_OPENAT2 => syscall::OPENAT2,
            _ => return None,
        };
        let mut regs = [0u64; 8];
        regs.copy_from_slice(&w[..8]);
        Some(open_call(syscall, &RawEnter { regs }))
    }
}

#[inline(always)]
fn arg(ctx: &impl Sys, n: usize) -> u64 {
    ctx.arg(n)
}

#[inline(always)]
fn ret_of(ctx: &impl Sys) -> i64 {
    ctx.ret()
}

/// Syscall handlers by x86-64 syscall number (`SYS_SLOTS` covers the
/// highest one handled, openat2 = 437), filled by userspace with the raw
/// programs of the kinds it streams.
#[map]
static SYS_ENTER_PROGS: ProgramArray = ProgramArray::with_max_entries(SYS_SLOTS, 0);
#[map]
static SYS_EXIT_PROGS: ProgramArray = ProgramArray::with_max_entries(SYS_SLOTS, 0);
const SYS_SLOTS: u32 = 448;
const X32_SYSCALL_BIT: i64 = 0x4000_0000;

/// Raw dispatch (the cheaper backend): one raw tracepoint on every
/// syscall's entry, which skips the record a per-syscall tracepoint builds
/// before its program runs, and jumps to the handler of that syscall, if
/// any (an empty slot: nothing to do). The 32-bit ABI is judged here: its
/// numbers are another table, never dispatched.
#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn raw_sys_enter(ctx: RawTracePointContext) -> u32 {
    let nr: i64 = ctx.arg(1);
    // The x32 ABI (64-bit registers, numbers with bit 30) is another table
    // too, which per-syscall tracepoints never see: judged as the 32-bit ABI
    // is (where the kernel has no x32, the call fails with ENOSYS anyway).
    // (-1: a tracer skipping the call, or `syscall(-1)`: not x32.)
    if kernel::in_compat_syscall() || (nr > 0 && nr & X32_SYSCALL_BIT != 0) {
        compat_enter(nr);
        return 0;
    }
    if (0..i64::from(SYS_SLOTS)).contains(&nr) {
        // SAFETY: ctx is this program's own context; a missing slot
        // returns and we fall through.
        unsafe { SYS_ENTER_PROGS.tail_call(&ctx, nr as u32) };
    }
    0
}

#[raw_tracepoint(tracepoint = "sys_exit")]
pub fn raw_sys_exit(ctx: RawTracePointContext) -> u32 {
    // The 32-bit ABI's numbers are another table: the handlers jumped to
    // check (`exits!`), so an unhooked call costs one read here.
    let regs: u64 = ctx.arg(0);
    let Ok(nr) = kernel::read_u64(regs + REGS_ORIG_AX) else {
        return 0;
    };
    if nr < u64::from(SYS_SLOTS) {
        // SAFETY: as in raw_sys_enter.
        unsafe { SYS_EXIT_PROGS.tail_call(&ctx, nr as u32) };
    }
    0
}

/// Both programs of a syscall's entry handler: the per-syscall tracepoint
/// and the raw one jumped to by `raw_sys_enter`.
macro_rules! enters {
    ($($tp:ident / $raw:ident => $handler:ident),* $(,)?) => {
        $(
            #[tracepoint]
            pub fn $tp(ctx: TracePointContext) -> u32 {
                $handler(&ctx);
                0
            }

            #[raw_tracepoint]
            pub fn $raw(ctx: RawTracePointContext) -> u32 {
                $handler(&RawEnter::new(&ctx));
                0
            }
        )*
    };
}

/// As `enters!`, for exits (the raw `sys_exit`'s second argument is the
/// result).
macro_rules! exits {
    ($handler:ident: $($tp:ident / $raw:ident),* $(,)?) => {
        $(
            #[tracepoint]
            pub fn $tp(ctx: TracePointContext) -> u32 {
                $handler(&ctx);
                0
            }

            #[raw_tracepoint]
            pub fn $raw(ctx: RawTracePointContext) -> u32 {
                if kernel::in_compat_syscall() {
                    return 0;
                }
                $handler(&RawExit {
                    ret: ctx.arg(1),
                    regs: ctx.arg(0),
                });
                0
            }
        )*
    };
}

#[inline(always)]
fn fill_header(h: &mut Header, kind: u16, syscall: u16, pid_tgid: u64) {
    h.kind = kind;
    h.syscall = syscall;
    h.flags = 0;
    // SAFETY: helper without preconditions.
    h.ts_ns = unsafe { bpf_ktime_get_boot_ns() };
    h.tid = pid_tgid as u32;
    h.tgid = (pid_tgid >> 32) as u32;
    h.ppid = kernel::current_ppid();
    refresh_creds(h);
    // SAFETY: helper without preconditions.
    h.cgroup_id = unsafe { bpf_get_current_cgroup_id() };
    h.ret = 0;
    h.verdict = 0;
}

/// comm, uid and gid: re-read after a successful exec (they change).
#[inline(always)]
fn refresh_creds(h: &mut Header) {
    let ug = bpf_get_current_uid_gid();
    h.uid = ug as u32;
    h.gid = (ug >> 32) as u32;
    h.comm = bpf_get_current_comm().unwrap_or([0; COMM_LEN]);
}

/// Copies a user path string; flags truncation or an unreadable pointer.
#[inline(always)]
fn read_path(src: u64, buf: &mut [u8; PATH_LEN], flags: &mut u32, trunc_flag: u32) {
    // SAFETY: the helper bounds the copy by the buffer and reports faults.
    match unsafe { bpf_probe_read_user_str_bytes(src as *const u8, buf) } {
        Ok(s) => {
            if s.len() >= PATH_LEN - 1 {
                *flags |= trunc_flag;
            }
        }
        Err(_) => {
            buf[0] = 0;
            *flags |= flags::PATH_UNREADABLE;
        }
    }
}

/// The DirChain a directory walk fills, by `kernel::slot`.
#[inline(always)]
pub fn dir_slot(slot: u32) -> Option<*mut DirChain> {
    // SAFETY (all arms): per-CPU scratch records, exclusively this program
    // run's; only field addresses are taken here.
    unsafe {
        match slot {
            kernel::slot::FILE => SCRATCH_FILE.get_ptr_mut(0).map(|e| &raw mut (*e).dir),
            kernel::slot::RENAME_OLD => SCRATCH_RENAME.get_ptr_mut(0).map(|e| &raw mut (*e).olddir),
            kernel::slot::RENAME_NEW => SCRATCH_RENAME.get_ptr_mut(0).map(|e| &raw mut (*e).newdir),
            kernel::slot::EXEC => SCRATCH_EXEC.get_ptr_mut(0).map(|e| &raw mut (*e).dir),
            kernel::slot::PENDING_FILE => {
                let tid = bpf_get_current_pid_tgid() as u32;
                PENDING_FILE.get_ptr_mut(&tid).map(|e| &raw mut (*e).dir)
            }
            _ => None,
        }
    }
}

/// open(2)'s O_PATH flag.
const O_PATH: u32 = 0o10000000;
const O_CREAT: u32 = 0o100;
const RENAME_EXCHANGE: u32 = 1 << 1;

/// Relative (or empty) paths need the directory they are relative to.
/// `first` is the path's first byte.
#[inline(always)]
fn fill_dir(first: u8, dirfd: i32, slot: u32) {
    if first == b'/' {
        if let Some(dir) = dir_slot(slot) {
            // SAFETY: per-CPU scratch record of this program run.
            unsafe {
                (*dir).status = dir_status::NONE;
                (*dir).len = 0;
                (*dir).depth = 0;
            }
        }
    } else {
        kernel::capture_dir(dirfd, slot);
    }
}

// ---------------------------------------------------------------- files

#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn file_enter(
    args_at_exit: bool,
    kind: u16,
    syscall: u16,
    dirfd: i32,
    path: u64,
    flags: u32,
    mode: u32,
    size: u64,
) {
    if kind == kind::RMDIR {
        bump_path_gen();
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    let op = match kind {
        kind::UNLINK => enforce::UNLINK_OP,
        kind::RMDIR => enforce::RMDIR_OP,
        kind::OPEN => enforce::OPEN_OP,
        _ => 0,
    };
    let (by_task, by_cgroup) = if op != 0 {
        enforce::subject_rules_split(tgid)
    } else {
        (0, 0)
    };
    let rules = by_task | by_cgroup;
    // A guarded task's open under the prefilter: keep only the arguments;
    // the exit decides from the file it got whether a record is built.
    let how = if kind == kind::OPEN {
        open_prefiltered(by_task, by_cgroup)
    } else {
        Prefilter::No
    };
    if how != Prefilter::No && enforce::config_value(config::LSM_ACTIVE) == 0 {
        enforce::contain(tgid);
        let args = OpenArgs {
            rules,
            rooted: u32::from(how == Prefilter::Rooted),
            path,
            dirfd,
            flags,
            mode,
            syscall: u32::from(syscall),
        };
        // Raw dispatch reads them again at exit from the saved registers:
        // no map write at all.
        if args_at_exit || OPEN_ARGS.insert(&(pid_tgid as u32), &args, 0).is_ok() {
            return;
        }
        // Full (threads leaked by a kernel path that skips the exit
        // tracepoint): the full record below, nothing lost.
    }
    let want = wants_with(tgid, kind, (op != 0).then_some(rules));
    if !want && rules == 0 {
        return;
    }
    let Some(ev) = SCRATCH_FILE.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: per-CPU scratch slot, exclusively ours for this program run.
    let ev = unsafe { &mut *ev };
    ev.dirfd = dirfd;
    ev.flags = flags;
    ev.mode = mode;
    ev.size = size;
    let mut hflags = 0;
    read_path(path, &mut ev.path, &mut hflags, flags::PATH_TRUNCATED);
    let mut verdict = enforce::check_path(rules, op, &ev.path, None, &mut hflags);
    if verdict == 0 && op & (enforce::UNLINK_OP | enforce::RMDIR_OP) != 0 {
        verdict = enforce::check_bare_removal(rules, op, dirfd, &ev.path);
    }
    // A task only enforced on still reports what was done to it.
    if !want && verdict == 0 {
        return;
    }
    // The header's costly part (clock, credentials) only for a kept record.
    fill_header(&mut ev.header, kind, syscall, pid_tgid);
    ev.header.flags = hflags;
    ev.header.verdict = verdict;
    fill_dir(ev.path[0], dirfd, kernel::slot::FILE);
    if PENDING_FILE.insert(&(pid_tgid as u32), ev, 0).is_ok() {
        bump(counter::PENDING_IN + pending::FILE);
    }
}

/// What a guarded task's open passed, kept from entry to exit (see
/// `file_enter`): small, so the common case costs one small map write.
/// No clock read: the record, if one is built, is stamped at exit.
#[repr(C)]
#[derive(Clone, Copy)]
struct OpenArgs {
    path: u64,
    rules: u32,
    /// 1: `Prefilter::Rooted`, else `Prefilter::Host`.
    rooted: u32,
    dirfd: i32,
    flags: u32,
    mode: u32,
    syscall: u32,
}

/// Not LRU: a full map refuses (and the open takes the full path), it
/// never evicts a thread's arguments. Thread exit removes leftovers.
#[map]
static OPEN_ARGS: HashMap<u32, OpenArgs> = HashMap::with_max_entries(16384, 0);

/// `f_path` of a `struct file`.
#[inline(always)]
fn read_kpath(file: u64) -> Option<kernel::KPath> {
    kernel::read_path(file + kernel::OFF_FILE_PATH.load()).ok()
}

/// Exit of a prefiltered open: nothing to send unless a rule could match
/// the file (or the open failed: no file to judge by).
#[inline(always)]
fn open_exit_prefiltered(ret: i64, args: &OpenArgs, pid_tgid: u64) {
    let rules = args.rules;
    let fptr = if ret >= 0 {
        kernel::fd_file(kernel::current_task(), ret as i32).ok()
    } else {
        None
    };
    let file = fptr.and_then(|f| read_kpath(f));
    if let (Some(f), Some(p), true) = (fptr, file, args.flags & O_CREAT != 0) {
        own::note_user(args.path, f, p, |path| enforce::volume_guards(rules, path));
    }
    let Some(verdict) = judge_open(
        file,
        rules,
        0,
        if args.rooted != 0 {
            Prefilter::Rooted
        } else {
            Prefilter::Host
        },
        args.flags,
    ) else {
        return;
    };
    let Some(ev) = SCRATCH_FILE.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: per-CPU scratch slot, exclusively ours for this program run.
    let ev = unsafe { &mut *ev };
    fill_header(&mut ev.header, kind::OPEN, args.syscall as u16, pid_tgid);
    ev.header.ret = ret;
    ev.header.verdict = verdict;
    ev.dirfd = args.dirfd;
    ev.flags = args.flags;
    ev.mode = args.mode;
    ev.size = 0;
    // Read again at exit: only the reported `raw` string; what a rule
    // matches for an opened file is walked from its descriptor below.
    read_path(
        args.path,
        &mut ev.path,
        &mut ev.header.flags,
        flags::PATH_TRUNCATED,
    );
    send_open(ev, file, args.dirfd);
}

/// Sends an open's record built in the `FILE` scratch slot, its path
/// walked from the file it got when there is one (`PATH_FROM_FD`), else
/// from the directory its string is relative to.
#[inline(always)]
fn send_open(ev: &mut FileEvent, file: Option<kernel::KPath>, dirfd: i32) {
    match file {
        Some(p) => {
            kernel::capture_object(p, kernel::slot::FILE);
            let st = ev.dir.status;
            if st == dir_status::COMPLETE || st == dir_status::TRUNCATED {
                ev.header.flags |= flags::PATH_FROM_FD;
            }
        }
        None => fill_dir(ev.path[0], dirfd, kernel::slot::FILE),
    }
    let used = ev.dir.len as usize;
    output_prefix(&*ev, FILE_EVENT_MIN + used);
}

/// Raw dispatch, an exit with no record parked at entry: a prefiltered
/// open is decided as `file_enter` would have parked it, with the
/// arguments read again from the registers and the rules as they are now.
#[inline(always)]
fn open_exit_from_regs(ctx: &impl Sys, pid_tgid: u64) {
    let (by_task, by_cgroup) = enforce::subject_rules_split((pid_tgid >> 32) as u32);
    let how = open_prefiltered(by_task, by_cgroup);
    if how == Prefilter::No || enforce::config_value(config::LSM_ACTIVE) != 0 {
        return;
    }
    open_exit_prefiltered_regs(ctx, pid_tgid, by_task | by_cgroup, how);
}

#[inline(always)]
fn open_exit_prefiltered_regs(ctx: &impl Sys, pid_tgid: u64, rules: u32, how: Prefilter) {
    let Some(call) = ctx.open_at_exit() else {
        return;
    };
    let args = OpenArgs {
        path: call.path,
        rules,
        rooted: u32::from(how == Prefilter::Rooted),
        dirfd: call.dirfd,
        flags: call.flags,
        mode: call.mode,
        syscall: u32::from(call.syscall),
    };
    open_exit_prefiltered(ret_of(ctx), &args, pid_tgid);
}

/// Exit of an open-like syscall.
#[inline(always)]
fn open_exit(ctx: &impl Sys) {
    if ctx.args_at_exit() && enforce::config_value(config::OPENS_AT_EXIT) != 0 {
        open_exit_whole(ctx);
    } else {
        file_exit(ctx);
    }
}

/// Raw dispatch with no entry program for opens (`OPENS_AT_EXIT`): the
/// whole open is judged and recorded here, from the registers the call
/// saved (what the kernel acted on) and, when it succeeded, the file it
/// got. As at entry, a kill rule on the path string kills; the signal
/// lands before the call returns to the task either way.
#[inline(always)]
fn open_exit_whole(ctx: &impl Sys) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    let (by_task, by_cgroup) = enforce::subject_rules_split(tgid);
    let rules = by_task | by_cgroup;
    let how = open_prefiltered(by_task, by_cgroup);
    if how != Prefilter::No {
        enforce::contain(tgid);
        open_exit_prefiltered_regs(ctx, pid_tgid, rules, how);
        return;
    }
    let want = wants_with(tgid, kind::OPEN, Some(rules));
    if !want && rules == 0 {
        return;
    }
    let Some(call) = ctx.open_at_exit() else {
        return;
    };
    let ret = ret_of(ctx);
    let Some(ev) = SCRATCH_FILE.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: per-CPU scratch slot, exclusively ours for this program run.
    let ev = unsafe { &mut *ev };
    let mut hflags = 0;
    read_path(call.path, &mut ev.path, &mut hflags, flags::PATH_TRUNCATED);
    let mut verdict = enforce::check_path(rules, enforce::OPEN_OP, &ev.path, None, &mut hflags);
    let mut file = None;
    if rules != 0 && ret >= 0 {
        let fptr = kernel::fd_file(kernel::current_task(), ret as i32).ok();
        file = fptr.and_then(|f| read_kpath(f));
        if let (Some(f), Some(p), true) = (fptr, file, call.flags & O_CREAT != 0) {
            own::note_copied(&ev.path, f, p, |path| enforce::volume_guards(rules, path));
        }
        if let Some(v) = judge_open(file, rules, verdict, Prefilter::No, call.flags) {
            verdict = v;
        }
    }
    // A task only enforced on still reports what was done to it.
    if !want && verdict == 0 {
        return;
    }
    fill_header(&mut ev.header, kind::OPEN, call.syscall, pid_tgid);
    ev.header.flags = hflags;
    ev.header.ret = ret;
    ev.header.verdict = verdict;
    ev.dirfd = call.dirfd;
    ev.flags = call.flags;
    ev.mode = call.mode;
    ev.size = 0;
    send_open(ev, file, call.dirfd);
}

#[inline(always)]
fn file_exit(ctx: &impl Sys) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tid = pid_tgid as u32;
    if !ctx.args_at_exit() {
        if let Some(args) = OPEN_ARGS.get_ptr(&tid) {
            // SAFETY: this thread's own entry, copied out before removal.
            let args = unsafe { *args };
            let _ = OPEN_ARGS.remove(&tid);
            open_exit_prefiltered(ret_of(ctx), &args, pid_tgid);
            return;
        }
    }
    let Some(evp) = PENDING_FILE.get_ptr_mut(&tid) else {
        if ctx.args_at_exit() {
            open_exit_from_regs(ctx, pid_tgid);
        }
        return;
    };
    let ret = ret_of(ctx);
    // SAFETY (all accesses through `evp`): the entry belongs to this
    // thread, which is running this program; no one else writes it. Raw
    // pointer accesses, because the walk below writes the same record.
    unsafe {
        (*evp).header.ret = ret;
        // A guarded task's successful open: report the file it really got,
        // walked from the new descriptor, not only the string it passed.
        let (by_task, by_cgroup) = if (*evp).header.kind == kind::OPEN && ret >= 0 {
            enforce::subject_rules_split((*evp).header.tgid)
        } else {
            (0, 0)
        };
        let rules = by_task | by_cgroup;
        if rules != 0 {
            let fptr = kernel::fd_file(kernel::current_task(), ret as i32).ok();
            let file = fptr.and_then(|f| read_kpath(f));
            if let (Some(f), Some(p), true) = (fptr, file, (*evp).flags & O_CREAT != 0) {
                own::note_copied(&(*evp).path, f, p, |path| {
                    enforce::volume_guards(rules, path)
                });
            }
            let prior = (*evp).header.verdict;
            let Some(verdict) = judge_open(
                file,
                rules,
                prior,
                open_prefiltered(by_task, by_cgroup),
                (*evp).flags,
            ) else {
                let _ = PENDING_FILE.remove(&tid);
                bump(counter::PENDING_OUT + pending::FILE);
                return;
            };
            (*evp).header.verdict = verdict;
            if let Some(p) = file {
                kernel::capture_object(p, kernel::slot::PENDING_FILE);
            }
            let st = core::ptr::read_volatile(&raw const (*evp).dir.status);
            if st == dir_status::COMPLETE || st == dir_status::TRUNCATED {
                (*evp).header.flags |= flags::PATH_FROM_FD;
            }
        }
        let used = core::ptr::read_volatile(&raw const (*evp).dir.len) as usize;
        output_prefix(&*evp, FILE_EVENT_MIN + used);
    }
    let _ = PENDING_FILE.remove(&tid);
    bump(counter::PENDING_OUT + pending::FILE);
}

/// A guarded task's successful open: its verdict (`prior`, from entry or
/// an LSM hook, plus the file it got, by identity), or None when the
/// prefilter keeps the record in the kernel: nothing about the file can
/// match a rule (the common case for an agent's opens). A file that could
/// not be looked up always streams.
#[inline(always)]
fn judge_open(
    file: Option<kernel::KPath>,
    rules: u32,
    prior: u32,
    prefilter: Prefilter,
    open_flags: u32,
) -> Option<u32> {
    let Some(p) = file else {
        return Some(prior);
    };
    // An O_PATH descriptor reads and writes nothing (a reopen through
    // /proc/self/fd is an open of its own): no verdict, and no record a
    // rule could match.
    if open_flags & O_PATH != 0 {
        if prefilter == Prefilter::No {
            return Some(prior);
        }
        bump(counter::PREFILTERED);
        return None;
    }
    if prefilter == Prefilter::No {
        return Some(prior | enforce::check_opened(p, rules));
    }
    // One lookup of the file's own inode answers both the verdict and the
    // prefilter in the common case: no rule has an entry for it.
    let op = u64::from(enforce::OPEN_OP);
    let dev = match lsm::inode_key(p.dentry, None) {
        Ok(Some(key)) if lsm::key_hit(key, u32::MAX, op, true).is_none() => Some(key.dev),
        Ok(None) => None,
        _ => return Some(prior | enforce::check_opened(p, rules)),
    };
    if prior != 0 {
        return Some(prior);
    }
    if !open_may_match(p, prefilter, dev) {
        bump(counter::PREFILTERED);
        return None;
    }
    // A rule could match: decided here as an unfiltered open is, by the
    // file's ancestors (a file created in a protected directory since the
    // last inode refresh has no entry of its own; its directory has).
    Some(enforce::check_opened(p, rules))
}

/// How a task's opens are prefiltered.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Prefilter {
    No,
    /// A guarded process outside a guarded container: the file's identity
    /// (inode entries) and the path rules name agree.
    Host,
    /// In a guarded container, path rules are about the container's paths
    /// (its image, its `/run/secrets` mounts), which the daemon can't
    /// resolve to inodes: the file's first path component below the
    /// container's root is compared with the rules' instead.
    Rooted,
}

#[inline(always)]
fn open_prefiltered(by_task: u32, by_cgroup: u32) -> Prefilter {
    if by_task | by_cgroup == 0
        || enforce::config_value(config::PREFILTER_KINDS) & kind_bit(kind::OPEN) == 0
    {
        Prefilter::No
    } else if by_cgroup == 0 {
        Prefilter::Host
    } else if enforce::config_value(config::ROOTED_OPENS) != 0 {
        Prefilter::Rooted
    } else {
        Prefilter::No
    }
}

/// Could a rule match this open (prefilter)? The file's directory is
/// protected (a file created there since the last inode refresh), its
/// name is one rules name wherever it is (`.env`), or (in a container)
/// its first path component starts a rule's path. Any rule's entry
/// counts, not only the task's own rules: a rule that selects the program
/// just exec'd gets its bit only once the daemon has seen the exec. The
/// file's own inode entry was asked by the caller.
#[inline(always)]
fn open_may_match(p: kernel::KPath, how: Prefilter, dev: Option<u32>) -> bool {
    let op = u64::from(enforce::OPEN_OP);
    let Ok(parent) = kernel::read_u64(p.dentry + kernel::OFF_DENTRY_PARENT.load()) else {
        return true;
    };
    let parent_ino = match lsm::inode_key(parent, dev) {
        Ok(Some(key)) if lsm::key_hit(key, u32::MAX, op, false).is_some() => return true,
        Ok(Some(key)) => key.ino,
        Ok(None) => 0,
        Err(_) => return true,
    };
    if basename_hit(p.dentry, false) {
        return true;
    }
    how == Prefilter::Rooted && top_may_match(p, parent, parent_ino)
}

/// The last directory (per CPU) whose first component below the task's
/// root starts no rule path: an agent opens many files of one directory,
/// and the walk up to the root is the costliest part of the prefilter.
/// Keyed by everything the answer rests on: the directory (its dentry
/// and inode number: a freed dentry reused for another directory differs), the mount, the task's root, the rules (`TOP_EPOCH`) and
/// every rename or rmdir anywhere since (`PATH_GEN`: they move or free
/// directories).
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq)]
struct TopCache {
    dir: u64,
    dir_ino: u64,
    mnt: u64,
    root_dentry: u64,
    root_mnt: u64,
    epoch: u64,
    gen: u64,
}

#[map]
static TOP_CACHE: PerCpuArray<TopCache> = PerCpuArray::with_max_entries(1, 0);

/// When a task last started a rename or rmdir (see `TopCache`): a clock
/// value, so a plain store from any CPU always changes it (no atomic
/// add on this target).
#[map]
static PATH_GEN: Array<u64> = Array::with_max_entries(1, 0);

#[inline(always)]
fn bump_path_gen() {
    if let Some(g) = PATH_GEN.get_ptr_mut(0) {
        // SAFETY: an array value, valid while the program runs; an aligned
        // 8-byte store, never torn.
        unsafe { core::ptr::write_volatile(g, bpf_ktime_get_boot_ns()) };
    }
}

#[inline(always)]
fn path_gen() -> u64 {
    PATH_GEN.get_ptr(0).map_or(0, |g| {
        // SAFETY: as in bump_path_gen.
        unsafe { core::ptr::read_volatile(g) }
    })
}

/// Does the file's first path component below the task's root start a
/// rule's path (`BASENAMES` entry `/name`)? Unknown counts as yes.
#[inline(always)]
fn top_may_match(p: kernel::KPath, dir: u64, dir_ino: u64) -> bool {
    let Ok(root) = kernel::guarded_container_root() else {
        return true;
    };
    // Read before the walk: a rename meanwhile makes the entry stale.
    let now = TopCache {
        dir,
        dir_ino,
        mnt: p.mnt,
        root_dentry: root.dentry,
        root_mnt: root.mnt,
        epoch: u64::from(enforce::config_value(config::TOP_EPOCH)),
        gen: path_gen(),
    };
    let cache = TOP_CACHE.get_ptr_mut(0);
    // SAFETY: per-CPU value, ours for this program run.
    if cache.is_some_and(|c| unsafe { *c } == now) {
        return false;
    }
    let Some(top) = kernel::top_component(p, root) else {
        return true;
    };
    let hit = basename_hit(top.dentry, true);
    if !hit && top.per_directory {
        if let Some(c) = cache {
            // SAFETY: as above.
            unsafe { *c = now };
        }
    }
    hit
}

/// Is `dentry`'s name in `BASENAMES` (as a first component: `/name`)?
/// Unknown counts as yes.
#[inline(always)]
fn basename_hit(dentry: u64, top: bool) -> bool {
    let Ok(name) =
        kernel::read_u64(dentry + kernel::OFF_DENTRY_NAME.load() + kernel::OFF_QSTR_NAME.load())
    else {
        return true;
    };
    // A name is at least one byte and its NUL: two bytes are always there.
    // SAFETY: the helper checks the kernel address and reports faults.
    let Ok(head) = (unsafe { aya_ebpf::helpers::bpf_probe_read_kernel(name as *const [u8; 2]) })
    else {
        return true;
    };
    let pair = if top {
        u32::from(b'/') << 8 | u32::from(head[0])
    } else {
        u32::from(head[0]) << 8 | u32::from(head[1])
    };
    match BASENAME_PAIRS.get(pair >> 5) {
        Some(w) if *w & (1 << (pair & 31)) == 0 => return false,
        _ => {}
    }
    let Some(key) = BASENAME_KEY.get_ptr_mut(0) else {
        return true;
    };
    // SAFETY: per-CPU scratch key, ours for this program run.
    let key = unsafe { &mut *key };
    key.data = [0; BASENAME_LEN];
    let dst = if top {
        key.data[0] = b'/';
        &mut key.data[1..]
    } else {
        &mut key.data[..]
    };
    // SAFETY: the helper bounds the copy and reports faults.
    if unsafe { aya_ebpf::helpers::bpf_probe_read_kernel_str_bytes(name as *const u8, dst) }
        .is_err()
    {
        return true;
    }
    key.prefix_len = (BASENAME_LEN * 8) as u32;
    BASENAMES.get(key).is_some()
}

/// The open-like syscalls: one set of arguments (`open_call`).
#[inline(always)]
fn open_enter(ctx: &impl Sys, syscall: u16) {
    let c = open_call(syscall, ctx);
    file_enter(
        ctx.args_at_exit(),
        kind::OPEN,
        c.syscall,
        c.dirfd,
        c.path,
        c.flags,
        c.mode,
        0,
    );
}

#[inline(always)]
fn enter_open(ctx: &impl Sys) {
    open_enter(ctx, syscall::OPEN);
}

#[inline(always)]
fn enter_openat(ctx: &impl Sys) {
    open_enter(ctx, syscall::OPENAT);
}

#[inline(always)]
fn enter_openat2(ctx: &impl Sys) {
    open_enter(ctx, syscall::OPENAT2);
}

#[inline(always)]
fn enter_creat(ctx: &impl Sys) {
    open_enter(ctx, syscall::CREAT);
}

#[inline(always)]
fn enter_unlink(ctx: &impl Sys) {
    file_enter(
        ctx.args_at_exit(),
        kind::UNLINK,
        syscall::UNLINK,
        AT_FDCWD,
        arg(ctx, 0),
        0,
        0,
        0,
    );
}

#[inline(always)]
fn enter_unlinkat(ctx: &impl Sys) {
    let flag = arg(ctx, 2);
    let k = if flag & AT_REMOVEDIR != 0 {
        kind::RMDIR
    } else {
        kind::UNLINK
    };
    file_enter(
        ctx.args_at_exit(),
        k,
        syscall::UNLINKAT,
        arg(ctx, 0) as i32,
        arg(ctx, 1),
        flag as u32,
        0,
        0,
    );
}

#[inline(always)]
fn enter_rmdir(ctx: &impl Sys) {
    file_enter(
        ctx.args_at_exit(),
        kind::RMDIR,
        syscall::RMDIR,
        AT_FDCWD,
        arg(ctx, 0),
        0,
        0,
        0,
    );
}

#[inline(always)]
fn enter_truncate(ctx: &impl Sys) {
    file_enter(
        ctx.args_at_exit(),
        kind::TRUNCATE,
        syscall::TRUNCATE,
        AT_FDCWD,
        arg(ctx, 0),
        0,
        0,
        arg(ctx, 1),
    );
}

exits!(open_exit: sys_exit_open / raw_exit_open, sys_exit_openat / raw_exit_openat,
    sys_exit_openat2 / raw_exit_openat2, sys_exit_creat / raw_exit_creat);
exits!(file_exit: sys_exit_unlink / raw_exit_unlink, sys_exit_unlinkat / raw_exit_unlinkat,
    sys_exit_rmdir / raw_exit_rmdir, sys_exit_truncate / raw_exit_truncate);

// --------------------------------------------------------------- rename

#[inline(always)]
fn rename_enter(syscall: u16, olddirfd: i32, old: u64, newdirfd: i32, new: u64, flags: u32) {
    bump_path_gen();
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    let want = wants(tgid, kind::RENAME);
    let rules = enforce::subject_rules(tgid);
    if !want && rules == 0 {
        return;
    }
    let Some(ev) = SCRATCH_RENAME.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: per-CPU scratch slot, exclusively ours for this program run.
    let ev = unsafe { &mut *ev };
    fill_header(&mut ev.header, kind::RENAME, syscall, pid_tgid);
    ev.olddirfd = olddirfd;
    ev.newdirfd = newdirfd;
    ev.flags = flags;
    read_path(
        old,
        &mut ev.oldpath,
        &mut ev.header.flags,
        flags::PATH_TRUNCATED,
    );
    read_path(
        new,
        &mut ev.newpath,
        &mut ev.header.flags,
        flags::PATH2_TRUNCATED,
    );
    // A guarded task moving anything but a file it created itself may be
    // moving a directory of one: the container's own files stop counting.
    if rules != 0 && (flags & RENAME_EXCHANGE != 0 || !own::is_own(&ev.oldpath)) {
        own::reset_epoch();
    }
    ev.header.verdict = enforce::check_path(
        rules,
        enforce::RENAME_OP,
        &ev.oldpath,
        Some(&ev.newpath),
        &mut ev.header.flags,
    );
    if !want && ev.header.verdict == 0 {
        return;
    }
    fill_dir(ev.oldpath[0], olddirfd, kernel::slot::RENAME_OLD);
    fill_dir(ev.newpath[0], newdirfd, kernel::slot::RENAME_NEW);
    if PENDING_RENAME.insert(&(pid_tgid as u32), ev, 0).is_ok() {
        bump(counter::PENDING_IN + pending::RENAME);
    }
}

#[inline(always)]
fn rename_exit(ctx: &impl Sys) {
    let tid = bpf_get_current_pid_tgid() as u32;
    let Some(ev) = PENDING_RENAME.get_ptr_mut(&tid) else {
        return;
    };
    // SAFETY: this thread's own entry, see file_exit.
    let ev = unsafe { &mut *ev };
    ev.header.ret = ret_of(ctx);
    output_prefix(&*ev, RENAME_EVENT_MIN + ev.newdir.len as usize);
    let _ = PENDING_RENAME.remove(&tid);
    bump(counter::PENDING_OUT + pending::RENAME);
}

#[inline(always)]
fn enter_rename(ctx: &impl Sys) {
    rename_enter(
        syscall::RENAME,
        AT_FDCWD,
        arg(ctx, 0),
        AT_FDCWD,
        arg(ctx, 1),
        0,
    );
}

#[inline(always)]
fn enter_renameat(ctx: &impl Sys) {
    rename_enter(
        syscall::RENAMEAT,
        arg(ctx, 0) as i32,
        arg(ctx, 1),
        arg(ctx, 2) as i32,
        arg(ctx, 3),
        0,
    );
}

#[inline(always)]
fn enter_renameat2(ctx: &impl Sys) {
    rename_enter(
        syscall::RENAMEAT2,
        arg(ctx, 0) as i32,
        arg(ctx, 1),
        arg(ctx, 2) as i32,
        arg(ctx, 3),
        arg(ctx, 4) as u32,
    );
}

exits!(rename_exit: sys_exit_rename / raw_exit_rename, sys_exit_renameat / raw_exit_renameat,
    sys_exit_renameat2 / raw_exit_renameat2);

// ----------------------------------------------------------------- exec

#[inline(always)]
fn exec_enter(syscall: u16, dirfd: i32, path: u64, argv: u64, flags: u32) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    let want = wants(tgid, kind::EXEC);
    let rules = enforce::subject_rules(tgid);
    if !want && rules == 0 {
        return;
    }
    let Some(ev) = SCRATCH_EXEC.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: per-CPU scratch slot, exclusively ours for this program run.
    let ev = unsafe { &mut *ev };
    fill_header(&mut ev.header, kind::EXEC, syscall, pid_tgid);
    ev.dirfd = dirfd;
    ev.flags = flags;
    read_path(
        path,
        &mut ev.path,
        &mut ev.header.flags,
        flags::PATH_TRUNCATED,
    );
    let task = kernel::current_task();
    ev.stdin_pipe = kernel::fd_pipe(task, 0);
    ev.stdout_pipe = kernel::fd_pipe(task, 1);
    let mut unused = 0;
    ev.header.verdict = enforce::check_path(rules, enforce::EXEC_OP, &ev.path, None, &mut unused);
    // A pipe rule decides at exit, on the new program: keep the record.
    let pipes = rules & enforce::config_value(config::PIPE_RULES) != 0
        && (ev.stdin_pipe != 0 || ev.stdout_pipe != 0);
    if !want && ev.header.verdict == 0 && !pipes {
        return;
    }
    fill_dir(ev.path[0], dirfd, kernel::slot::EXEC);
    read_argv(argv, ev);
    if PENDING_EXEC.insert(&(pid_tgid as u32), ev, 0).is_ok() {
        bump(counter::PENDING_IN + pending::EXEC);
    }
}

/// Copies up to MAX_ARGS arguments, NUL-separated, into `ev.argv`.
#[inline(always)]
fn read_argv(argv: u64, ev: &mut ExecEvent) {
    let mut len: usize = 0;
    let mut argc: u32 = 0;
    let mut more = true;
    for i in 0..MAX_ARGS {
        // SAFETY: user read through the helper; faults become errors.
        let p = match unsafe { bpf_probe_read_user((argv + 8 * i as u64) as *const u64) } {
            Ok(p) => p,
            Err(_) => 0,
        };
        if p == 0 {
            more = false;
            break;
        }
        if len >= ARGV_LEN {
            break;
        }
        // The mask proves off + ARG_LEN <= ARGV_BUF to the verifier.
        let off = len & (ARGV_LEN - 1);
        // SAFETY: bounded by the slice; faults become errors.
        match unsafe {
            bpf_probe_read_user_str_bytes(p as *const u8, &mut ev.argv[off..off + ARG_LEN])
        } {
            Ok(s) => {
                if s.len() >= ARG_LEN - 1 {
                    ev.header.flags |= flags::ARGV_TRUNCATED;
                }
                len = off + s.len() + 1;
                argc += 1;
            }
            Err(_) => {
                more = false;
                break;
            }
        }
    }
    if more {
        // Stopped on a budget: truncated only if another argument follows.
        // SAFETY: user read through the helper.
        let next =
            unsafe { bpf_probe_read_user((argv + 8 * argc as u64) as *const u64) }.unwrap_or(0);
        if next != 0 {
            ev.header.flags |= flags::ARGV_TRUNCATED;
        }
    }
    ev.argc = argc;
    ev.argv_len = len as u32;
}

#[inline(always)]
fn exec_exit(ctx: &impl Sys) {
    let tid = bpf_get_current_pid_tgid() as u32;
    let Some(ev) = PENDING_EXEC.get_ptr_mut(&tid) else {
        return;
    };
    // SAFETY: this thread's own entry, see file_exit.
    let ev = unsafe { &mut *ev };
    ev.header.ret = ret_of(ctx);
    if ev.header.ret == 0 {
        refresh_creds(&mut ev.header);
        if ev.header.verdict == 0 && (ev.stdin_pipe != 0 || ev.stdout_pipe != 0) {
            let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
            ev.header.verdict = enforce::check_pipes(
                enforce::subject_rules(tgid),
                ev.stdin_pipe,
                ev.stdout_pipe,
                tgid,
            );
        }
    }
    output_prefix(&*ev, EXEC_EVENT_MIN + ev.dir.len as usize);
    let _ = PENDING_EXEC.remove(&tid);
    bump(counter::PENDING_OUT + pending::EXEC);
}

#[inline(always)]
fn enter_execve(ctx: &impl Sys) {
    exec_enter(syscall::EXECVE, AT_FDCWD, arg(ctx, 0), arg(ctx, 1), 0);
}

#[inline(always)]
fn enter_execveat(ctx: &impl Sys) {
    exec_enter(
        syscall::EXECVEAT,
        arg(ctx, 0) as i32,
        arg(ctx, 1),
        arg(ctx, 2),
        arg(ctx, 4) as u32,
    );
}

exits!(exec_exit: sys_exit_execve / raw_exit_execve, sys_exit_execveat / raw_exit_execveat);

// ------------------------------------------------------------- network

#[inline(always)]
fn net_enter(syscall: u16, fd: i32, addr: u64, addrlen: u32, len: u64, msg_flags: u32) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let k = if syscall == syscall::CONNECT {
        kind::CONNECT
    } else {
        kind::SEND
    };
    let tgid = (pid_tgid >> 32) as u32;
    let want = wants(tgid, k);
    let rules = enforce::subject_rules(tgid);
    if addr == 0 || (!want && rules == 0) {
        return;
    }
    // SAFETY: user read through the helper; faults become errors.
    let Ok(family) = (unsafe { bpf_probe_read_user(addr as *const u16) }) else {
        return;
    };
    if family != AF_INET && family != AF_INET6 && family != AF_UNIX {
        return;
    }
    let Some(ev) = SCRATCH_NET.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: per-CPU scratch slot, exclusively ours for this program run.
    let ev = unsafe { &mut *ev };
    // The rest of the header (clock, credentials, parent: the costly part)
    // only once the record is kept, below.
    ev.header.flags = 0;
    ev.header.verdict = 0;
    ev.fd = fd;
    ev.msg_flags = msg_flags;
    ev.len = len;
    ev.family = family;
    ev.addrlen = addrlen;
    ev.port = 0;
    ev.addr = [0; 16];
    ev.unix_path[0] = 0;
    ev.dns_rules = 0;
    ev.subject = 0;
    let ok = match family {
        AF_INET => {
            // sockaddr_in: family(2) port(2, BE) addr(4)
            // SAFETY: user reads through the helper.
            let port = unsafe { bpf_probe_read_user((addr + 2) as *const [u8; 2]) };
            let ip = unsafe { bpf_probe_read_user((addr + 4) as *const [u8; 4]) };
            match (port, ip) {
                (Ok(p), Ok(ip)) => {
                    ev.port = u16::from_be_bytes(p);
                    ev.addr[..4].copy_from_slice(&ip);
                    true
                }
                _ => false,
            }
        }
        AF_INET6 => {
            // sockaddr_in6: family(2) port(2, BE) flowinfo(4) addr(16)
            // SAFETY: user reads through the helper.
            let port = unsafe { bpf_probe_read_user((addr + 2) as *const [u8; 2]) };
            let ok = unsafe { bpf_probe_read_user_buf((addr + 8) as *const u8, &mut ev.addr) };
            match (port, ok) {
                (Ok(p), Ok(())) => {
                    ev.port = u16::from_be_bytes(p);
                    true
                }
                _ => false,
            }
        }
        _ => {
            // sun_path may be shorter than 108 bytes in user memory; fall
            // back to a string read when the full read faults.
            // SAFETY: user reads through the helper.
            unsafe { bpf_probe_read_user_buf((addr + 2) as *const u8, &mut ev.unix_path) }.is_ok()
                || unsafe {
                    bpf_probe_read_user_str_bytes((addr + 2) as *const u8, &mut ev.unix_path)
                }
                .is_ok()
        }
    };
    if !ok {
        ev.header.flags |= flags::ADDR_UNREADABLE;
    } else if rules != 0 && family != AF_UNIX {
        let mut a = ev.addr;
        if family == AF_INET {
            // The kernel maps keep IPv4 as ::ffff:a.b.c.d.
            a = [
                0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, a[0], a[1], a[2], a[3],
            ];
        }
        if rules & dns::domain_rules() != 0 {
            // Said in the record so userspace judges a domain rule as the
            // sock_addr hook will (a DNS answer let this address through).
            ev.subject = enforce::subject_key();
            ev.dns_rules = dns::allowed(ev.subject, &a);
        }
        let (verdict, matched) = enforce::check_net(rules, &a, ev.port);
        ev.header.verdict = verdict;
        // Any rule's destination counts for the prefilter (see
        // open_may_match): not only the task's own rules.
        let others = enforce::config_value(config::NET_SLOTS) & !rules;
        let matched = matched
            || (others != 0 && enforce::net_decide(others, &a, ev.port).is_some())
            // Refused by a taint: said, with why.
            || enforce::tainted(tgid);
        // No network rule of this guarded task matches the destination:
        // the record stays in the kernel (an agent's loopback traffic).
        if !matched && enforce::config_value(config::PREFILTER_KINDS) & kind_bit(k) != 0 {
            bump(counter::PREFILTERED);
            return;
        }
    }
    if !want && ev.header.verdict == 0 {
        return;
    }
    let (hflags, verdict) = (ev.header.flags, ev.header.verdict);
    fill_header(&mut ev.header, k, syscall, pid_tgid);
    ev.header.flags = hflags;
    ev.header.verdict = verdict;
    if PENDING_NET.insert(&(pid_tgid as u32), ev, 0).is_ok() {
        bump(counter::PENDING_IN + pending::NET);
    }
}

#[inline(always)]
fn net_exit(ctx: &impl Sys) {
    let tid = bpf_get_current_pid_tgid() as u32;
    let Some(ev) = PENDING_NET.get_ptr_mut(&tid) else {
        return;
    };
    // SAFETY: this thread's own entry, see file_exit.
    let ev = unsafe { &mut *ev };
    ev.header.ret = ret_of(ctx);
    let unix = if ev.family == AF_UNIX { URGENT_UNIX } else { 0 };
    // A record flood isolation drops still frees its entry below.
    if admit(&ev.header)
        && EVENTS
            .output::<NetEvent>(&*ev, out_flags(kind_bit(ev.header.kind) | unix))
            .is_err()
    {
        bump(counter::LOST);
    }
    let _ = PENDING_NET.remove(&tid);
    bump(counter::PENDING_OUT + pending::NET);
}

/// Every syscall of every task, to catch the 32-bit ABI (`int 0x80`),
/// which the `syscalls:*` tracepoints never see on x86. One kernel read
/// for a 64-bit syscall; a guarded task's 32-bit syscall is reported and,
/// under a `compat_syscall` kill rule, killed before it runs.
#[tracepoint]
pub fn sys_enter(ctx: TracePointContext) -> u32 {
    if !kernel::in_compat_syscall() {
        return 0;
    }
    // raw_syscalls:sys_enter: `long id` at offset 8.
    // SAFETY: read inside the tracepoint record via bpf_probe_read.
    compat_enter(unsafe { ctx.read_at::<i64>(8) }.unwrap_or(-1));
    0
}

/// A 32-bit ABI syscall `nr` (the caller checked): a guarded task's is
/// reported and, under a `compat_syscall` kill rule, killed before it runs.
#[inline(always)]
fn compat_enter(nr: i64) {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    let rules = enforce::subject_rules(tgid);
    if rules == 0 {
        // Only guarded tasks: 32-bit programs of the host are not news.
        return;
    }
    let verdict = enforce::check_compat(rules);
    emit_proc(
        kind::COMPAT_SYSCALL,
        syscall::COMPAT,
        0,
        0,
        nr as u64,
        0,
        0,
        verdict,
    );
}

/// A quarantined process must not start another: killed at the entry of
/// fork/clone, the fork itself fails (copy_process gives up on a pending
/// fatal signal), so no child of it ever runs.
#[inline(always)]
fn fork_enter() -> u32 {
    enforce::contain((bpf_get_current_pid_tgid() >> 32) as u32);
    0
}

#[inline(always)]
fn enter_clone(_ctx: &impl Sys) {
    fork_enter();
}

#[inline(always)]
fn enter_clone3(_ctx: &impl Sys) {
    fork_enter();
}

#[inline(always)]
fn enter_fork(_ctx: &impl Sys) {
    fork_enter();
}

#[inline(always)]
fn enter_vfork(_ctx: &impl Sys) {
    fork_enter();
}

/// socket(2): only raw and packet sockets are reported (they send around
/// the address hooks); every other socket costs a compare.
#[inline(always)]
fn enter_socket(ctx: &impl Sys) {
    let family = arg(ctx, 0) as i32;
    let ty = arg(ctx, 1) as i32;
    let protocol = arg(ctx, 2) as u32;
    if !enforce::raw_socket(family, ty) {
        return;
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    let verdict = enforce::check_packet_socket(enforce::subject_rules(tgid), family);
    if !wants(tgid, kind::SOCKET) && verdict == 0 {
        return;
    }
    let Some(ev) = SCRATCH_NET.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: per-CPU scratch slot, exclusively ours for this program run.
    let ev = unsafe { &mut *ev };
    fill_header(&mut ev.header, kind::SOCKET, syscall::SOCKET, pid_tgid);
    ev.header.verdict = verdict;
    ev.fd = ty;
    ev.msg_flags = protocol;
    ev.len = 0;
    ev.family = family as u16;
    ev.addrlen = 0;
    ev.port = 0;
    ev.addr = [0; 16];
    ev.unix_path[0] = 0;
    if PENDING_NET.insert(&(pid_tgid as u32), ev, 0).is_ok() {
        bump(counter::PENDING_IN + pending::NET);
    }
}

#[inline(always)]
fn enter_connect(ctx: &impl Sys) {
    net_enter(
        syscall::CONNECT,
        arg(ctx, 0) as i32,
        arg(ctx, 1),
        arg(ctx, 2) as u32,
        0,
        0,
    );
}

#[inline(always)]
fn enter_sendto(ctx: &impl Sys) {
    // sendto(fd, buf, len, flags, addr, addrlen): only with a destination.
    net_enter(
        syscall::SENDTO,
        arg(ctx, 0) as i32,
        arg(ctx, 4),
        arg(ctx, 5) as u32,
        arg(ctx, 2),
        arg(ctx, 3) as u32,
    );
}

#[inline(always)]
fn enter_sendmsg(ctx: &impl Sys) {
    // struct user_msghdr { void *msg_name; int msg_namelen; ... }
    let msg = arg(ctx, 1);
    // SAFETY: user reads through the helper.
    let name = unsafe { bpf_probe_read_user(msg as *const u64) }.unwrap_or(0);
    let namelen = unsafe { bpf_probe_read_user((msg + 8) as *const u32) }.unwrap_or(0);
    net_enter(
        syscall::SENDMSG,
        arg(ctx, 0) as i32,
        name,
        namelen,
        0,
        arg(ctx, 2) as u32,
    );
}

exits!(net_exit: sys_exit_connect / raw_exit_connect, sys_exit_sendto / raw_exit_sendto,
    sys_exit_sendmsg / raw_exit_sendmsg, sys_exit_socket / raw_exit_socket);

// ------------------------------------------------------ process lifecycle

#[inline(always)]
fn emit_proc(
    kind: u16,
    syscall: u16,
    child_pid: u32,
    exit_code: u32,
    arg: u64,
    flags: u32,
    ret: i64,
    verdict: u32,
) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let mut ev = ProcEvent::default();
    fill_header(&mut ev.header, kind, syscall, pid_tgid);
    ev.header.flags = flags;
    ev.header.verdict = verdict;
    ev.header.ret = ret;
    ev.child_pid = child_pid;
    ev.exit_code = exit_code;
    ev.arg = arg;
    if EVENTS
        .output::<ProcEvent>(&ev, out_flags(kind_bit(kind)))
        .is_err()
    {
        bump(counter::LOST);
    }
}

/// task:task_newtask runs in the parent for each new task; children of a
/// process with a filter entry inherit it here, before they can run.
#[tracepoint]
pub fn task_newtask(ctx: TracePointContext) -> u32 {
    // SAFETY: reads inside the tracepoint record.
    let child = unsafe { ctx.read_at::<i32>(8) }.unwrap_or(0) as u32;
    let clone_flags = unsafe { ctx.read_at::<u64>(TP_NEWTASK_FLAGS.load() as usize) }.unwrap_or(0);
    if clone_flags & CLONE_THREAD != 0 {
        return 0;
    }
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    let mut full = 0;
    // SAFETY: value copied out immediately.
    if let Some(mask) = unsafe { TASK_FILTER.get(&tgid) }.copied() {
        if TASK_FILTER.insert(&child, &mask, 0).is_err() {
            bump(counter::FULL_TASK_FILTER);
            full = map_full::TASK_FILTER;
        }
    }
    if !enforce::inherit(tgid, child) {
        full = map_full::ENFORCE_TASKS;
    }
    enforce::inherit_quarantine(tgid, child);
    enforce::inherit_taint(tgid, child);
    // A child left out of a map is always reported: never silent.
    if wants(tgid, kind::FORK) || full != 0 {
        emit_proc(
            kind::FORK,
            syscall::CLONE,
            child,
            full,
            clone_flags,
            if full != 0 { flags::MAP_FULL } else { 0 },
            child as i64,
            0,
        );
    }
    0
}

/// cgroup v2 id -> its path (see `CGROUP_PATH_LEN`). LRU: the oldest
/// cgroups make room; the daemon falls back on /proc for those.
#[map]
static CGROUP_PATHS: LruHashMap<u64, [u8; CGROUP_PATH_LEN]> =
    LruHashMap::with_max_entries(CGROUP_PATHS_ENTRIES, 0);

/// Scratch for a path (too big for the stack next to the helper's frame).
#[map]
static CGROUP_PATH_SCRATCH: PerCpuArray<[u8; CGROUP_PATH_LEN]> =
    PerCpuArray::with_max_entries(1, 0);

/// cgroup:cgroup_mkdir: records the new cgroup's path, before any task can
/// be in it, so the daemon tells whose container an event came from by its
/// cgroup id alone (the task and its cgroup may be gone when it looks).
#[tracepoint]
pub fn cgroup_mkdir(ctx: TracePointContext) -> u32 {
    // Fields (stable since 5.x): int root @8, u64 id @16, __data_loc path @24.
    // SAFETY: reads inside the tracepoint record.
    let root = unsafe { ctx.read_at::<i32>(8) }.unwrap_or(-1);
    // Only the cgroup2 hierarchy (id 0): v1 hierarchies number their
    // cgroups apart.
    if root != 0 {
        return 0;
    }
    // SAFETY: as above.
    let Ok(id) = (unsafe { ctx.read_at::<u64>(16) }) else {
        return 0;
    };
    // SAFETY: as above.
    let Ok(loc) = (unsafe { ctx.read_at::<u32>(24) }) else {
        return 0;
    };
    let Some(buf) = CGROUP_PATH_SCRATCH.get_ptr_mut(0) else {
        return 0;
    };
    // SAFETY: this CPU's scratch value, ours for this program run.
    let buf = unsafe { &mut *buf };
    *buf = [0; CGROUP_PATH_LEN];
    let src = (aya_ebpf::EbpfContext::as_ptr(&ctx) as usize + (loc & 0xffff) as usize) as *const u8;
    // SAFETY: the helper reads kernel memory safely (faults are errors);
    // `src` points into the tracepoint record.
    if unsafe { aya_ebpf::helpers::bpf_probe_read_kernel_str_bytes(src, buf) }.is_err() {
        return 0;
    }
    let _ = CGROUP_PATHS.insert(&id, buf, 0);
    0
}

#[tracepoint]
pub fn sched_process_exit(ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    // An open in flight that never reached its exit probe: its slot
    // must not fill the map.
    let _ = OPEN_ARGS.remove(&(pid_tgid as u32));
    let off = TP_EXIT_GROUP_DEAD.load();
    let group_dead = if off == u64::MAX {
        // No group_dead in this kernel's record: the group is dead when its
        // live-thread count reached 0 (do_exit decrements it before this
        // tracepoint), not when the leader thread alone exits.
        kernel::thread_group_empty().unwrap_or(pid_tgid as u32 == tgid)
    } else {
        // SAFETY: reads inside the tracepoint record.
        unsafe { ctx.read_at::<u8>(off as usize) }.unwrap_or(0) != 0
    };
    if !group_dead {
        return 0;
    }
    if wants(tgid, kind::EXIT) {
        let code = kernel::current_exit_code();
        emit_proc(
            kind::EXIT,
            syscall::EXIT,
            0,
            code,
            0,
            flags::GROUP_DEAD,
            0,
            0,
        );
    }
    enforce::forget(tgid);
    // The pid may be reused: its filter entry must not outlive it.
    if TASK_FILTER.remove(&tgid).is_ok() {
        debug!(&ctx, "filter entry of {} dropped at exit", tgid);
    }
    0
}

/// Offsets of `pid` and `old_pid` in sched:sched_process_exec.
#[no_mangle]
static TP_EXEC_PID: Global<u64> = Global::new(12);
#[no_mangle]
static TP_EXEC_OLD_PID: Global<u64> = Global::new(16);

/// Every exec: the first one in a cgroup records the cgroup's root (see
/// `kernel::fs_paths`). An exec from a thread that is not the group
/// leader takes over the leader's id (de_thread): move its pending exec
/// record to the new id, or sys_exit_execve (which runs under the new id)
/// would never find it.
#[tracepoint]
pub fn sched_process_exec(ctx: TracePointContext) -> u32 {
    kernel::note_cgroup_root();
    // SAFETY: reads inside the tracepoint record.
    let pid = unsafe { ctx.read_at::<i32>(TP_EXEC_PID.load() as usize) }.unwrap_or(0) as u32;
    let old = unsafe { ctx.read_at::<i32>(TP_EXEC_OLD_PID.load() as usize) }.unwrap_or(0) as u32;
    if pid == old || old == 0 {
        return 0;
    }
    if let Some(ev) = PENDING_EXEC.get_ptr_mut(&old) {
        // SAFETY: the old thread is this one (it became the leader); its
        // record is copied into the map under the new id.
        let _ = PENDING_EXEC.insert(&pid, unsafe { &*ev }, 0);
        let _ = PENDING_EXEC.remove(&old);
    }
    0
}

/// Kill verdicts taken at a syscall's entry that only its exit reports.
#[map]
static KILLED_AT_ENTRY: LruHashMap<u32, u32> = LruHashMap::with_max_entries(1024, 0);

#[inline(always)]
fn enter_io_uring_setup(_ctx: &impl Sys) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let rules = enforce::subject_rules((pid_tgid >> 32) as u32);
    let v = enforce::check_io_uring(rules);
    if v != 0 {
        let _ = KILLED_AT_ENTRY.insert(&(pid_tgid as u32), &v, 0);
    }
}

#[inline(always)]
fn io_uring_setup_exit(ctx: &impl Sys) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    let tid = pid_tgid as u32;
    // SAFETY: value copied out at once.
    let verdict = unsafe { KILLED_AT_ENTRY.get(&tid) }.copied().unwrap_or(0);
    if verdict != 0 {
        let _ = KILLED_AT_ENTRY.remove(&tid);
    }
    if verdict != 0 || wants(tgid, kind::IO_URING_SETUP) {
        emit_proc(
            kind::IO_URING_SETUP,
            syscall::IO_URING_SETUP,
            0,
            0,
            0,
            0,
            ret_of(ctx),
            verdict,
        );
    }
}

exits!(io_uring_setup_exit: sys_exit_io_uring_setup / raw_exit_io_uring_setup);

enters!(
    sys_enter_open / raw_enter_open => enter_open,
    sys_enter_openat / raw_enter_openat => enter_openat,
    sys_enter_openat2 / raw_enter_openat2 => enter_openat2,
    sys_enter_creat / raw_enter_creat => enter_creat,
    sys_enter_unlink / raw_enter_unlink => enter_unlink,
    sys_enter_unlinkat / raw_enter_unlinkat => enter_unlinkat,
    sys_enter_rmdir / raw_enter_rmdir => enter_rmdir,
    sys_enter_truncate / raw_enter_truncate => enter_truncate,
    sys_enter_rename / raw_enter_rename => enter_rename,
    sys_enter_renameat / raw_enter_renameat => enter_renameat,
    sys_enter_renameat2 / raw_enter_renameat2 => enter_renameat2,
    sys_enter_execve / raw_enter_execve => enter_execve,
    sys_enter_execveat / raw_enter_execveat => enter_execveat,
    sys_enter_clone / raw_enter_clone => enter_clone,
    sys_enter_clone3 / raw_enter_clone3 => enter_clone3,
    sys_enter_fork / raw_enter_fork => enter_fork,
    sys_enter_vfork / raw_enter_vfork => enter_vfork,
    sys_enter_socket / raw_enter_socket => enter_socket,
    sys_enter_connect / raw_enter_connect => enter_connect,
    sys_enter_sendto / raw_enter_sendto => enter_sendto,
    sys_enter_sendmsg / raw_enter_sendmsg => enter_sendmsg,
    sys_enter_io_uring_setup / raw_enter_io_uring_setup => enter_io_uring_setup,
);

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[link_section = "license"]
#[no_mangle]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
