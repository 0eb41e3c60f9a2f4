//! What this kernel supports, found by loading tiny programs (not by reading
//! version numbers), and the mounts the sensor needs. Backs `agentguard check`
//! and the daemon's start-up decisions.

use std::ffi::CString;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::btf::KernelBtf;

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
    pub kernel: String,
    pub probes: Vec<Probe>,
    pub capabilities: Vec<Capability>,
}

// ---------------------------------------------------------------- mounts

const TRACEFS: &str = "/sys/kernel/tracing";
const DEBUG_TRACEFS: &str = "/sys/kernel/debug/tracing";
const BPFFS: &str = "/sys/fs/bpf";
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

fn mount(fstype: &str, target: &str) -> Result<(), String> {
    let src = CString::new(fstype).map_err(|e| e.to_string())?;
    let tgt = CString::new(target).map_err(|e| e.to_string())?;
    // SAFETY: valid NUL-terminated strings; no data argument.
    let rc = unsafe { libc::mount(src.as_ptr(), tgt.as_ptr(), src.as_ptr(), 0, std::ptr::null()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(format!("mount -t {fstype} {fstype} {target}: {}", std::io::Error::last_os_error()))
    }
}

/// The tracefs root, mounting it at /sys/kernel/tracing when missing (a fresh
/// machine here has it unmounted).
pub fn ensure_tracefs() -> Result<PathBuf, String> {
    for root in [TRACEFS, DEBUG_TRACEFS] {
        if Path::new(root).join("events").is_dir() {
            return Ok(PathBuf::from(root));
        }
    }
    mount("tracefs", TRACEFS)?;
    if Path::new(TRACEFS).join("events").is_dir() {
        Ok(PathBuf::from(TRACEFS))
    } else {
        Err(format!("tracefs mounted at {TRACEFS} but has no events/ (CONFIG_FTRACE off?)"))
    }
}

/// Mounts bpffs at /sys/fs/bpf when missing (pinned enforcement state lives there).
pub fn ensure_bpffs() -> Result<(), String> {
    let path = CString::new(BPFFS).map_err(|e| e.to_string())?;
    // SAFETY: zeroed statfs is a valid out-parameter.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid path and out-pointer.
    if unsafe { libc::statfs(path.as_ptr(), &mut st) } == 0 && st.f_type as i64 == BPF_FS_MAGIC {
        return Ok(());
    }
    mount("bpf", BPFFS)
}

// --------------------------------------------------- raw bpf(2) plumbing

const BPF_MAP_CREATE: i64 = 0;
const BPF_PROG_LOAD: i64 = 5;
const BPF_PROG_ATTACH: i64 = 8;
const BPF_PROG_DETACH: i64 = 9;

const PROG_TRACEPOINT: u32 = 5;
const PROG_CGROUP_SOCK_ADDR: u32 = 18;
const PROG_TRACING: u32 = 26;
const PROG_LSM: u32 = 29;

const ATTACH_CGROUP_INET4_CONNECT: u32 = 10;
const ATTACH_TRACE_RAW_TP: u32 = 23;
const ATTACH_TRACE_FENTRY: u32 = 24;
const ATTACH_LSM_MAC: u32 = 27;

const MAP_RINGBUF: u32 = 27;

/// One eBPF instruction, encoded as the kernel reads it.
fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> u64 {
    (code as u64)
        | (((dst & 0xf) | ((src & 0xf) << 4)) as u64) << 8
        | ((off as u16) as u64) << 16
        | ((imm as u32) as u64) << 32
}
/// r{dst} = imm
fn mov_imm(dst: u8, imm: i32) -> u64 {
    insn(0xb7, dst, 0, 0, imm)
}
/// r{dst} = r{src}
fn mov_reg(dst: u8, src: u8) -> u64 {
    insn(0xbf, dst, src, 0, 0)
}
/// r{dst} += imm
fn add_imm(dst: u8, imm: i32) -> u64 {
    insn(0x07, dst, 0, 0, imm)
}
/// *(u64 *)(r{dst} + off) = imm
fn store_imm(dst: u8, off: i16, imm: i32) -> u64 {
    insn(0x7a, dst, 0, off, imm)
}
fn call(helper: i32) -> u64 {
    insn(0x85, 0, 0, 0, helper)
}
fn exit() -> u64 {
    insn(0x95, 0, 0, 0, 0)
}

const HELPER_PROBE_WRITE_USER: i32 = 36;
const HELPER_SEND_SIGNAL: i32 = 109;
const HELPER_PROBE_READ_KERNEL: i32 = 113;

fn put_u32(a: &mut [u8], off: usize, v: u32) {
    a[off..off + 4].copy_from_slice(&v.to_ne_bytes());
}
fn put_u64(a: &mut [u8], off: usize, v: u64) {
    a[off..off + 8].copy_from_slice(&v.to_ne_bytes());
}

fn sys_bpf(cmd: i64, attr: &mut [u8]) -> std::io::Result<i64> {
    // SAFETY: attr is a live buffer at least as large as the size passed;
    // the kernel validates every field.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), attr.len() as u32) };
    if rc < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

fn owned(fd: i64) -> OwnedFd {
    // SAFETY: fd was just returned by the kernel and is owned by nobody else.
    unsafe { OwnedFd::from_raw_fd(fd as RawFd) }
}

fn not_root_hint(e: &std::io::Error) -> String {
    // SAFETY: geteuid has no preconditions.
    if e.raw_os_error() == Some(libc::EPERM) && unsafe { libc::geteuid() } != 0 {
        "needs root (CAP_BPF/CAP_SYS_ADMIN)".to_owned()
    } else {
        e.to_string()
    }
}

struct Load {
    prog_type: u32,
    attach_type: u32,
    attach_btf_id: u32,
}

/// Loads `insns`; on failure returns the errno and the verifier log's first lines.
fn load(l: &Load, insns: &[u64]) -> Result<OwnedFd, (std::io::Error, String)> {
    let license = b"GPL\0";
    let mut log = vec![0u8; 1 << 16];
    let mut attr = [0u8; 128];
    put_u32(&mut attr, 0, l.prog_type);
    put_u32(&mut attr, 4, insns.len() as u32);
    put_u64(&mut attr, 8, insns.as_ptr() as u64);
    put_u64(&mut attr, 16, license.as_ptr() as u64);
    put_u32(&mut attr, 24, 1);
    put_u32(&mut attr, 28, log.len() as u32);
    put_u64(&mut attr, 32, log.as_mut_ptr() as u64);
    attr[48..48 + 8].copy_from_slice(b"ag_probe");
    put_u32(&mut attr, 68, l.attach_type);
    put_u32(&mut attr, 108, l.attach_btf_id);
    match sys_bpf(BPF_PROG_LOAD, &mut attr) {
        Ok(fd) => Ok(owned(fd)),
        Err(e) => {
            let text = String::from_utf8_lossy(&log[..log.iter().position(|&b| b == 0).unwrap_or(0)]).into_owned();
            // The verifier's verdict is at the end of its log.
            let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
            let tail = &lines[lines.len().saturating_sub(2)..];
            Err((e, tail.join(" / ")))
        }
    }
}

fn status_of(r: Result<(), (std::io::Error, String)>) -> Status {
    match r {
        Ok(()) => Status::Supported,
        Err((e, log)) => {
            let mut msg = not_root_hint(&e);
            if !log.is_empty() {
                msg = format!("{msg}: {log}");
            }
            match e.raw_os_error() {
                Some(libc::EINVAL) | Some(libc::EPERM) | Some(524) | Some(libc::EOPNOTSUPP)
                | Some(libc::ENOENT) => Status::Unsupported(msg),
                _ => Status::Error(msg),
            }
        }
    }
}

fn load_status(l: &Load, insns: &[u64]) -> Status {
    status_of(load(l, insns).map(drop))
}

fn ret(v: i32) -> [u64; 2] {
    [mov_imm(0, v), exit()]
}

// ----------------------------------------------------------------- probes

fn probe_btf() -> (Status, Option<KernelBtf>) {
    match KernelBtf::from_sys_fs() {
        Ok(b) => {
            if b.has_struct("task_struct") {
                (Status::Supported, Some(b))
            } else {
                (Status::Error("vmlinux BTF has no task_struct".into()), None)
            }
        }
        Err(e) => (Status::Unsupported(e.to_string()), None),
    }
}

fn probe_ringbuf() -> Status {
    let mut attr = [0u8; 72];
    put_u32(&mut attr, 0, MAP_RINGBUF);
    put_u32(&mut attr, 12, 4096 * 16);
    match sys_bpf(BPF_MAP_CREATE, &mut attr) {
        Ok(fd) => {
            drop(owned(fd));
            Status::Supported
        }
        Err(e) => status_of(Err((e, String::new()))),
    }
}

fn tracepoint_id(tracefs: &Path, event: &str) -> Result<u64, String> {
    let p = tracefs.join("events").join(event).join("id");
    std::fs::read_to_string(&p)
        .map_err(|e| format!("{}: {e}", p.display()))?
        .trim()
        .parse()
        .map_err(|e| format!("{}: {e}", p.display()))
}

fn probe_tracepoint_prog(tracefs: Option<&Path>) -> Status {
    let prog = match load(
        &Load {
            prog_type: PROG_TRACEPOINT,
            attach_type: 0,
            attach_btf_id: 0,
        },
        &ret(0),
    ) {
        Ok(fd) => fd,
        Err(e) => return status_of(Err(e)),
    };
    let Some(tracefs) = tracefs else {
        return Status::Error("loaded, but tracefs is unavailable to attach".into());
    };
    let id = match tracepoint_id(tracefs, "syscalls/sys_enter_getppid") {
        Ok(id) => id,
        Err(e) => return Status::Unsupported(e),
    };
    let mut attr = [0u8; 128];
    put_u32(&mut attr, 0, 2); // PERF_TYPE_TRACEPOINT
    put_u32(&mut attr, 4, 128);
    put_u64(&mut attr, 8, id);
    put_u64(&mut attr, 16, 1);
    // SAFETY: attr is a valid perf_event_attr-sized buffer.
    let pfd = unsafe {
        libc::syscall(
            libc::SYS_perf_event_open,
            attr.as_ptr(),
            -1i32,
            0i32,
            -1i32,
            8u64, // PERF_FLAG_FD_CLOEXEC
        )
    };
    if pfd < 0 {
        return Status::Error(format!("perf_event_open: {}", std::io::Error::last_os_error()));
    }
    let pfd = owned(pfd);
    use std::os::fd::AsRawFd;
    // SAFETY: ioctls on our own perf fd with our own prog fd.
    let rc = unsafe { libc::ioctl(pfd.as_raw_fd(), 0x4004_2408, prog.as_raw_fd()) };
    if rc < 0 {
        return Status::Error(format!("PERF_EVENT_IOC_SET_BPF: {}", std::io::Error::last_os_error()));
    }
    Status::Supported
}

fn tp(insns: &[u64]) -> Status {
    load_status(
        &Load {
            prog_type: PROG_TRACEPOINT,
            attach_type: 0,
            attach_btf_id: 0,
        },
        insns,
    )
}

fn probe_send_signal() -> Status {
    tp(&[mov_imm(1, 9), call(HELPER_SEND_SIGNAL), mov_imm(0, 0), exit()])
}

fn probe_read_kernel() -> Status {
    tp(&[
        mov_reg(1, 10),
        add_imm(1, -8),
        mov_imm(2, 8),
        mov_imm(3, 0),
        call(HELPER_PROBE_READ_KERNEL),
        mov_imm(0, 0),
        exit(),
    ])
}

fn probe_write_user() -> Status {
    tp(&[
        store_imm(10, -8, 0),
        mov_imm(1, 0),
        mov_reg(2, 10),
        add_imm(2, -8),
        mov_imm(3, 8),
        call(HELPER_PROBE_WRITE_USER),
        mov_imm(0, 0),
        exit(),
    ])
}

/// The cgroup2 mount point (hybrid hosts: /sys/fs/cgroup/unified).
pub fn cgroup2_mount() -> Option<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines().find_map(|l| {
        let (pre, post) = l.split_once(" - ")?;
        if post.split_whitespace().next()? == "cgroup2" {
            pre.split_whitespace().nth(4).map(PathBuf::from)
        } else {
            None
        }
    })
}

fn probe_sock_addr(cg: Option<&Path>) -> Status {
    let Some(cg) = cg else {
        return Status::Unsupported("no cgroup2 mount".into());
    };
    let prog = match load(
        &Load {
            prog_type: PROG_CGROUP_SOCK_ADDR,
            attach_type: ATTACH_CGROUP_INET4_CONNECT,
            attach_btf_id: 0,
        },
        &ret(1),
    ) {
        Ok(fd) => fd,
        Err(e) => return status_of(Err(e)),
    };
    let dir = cg.join(format!("agentguard-probe-{}", std::process::id()));
    if let Err(e) = std::fs::create_dir(&dir) {
        return Status::Error(format!("creating {}: {e}", dir.display()));
    }
    let result = (|| {
        let d = std::fs::File::open(&dir).map_err(|e| format!("opening {}: {e}", dir.display()))?;
        use std::os::fd::AsRawFd;
        let mut attr = [0u8; 32];
        put_u32(&mut attr, 0, d.as_raw_fd() as u32);
        put_u32(&mut attr, 4, prog.as_raw_fd() as u32);
        put_u32(&mut attr, 8, ATTACH_CGROUP_INET4_CONNECT);
        put_u32(&mut attr, 12, 2); // BPF_F_ALLOW_MULTI
        sys_bpf(BPF_PROG_ATTACH, &mut attr).map_err(|e| format!("BPF_PROG_ATTACH: {}", not_root_hint(&e)))?;
        // Detach takes no flags.
        put_u32(&mut attr, 12, 0);
        sys_bpf(BPF_PROG_DETACH, &mut attr).map_err(|e| format!("BPF_PROG_DETACH: {e}"))?;
        Ok::<(), String>(())
    })();
    let _ = std::fs::remove_dir(&dir);
    match result {
        Ok(()) => Status::Supported,
        Err(e) => Status::Error(e),
    }
}

fn probe_kprobes() -> Status {
    if Path::new("/sys/bus/event_source/devices/kprobe/type").exists() {
        Status::Supported
    } else {
        Status::Unsupported("no kprobe PMU (/sys/bus/event_source/devices/kprobe): CONFIG_KPROBES is off".into())
    }
}

fn probe_btf_prog(btf: Option<&KernelBtf>, prog_type: u32, attach_type: u32, target: Option<u32>, what: &str) -> Status {
    if btf.is_none() {
        return Status::Unsupported("needs kernel BTF".into());
    }
    let Some(id) = target else {
        return Status::Unsupported(format!("{what} not in kernel BTF"));
    };
    load_status(
        &Load {
            prog_type,
            attach_type,
            attach_btf_id: id,
        },
        &ret(0),
    )
}

fn read_lsm_list() -> Option<String> {
    let p = "/sys/kernel/security/lsm";
    if !Path::new(p).exists() {
        let _ = mount("securityfs", "/sys/kernel/security");
    }
    std::fs::read_to_string(p).ok()
}

fn probe_bpf_lsm(btf: Option<&KernelBtf>) -> Status {
    match read_lsm_list() {
        Some(list) if list.split(',').any(|l| l.trim() == "bpf") => probe_btf_prog(
            btf,
            PROG_LSM,
            ATTACH_LSM_MAC,
            btf.and_then(|b| b.func_id("bpf_lsm_file_open")),
            "bpf_lsm_file_open",
        ),
        Some(list) => Status::Unsupported(format!(
            "\"bpf\" is not in the active LSMs ({}); boot with lsm=...,bpf",
            list.trim()
        )),
        None => Status::Unsupported("cannot read /sys/kernel/security/lsm".into()),
    }
}

fn probe_lockdown() -> (Status, String) {
    let p = "/sys/kernel/security/lockdown";
    if !Path::new(p).exists() {
        let _ = mount("securityfs", "/sys/kernel/security");
    }
    match std::fs::read_to_string(p) {
        Ok(text) => {
            let mode = text
                .split_whitespace()
                .find(|w| w.starts_with('['))
                .map(|w| w.trim_matches(|c| c == '[' || c == ']').to_owned())
                .unwrap_or_else(|| text.trim().to_owned());
            let st = if mode == "none" {
                Status::Supported
            } else {
                Status::Unsupported(format!("lockdown={mode}: bpf_probe_write_user and some reads are refused"))
            };
            (st, mode)
        }
        Err(_) => (Status::Supported, "unknown (no lockdown LSM)".into()),
    }
}

/// Runs every probe. Never panics; most probes need root.
pub fn detect() -> FeatureReport {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    let (btf_st, btf) = probe_btf();
    let tracefs = ensure_tracefs();
    let tracefs_st = match &tracefs {
        Ok(p) => {
            let _ = p;
            Status::Supported
        }
        Err(e) => Status::Unsupported(e.clone()),
    };
    let tracefs_path = tracefs.as_ref().ok().map(PathBuf::as_path);
    let tracepoints_st = match tracefs_path {
        Some(t) => match tracepoint_id(t, "syscalls/sys_enter_openat") {
            Ok(_) => Status::Supported,
            Err(e) => Status::Unsupported(format!("syscall tracepoints missing (CONFIG_FTRACE_SYSCALLS?): {e}")),
        },
        None => Status::Unsupported("tracefs unavailable".into()),
    };
    let cg = cgroup2_mount();
    let (lockdown_st, _mode) = probe_lockdown();
    let probes = vec![
        Probe { name: "btf", status: btf_st },
        Probe { name: "tracefs", status: tracefs_st },
        Probe { name: "tracepoints", status: tracepoints_st },
        Probe { name: "ringbuf", status: probe_ringbuf() },
        Probe { name: "tracepoint_prog", status: probe_tracepoint_prog(tracefs_path) },
        Probe { name: "send_signal", status: probe_send_signal() },
        Probe { name: "probe_read_kernel", status: probe_read_kernel() },
        Probe { name: "probe_write_user", status: probe_write_user() },
        Probe {
            name: "cgroup_v2",
            status: match &cg {
                Some(p) => {
                    let _ = p;
                    Status::Supported
                }
                None => Status::Unsupported("no cgroup2 filesystem mounted".into()),
            },
        },
        Probe { name: "sock_addr", status: probe_sock_addr(cg.as_deref()) },
        Probe { name: "kprobes", status: probe_kprobes() },
        Probe {
            name: "fentry",
            status: probe_btf_prog(
                btf.as_ref(),
                PROG_TRACING,
                ATTACH_TRACE_FENTRY,
                btf.as_ref().and_then(|b| b.func_id("do_unlinkat")),
                "do_unlinkat",
            ),
        },
        Probe {
            name: "tp_btf",
            status: probe_btf_prog(
                btf.as_ref(),
                PROG_TRACING,
                ATTACH_TRACE_RAW_TP,
                btf.as_ref().and_then(|b| b.typedef_id("btf_trace_sched_process_fork")),
                "btf_trace_sched_process_fork",
            ),
        },
        Probe { name: "bpf_lsm", status: probe_bpf_lsm(btf.as_ref()) },
        Probe { name: "lockdown", status: lockdown_st },
    ];
    let capabilities = capabilities(&probes);
    FeatureReport {
        kernel,
        probes,
        capabilities,
    }
}

fn capabilities(probes: &[Probe]) -> Vec<Capability> {
    let ok = |n: &str| probes.iter().any(|p| p.name == n && p.status == Status::Supported);
    let cap = |feature, needs: Vec<&'static str>, note| Capability {
        feature,
        available: needs.iter().all(|n| ok(n)),
        needs,
        note,
    };
    vec![
        cap(
            "event sensor (process, file, network events)",
            vec!["btf", "tracefs", "tracepoints", "ringbuf", "tracepoint_prog"],
            "tracepoints on syscalls and the scheduler",
        ),
        cap(
            "absolute paths resolved in the kernel",
            vec!["btf", "probe_read_kernel"],
            "struct offsets from BTF; dentry walk at syscall entry",
        ),
        cap(
            "kill at syscall entry (bpf_send_signal)",
            vec!["send_signal"],
            "the syscall in flight still completes; the next ones don't",
        ),
        cap(
            "deny network in the kernel (cgroup sock_addr)",
            vec!["cgroup_v2", "sock_addr"],
            "connect/sendmsg get EPERM before a packet leaves",
        ),
        cap(
            "block file operations before they happen (BPF-LSM)",
            vec!["btf", "bpf_lsm"],
            "without it, file kills land after the first operation",
        ),
        cap("fentry/fexit probes", vec!["btf", "fentry"], "cheaper than tracepoints where allowed"),
        cap(
            "kprobe fallbacks and bpf_override_return",
            vec!["kprobes"],
            "not needed by agentguard's tracepoint sensor",
        ),
    ]
}

