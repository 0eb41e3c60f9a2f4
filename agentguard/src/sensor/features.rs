//! What this kernel supports, found by trying (the `agentguard check`
//! command): tiny hand-assembled programs are loaded with raw `bpf(2)` and,
//! where cheap, attached. Version numbers are not consulted: distributions
//! backport and lock down features independently of them.
//!
//! The raw `bpf(2)` plumbing is in [`super::bpfsys`], the host filesystem
//! facts (tracefs, bpffs, cgroup2) in [`super::hostfs`]; this file is the
//! probes, one per capability, and the report. It stays one file (about
//! 700 lines besides its tests) so that every verdict `check` prints can be
//! read next to the probe that decides it.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;

use serde::Serialize;

use super::bpfsys::*;
use super::btf::KernelBtf;
use super::hostfs::*;
pub use super::hostfs::{cgroup2_mount, ensure_bpffs, ensure_tracefs};

#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(tag = "status", content = "detail", rename_all = "snake_case")]
pub enum Status {
    Supported,
    Unsupported(String),
    Error(String),
}

#[derive(Serialize, Clone, Debug)]
pub struct Probe {
    pub name: &'static str,
    /// Serialized inline: {"name": .., "status": .., "detail": ..}.
    #[serde(flatten)]
    pub status: Status,
}

#[derive(Serialize, Clone, Debug)]
pub struct Capability {
    pub feature: &'static str,
    pub available: bool,
    pub needs: Vec<&'static str>,
    pub note: &'static str,
}

#[derive(Serialize, Clone, Debug)]
pub struct FeatureReport {
    /// uname release.
    pub kernel: String,
    /// The enforcement backend `run` chooses here: "lsm" or "tracepoint".
    pub backend: &'static str,
    pub probes: Vec<Probe>,
    pub capabilities: Vec<Capability>,
}

const NEEDS_ROOT: &str = "needs root (CAP_BPF/CAP_SYS_ADMIN)";

/// (agentguard feature, probes it needs, note).
const CAPABILITIES: &[(&str, &[&str], &str)] = &[
    (
        "event sensor (process/file/network events)",
        &[
            "btf",
            "tracefs",
            "tracepoints",
            "ringbuf",
            "tracepoint_prog",
        ],
        "syscall tracepoints -> ring buffer",
    ),
    (
        "kill at syscall entry (bpf_send_signal)",
        &["send_signal"],
        "the syscall in flight still completes; later ones don't run",
    ),
    (
        "deny network in kernel (cgroup sock_addr)",
        &["cgroup_v2", "sock_addr"],
        "connect/sendmsg refused with EPERM before any packet leaves",
    ),
    (
        "egress by domain name (cgroup skb reads DNS)",
        &["cgroup_v2", "sock_addr", "cgroup_skb"],
        "except.domains: DNS answers allow addresses, other queries dropped",
    ),
    (
        "block file ops before they happen (BPF-LSM)",
        &["bpf_lsm"],
        "without it, file policy can only kill after the fact",
    ),
    (
        "raw syscall dispatch (cheaper syscall hooks)",
        &["raw_tracepoint"],
        "raw tracepoints on every syscall's entry/exit jump to the hooked syscalls' handlers; no per-call trace record (x86-64; AGENTGUARD_SYSCALL_HOOKS=tracepoints to opt out)",
    ),
    (
        "fentry-based probes",
        &["fentry"],
        "cheaper than kprobes; needs BTF trampolines",
    ),
    (
        "kprobe fallbacks / bpf_override_return",
        &["kprobes"],
        "only for kernels missing a needed tracepoint",
    ),
    (
        "relative path resolution in kernel (BTF offsets)",
        &["btf", "probe_read_kernel"],
        "walks task->fs and dentries with offsets from kernel BTF",
    ),
];

/// Does the verifier let a tracepoint program call `bpf_send_signal`?
pub fn probe_send_signal() -> Status {
    // bpf_send_signal(0): signal 0 is harmless should it ever run.
    probe_helper(&[
        mov64_imm(R1, 0),
        call(HELPER_SEND_SIGNAL),
        mov64_imm(R0, 0),
        exit(),
    ])
}

