//! The sensor: loads the eBPF object, attaches the probes, reads the ring
//! buffer and turns raw records into typed [`crate::event::Event`]s.
//!
//! Narrow interface: [`Sensor::start`] with [`SensorOptions`], then
//! [`Sensor::read`] in a loop; [`Sensor::set_filter`] feeds the in-kernel
//! task filter (the identity stage will drive it).

pub mod bpfsys;
pub mod btf;
pub mod cgroups;
pub mod decode;
pub mod features;
pub mod hostfs;
pub mod paths;

use std::os::fd::AsRawFd;

use anyhow::{anyhow, bail, Context as _, Result};
use aya::{
    maps::{Array, HashMap, MapData, PerCpuArray, ProgramArray, RingBuf},
    programs::{RawTracePoint, TracePoint},
    Ebpf, EbpfLoader,
};
use tokio::io::unix::AsyncFd;

use agentguard_common::event::{ExecEvent, FileEvent, NetEvent, RenameEvent};
use agentguard_common::filter::{config, counter, pending, IGNORE};

use crate::event::{Detail, Event, Kind};

/// The eBPF object built by build.rs (aya-build) from agentguard-ebpf.
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/agentguard"));

/// One tracepoint program: its name in the object, its tracefs place and the
/// kinds that need it (empty = always attached).
struct ProbeSpec {
    program: &'static str,
    category: &'static str,
    kinds: &'static [Kind],
    /// Legacy syscalls absent on some architectures: warn, don't fail.
    optional: bool,
    /// The syscall's x86-64 number (raw dispatch slot); NO_NR for the
    /// non-syscall tracepoints.
    nr: u32,
}

const NO_NR: u32 = u32::MAX;

const fn sc(program: &'static str, nr: u32, kinds: &'static [Kind], optional: bool) -> ProbeSpec {
    ProbeSpec {
        program,
        category: "syscalls",
        kinds,
        optional,
        nr,
    }
}

const EXEC: &[Kind] = &[Kind::Exec];
const OPEN: &[Kind] = &[Kind::Open];
const DEL: &[Kind] = &[Kind::Unlink, Kind::Rmdir];
const RENAME: &[Kind] = &[Kind::Rename];
const TRUNC: &[Kind] = &[Kind::Truncate];
const CONNECT: &[Kind] = &[Kind::Connect];
const SEND: &[Kind] = &[Kind::Send];
const SOCKET: &[Kind] = &[Kind::Socket];

/// Every probe. Exit programs are listed before their entry programs so a
/// syscall entered between the two attaches is never parked without an exit.
const PROBES: &[ProbeSpec] = &[
    ProbeSpec {
        program: "task_newtask",
        category: "task",
        kinds: &[],
        optional: false,
        nr: NO_NR,
    },
    ProbeSpec {
        program: "sched_process_exit",
        category: "sched",
        kinds: &[],
        optional: false,
        nr: NO_NR,
    },
    // A cgroup's path at its creation: container ids by cgroup id.
    ProbeSpec {
        program: "cgroup_mkdir",
        category: "cgroup",
        kinds: &[],
        optional: true,
        nr: NO_NR,
    },
    ProbeSpec {
        program: "sched_process_exec",
        category: "sched",
        kinds: EXEC,
        optional: true,
        nr: NO_NR,
    },
    sc("sys_exit_execve", 59, EXEC, false),
    sc("sys_exit_execveat", 322, EXEC, false),
    sc("sys_enter_execve", 59, EXEC, false),
    sc("sys_enter_execveat", 322, EXEC, false),
    sc("sys_exit_open", 2, OPEN, true),
    sc("sys_exit_openat", 257, OPEN, false),
    sc("sys_exit_openat2", 437, OPEN, true),
    sc("sys_exit_creat", 85, OPEN, true),
    sc("sys_enter_open", 2, OPEN, true),
    sc("sys_enter_openat", 257, OPEN, false),
    sc("sys_enter_openat2", 437, OPEN, true),
    sc("sys_enter_creat", 85, OPEN, true),
    sc("sys_exit_unlink", 87, DEL, true),
    sc("sys_exit_unlinkat", 263, DEL, false),
    sc("sys_exit_rmdir", 84, DEL, true),
    sc("sys_enter_unlink", 87, DEL, true),
    sc("sys_enter_unlinkat", 263, DEL, false),
    sc("sys_enter_rmdir", 84, DEL, true),
    sc("sys_exit_rename", 82, RENAME, true),
    sc("sys_exit_renameat", 264, RENAME, true),
    sc("sys_exit_renameat2", 316, RENAME, false),
    sc("sys_enter_rename", 82, RENAME, true),
    sc("sys_enter_renameat", 264, RENAME, true),
    sc("sys_enter_renameat2", 316, RENAME, false),
    sc("sys_exit_truncate", 76, TRUNC, false),
    sc("sys_enter_truncate", 76, TRUNC, false),
    sc("sys_exit_connect", 42, CONNECT, false),
    sc("sys_enter_connect", 42, CONNECT, false),
    sc("sys_exit_sendto", 44, SEND, false),
    sc("sys_exit_sendmsg", 46, SEND, false),
    sc("sys_enter_sendto", 44, SEND, false),
    sc("sys_enter_sendmsg", 46, SEND, false),
    ProbeSpec {
        program: "sys_enter",
        category: "raw_syscalls",
        kinds: &[Kind::CompatSyscall],
        optional: true,
        nr: NO_NR,
    },
    sc("sys_enter_clone", 56, &[], false),
    sc("sys_enter_clone3", 435, &[], true),
    sc("sys_enter_fork", 57, &[], true),
    sc("sys_enter_vfork", 58, &[], true),
    sc("sys_exit_socket", 41, SOCKET, false),
    sc("sys_enter_socket", 41, SOCKET, false),
    sc("sys_exit_io_uring_setup", 425, &[Kind::IoUringSetup], true),
    sc("sys_enter_io_uring_setup", 425, &[Kind::IoUringSetup], true),
];

/// The cgroup sock_addr programs of the network deny, with their hooks.
pub const SOCK_ADDR_PROGRAMS: &[&str] = &[
    "agentguard_connect4",
    "agentguard_connect6",
    "agentguard_sendmsg4",
    "agentguard_sendmsg6",
    "agentguard_bind4",
    "agentguard_bind6",
];

/// The cgroup skb programs reading DNS for domain rules (egress, ingress).
pub const DNS_PROGRAMS: &[(&str, bool)] = &[
    ("agentguard_dns_egress", true),
    ("agentguard_dns_ingress", false),
];

/// The cgroup sock_create program refusing raw and packet sockets.
pub const SOCK_CREATE_PROGRAM: &str = "agentguard_sock_create";

/// Where the daemon pins its enforcement maps and links.
pub const PIN_DIR: &str = "/sys/fs/bpf/agentguard";