impl FeatureReport {
    pub fn is_supported(&self, probe: &str) -> bool {
        self.probes
            .iter()
            .any(|p| p.name == probe && p.status == Status::Supported)
    }

    pub fn render_table(&self) -> String {
        let mut out = format!("kernel {}\n\nPROBE              STATUS       DETAIL\n", self.kernel);
        for p in &self.probes {
            let (st, detail) = match &p.status {
                Status::Supported => ("supported", ""),
                Status::Unsupported(d) => ("unsupported", d.as_str()),
                Status::Error(d) => ("error", d.as_str()),
            };
            out.push_str(&format!("{:<18} {:<12} {}\n", p.name, st, detail));
        }
        out.push_str("\nAGENTGUARD FEATURE                                    AVAILABLE  MISSING\n");
        for c in &self.capabilities {
            let missing: Vec<&str> = c.needs.iter().copied().filter(|n| !self.is_supported(n)).collect();
            out.push_str(&format!(
                "{:<53} {:<10} {}\n",
                c.feature,
                if c.available { "yes" } else { "no" },
                if missing.is_empty() { "-".to_owned() } else { missing.join(", ") }
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instruction_encoding() {
        // mov r0, 1 => b7 00 0000 01000000
        assert_eq!(mov_imm(0, 1).to_le_bytes(), [0xb7, 0, 0, 0, 1, 0, 0, 0]);
        assert_eq!(exit().to_le_bytes(), [0x95, 0, 0, 0, 0, 0, 0, 0]);
        // r1 = r10 => bf a1 ...
        assert_eq!(mov_reg(1, 10).to_le_bytes()[1], 0xa1);
        // *(u64*)(r10 - 8) = 0 => off = 0xfff8
        assert_eq!(&store_imm(10, -8, 0).to_le_bytes()[..4], &[0x7a, 0x0a, 0xf8, 0xff]);
    }

    fn root_or_skip() -> bool {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            return true;
        }
        assert!(std::env::var("CI").map_or(true, |v| v != "true"), "CI=true: feature probes must run as root");
        eprintln!("skipping: needs root");
        false
    }

    /// What this kind of machine has, measured (shared PLATFORM notes).
    #[test]
    fn detect_on_this_machine() {
        if !root_or_skip() {
            return;
        }
        let r = detect();
        for p in ["btf", "tracefs", "tracepoints", "ringbuf", "tracepoint_prog", "send_signal", "probe_read_kernel", "cgroup_v2", "sock_addr"] {
            assert!(r.is_supported(p), "{p}: {:?}", r.probes.iter().find(|x| x.name == p));
        }
        for p in ["fentry", "bpf_lsm", "kprobes", "probe_write_user"] {
            assert!(!r.is_supported(p), "{p} is not available on this kind of machine");
        }
        let table = r.render_table();
        for p in &r.probes {
            assert!(table.contains(p.name), "{}", p.name);
        }
        assert!(r.capabilities.iter().any(|c| c.feature.starts_with("event sensor") && c.available));
    }
}