/// Runs every probe. Never panics: a probe that somehow does is reported
/// as an Error. Most probes need root.
pub fn detect() -> FeatureReport {
    let root = is_root();
    let btf = KernelBtf::from_sys_fs();
    let mut probes = Vec::new();
    let mut run = |name: &'static str, f: &dyn Fn() -> Status| {
        let status = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
            .unwrap_or_else(|_| Status::Error("probe panicked (bug in agentguard)".into()));
        probes.push(Probe {
            name,
            status: not_root_hint(status, root),
        });
    };
    let btf_ok = btf.as_ref().ok();

    run("btf", &|| match &btf {
        Ok(_) => Status::Supported,
        Err(e @ super::btf::BtfError::Io(_)) => Status::Unsupported(e.to_string()),
        Err(e) => Status::Error(e.to_string()),
    });
    run("tracefs", &probe_tracefs);
    run("tracepoints", &probe_tracepoints);
    run("ringbuf", &probe_ringbuf);
    run("tracepoint_prog", &probe_tracepoint_prog);
    run("send_signal", &probe_send_signal);
    run("probe_read_kernel", &|| {
        // bpf_probe_read_kernel(fp-8, 8, NULL)
        probe_helper(&[
            mov64_reg(R1, R10),
            add64_imm(R1, -8),
            mov64_imm(R2, 8),
            mov64_imm(R3, 0),
            call(HELPER_PROBE_READ_KERNEL),
            mov64_imm(R0, 0),
            exit(),
        ])
    });
    run("probe_write_user", &|| {
        // bpf_probe_write_user(NULL, fp-8, 8); the source must be
        // initialized stack, hence the store first.
        probe_helper(&[
            st_mem_dw(R10, -8, 0),
            mov64_imm(R1, 0),
            mov64_reg(R2, R10),
            add64_imm(R2, -8),
            mov64_imm(R3, 8),
            call(HELPER_PROBE_WRITE_USER),
            mov64_imm(R0, 0),
            exit(),
        ])
    });
    run("cgroup_v2", &|| match find_cgroup2_mount() {
        Ok(Some(_)) => Status::Supported,
        Ok(None) => Status::Unsupported("no cgroup2 mount in /proc/self/mountinfo".into()),
        Err(e) => Status::Error(e),
    });
    run("sock_addr", &probe_sock_addr);
    run("cgroup_skb", &probe_cgroup_skb);
    run("kprobes", &probe_kprobes);
    run("fentry", &|| probe_fentry(btf_ok));
    run("bpf_lsm", &|| probe_bpf_lsm(btf_ok));
    run("lockdown", &probe_lockdown);
    run("tp_btf", &|| probe_tp_btf(btf_ok));
    run("raw_tracepoint", &probe_raw_tracepoint);

    let capabilities = CAPABILITIES
        .iter()
        .map(|(feature, needs, note)| Capability {
            feature,
            available: needs.iter().all(|n| {
                probes
                    .iter()
                    .any(|p| p.name == *n && p.status == Status::Supported)
            }),
            needs: needs.to_vec(),
            note,
        })
        .collect();
    let backend = if probes
        .iter()
        .any(|p| p.name == "bpf_lsm" && p.status == Status::Supported)
    {
        "lsm"
    } else {
        "tracepoint"
    };
    FeatureReport {
        kernel: kernel_release(),
        backend,
        probes,
        capabilities,
    }
}

impl FeatureReport {
    pub fn is_supported(&self, probe: &str) -> bool {
        self.probes
            .iter()
            .any(|p| p.name == probe && p.status == Status::Supported)
    }

    /// Two tables: probe results, then what they mean for agentguard.
    pub fn render_table(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        let _ = writeln!(out, "kernel {}", self.kernel);
        let _ = writeln!(
            out,
            "enforcement backend: {}",
            match self.backend {
                "lsm" => "lsm (BPF-LSM hooks decide on the file/socket itself and refuse before it happens)",
                _ => "tracepoint (kill at syscall entry on the path strings; the syscall in flight completes; file denies only alert)",
            }
        );
        let _ = writeln!(out);
        let w = self
            .probes
            .iter()
            .map(|p| p.name.len())
            .max()
            .unwrap_or(5)
            .max(5);
        let _ = writeln!(out, "{:<w$}  {:<11}  detail", "probe", "status");
        for p in &self.probes {
            let (status, detail) = match &p.status {
                Status::Supported => ("supported", ""),
                Status::Unsupported(d) => ("unsupported", d.as_str()),
                Status::Error(d) => ("error", d.as_str()),
            };
            let _ = writeln!(out, "{:<w$}  {:<11}  {}", p.name, status, one_line(detail));
        }
        let _ = writeln!(out);
        let w = self
            .capabilities
            .iter()
            .map(|c| c.feature.len())
            .max()
            .unwrap_or(10)
            .max(10);
        let _ = writeln!(out, "{:<w$}  avail  notes", "capability");
        for c in &self.capabilities {
            let missing: Vec<&str> = c
                .needs
                .iter()
                .copied()
                .filter(|n| !self.is_supported(n))
                .collect();
            let notes = if missing.is_empty() {
                c.note.to_owned()
            } else {
                format!("missing: {} ({})", missing.join(", "), c.note)
            };
            let yes = if c.available { "yes" } else { "no" };
            let _ = writeln!(out, "{:<w$}  {:<5}  {notes}", c.feature, yes);
        }
        out
    }
}