/// (eBPF global, BTF struct, member path).
const OFFSETS: &[(&str, &str, &str)] = &[
    ("OFF_TASK_REAL_PARENT", "task_struct", "real_parent"),
    ("OFF_TASK_TGID", "task_struct", "tgid"),
    ("OFF_TASK_EXIT_CODE", "task_struct", "exit_code"),
    ("OFF_TASK_GROUP_LEADER", "task_struct", "group_leader"),
    ("OFF_TASK_START_BOOTTIME", "task_struct", "start_boottime"),
    ("OFF_TASK_FS", "task_struct", "fs"),
    ("OFF_TASK_FILES", "task_struct", "files"),
    ("OFF_FS_ROOT", "fs_struct", "root"),
    ("OFF_FS_PWD", "fs_struct", "pwd"),
    ("OFF_PATH_MNT", "path", "mnt"),
    ("OFF_PATH_DENTRY", "path", "dentry"),
    ("OFF_DENTRY_PARENT", "dentry", "d_parent"),
    ("OFF_DENTRY_NAME", "dentry", "d_name"),
    ("OFF_QSTR_NAME", "qstr", "name"),
    ("OFF_MOUNT_MNT", "mount", "mnt"),
    ("OFF_MOUNT_PARENT", "mount", "mnt_parent"),
    ("OFF_MOUNT_MOUNTPOINT", "mount", "mnt_mountpoint"),
    ("OFF_VFSMOUNT_ROOT", "vfsmount", "mnt_root"),
    ("OFF_FILES_FDT", "files_struct", "fdt"),
    ("OFF_FDT_MAX_FDS", "fdtable", "max_fds"),
    ("OFF_FDT_FD", "fdtable", "fd"),
    ("OFF_FILE_PATH", "file", "f_path"),
    ("OFF_DENTRY_INODE", "dentry", "d_inode"),
    ("OFF_INODE_INO", "inode", "i_ino"),
    ("OFF_INODE_MODE", "inode", "i_mode"),
    ("OFF_INODE_SB", "inode", "i_sb"),
    ("OFF_SB_DEV", "super_block", "s_dev"),
    ("OFF_BPRM_FILE", "linux_binprm", "file"),
    ("OFF_UNIX_SOCK_PATH", "unix_sock", "path"),
    ("OFF_MSGHDR_NAME", "msghdr", "msg_name"),
    ("OFF_FILE_FLAGS", "file", "f_flags"),
    ("OFF_FILE_MODE", "file", "f_mode"),
    ("OFF_DENTRY_HASH", "dentry", "d_hash"),
    ("OFF_INODE_GENERATION", "inode", "i_generation"),
];

/// BPF-LSM programs: (program, hook, optional).
pub const LSM_PROGRAMS: &[(&str, &str, bool)] = &[
    ("agentguard_file_open", "file_open", false),
    ("agentguard_path_unlink", "path_unlink", false),
    ("agentguard_path_rmdir", "path_rmdir", false),
    ("agentguard_path_rename", "path_rename", false),
    ("agentguard_path_truncate", "path_truncate", false),
    ("agentguard_file_truncate", "file_truncate", true),
    ("agentguard_path_link", "path_link", false),
    ("agentguard_bprm_check", "bprm_check_security", false),
    ("agentguard_socket_create", "socket_create", false),
    ("agentguard_socket_connect", "socket_connect", false),
    ("agentguard_socket_sendmsg", "socket_sendmsg", false),
    ("agentguard_unix_connect", "unix_stream_connect", false),
    ("agentguard_task_kill", "task_kill", false),
    ("agentguard_ptrace", "ptrace_access_check", false),
    ("agentguard_bpf", "bpf", false),
];

/// One subject's records dropped by flood isolation ([`Sensor::floods`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FloodCount {
    pub cgroup_id: u64,
    pub last_pid: u32,
    /// By kind wire number (`agentguard_common::kind`).
    pub dropped: [u64; agentguard_common::filter::flood::KINDS],
}

/// Per-window, per-CPU record quota for `per_sec` records per second
/// (rounded up; at least 1 unless off).
pub fn flood_window_quota(per_sec: u32) -> u32 {
    use agentguard_common::filter::flood::WINDOW_SHIFT;
    if per_sec == 0 {
        return 0;
    }
    let w = (u64::from(per_sec) << WINDOW_SHIFT).div_ceil(1_000_000_000);
    w.clamp(1, u64::from(u32::MAX)) as u32
}

/// What to stream.
#[derive(Clone, Debug)]
pub struct SensorOptions {
    /// Event kinds to stream; probes of other kinds are not even attached.
    pub kinds: Vec<Kind>,
    /// Stream processes without a filter entry (true), or only those given a
    /// mask with [`Sensor::set_filter`] and their descendants (false).
    pub watch_all: bool,
    /// Ring buffer size in bytes (power of two, multiple of the page size).
    pub ring_buffer_bytes: u32,
    /// The kernel wakes the reader once this many bytes wait (0: for every
    /// record). Batching wakeups is most of the streaming cost saved.
    pub wakeup_bytes: u32,
    /// Userspace drains at least this often, so a quiet ring buffer below
    /// the wakeup threshold still delivers within this latency.
    pub drain_interval: std::time::Duration,
    /// bpffs directory for the enforcement maps (shared with sock_addr
    /// programs that outlive the daemon). None: private, unpinned maps.
    pub pin_dir: Option<std::path::PathBuf>,
    /// Entries of the unpinned per-task maps, by object name (e.g.
    /// `TASK_FILTER`, `PENDING_FILE`); the object's sizes when absent.
    pub map_sizes: Vec<(&'static str, u32)>,
    /// How syscalls are hooked; `Auto` reads `AGENTGUARD_SYSCALL_HOOKS`.
    pub syscall_hooks: SyscallHooks,
}

/// How the syscall probes are attached. Both run the same handlers; they
/// differ in what the kernel does before a handler runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyscallHooks {
    /// `AGENTGUARD_SYSCALL_HOOKS` if set, else raw dispatch where it
    /// attaches, else tracepoints.
    Auto,
    /// One `syscalls:sys_{enter,exit}_*` tracepoint per hooked syscall: the
    /// kernel builds a trace record for each call before the program runs.
    Tracepoints,
    /// Raw tracepoints on every syscall's entry and exit that jump to the
    /// hooked syscall's handler (a BPF tail call): no record is built, so
    /// the hooked calls cost much less, and every other call a few ns.
    Raw,
}

impl SyscallHooks {
    /// The override in `AGENTGUARD_SYSCALL_HOOKS` (auto, raw, tracepoints).
    pub fn from_env() -> Result<SyscallHooks> {
        match std::env::var("AGENTGUARD_SYSCALL_HOOKS") {
            Err(std::env::VarError::NotPresent) => Ok(SyscallHooks::Auto),
            Ok(v) => match v.as_str() {
                "" | "auto" => Ok(SyscallHooks::Auto),
                "raw" => Ok(SyscallHooks::Raw),
                "tracepoints" => Ok(SyscallHooks::Tracepoints),
                other => {
                    bail!("AGENTGUARD_SYSCALL_HOOKS={other:?}: expected auto, raw or tracepoints")
                }
            },
            Err(e) => bail!("AGENTGUARD_SYSCALL_HOOKS: {e}"),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SyscallHooks::Auto => "auto",
            SyscallHooks::Tracepoints => "tracepoints",
            SyscallHooks::Raw => "raw",
        }
    }
}

/// Drops `bytes`' whole pages from this process's resident set. For
/// read-only data of the binary: a later read faults them back in from
/// the file, so nothing is lost.
fn release_pages(bytes: &[u8]) {
    // SAFETY: sysconf has no memory arguments.
    let page = match usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }) {
        Ok(p) if p.is_power_of_two() => p,
        _ => return,
    };
    let start = (bytes.as_ptr() as usize).next_multiple_of(page);
    let end = (bytes.as_ptr() as usize + bytes.len()) & !(page - 1);
    if end > start {
        // SAFETY: [start, end) lies inside `bytes`, a file-backed read-only
        // mapping of the binary that no one writes; MADV_DONTNEED on it
        // only drops pages that are re-read from the file on access.
        unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED) };
    }
}

