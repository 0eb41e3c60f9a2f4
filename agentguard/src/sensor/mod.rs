//! The sensor: loads the eBPF object, attaches the probes, reads the ring
//! buffer and turns raw records into typed [`crate::event::Event`]s.
//!
//! Narrow interface: [`Sensor::start`] with [`SensorOptions`], then
//! [`Sensor::read`] in a loop; [`Sensor::set_filter`] feeds the in-kernel
//! task filter (the identity stage will drive it).
//!
//! Size: `Sensor::start` is one load, offset and attach sequence (about 280
//! lines) kept in one place; the catalogue, attachment and counters live in
//! `catalog.rs`, `attach.rs`, `stats.rs`.

mod attach;
pub mod bpfsys;
pub mod btf;
mod catalog;
pub mod cgroups;
pub mod decode;
pub mod features;
pub mod hostfs;
pub mod paths;
mod stats;

use std::os::fd::AsRawFd;

use anyhow::{anyhow, bail, Context as _, Result};
use aya::{
    maps::{Array, HashMap, MapData, RingBuf},
    Ebpf, EbpfLoader,
};
use tokio::io::unix::AsyncFd;

use agentguard_common::filter::{config, IGNORE};

use crate::event::{Detail, Event, Kind};

pub use attach::tracepoint_field_offset;
use attach::{attach_raw, attach_tracepoints};
use catalog::{ProbeSpec, NO_NR, OFFSETS, PROBES};
pub use catalog::{DNS_PROGRAMS, LSM_PROGRAMS, PIN_DIR, SOCK_ADDR_PROGRAMS, SOCK_CREATE_PROGRAM};

/// The eBPF object built by build.rs (aya-build) from agentguard-ebpf.
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/agentguard"));

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
    /// Open-like entry programs raw dispatch left out of their slots
    /// (syscall number, loaded program, probe name): see
    /// `config::OPENS_AT_EXIT`.
    opens_deferred: Vec<(u32, aya::programs::ProgramFd, &'static str)>,
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
        let mut opens_deferred = Vec::new();
        if try_raw {
            match attach_raw(
                &mut ebpf,
                PROBES.iter().filter(|p| wanted(p) && p.nr != NO_NR),
                &mut attached,
            ) {
                Ok(deferred) => {
                    backend = SyscallHooks::Raw;
                    opens_deferred = deferred;
                }
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
        crate::alloc::release_free_memory();
        Ok(Sensor {
            ebpf,
            ring,
            attached,
            skipped,
            backend,
            opens_deferred,
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

    /// Removes `tgid`'s entry: it falls back to the default.
    pub fn clear_filter(&mut self, tgid: u32) -> Result<()> {
        let mut filter: HashMap<_, u32, u32> =
            HashMap::try_from(map(&mut self.ebpf, "TASK_FILTER")?)?;
        match filter.remove(&tgid) {
            Ok(()) | Err(aya::maps::MapError::KeyNotFound) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Turns the LSM decision timing on (benchmarks).
    pub fn set_lsm_timing(&mut self, on: bool) -> Result<()> {
        self.set_config(config::LSM_TIMING, u32::from(on))
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
}

fn map<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut aya::maps::Map> {
    ebpf.map_mut(name)
        .ok_or_else(|| anyhow!("map {name} missing from the eBPF object"))
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