fn one_line(s: &str) -> String {
    s.split('\n')
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" | ")
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Without root nearly every bpf() call fails with EPERM; say so instead
/// of blaming the kernel.
fn not_root_hint(status: Status, root: bool) -> Status {
    match status {
        Status::Unsupported(d) | Status::Error(d)
            if !root && (d.contains("(EPERM)") || d.contains("(EACCES)")) =>
        {
            Status::Error(format!("{NEEDS_ROOT}: {d}"))
        }
        s => s,
    }
}

fn kernel_release() -> String {
    // SAFETY: utsname is plain old data; all-zero is a valid value.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: `u` is a valid, writable utsname.
    if unsafe { libc::uname(&mut u) } != 0 {
        return "unknown".into();
    }
    // SAFETY: uname NUL-terminates each field within its array.
    let rel = unsafe { std::ffi::CStr::from_ptr(u.release.as_ptr()) };
    rel.to_string_lossy().into_owned()
}

/// A tracepoint program calling one helper: verifier acceptance is the test.
fn probe_helper(insns: &[Insn]) -> Status {
    match load_prog(BPF_PROG_TYPE_TRACEPOINT, insns, LoadOpts::default()) {
        Ok(_fd) => Status::Supported,
        Err(e) if e.unknown_helper() => Status::Unsupported(format!(
            "helper refused by the verifier (kernel lockdown or config): {}",
            e.describe()
        )),
        Err(e) if e.errno == libc::EPERM && is_root() => Status::Unsupported(e.describe()),
        Err(e) => Status::Error(e.describe()),
    }
}

/// Failure of a load whose success *is* the feature: as root, any refusal
/// means "not here".
fn load_failure(e: &LoadError) -> Status {
    if is_root() {
        Status::Unsupported(format!("program load refused: {}", e.describe()))
    } else {
        Status::Error(format!("program load refused: {}", e.describe()))
    }
}

// --------------------------------------------------------------- probes --

/// Can this kernel create a ring buffer map (5.8+)?
pub fn probe_ringbuf() -> Status {
    let mut attr = MapCreateAttr {
        map_type: BPF_MAP_TYPE_RINGBUF,
        max_entries: 4096 * 16,
        ..Default::default()
    };
    match sys_bpf(BPF_MAP_CREATE, &mut attr).and_then(own_fd) {
        Ok(_fd) => Status::Supported,
        Err(libc::EINVAL) => Status::Unsupported(format!(
            "ring buffer map refused: {}",
            errno_text(libc::EINVAL)
        )),
        Err(e) if is_root() => {
            Status::Unsupported(format!("ring buffer map refused: {}", errno_text(e)))
        }
        Err(e) => Status::Error(errno_text(e)),
    }
}

fn probe_tracefs() -> Status {
    match ensure_tracefs() {
        Ok(_) => Status::Supported,
        Err(e) => Status::Unsupported(e),
    }
}

/// Id of a tracefs event (e.g. "syscalls/sys_enter_openat").
fn tracepoint_id(event: &str) -> Result<u64, String> {
    let tracefs = ensure_tracefs()?;
    let path = tracefs.join("events").join(event).join("id");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    text.trim()
        .parse()
        .map_err(|_| format!("{}: not a number: {:?}", path.display(), text.trim()))
}

fn probe_tracepoints() -> Status {
    match tracepoint_id("syscalls/sys_enter_openat") {
        Ok(_) => Status::Supported,
        Err(e) => Status::Unsupported(format!(
            "syscall tracepoints unavailable (CONFIG_FTRACE_SYSCALLS?): {e}"
        )),
    }
}