/// Raw dispatch reads syscall arguments from x86-64 `pt_regs` and indexes
/// its handlers by x86-64 syscall numbers.
const RAW_DISPATCH_ARCH: bool = cfg!(target_arch = "x86_64");

/// Attaches `probes` as tracepoints (the exits before their entries, as
/// listed in [`PROBES`]).
fn attach_tracepoints<'a>(
    ebpf: &mut Ebpf,
    tracefs: &std::path::Path,
    probes: impl Iterator<Item = &'a ProbeSpec>,
    attached: &mut Vec<String>,
    skipped: &mut Vec<String>,
) -> Result<()> {
    for p in probes {
        let tp_name = tracepoint_name(p.program);
        if !tracefs
            .join("events")
            .join(p.category)
            .join(tp_name)
            .exists()
        {
            if p.optional {
                skipped.push(format!("{}/{tp_name}", p.category));
                continue;
            }
            bail!(
                "tracepoint {}/{tp_name} is missing from this kernel ({}): agentguard needs it",
                p.category,
                tracefs.display()
            );
        }
        let prog: &mut TracePoint = ebpf
            .program_mut(p.program)
            .ok_or_else(|| anyhow!("program {} missing from the eBPF object", p.program))?
            .try_into()?;
        prog.load()
            .with_context(|| format!("verifier rejected program {}", p.program))?;
        prog.attach(p.category, tp_name)
            .with_context(|| format!("attaching {}/{tp_name}", p.category))?;
        attached.push(format!("{}/{tp_name}", p.category));
    }
    Ok(())
}

/// Raw dispatch: loads each syscall handler of `probes` as a raw
/// tracepoint program into its syscall's slot, then attaches the two
/// dispatchers (exit first: a call entered meanwhile still finds its exit).
/// On error nothing stays attached.
fn attach_raw<'a>(
    ebpf: &mut Ebpf,
    probes: impl Iterator<Item = &'a ProbeSpec>,
    attached: &mut Vec<String>,
) -> Result<()> {
    let mut slots = Vec::new();
    for p in probes {
        let (table, raw) = if let Some(sc) = p.program.strip_prefix("sys_enter_") {
            ("SYS_ENTER_PROGS", format!("raw_enter_{sc}"))
        } else if let Some(sc) = p.program.strip_prefix("sys_exit_") {
            ("SYS_EXIT_PROGS", format!("raw_exit_{sc}"))
        } else {
            bail!("{} is not a syscall probe", p.program);
        };
        let prog: &mut RawTracePoint = ebpf
            .program_mut(&raw)
            .ok_or_else(|| anyhow!("program {raw} missing from the eBPF object"))?
            .try_into()?;
        prog.load()
            .with_context(|| format!("verifier rejected program {raw}"))?;
        slots.push((table, p.nr, prog.fd()?.try_clone()?, p.program));
    }
    for table in ["SYS_ENTER_PROGS", "SYS_EXIT_PROGS"] {
        let mut array: ProgramArray<_> = ProgramArray::try_from(map(ebpf, table)?)?;
        for (t, nr, fd, name) in &slots {
            if *t == table {
                array
                    .set(*nr, fd, 0)
                    .with_context(|| format!("{table}[{nr}] = {name}"))?;
            }
        }
    }
    let mut links = Vec::new();
    for (program, tp) in [("raw_sys_exit", "sys_exit"), ("raw_sys_enter", "sys_enter")] {
        let prog: &mut RawTracePoint = ebpf
            .program_mut(program)
            .ok_or_else(|| anyhow!("program {program} missing from the eBPF object"))?
            .try_into()?;
        let done = prog
            .load()
            .with_context(|| format!("verifier rejected program {program}"))
            .and_then(|()| {
                prog.attach(tp)
                    .with_context(|| format!("attaching raw tracepoint {tp}"))
            });
        match done {
            Ok(link) => links.push((program, link)),
            Err(e) => {
                for (program, link) in links {
                    if let Some(Ok(p)) = ebpf
                        .program_mut(program)
                        .map(<&mut RawTracePoint>::try_from)
                    {
                        let _ = p.detach(link);
                    }
                }
                return Err(e);
            }
        }
    }
    attached.push("raw_syscalls/sys_exit".to_owned());
    attached.push("raw_syscalls/sys_enter".to_owned());
    attached.extend(
        slots
            .iter()
            .map(|(_, _, _, name)| format!("dispatch/{name}")),
    );
    Ok(())
}

impl Default for SensorOptions {
    fn default() -> Self {
        Self {
            kinds: Kind::ALL.to_vec(),
            watch_all: true,
            ring_buffer_bytes: 16 << 20,
            wakeup_bytes: 256 << 10,
            drain_interval: std::time::Duration::from_millis(2),
            pin_dir: None,
            map_sizes: Vec::new(),
            syscall_hooks: SyscallHooks::Auto,
        }
    }
}

/// A loaded, attached sensor.
pub struct Sensor {
    ebpf: Ebpf,
    ring: AsyncFd<RingBuf<MapData>>,
    attached: Vec<String>,
    skipped: Vec<String>,
    backend: SyscallHooks,
    kind_mask: u32,
    decode_errors: u64,
    drain_interval: std::time::Duration,
    pending_lost: [u64; 4],
    /// The ring buffer's size.
    ring_bytes: u32,
    /// CLOCK_BOOTTIME ns just before the probes were attached.
    started_ns: u64,
    /// Classified cgroups (`CGROUP_MASK`), and the masks their classes
    /// stand for.
    cgroups: cgroups::CgroupClasses,
    default_mask: u32,
    guarded_mask: u32,
}