/// `struct perf_event_attr` up to config2 (PERF_ATTR_SIZE_VER1).
#[repr(C)]
#[derive(Default)]
struct PerfEventAttr {
    type_: u32,
    size: u32,
    config: u64,
    sample_period: u64,
    sample_type: u64,
    read_format: u64,
    flags: u64,
    wakeup_events: u32,
    bp_type: u32,
    config1: u64,
    config2: u64,
}

const PERF_TYPE_TRACEPOINT: u32 = 2;
const PERF_FLAG_FD_CLOEXEC: libc::c_ulong = 8;
/// _IOW('$', 8, __u32)
const PERF_EVENT_IOC_SET_BPF: libc::c_ulong = 0x4004_2408;

fn perf_event_open(attr: &mut PerfEventAttr) -> Result<OwnedFd, i32> {
    attr.size = std::mem::size_of::<PerfEventAttr>() as u32;
    // SAFETY: `attr` is a valid perf_event_attr prefix whose size field
    // says how long it is; pid -1 + cpu 0 is a system-wide event on CPU 0.
    let r = unsafe {
        libc::syscall(
            libc::SYS_perf_event_open,
            attr as *mut PerfEventAttr,
            -1 as libc::c_int,
            0 as libc::c_int,
            -1 as libc::c_int,
            PERF_FLAG_FD_CLOEXEC,
        )
    };
    if r < 0 {
        Err(errno())
    } else {
        own_fd(r)
    }
}

fn probe_tracepoint_prog() -> Status {
    let prog = match load_prog(BPF_PROG_TYPE_TRACEPOINT, &ret(0), LoadOpts::default()) {
        Ok(fd) => fd,
        Err(e) => return load_failure(&e),
    };
    let id = match tracepoint_id("syscalls/sys_enter_openat") {
        Ok(id) => id,
        Err(e) => return Status::Error(format!("loaded, but no tracepoint to attach to: {e}")),
    };
    let mut attr = PerfEventAttr {
        type_: PERF_TYPE_TRACEPOINT,
        config: id,
        sample_period: 1,
        wakeup_events: 1,
        ..Default::default()
    };
    let event = match perf_event_open(&mut attr) {
        Ok(fd) => fd,
        Err(e) => {
            return Status::Error(format!(
                "perf_event_open(tracepoint {id}): {}",
                errno_text(e)
            ))
        }
    };
    // SAFETY: both fds are open and owned here; SET_BPF takes the program
    // fd by value.
    let r = unsafe {
        libc::ioctl(
            event.as_raw_fd(),
            PERF_EVENT_IOC_SET_BPF as _,
            prog.as_raw_fd(),
        )
    };
    if r < 0 {
        return Status::Unsupported(format!("PERF_EVENT_IOC_SET_BPF: {}", errno_text(errno())));
    }
    // Closing the perf event detaches the program.
    Status::Supported
}

fn probe_kprobes() -> Status {
    let pmu = match std::fs::read_to_string(KPROBE_PMU_TYPE) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Status::Unsupported(format!(
                "no kprobe PMU ({KPROBE_PMU_TYPE} missing): CONFIG_KPROBES off"
            ))
        }
        Err(e) => return Status::Error(format!("{KPROBE_PMU_TYPE}: {e}")),
    };
    let Ok(pmu_type) = pmu.trim().parse::<u32>() else {
        return Status::Error(format!("{KPROBE_PMU_TYPE}: not a number: {:?}", pmu.trim()));
    };
    // A common, stable, non-inlined symbol.
    let sym = c"do_sys_openat2";
    let mut attr = PerfEventAttr {
        type_: pmu_type,
        sample_period: 1,
        wakeup_events: 1,
        config1: sym.as_ptr() as u64,
        ..Default::default()
    };
    match perf_event_open(&mut attr) {
        Ok(_fd) => Status::Supported,
        Err(e) => Status::Unsupported(format!("kprobe on do_sys_openat2: {}", errno_text(e))),
    }
}

fn btf_id(btf: Option<&KernelBtf>, what: &str, id: Option<u32>) -> Result<u32, Status> {
    if btf.is_none() {
        return Err(Status::Unsupported(
            "needs kernel BTF (see the btf probe)".into(),
        ));
    }
    id.ok_or_else(|| Status::Unsupported(format!("{what} not in kernel BTF")))
}

fn probe_fentry(btf: Option<&KernelBtf>) -> Status {
    // do_unlinkat: stable and not inlined; vfs_unlink as a fallback.
    let id = match btf_id(
        btf,
        "do_unlinkat/vfs_unlink",
        btf.and_then(|b| b.func_id("do_unlinkat").or_else(|| b.func_id("vfs_unlink"))),
    ) {
        Ok(id) => id,
        Err(s) => return s,
    };
    let opts = LoadOpts {
        expected_attach_type: BPF_TRACE_FENTRY,
        attach_btf_id: id,
    };
    match load_prog(BPF_PROG_TYPE_TRACING, &ret(0), opts) {
        Ok(_fd) => Status::Supported,
        Err(e) => load_failure(&e),
    }
}

fn probe_tp_btf(btf: Option<&KernelBtf>) -> Status {
    // Raw BTF tracepoints attach to the `btf_trace_<event>` typedef.
    let id = match btf_id(
        btf,
        "typedef btf_trace_sched_process_fork",
        btf.and_then(|b| b.typedef_id("btf_trace_sched_process_fork")),
    ) {
        Ok(id) => id,
        Err(s) => return s,
    };
    let opts = LoadOpts {
        expected_attach_type: BPF_TRACE_RAW_TP,
        attach_btf_id: id,
    };
    let prog = match load_prog(BPF_PROG_TYPE_TRACING, &ret(0), opts) {
        Ok(fd) => fd,
        Err(e) => return load_failure(&e),
    };
    // Attach too (name NULL: the target comes from attach_btf_id); the
    // link fd detaches on close.
    let mut attr = RawTpOpenAttr {
        prog_fd: prog.as_raw_fd() as u32,
        ..Default::default()
    };
    match sys_bpf(BPF_RAW_TRACEPOINT_OPEN, &mut attr).and_then(own_fd) {
        Ok(_link) => Status::Supported,
        Err(e) => Status::Unsupported(format!("loaded, attach refused: {}", errno_text(e))),
    }
}

/// A raw tracepoint program loads and attaches to `sys_enter` (what the
/// raw syscall dispatch needs); the link closes at once.
pub fn probe_raw_tracepoint() -> Status {
    let prog = match load_prog(BPF_PROG_TYPE_RAW_TRACEPOINT, &ret(0), LoadOpts::default()) {
        Ok(fd) => fd,
        Err(e) => return load_failure(&e),
    };
    let name = c"sys_enter";
    let mut attr = RawTpOpenAttr {
        name: name.as_ptr() as u64,
        prog_fd: prog.as_raw_fd() as u32,
        ..Default::default()
    };
    match sys_bpf(BPF_RAW_TRACEPOINT_OPEN, &mut attr).and_then(own_fd) {
        Ok(_link) => Status::Supported,
        Err(e) => Status::Unsupported(format!(
            "loaded, attach to sys_enter refused: {}",
            errno_text(e)
        )),
    }
}

/// Whether BPF-LSM programs can load and will run here (the `bpf` LSM is
/// active and the kernel accepts an LSM program).
pub fn bpf_lsm_status() -> Status {
    let btf = KernelBtf::from_sys_fs().ok();
    probe_bpf_lsm(btf.as_ref())
}

fn probe_bpf_lsm(btf: Option<&KernelBtf>) -> Status {
    let lsms = match ensure_securityfs().and_then(|dir| {
        let p = dir.join("lsm");
        std::fs::read_to_string(&p).map_err(|e| format!("{}: {e}", p.display()))
    }) {
        Ok(l) => l.trim().to_owned(),
        Err(e) => return Status::Error(format!("active LSM list unreadable: {e}")),
    };
    let active = lsms.split(',').any(|l| l == "bpf");
    let id = match btf_id(
        btf,
        "bpf_lsm_file_open",
        btf.and_then(|b| b.func_id("bpf_lsm_file_open")),
    ) {
        Ok(id) => id,
        Err(s) => return s,
    };
    let opts = LoadOpts {
        expected_attach_type: BPF_LSM_MAC,
        attach_btf_id: id,
    };
    let load = load_prog(BPF_PROG_TYPE_LSM, &ret(0), opts);
    match (active, load) {
        (true, Ok(_fd)) => Status::Supported,
        // The load can succeed while the hook never runs.
        (false, Ok(_fd)) => Status::Unsupported(format!(
            "\"bpf\" not among active LSMs ({lsms}); boot with lsm=...,bpf"
        )),
        (true, Err(e)) => load_failure(&e),
        (false, Err(e)) => Status::Unsupported(format!(
            "\"bpf\" not among active LSMs ({lsms}); program load refused: {}",
            e.describe()
        )),
    }
}