impl Sensor {
    /// Loads and attaches. Must run inside a tokio runtime (the ring buffer is
    /// registered with its reactor).
    pub fn start(opts: &SensorOptions) -> Result<Sensor> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            bail!("agentguard's sensor needs root (CAP_BPF, CAP_PERFMON and CAP_SYS_ADMIN to load eBPF programs)");
        }
        if EBPF_OBJECT.is_empty() {
            bail!("this agentguard binary was built with AYA_BUILD_SKIP: it has no eBPF object; rebuild without it (cargo xtask build)");
        }
        let started_ns = crate::event::boot_ns();
        let tracefs = features::ensure_tracefs().map_err(|e| anyhow!("tracefs: {e}"))?;
        if let Err(e) = features::ensure_bpffs() {
            tracing::warn!("bpffs unavailable ({e}); pinning will not work");
        }
        // Not needed on 6.x (memcg accounting) and refused without
        // CAP_SYS_RESOURCE: best effort only.
        let rlim = libc::rlimit {
            rlim_cur: libc::RLIM_INFINITY,
            rlim_max: libc::RLIM_INFINITY,
        };
        // SAFETY: valid pointer to an initialized rlimit.
        if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &rlim) } != 0 {
            tracing::debug!("setrlimit(RLIMIT_MEMLOCK) refused; relying on memcg accounting");
        }

        let kernel_btf = btf::KernelBtf::from_sys_fs().map_err(|e| anyhow!("{e}"))?;
        let mut offsets = Vec::with_capacity(OFFSETS.len());
        for (global, st, member) in OFFSETS {
            let off = kernel_btf
                .member_path_offset(st, member)
                .map_err(|e| anyhow!("kernel BTF: offset of {st}.{member}: {e}"))?;
            offsets.push((*global, u64::from(off)));
        }
        let newtask_flags = tracepoint_field_offset(&tracefs, "task/task_newtask", "clone_flags")?
            .ok_or_else(|| anyhow!("tracepoint task/task_newtask has no clone_flags field"))?;
        let group_dead =
            tracepoint_field_offset(&tracefs, "sched/sched_process_exit", "group_dead")?
                .unwrap_or(u64::MAX);

        // aya pins maps declared as pinned; without a pin dir they go to a
        // private directory that is removed once loaded (the fds live on).
        let (pin_dir, private) = match &opts.pin_dir {
            Some(d) => (d.clone(), false),
            None => {
                // Unique per sensor: several may load at once in one process.
                static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
                let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                (
                    std::path::PathBuf::from(format!(
                        "/sys/fs/bpf/agentguard-{}-{n}",
                        std::process::id()
                    )),
                    true,
                )
            }
        };
        std::fs::create_dir_all(&pin_dir)
            .with_context(|| format!("creating the bpffs pin directory {}", pin_dir.display()))?;
        let mut loader = EbpfLoader::new();
        loader.default_map_pin_directory(&pin_dir);
        loader.map_max_entries("EVENTS", opts.ring_buffer_bytes);
        // AGENTGUARD_VERIFIER_LOG=1: the verifier's whole log in a load
        // error (to debug a program a kernel refuses).
        if std::env::var_os("AGENTGUARD_VERIFIER_LOG").is_some() {
            loader
                .verifier_log_level(aya::VerifierLogLevel::VERBOSE | aya::VerifierLogLevel::STATS);
        }
        for (name, n) in &opts.map_sizes {
            loader.map_max_entries(name, *n);
        }
        for (global, off) in &offsets {
            loader.override_global(global, off, true);
        }
        loader.override_global("TP_NEWTASK_FLAGS", &newtask_flags, true);
        // The LSM hooks refuse signals, ptrace and bpf(2) against this
        // process from the tasks they guard.
        let daemon_tgid = std::process::id();
        // x86's TS_COMPAT flag; other architectures have no such field
        // (then the 32-bit ABI probe stays silent).
        let ti_status = kernel_btf
            .member_path_offset("task_struct", "thread_info.status")
            .map_or(u64::MAX, u64::from);
        loader.override_global("OFF_TASK_TI_STATUS", &ti_status, true);
        loader.override_global("DAEMON_TGID", &daemon_tgid, true);
        loader.override_global("TP_EXIT_GROUP_DEAD", &group_dead, true);
        let exec_pid = tracepoint_field_offset(&tracefs, "sched/sched_process_exec", "pid")?;
        let exec_old = tracepoint_field_offset(&tracefs, "sched/sched_process_exec", "old_pid")?;
        // Defaults are the upstream layout; the format file has the truth.
        let exec_pid = exec_pid.unwrap_or(12);
        let exec_old = exec_old.unwrap_or(16);
        loader.override_global("TP_EXEC_PID", &exec_pid, true);
        loader.override_global("TP_EXEC_OLD_PID", &exec_old, true);
        // Where the exit record lacks group_dead, the group is dead when
        // signal->live is 0.
        let signal = kernel_btf
            .member_offset("task_struct", "signal")
            .map_or(u64::MAX, u64::from);
        let live = kernel_btf
            .member_offset("signal_struct", "live")
            .map_or(u64::MAX, u64::from);
        loader.override_global("OFF_TASK_SIGNAL", &signal, true);
        loader.override_global("OFF_SIGNAL_LIVE", &live, true);
        let mut ebpf = match loader.load(EBPF_OBJECT) {
            Ok(e) => e,
            Err(e) => {
                // Name the missing kernel feature rather than a map error.
                if let features::Status::Unsupported(why) | features::Status::Error(why) =
                    features::probe_ringbuf()
                {
                    bail!("this kernel cannot create BPF ring buffers (needs Linux 5.8+): {why}");
                }
                if private {
                    let _ = std::fs::remove_dir_all(&pin_dir);
                }
                return Err(anyhow!(e).context(format!(
                    "loading the eBPF object (pinned maps in {}; if they are from another agentguard version, remove them with `agentguard run --cleanup`)",
                    pin_dir.display()
                )));
            }
        };
        if private {
            let _ = std::fs::remove_dir_all(&pin_dir);
        }
        // The object was parsed into owned data: its pages (megabytes of
        // the binary's read-only data, resident since the parse) can go.
        release_pages(EBPF_OBJECT);

        if let Ok(logger) = aya_log::EbpfLogger::init(&mut ebpf) {
            // SAFETY: the logger owns its ring buffer fd for its whole life
            // and moves into the AsyncFd, so the fd stays open and the same.
            if let Ok(mut fd) = unsafe { AsyncFd::register(logger) } {
                tokio::spawn(async move {
                    while let Ok(mut guard) = fd.readable_mut().await {
                        guard.get_inner_mut().flush();
                        guard.clear_ready();
                    }
                });
            }
        }

        let kind_mask = Kind::mask(&opts.kinds);
        {
            let mut cfg: Array<_, u32> = Array::try_from(map(&mut ebpf, "CONFIG")?)?;
            let default = if opts.watch_all { kind_mask } else { IGNORE };
            cfg.set(config::DEFAULT_MASK, default, 0)
                .context("writing CONFIG[DEFAULT_MASK]")?;
            cfg.set(config::WAKEUP_BYTES, opts.wakeup_bytes, 0)
                .context("writing CONFIG[WAKEUP_BYTES]")?;
            // The daemon never watches itself: its own reads would feed back.
            let mut filter: HashMap<_, u32, u32> =
                HashMap::try_from(map(&mut ebpf, "TASK_FILTER")?)?;
            filter
                .insert(std::process::id(), IGNORE, 0)
                .context("writing TASK_FILTER")?;
        }

        let mut attached = Vec::new();
        let mut skipped = Vec::new();
        let hooks = match opts.syscall_hooks {
            SyscallHooks::Auto => SyscallHooks::from_env()?,
            h => h,
        };
        if hooks == SyscallHooks::Raw && !RAW_DISPATCH_ARCH {
            bail!("raw syscall dispatch (AGENTGUARD_SYSCALL_HOOKS=raw) is only built for x86-64");
        }
        let try_raw = hooks != SyscallHooks::Tracepoints && RAW_DISPATCH_ARCH;
        let wanted =
            |p: &ProbeSpec| p.kinds.is_empty() || p.kinds.iter().any(|k| opts.kinds.contains(k));
        // Under raw dispatch the syscall tracepoints and the 32-bit ABI
        // probe are replaced by the two raw programs.
        let dispatched = |p: &ProbeSpec| p.nr != NO_NR || p.category == "raw_syscalls";
        attach_tracepoints(
            &mut ebpf,
            &tracefs,
            PROBES
                .iter()
                .filter(|p| wanted(p) && !(try_raw && dispatched(p))),
            &mut attached,
            &mut skipped,
        )?;
        let mut backend = SyscallHooks::Tracepoints;
        if try_raw {
            match attach_raw(
                &mut ebpf,
                PROBES.iter().filter(|p| wanted(p) && p.nr != NO_NR),
                &mut attached,
            ) {
                Ok(()) => backend = SyscallHooks::Raw,
                Err(e) if hooks == SyscallHooks::Auto => {
                    tracing::warn!(
                        "raw syscall dispatch unavailable ({e:#}); using one tracepoint per syscall"
                    );
                    attach_tracepoints(
                        &mut ebpf,
                        &tracefs,
                        PROBES.iter().filter(|p| wanted(p) && dispatched(p)),
                        &mut attached,
                        &mut skipped,
                    )?;
                }
                Err(e) => return Err(e.context("AGENTGUARD_SYSCALL_HOOKS=raw")),
            }
        }

        let ring = RingBuf::try_from(
            ebpf.take_map("EVENTS")
                .ok_or_else(|| anyhow!("map EVENTS missing from the eBPF object"))?,
        )?;
        // SAFETY: RingBuf owns its map fd, which stays open and unchanged
        // while the AsyncFd owns the RingBuf.
        let ring = unsafe { AsyncFd::register(ring) }
            .map_err(|e| anyhow!("registering the ring buffer with tokio: {e}"))?;
        tracing::info!(
            probes = attached.len(),
            ring_fd = ring.get_ref().as_raw_fd(),
            "sensor attached"
        );
        // Loading parsed the kernel's BTF and the object (tens of MB,
        // freed now); give the pages back instead of keeping them in the
        // allocator for the daemon's lifetime.
        // SAFETY: malloc_trim only releases free heap memory.
        unsafe { libc::malloc_trim(0) };
        Ok(Sensor {
            ebpf,
            ring,
            attached,
            skipped,
            backend,
            kind_mask,
            decode_errors: 0,
            drain_interval: opts.drain_interval,
            pending_lost: [0; 4],
            ring_bytes: opts.ring_buffer_bytes,
            started_ns,
            cgroups: cgroups::CgroupClasses::default(),
            default_mask: if opts.watch_all { kind_mask } else { IGNORE },
            guarded_mask: 0,
        })
    }

    /// Waits for a wakeup or the drain interval, then hands each decoded
    /// event to `f`; returns after draining what was there. Undecodable
    /// records are counted and skipped.
    pub async fn read(&mut self, f: &mut impl FnMut(Event)) -> Result<usize> {
        let woken = tokio::select! {
            guard = self.ring.readable_mut() => Some(guard?),
            _ = tokio::time::sleep(self.drain_interval) => None,
        };
        let mut n = 0;
        let mut errors = 0;
        let mut drain = |ring: &mut RingBuf<MapData>| {
            while let Some(item) = ring.next() {
                match decode::decode(&item) {
                    Ok(mut ev) => {
                        n += 1;
                        fill_binary(&mut ev);
                        f(ev);
                    }
                    Err(e) => {
                        errors += 1;
                        tracing::warn!("dropping ring-buffer record: {e}");
                    }
                }
            }
        };
        match woken {
            Some(mut guard) => {
                drain(guard.get_inner_mut());
                guard.clear_ready();
            }
            None => drain(self.ring.get_mut()),
        }
        self.decode_errors += errors;
        Ok(n)
    }

    /// Sets the kind mask streamed for process `tgid` (and, from now on, its
    /// new children). `IGNORE` silences it.
    pub fn set_filter(&mut self, tgid: u32, kinds: &[Kind]) -> Result<()> {
        let mask = Kind::mask(kinds) & self.kind_mask;
        let mut filter: HashMap<_, u32, u32> =
            HashMap::try_from(map(&mut self.ebpf, "TASK_FILTER")?)?;
        filter.insert(tgid, mask, 0)?;
        Ok(())
    }

    /// Sets the kinds streamed for processes without an entry of their own
    /// (e.g. only exec/fork/exit, so identity can find agents, whose own
    /// entries then widen to everything).
    pub fn set_default(&mut self, kinds: &[Kind]) -> Result<()> {
        let mask = Kind::mask(kinds) & self.kind_mask;
        let mut cfg: Array<_, u32> = Array::try_from(map(&mut self.ebpf, "CONFIG")?)?;
        cfg.set(config::DEFAULT_MASK, mask, 0)
            .context("writing CONFIG[DEFAULT_MASK]")?;
        if mask != self.default_mask {
            self.default_mask = mask;
            self.rewrite_cgroups(cgroups::CgroupClass::Other)?;
        }
        Ok(())
    }

    /// Sets what a guarded task streams before it has an entry of its own
    /// (and the tasks of an agent's container, or of a cgroup not
    /// classified yet).
    pub fn set_guarded(&mut self, kinds: &[Kind]) -> Result<()> {
        let mask = Kind::mask(kinds) & self.kind_mask;
        self.set_config(config::GUARDED_MASK, mask)?;
        if mask != self.guarded_mask {
            self.guarded_mask = mask;
            self.rewrite_cgroups(cgroups::CgroupClass::Agent)?;
        }
        Ok(())
    }

    fn class_mask(&self, class: cgroups::CgroupClass) -> u32 {
        match class {
            cgroups::CgroupClass::Agent => self.guarded_mask,
            cgroups::CgroupClass::Other => self.default_mask,
        }
    }

    /// Classifies cgroup `cg` for the kernel's stream filter (a no-op when
    /// it already is).
    pub fn classify_cgroup(&mut self, cg: u64, class: cgroups::CgroupClass) -> Result<()> {
        if !self.cgroups.needs(cg, class) {
            return Ok(());
        }
        let mask = self.class_mask(class);
        let mut m: HashMap<_, u64, u32> = HashMap::try_from(map(&mut self.ebpf, "CGROUP_MASK")?)?;
        if let Err(e) = m.insert(cg, mask, 0) {
            // Full: the cgroup stays unclassified and streams what the rules
            // need (safe, dearer); the sweep makes room.
            self.cgroups.refused += 1;
            return Err(anyhow!("writing CGROUP_MASK[{cg}]: {e}"));
        }
        self.cgroups.record(cg, class);
        Ok(())
    }

    fn rewrite_cgroups(&mut self, class: cgroups::CgroupClass) -> Result<()> {
        if self.cgroups.is_empty() {
            return Ok(());
        }
        let mask = self.class_mask(class);
        let ids: Vec<u64> = self
            .cgroups
            .iter()
            .filter(|(_, k)| *k == class)
            .map(|(c, _)| c)
            .collect();
        let mut m: HashMap<_, u64, u32> = HashMap::try_from(map(&mut self.ebpf, "CGROUP_MASK")?)?;
        for cg in ids {
            m.insert(cg, mask, 0)
                .with_context(|| format!("writing CGROUP_MASK[{cg}]"))?;
        }
        Ok(())
    }

    /// From a walk of the cgroup tree: classifies the cgroups that are no
    /// container's (`is_container` says from the path) as `Other`, and
    /// removes the classification of cgroups that no longer exist. Returns
    /// how many are classified.
    pub fn sweep_cgroups(
        &mut self,
        all: &[(u64, String)],
        is_container: impl Fn(&str) -> bool,
    ) -> usize {
        for (cg, path) in all {
            if self.cgroups.needs(*cg, cgroups::CgroupClass::Other)
                && self.cgroups.needs(*cg, cgroups::CgroupClass::Agent)
                && !is_container(path)
            {
                let _ = self.classify_cgroup(*cg, cgroups::CgroupClass::Other);
            }
        }
        let live: std::collections::HashSet<u64> = all.iter().map(|(c, _)| *c).collect();
        let gone = self.cgroups.sweep(&live);
        if let Ok(mut m) = map(&mut self.ebpf, "CGROUP_MASK")
            .and_then(|m| Ok(HashMap::<_, u64, u32>::try_from(m)?))
        {
            for cg in gone {
                let _ = m.remove(&cg);
            }
        }
        self.cgroups.len()
    }

    /// The kernel's record of cgroup paths, for the identity stage (once;
    /// None if the probe is missing), pre-filled with `existing` (a walk of
    /// the tree: the cgroups made before the probe).
    pub fn take_cgroup_paths(
        &mut self,
        existing: &[(u64, String)],
    ) -> Option<cgroups::CgroupPaths> {
        if !self.attached.iter().any(|p| p == "cgroup/cgroup_mkdir") {
            return None;
        }
        let m = self.ebpf.take_map("CGROUP_PATHS")?;
        let map = HashMap::try_from(m).ok()?;
        let mut paths = cgroups::CgroupPaths::new(map);
        paths.prefill(existing);
        Some(paths)
    }

    /// Cgroup classifications the kernel map refused (full).
    pub fn cgroups_refused(&self) -> u64 {
        self.cgroups.refused
    }

    /// Replaces the file names the open prefilter lets through: (name,
    /// exact) — an exact name matches whole, the others as a prefix.
    pub fn set_basenames(&mut self, names: &[(String, bool)]) -> Result<()> {
        use agentguard_common::filter::BASENAME_LEN;
        use agentguard_common::filter::{basename_pairs, BASENAME_PAIR_WORDS};
        use aya::maps::lpm_trie::{Key, LpmTrie};
        let mut keys = Vec::with_capacity(names.len());
        let mut pairs = vec![0u32; BASENAME_PAIR_WORDS as usize];
        for (name, exact) in names {
            let b = name.as_bytes();
            // The NUL after an exact name is part of its key.
            if b.len() >= BASENAME_LEN || b.is_empty() {
                bail!("file name {name:?}: 1 to {} bytes", BASENAME_LEN - 1);
            }
            let mut data = [0u8; BASENAME_LEN];
            data[..b.len()].copy_from_slice(b);
            let bytes = b.len() + usize::from(*exact);
            keys.push((name, Key::new((bytes * 8) as u32, data)));
            for (w, bit) in basename_pairs(b, *exact) {
                if let Some(x) = pairs.get_mut(w as usize) {
                    *x |= bit;
                }
            }
        }
        // Never a moment where a name of the old or the new set is
        // missed: the pair bits and trie entries grow to the union first,
        // and shrink to the new set after.
        let mut bits: Array<_, u32> = Array::try_from(map(&mut self.ebpf, "BASENAME_PAIRS")?)?;
        for (w, new) in pairs.iter().enumerate() {
            let old = bits.get(&(w as u32), 0).unwrap_or(0);
            if old | new != old {
                bits.set(w as u32, old | new, 0)
                    .context("writing BASENAME_PAIRS")?;
            }
        }
        let mut trie: LpmTrie<_, [u8; BASENAME_LEN], u8> =
            LpmTrie::try_from(map(&mut self.ebpf, "BASENAMES")?)?;
        let old: Vec<Key<[u8; BASENAME_LEN]>> = trie.keys().filter_map(|k| k.ok()).collect();
        for (name, key) in &keys {
            trie.insert(key, 1, 0)
                .with_context(|| format!("writing BASENAMES {name:?}"))?;
        }
        for k in old {
            let stale = !keys
                .iter()
                .any(|(_, n)| n.prefix_len() == k.prefix_len() && n.data() == k.data());
            if stale {
                let _ = trie.remove(&k);
            }
        }
        let mut bits: Array<_, u32> = Array::try_from(map(&mut self.ebpf, "BASENAME_PAIRS")?)?;
        for (w, new) in pairs.iter().enumerate() {
            if bits.get(&(w as u32), 0).unwrap_or(0) != *new {
                bits.set(w as u32, *new, 0)
                    .context("writing BASENAME_PAIRS")?;
            }
        }
        Ok(())
    }

    /// Records of guarded tasks the prefilter kept in the kernel.
    pub fn prefiltered(&mut self) -> u64 {
        self.counter(counter::PREFILTERED)
    }

    /// Sets flood isolation's quota: `per_sec` records per second per
    /// subject and CPU (0: off). The kernel counts per window of
    /// 2^WINDOW_SHIFT ns.
    pub fn set_flood_quota(&mut self, per_sec: u32) -> Result<()> {
        // Past the quota, records are dropped only once an eighth of the
        // ring buffer waits: the daemon is falling behind.
        self.set_config(config::FLOOD_PRESSURE, self.ring_bytes / 8)?;
        self.set_config(config::FLOOD_QUOTA, flood_window_quota(per_sec))
    }

    /// CLOCK_BOOTTIME ns just before the probes were attached.
    pub fn started_ns(&self) -> u64 {
        self.started_ns
    }

    /// Records flood isolation dropped, all subjects.
    pub fn flooded(&mut self) -> u64 {
        self.counter(counter::FLOODED)
    }

    /// Every subject whose records flood isolation dropped: its cgroup id,
    /// the last process dropped, and the drops by kind wire number, summed
    /// over CPUs since the subject's entry was made (an evicted entry
    /// starts again from 0).
    pub fn floods(&mut self) -> Vec<FloodCount> {
        use agentguard_common::filter::FloodState;
        let Some(m) = self.ebpf.map("FLOOD") else {
            return Vec::new();
        };
        let Ok(map) = aya::maps::PerCpuHashMap::<_, u64, FloodState>::try_from(m) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (cgroup_id, per_cpu) in map.iter().flatten() {
            let mut c = FloodCount {
                cgroup_id,
                ..Default::default()
            };
            for st in per_cpu.iter() {
                for (d, n) in c.dropped.iter_mut().zip(st.dropped) {
                    *d += u64::from(n);
                }
                if st.last_pid != 0 {
                    c.last_pid = st.last_pid;
                }
            }
            if c.dropped.iter().any(|&n| n > 0) {
                out.push(c);
            }
        }
        out
    }

    /// DNS queries the egress program dropped (domain rules).
    pub fn dns_dropped(&mut self) -> u64 {
        self.counter(counter::DNS_DROPPED)
    }

    /// Writes a `CONFIG` slot (agentguard_common::filter::config).
    pub fn config(&mut self, idx: u32) -> Result<u32> {
        let cfg: Array<_, u32> = Array::try_from(map(&mut self.ebpf, "CONFIG")?)?;
        cfg.get(&idx, 0)
            .with_context(|| format!("reading CONFIG[{idx}]"))
    }

    pub fn set_config(&mut self, idx: u32, value: u32) -> Result<()> {
        let mut cfg: Array<_, u32> = Array::try_from(map(&mut self.ebpf, "CONFIG")?)?;
        cfg.set(idx, value, 0)
            .with_context(|| format!("writing CONFIG[{idx}]"))?;
        Ok(())
    }

    /// Hands a map to another stage (enforcement owns its maps).
    pub fn take_map(&mut self, name: &str) -> Result<aya::maps::Map> {
        self.ebpf
            .take_map(name)
            .ok_or_else(|| anyhow!("map {name} missing from the eBPF object"))
    }

    /// Loads and attaches the network-deny programs at cgroup v2 `root`,
    /// pinning each link in `pin_dir` so the deny outlives the daemon. A
    /// link already pinned there (a previous daemon's) is adopted: the old
    /// program keeps running on the same pinned maps, nothing is attached
    /// twice. Returns the programs attached now.
    pub fn attach_sock_addr(
        &mut self,
        root: &std::path::Path,
        pin_dir: &std::path::Path,
    ) -> Result<Vec<String>> {
        let names: Vec<&str> = SOCK_ADDR_PROGRAMS
            .iter()
            .copied()
            .chain([SOCK_CREATE_PROGRAM])
            .collect();
        self.attach_cgroup_programs(root, pin_dir, &names)
    }

    /// Loads and attaches the DNS skb programs of domain rules, pinned
    /// like [`Sensor::attach_sock_addr`]'s.
    pub fn attach_dns(
        &mut self,
        root: &std::path::Path,
        pin_dir: &std::path::Path,
    ) -> Result<Vec<String>> {
        let names: Vec<&str> = DNS_PROGRAMS.iter().map(|(n, _)| *n).collect();
        self.attach_cgroup_programs(root, pin_dir, &names)
    }

    fn attach_cgroup_programs(
        &mut self,
        root: &std::path::Path,
        pin_dir: &std::path::Path,
        names: &[&str],
    ) -> Result<Vec<String>> {
        use aya::programs::{
            links::FdLink, CgroupAttachMode, CgroupSkb, CgroupSkbAttachType, CgroupSock,
            CgroupSockAddr,
        };
        let cgroup = std::fs::File::open(root)
            .with_context(|| format!("opening cgroup v2 root {}", root.display()))?;
        let mut attached = Vec::new();
        for name in names {
            let pin = pin_dir.join(format!("link_{name}"));
            if pin.exists() {
                continue;
            }
            let program = self
                .ebpf
                .program_mut(name)
                .ok_or_else(|| anyhow!("program {name} missing from the eBPF object"))?;
            // bpf_link_create refuses attach flags: cgroup links always
            // coexist with other programs, so "Single" (no flag) is right.
            let skb = DNS_PROGRAMS.iter().find(|(n, _)| n == name);
            let link: FdLink = if let Some((_, egress)) = skb {
                let prog: &mut CgroupSkb = program.try_into()?;
                prog.load()
                    .with_context(|| format!("verifier rejected program {name}"))?;
                let ty = if *egress {
                    CgroupSkbAttachType::Egress
                } else {
                    CgroupSkbAttachType::Ingress
                };
                let id = prog
                    .attach(&cgroup, ty, CgroupAttachMode::Single)
                    .with_context(|| format!("attaching {name} to {}", root.display()))?;
                prog.take_link(id)?
                    .try_into()
                    .map_err(|e| anyhow!("{name}: not a bpf_link (kernel too old to pin): {e:?}"))?
            } else if *name == SOCK_CREATE_PROGRAM {
                let prog: &mut CgroupSock = program.try_into()?;
                prog.load()
                    .with_context(|| format!("verifier rejected program {name}"))?;
                let id = prog
                    .attach(&cgroup, CgroupAttachMode::Single)
                    .with_context(|| format!("attaching {name} to {}", root.display()))?;
                prog.take_link(id)?
                    .try_into()
                    .map_err(|e| anyhow!("{name}: not a bpf_link (kernel too old to pin): {e:?}"))?
            } else {
                let prog: &mut CgroupSockAddr = program.try_into()?;
                prog.load()
                    .with_context(|| format!("verifier rejected program {name}"))?;
                let id = prog
                    .attach(&cgroup, CgroupAttachMode::Single)
                    .with_context(|| format!("attaching {name} to {}", root.display()))?;
                prog.take_link(id)?
                    .try_into()
                    .map_err(|e| anyhow!("{name}: not a bpf_link (kernel too old to pin): {e:?}"))?
            };
            link.pin(&pin)
                .with_context(|| format!("pinning {name} at {}", pin.display()))?;
            attached.push((*name).to_owned());
        }
        Ok(attached)
    }

    /// Loads and attaches the BPF-LSM programs (every hook in
    /// [`LSM_PROGRAMS`]; optional ones are skipped where the kernel lacks
    /// the hook). Returns the hooks attached. They live as long as the
    /// sensor: after the daemon stops, only the pinned sock_addr denies stay.
    pub fn attach_lsm(&mut self) -> Result<Vec<String>> {
        use aya::programs::Lsm;
        let btf = aya::Btf::from_sys_fs().context("reading the kernel BTF for the LSM hooks")?;
        let kernel_btf = btf::KernelBtf::from_sys_fs().map_err(|e| anyhow!("{e}"))?;
        let mut attached = Vec::new();
        for (name, hook, optional) in LSM_PROGRAMS {
            if kernel_btf.func_id(&format!("bpf_lsm_{hook}")).is_none() {
                if *optional {
                    self.skipped.push(format!("lsm/{hook}"));
                    continue;
                }
                bail!("this kernel has no LSM hook {hook} (bpf_lsm_{hook} missing from its BTF)");
            }
            let prog: &mut Lsm = self
                .ebpf
                .program_mut(name)
                .ok_or_else(|| anyhow!("program {name} missing from the eBPF object"))?
                .try_into()?;
            prog.load(hook, &btf)
                .with_context(|| format!("verifier rejected LSM program {name} ({hook})"))?;
            prog.attach()
                .with_context(|| format!("attaching LSM hook {hook}"))?;
            attached.push(format!("lsm/{hook}"));
        }
        self.attached.extend(attached.iter().cloned());
        Ok(attached)
    }

    /// Removes `tgid`'s entry: it falls back to the default.
    pub fn clear_filter(&mut self, tgid: u32) -> Result<()> {
        let mut filter: HashMap<_, u32, u32> =
            HashMap::try_from(map(&mut self.ebpf, "TASK_FILTER")?)?;
        match filter.remove(&tgid) {
            Ok(()) | Err(aya::maps::MapError::KeyNotFound) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Records the kernel could not put in the full ring buffer.
    pub fn lost_events(&mut self) -> u64 {
        self.counter(counter::LOST)
    }

    /// Requests against the daemon (signal, ptrace, bpf) the LSM hooks
    /// refused to guarded tasks.
    pub fn self_protect_refusals(&mut self) -> u64 {
        self.counter(counter::SELF_PROTECT)
    }

    /// Turns the LSM decision timing on (benchmarks).
    pub fn set_lsm_timing(&mut self, on: bool) -> Result<()> {
        self.set_config(config::LSM_TIMING, u32::from(on))
    }

    /// (count, p50 ns, p99 ns) of the timed LSM decisions.
    pub fn lsm_timing(&mut self) -> Option<(u64, u64, u64)> {
        use agentguard_common::filter::{LSM_TIME_BUCKETS, LSM_TIME_BUCKET_NS};
        let Some(m) = self.ebpf.map("LSM_TIMES") else {
            tracing::debug!("LSM_TIMES map missing");
            return None;
        };
        let arr = match PerCpuArray::<_, u64>::try_from(m) {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!("reading LSM_TIMES: {e}");
                return None;
            }
        };
        let hist: Vec<u64> = (0..LSM_TIME_BUCKETS)
            .map(|i| arr.get(&i, 0).map(|v| v.iter().sum()).unwrap_or(0))
            .collect();
        let n: u64 = hist.iter().sum();
        if n == 0 {
            tracing::debug!("LSM_TIMES: no decision timed");
            return None;
        }
        let pct = |q: f64| {
            let want = ((n as f64) * q).ceil() as u64;
            let mut acc = 0;
            for (i, c) in hist.iter().enumerate() {
                acc += c;
                if acc >= want {
                    // The bucket's middle.
                    return i as u64 * LSM_TIME_BUCKET_NS + LSM_TIME_BUCKET_NS / 2;
                }
            }
            u64::from(LSM_TIME_BUCKETS) * LSM_TIME_BUCKET_NS
        };
        Some((n, pct(0.5), pct(0.99)))
    }

    /// Kernel map inserts refused because the map was full, and pending
    /// syscall records a full LRU map evicted, by map.
    pub fn map_full(&mut self) -> [(&'static str, u64); 6] {
        let [file, net, exec, rename] = self.pending_lost();
        [
            ("task_filter", self.counter(counter::FULL_TASK_FILTER)),
            ("enforce_tasks", self.counter(counter::FULL_ENFORCE_TASKS)),
            (pending::NAMES[0], file),
            (pending::NAMES[1], net),
            (pending::NAMES[2], exec),
            (pending::NAMES[3], rename),
        ]
    }

    /// Pending records lost to eviction, per pending map: put in − still
    /// there − taken out. Read in that order, each later read can only
    /// grow its term, so the figure never overstates (no false alarm); the
    /// highest seen is kept.
    fn pending_lost(&mut self) -> [u64; 4] {
        for i in 0..4 {
            let put = self.counter(counter::PENDING_IN + i as u32);
            let live = match i as u32 {
                pending::FILE => self.live_keys::<FileEvent>(pending::MAPS[i]),
                pending::NET => self.live_keys::<NetEvent>(pending::MAPS[i]),
                pending::EXEC => self.live_keys::<ExecEvent>(pending::MAPS[i]),
                _ => self.live_keys::<RenameEvent>(pending::MAPS[i]),
            };
            let taken = self.counter(counter::PENDING_OUT + i as u32);
            let Some(live) = live else { continue };
            let lost = put.saturating_sub(live + taken);
            self.pending_lost[i] = self.pending_lost[i].max(lost);
        }
        self.pending_lost
    }

    /// Keys in a hash map of `u32 -> V` (None: the map can't be read).
    fn live_keys<V: aya::Pod>(&mut self, name: &str) -> Option<u64> {
        let m = self.ebpf.map(name)?;
        let h = HashMap::<_, u32, V>::try_from(m)
            .inspect_err(|e| tracing::debug!("reading {name}: {e}"))
            .ok()?;
        Some(h.keys().filter(|k| k.is_ok()).count() as u64)
    }

    /// (walks, hits) of the LSM hooks' ancestor walks.
    pub fn lsm_walks(&mut self) -> (u64, u64) {
        (
            self.counter(counter::LSM_WALKS),
            self.counter(counter::LSM_HITS),
        )
    }

    /// Records userspace could not decode.
    pub fn decode_errors(&self) -> u64 {
        self.decode_errors
    }

    /// How the syscalls are hooked on this run (never `Auto`).
    pub fn syscall_hooks(&self) -> SyscallHooks {
        self.backend
    }

    /// "category/name" of each attached tracepoint.
    pub fn attached(&self) -> &[String] {
        &self.attached
    }

    /// Optional tracepoints this kernel lacks.
    pub fn skipped(&self) -> &[String] {
        &self.skipped
    }

    fn counter(&mut self, idx: u32) -> u64 {
        let Some(m) = self.ebpf.map_mut("COUNTERS") else {
            return 0;
        };
        let Ok(arr) = PerCpuArray::<_, u64>::try_from(m) else {
            return 0;
        };
        arr.get(&idx, 0).map(|v| v.iter().sum()).unwrap_or(0)
    }
}

fn map<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut aya::maps::Map> {
    ebpf.map_mut(name)
        .ok_or_else(|| anyhow!("map {name} missing from the eBPF object"))
}

/// "sys_enter_openat" is both the program's and the tracepoint's name.
fn tracepoint_name(program: &str) -> &str {
    program
}

/// Offset of `field` in a tracepoint's record, from its tracefs format file.
/// Ok(None) when the tracepoint exists but has no such field.
pub fn tracepoint_field_offset(
    tracefs: &std::path::Path,
    event: &str,
    field: &str,
) -> Result<Option<u64>> {
    let path = tracefs.join("events").join(event).join("format");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("tracepoint {event} missing ({})", path.display()))?;
    Ok(parse_format_offset(&text, field))
}