fn probe_lockdown() -> Status {
    let dir = match ensure_securityfs() {
        Ok(d) => d,
        Err(e) => return Status::Error(e),
    };
    let p = dir.join("lockdown");
    match std::fs::read_to_string(&p) {
        Ok(text) => match lockdown_mode(&text) {
            Some("none") => Status::Supported,
            Some(mode) => Status::Unsupported(format!(
                "lockdown={mode}: bpf_probe_write_user refused{}",
                if mode == "confidentiality" {
                    ", kernel memory reads too"
                } else {
                    ""
                }
            )),
            None => Status::Error(format!(
                "{}: unexpected content {:?}",
                p.display(),
                text.trim()
            )),
        },
        // No lockdown LSM built in: nothing is locked down.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Status::Supported,
        Err(e) => Status::Error(format!("{}: {e}", p.display())),
    }
}

/// "none [integrity] confidentiality" -> "integrity".
fn lockdown_mode(text: &str) -> Option<&str> {
    let start = text.find('[')? + 1;
    let len = text.get(start..)?.find(']')?;
    text.get(start..start + len)
}

fn probe_sock_addr() -> Status {
    probe_cgroup_prog(BPF_PROG_TYPE_CGROUP_SOCK_ADDR, BPF_CGROUP_INET4_CONNECT)
}

/// The cgroup skb programs reading DNS for domain rules.
fn probe_cgroup_skb() -> Status {
    probe_cgroup_prog(BPF_PROG_TYPE_CGROUP_SKB, BPF_CGROUP_INET_EGRESS)
}

/// Loads a program of `prog_type` that allows everything and attaches it
/// at `attach_type` of a private child cgroup, then takes it away.
fn probe_cgroup_prog(prog_type: u32, attach_type: u32) -> Status {
    let mount = match find_cgroup2_mount() {
        Ok(Some(m)) => m,
        Ok(None) => return Status::Unsupported("no cgroup2 mount to attach to".into()),
        Err(e) => return Status::Error(e),
    };
    let opts = LoadOpts {
        expected_attach_type: attach_type,
        attach_btf_id: 0,
    };
    // return 1: allow.
    let prog = match load_prog(prog_type, &ret(1), opts) {
        Ok(fd) => fd,
        Err(e) => return load_failure(&e),
    };
    // A private child cgroup, so nothing real is ever affected. The counter
    // keeps concurrent detect() calls in one process apart.
    static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = mount.join(format!("agentguard-probe-{}-{seq}", std::process::id()));
    if let Err(e) = std::fs::create_dir(&dir) {
        return Status::Error(format!("creating probe cgroup {}: {e}", dir.display()));
    }
    let status = attach_detach_cgroup(&dir, &prog, attach_type);
    // The directory must go even when attaching failed; rmdir of an empty
    // cgroup is the only way to remove it.
    if let Err(e) = std::fs::remove_dir(&dir) {
        return Status::Error(format!(
            "{status:?}, but removing {} failed: {e}",
            dir.display()
        ));
    }
    status
}

fn attach_detach_cgroup(dir: &Path, prog: &OwnedFd, attach_type: u32) -> Status {
    let cg = match std::fs::File::open(dir) {
        Ok(f) => f,
        Err(e) => return Status::Error(format!("opening {}: {e}", dir.display())),
    };
    let mut attr = ProgAttachAttr {
        target_fd: cg.as_raw_fd() as u32,
        attach_bpf_fd: prog.as_raw_fd() as u32,
        attach_type,
        attach_flags: BPF_F_ALLOW_MULTI,
        ..Default::default()
    };
    if let Err(e) = sys_bpf(BPF_PROG_ATTACH, &mut attr) {
        return Status::Unsupported(format!(
            "BPF_PROG_ATTACH to {}: {}",
            dir.display(),
            errno_text(e)
        ));
    }
    let mut attr = ProgAttachAttr {
        target_fd: cg.as_raw_fd() as u32,
        attach_bpf_fd: prog.as_raw_fd() as u32,
        attach_type,
        ..Default::default()
    };
    match sys_bpf(BPF_PROG_DETACH, &mut attr) {
        Ok(_) => Status::Supported,
        Err(e) => Status::Error(format!(
            "attached, but BPF_PROG_DETACH failed: {}",
            errno_text(e)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    const ALL_PROBES: &[&str] = &[
        "btf",
        "tracefs",
        "tracepoints",
        "ringbuf",
        "tracepoint_prog",
        "send_signal",
        "probe_read_kernel",
        "probe_write_user",
        "cgroup_v2",
        "sock_addr",
        "cgroup_skb",
        "kprobes",
        "fentry",
        "bpf_lsm",
        "lockdown",
        "tp_btf",
        "raw_tracepoint",
    ];

    #[test]
    fn encoder_matches_known_encodings() {
        // From `llvm-objdump -d` of clang-built BPF objects.
        let bytes = |i: Insn| {
            let mut v = vec![i.code, i.regs];
            v.extend_from_slice(&i.off.to_le_bytes());
            v.extend_from_slice(&i.imm.to_le_bytes());
            v
        };
        assert_eq!(bytes(mov64_imm(R0, 0)), [0xb7, 0x00, 0, 0, 0, 0, 0, 0]);
        assert_eq!(bytes(exit()), [0x95, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(bytes(call(109)), [0x85, 0, 0, 0, 109, 0, 0, 0]);
        assert_eq!(bytes(mov64_reg(R1, R10)), [0xbf, 0xa1, 0, 0, 0, 0, 0, 0]);
        assert_eq!(
            bytes(add64_imm(R1, -8)),
            [0x07, 0x01, 0, 0, 0xf8, 0xff, 0xff, 0xff]
        );
        assert_eq!(
            bytes(st_mem_dw(R10, -8, 0)),
            [0x7a, 0x0a, 0xf8, 0xff, 0, 0, 0, 0]
        );
        assert_eq!(std::mem::size_of::<Insn>(), 8);
    }

    #[test]
    fn attr_layouts_match_the_uapi() {
        assert_eq!(std::mem::size_of::<MapCreateAttr>(), 72);
        assert_eq!(std::mem::offset_of!(ProgLoadAttr, expected_attach_type), 68);
        assert_eq!(std::mem::offset_of!(ProgLoadAttr, attach_btf_id), 108);
        assert_eq!(std::mem::offset_of!(ProgLoadAttr, fd_array), 120);
        assert_eq!(std::mem::size_of::<ProgLoadAttr>(), 144);
        assert_eq!(std::mem::size_of::<ProgAttachAttr>(), 32);
        assert_eq!(std::mem::size_of::<PerfEventAttr>(), 72);
    }

    #[test]
    fn parsing_helpers() {
        assert_eq!(
            lockdown_mode("none [integrity] confidentiality\n"),
            Some("integrity")
        );
        assert_eq!(
            lockdown_mode("[none] integrity confidentiality"),
            Some("none")
        );
        assert_eq!(lockdown_mode("garbage"), None);
        let mi = "25 30 0:22 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755\n\
                  41 25 0:38 / /sys/fs/cgroup/unified rw,relatime shared:9 - cgroup2 cgroup2 rw\n\
                  50 25 0:40 / /mnt/with\\040space rw - cgroup2 none rw\n";
        let entries = mountinfo_entries(mi);
        assert_eq!(entries.len(), 3);
        assert_eq!(entries[2].0, PathBuf::from("/mnt/with space"));
        assert_eq!(
            pick_cgroup2(&entries),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        let pure = mountinfo_entries("1 0 0:1 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n");
        assert_eq!(pick_cgroup2(&pure), Some(PathBuf::from("/sys/fs/cgroup")));
        assert_eq!(errno_text(libc::EPERM), "Operation not permitted (EPERM)");
        assert_eq!(
            log_excerpt("0: R1=ctx() R10=fp0\n0: (85) call bpf_x#36\nunknown func bpf_x#36\nprocessed 1 insns (limit 1000000)\n"),
            "0: R1=ctx() R10=fp0 / 0: (85) call bpf_x#36 / unknown func bpf_x#36"
        );
        assert_eq!(
            not_root_hint(Status::Unsupported("x (EPERM)".into()), false),
            Status::Error(format!("{NEEDS_ROOT}: x (EPERM)"))
        );
    }

    #[test]
    fn render_table_of_a_synthetic_report() {
        let r = FeatureReport {
            kernel: "6.0.0-test".into(),
            backend: "tracepoint",
            probes: vec![
                Probe {
                    name: "btf",
                    status: Status::Supported,
                },
                Probe {
                    name: "kprobes",
                    status: Status::Unsupported("no PMU".into()),
                },
            ],
            capabilities: vec![Capability {
                feature: "kprobe fallbacks / bpf_override_return",
                available: false,
                needs: vec!["kprobes"],
                note: "n",
            }],
        };
        let t = r.render_table();
        assert!(t.contains("6.0.0-test"));
        assert!(t.contains("no PMU"));
        assert!(t.contains("missing: kprobes"));
        assert!(r.is_supported("btf") && !r.is_supported("kprobes") && !r.is_supported("nope"));
        let j = serde_json::to_value(&r).expect("serializes");
        // Flat: {"name": .., "status": .., "detail": ..}.
        assert_eq!(j["probes"][0]["name"], "btf");
        assert_eq!(j["probes"][0]["status"], "supported");
        assert!(j["probes"][0].get("detail").is_none());
        assert_eq!(j["probes"][1]["status"], "unsupported");
        assert_eq!(j["probes"][1]["detail"], "no PMU");
    }

    /// Most probes need root. CI runs as root, so there a non-root run is
    /// a failure, not a skip.
    fn root_or_skip() -> bool {
        if is_root() {
            return true;
        }
        assert!(
            !std::env::var("CI").is_ok_and(|v| v == "true"),
            "CI=true: feature probes must run as root"
        );
        eprintln!("SKIPPED detect_on_this_machine: needs root");
        false
    }

    /// This machine, as measured in PLATFORM.md (CI runs on the same kind,
    /// as root).
    #[test]
    fn detect_on_this_machine() {
        if !root_or_skip() {
            return;
        }
        let r = detect();
        let table = r.render_table();
        eprintln!("{table}");
        for name in ALL_PROBES {
            assert!(
                r.probes.iter().any(|p| p.name == *name),
                "probe {name} missing"
            );
            assert!(table.contains(name), "table lacks {name}");
        }
        assert_eq!(r.probes.len(), ALL_PROBES.len());
        for cap in &r.capabilities {
            assert!(table.contains(cap.feature));
        }
        for yes in [
            "btf",
            "tracefs",
            "tracepoints",
            "ringbuf",
            "tracepoint_prog",
            "send_signal",
            "probe_read_kernel",
            "cgroup_v2",
            "sock_addr",
            "cgroup_skb",
        ] {
            assert!(
                r.is_supported(yes),
                "{yes} should be supported here:\n{table}"
            );
        }
        // The kernel-dependent verdicts, each held against a fact of the
        // running kernel read another way (not the host this was written
        // on: a kernel where they work passes too).
        let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        let lsms = read("/sys/kernel/security/lsm");
        if !lsms.split(',').any(|l| l.trim() == "bpf") {
            assert!(
                !r.is_supported("bpf_lsm"),
                "bpf_lsm without bpf in the LSM list {lsms:?}:\n{table}"
            );
        }
        let kprobe_events = Path::new("/sys/kernel/tracing/kprobe_events").exists()
            || Path::new("/sys/kernel/debug/tracing/kprobe_events").exists();
        if !kprobe_events {
            assert!(
                !r.is_supported("kprobes"),
                "kprobes without kprobe_events:\n{table}"
            );
        }
        // bpf_probe_write_user is what lockdown=integrity takes away first.
        let lockdown = read("/sys/kernel/security/lockdown");
        if lockdown.contains("[integrity]") || lockdown.contains("[confidentiality]") {
            assert!(!r.is_supported("probe_write_user"), "{lockdown}:\n{table}");
            assert!(!r.is_supported("lockdown"), "{lockdown}:\n{table}");
        } else if lockdown.contains("[none]") {
            assert!(r.is_supported("lockdown"), "{lockdown}:\n{table}");
        }
        // fentry and tp_btf attach by BTF id: never without BTF.
        for by_btf in ["fentry", "tp_btf", "bpf_lsm"] {
            assert!(
                !r.is_supported(by_btf) || r.is_supported("btf"),
                "{by_btf} without BTF:\n{table}"
            );
        }
        assert!(!r.kernel.is_empty());
        // No probe cgroup may be left behind.
        if let Some(m) = cgroup2_mount() {
            let prefix = format!("agentguard-probe-{}-", std::process::id());
            let left = std::fs::read_dir(&m)
                .expect("cgroup2 mount readable")
                .filter_map(|e| e.ok())
                .any(|e| e.file_name().to_string_lossy().starts_with(&prefix));
            assert!(!left, "probe cgroup left in {}", m.display());
        }
    }
}