fn parse_format_offset(format: &str, field: &str) -> Option<u64> {
    for line in format.lines() {
        let line = line.trim();
        let Some(decl) = line.strip_prefix("field:") else {
            continue;
        };
        let mut parts = decl.split(';');
        let name_part = parts.next()?;
        // "char comm[16]" or "u64 clone_flags": the last word, minus [..].
        let name = name_part
            .split_whitespace()
            .last()
            .map(|n| n.split('[').next().unwrap_or(n))?;
        if name != field {
            continue;
        }
        for p in parts {
            if let Some(off) = p.trim().strip_prefix("offset:") {
                return off.trim().parse().ok();
            }
        }
    }
    None
}

/// Fills `exec.binary` from /proc/PID/exe. The record is emitted at the
/// exec's return, so the link already names the new program. Done here, as
/// the record leaves the ring, because the process may exit soon after.
fn fill_binary(ev: &mut Event) {
    let Detail::Exec(x) = &mut ev.detail else {
        return;
    };
    if ev.ret != 0 && !ev.kernel_action.as_ref().is_some_and(|k| k.killed) {
        return;
    }
    if let Ok(target) = std::fs::read_link(format!("/proc/{}/exe", ev.pid)) {
        let target = target.to_string_lossy();
        if target != x.file.path {
            x.binary = Some(target.into_owned());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FORMAT: &str = "name: sched_process_exit\nID: 369\nformat:\n\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\n\tfield:char comm[16];\toffset:8;\tsize:16;\tsigned:0;\n\tfield:pid_t pid;\toffset:24;\tsize:4;\tsigned:1;\n\tfield:bool group_dead;\toffset:32;\tsize:1;\tsigned:0;\n";

    #[test]
    fn format_offsets() {
        assert_eq!(parse_format_offset(FORMAT, "group_dead"), Some(32));
        assert_eq!(parse_format_offset(FORMAT, "comm"), Some(8));
        assert_eq!(parse_format_offset(FORMAT, "pid"), Some(24));
        assert_eq!(parse_format_offset(FORMAT, "missing"), None);
    }

    #[test]
    fn every_probe_has_a_program_name_in_the_object_namespace() {
        // Each kind is served by at least one probe.
        for k in Kind::ALL {
            // Fork/exit: scheduler tracepoints; dns: the cgroup skb
            // programs (DNS_PROGRAMS); flood, policy_reload: the daemon.
            if matches!(
                k,
                Kind::Fork | Kind::Exit | Kind::Dns | Kind::Flood | Kind::PolicyReload
            ) {
                continue;
            }
            assert!(
                PROBES.iter().any(|p| p.kinds.contains(&k)),
                "no probe for {k}"
            );
        }
    }
}
