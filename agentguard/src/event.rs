//! The typed event: what the sensor produces and every later stage consumes.
//!
//! Its JSON form (field names documented in docs/events.md) is the stable
//! interface of `agentguard events`, the input of policies and the record
//! format of `agentguard replay`, so fields are only ever added.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

/// One observed action of one process.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Kernel boot-time clock at syscall entry, nanoseconds.
    pub ts_ns: u64,
    pub kind: Kind,
    /// The syscall (or kernel event) that produced it. Static names from
    /// the sensor: no allocation per event.
    pub syscall: Cow<'static, str>,
    /// Process id (tgid).
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    pub ppid: u32,
    pub uid: u32,
    pub gid: u32,
    pub comm: String,
    pub cgroup_id: u64,
    /// Raw syscall return value (negative errno on failure).
    pub ret: i64,
    /// Error name when `ret` is a negative errno, e.g. "ENOENT".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// What the kernel probe itself did at this syscall (in-kernel
    /// enforcement); absent when it did nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel_action: Option<KernelAction>,
    #[serde(flatten)]
    pub detail: Detail,
    /// Who did it (container, pod, agent, ancestry); filled by the identity
    /// stage, absent straight from the sensor.
    #[serde(default, skip_serializing_if = "identity_spliced")]
    pub identity: Option<crate::identity::model::Identity>,
}

thread_local! {
    /// Set while [`Event::write_json`] serializes an event whose identity
    /// it appends itself (from its cache of encoded identities).
    static SPLICING_IDENTITY: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

fn identity_spliced(id: &Option<crate::identity::model::Identity>) -> bool {
    id.is_none() || SPLICING_IDENTITY.with(std::cell::Cell::get)
}

impl Event {
    /// Appends the event's JSON to `buf`, byte for byte what serde_json
    /// makes of it, with the identity (the last field, most of the bytes:
    /// the ancestry) taken from `ids` when this identity was encoded before.
    pub fn write_json(&self, buf: &mut Vec<u8>, ids: &mut IdentityJson) -> serde_json::Result<()> {
        let Some(id) = &self.identity else {
            return serde_json::to_writer(buf, self);
        };
        struct Reset;
        impl Drop for Reset {
            fn drop(&mut self) {
                SPLICING_IDENTITY.with(|s| s.set(false));
            }
        }
        SPLICING_IDENTITY.with(|s| s.set(true));
        let reset = Reset;
        let r = serde_json::to_writer(&mut *buf, self);
        drop(reset);
        r?;
        // The object's closing brace gives way to the identity field.
        if buf.pop() != Some(b'}') {
            return Err(serde::ser::Error::custom("event JSON is not an object"));
        }
        if buf.last() != Some(&b'{') {
            buf.push(b',');
        }
        buf.extend_from_slice(b"\"identity\":");
        buf.extend_from_slice(ids.encoded(id)?);
        buf.push(b'}');
        Ok(())
    }
}

/// Encoded identities, by the shared parts they are made of (the
/// resolver hands every event of a process the same `Arc`s): a
/// direct-mapped cache, so a lookup is one slot and pointer compares.
/// Each slot holds its identity's `Arc`s, so no address it is keyed by can
/// be freed and reused while it is cached.
pub struct IdentityJson {
    slots: Vec<Option<(crate::identity::model::Identity, Vec<u8>)>>,
}

impl Default for IdentityJson {
    fn default() -> Self {
        IdentityJson {
            slots: (0..IdentityJson::SLOTS).map(|_| None).collect(),
        }
    }
}

impl IdentityJson {
    const SLOTS: usize = 256;

    fn encoded(&mut self, id: &crate::identity::model::Identity) -> serde_json::Result<&[u8]> {
        let slot = (std::sync::Arc::as_ptr(&id.ancestry) as *const u8 as usize >> 4) % Self::SLOTS;
        let hit = matches!(&self.slots[slot], Some((cached, _)) if same_parts(cached, id));
        if !hit {
            self.slots[slot] = Some((id.clone(), serde_json::to_vec(id)?));
        }
        match &self.slots[slot] {
            Some((_, json)) => Ok(json),
            None => Err(serde::ser::Error::custom("identity cache slot empty")),
        }
    }
}

/// Are `a` and `b` made of the very same shared parts (so encode alike)?
fn same_parts(a: &crate::identity::model::Identity, b: &crate::identity::model::Identity) -> bool {
    use std::sync::Arc;
    fn same<T: ?Sized>(a: Option<&Arc<T>>, b: Option<&Arc<T>>) -> bool {
        match (a, b) {
            (None, None) => true,
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
    a.scope == b.scope
        && Arc::ptr_eq(&a.ancestry, &b.ancestry)
        && same(a.agent.as_ref(), b.agent.as_ref())
        && match (&a.container, &b.container) {
            (None, None) => true,
            (Some(x), Some(y)) => {
                Arc::ptr_eq(&x.id, &y.id) && same(x.info.as_ref(), y.info.as_ref())
            }
            _ => false,
        }
}

/// An action the kernel took itself, without waiting for userspace.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelAction {
    /// SIGKILL sent to the process.
    pub killed: bool,
    /// A kill rule matched but the kernel could not send SIGKILL
    /// (`bpf_send_signal` failed): userspace kills it instead.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub kill_failed: bool,
    /// The operation was refused (-EPERM) before it took effect.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub denied: bool,
    /// The kernel rule slot that acted (the enforcement stage names it).
    pub slot: u32,
    /// Where the kernel decided.
    #[serde(default)]
    pub hook: KernelHook,
}

/// Where an in-kernel verdict was reached.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KernelHook {
    /// At syscall entry, on the argument strings (`bpf_send_signal`).
    #[default]
    Tracepoint,
    /// In a BPF-LSM hook, on the kernel object (file, socket) itself.
    Lsm,
}

/// Event kinds, also the names accepted by `--kind`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Exec,
    Fork,
    Exit,
    Open,
    Unlink,
    Rmdir,
    Rename,
    Truncate,
    Connect,
    Send,
    IoUringSetup,
    /// A raw or packet socket was created.
    Socket,
    /// A syscall through the 32-bit ABI by a guarded task.
    CompatSyscall,
    /// A DNS query or answer of a subject under a domain rule.
    Dns,
    /// The daemon's own: one subject's records were dropped in the kernel
    /// past its quota (flood isolation).
    Flood,
    /// The daemon's own: a policy reload was applied or refused.
    PolicyReload,
}

impl Kind {
    pub const ALL: [Kind; 16] = [
        Kind::Exec,
        Kind::Fork,
        Kind::Exit,
        Kind::Open,
        Kind::Unlink,
        Kind::Rmdir,
        Kind::Rename,
        Kind::Truncate,
        Kind::Connect,
        Kind::Send,
        Kind::IoUringSetup,
        Kind::Socket,
        Kind::CompatSyscall,
        Kind::Dns,
        Kind::Flood,
        Kind::PolicyReload,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Exec => "exec",
            Kind::Fork => "fork",
            Kind::Exit => "exit",
            Kind::Open => "open",
            Kind::Unlink => "unlink",
            Kind::Rmdir => "rmdir",
            Kind::Rename => "rename",
            Kind::Truncate => "truncate",
            Kind::Connect => "connect",
            Kind::Send => "send",
            Kind::IoUringSetup => "io_uring_setup",
            Kind::Socket => "socket",
            Kind::CompatSyscall => "compat_syscall",
            Kind::Dns => "dns",
            Kind::Flood => "flood",
            Kind::PolicyReload => "policy_reload",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// The wire number (agentguard_common::kind).
    pub fn wire(self) -> u16 {
        use agentguard_common::kind as k;
        match self {
            Kind::Exec => k::EXEC,
            Kind::Fork => k::FORK,
            Kind::Exit => k::EXIT,
            Kind::Open => k::OPEN,
            Kind::Unlink => k::UNLINK,
            Kind::Rmdir => k::RMDIR,
            Kind::Rename => k::RENAME,
            Kind::Truncate => k::TRUNCATE,
            Kind::Connect => k::CONNECT,
            Kind::Send => k::SEND,
            Kind::IoUringSetup => k::IO_URING_SETUP,
            Kind::Socket => k::SOCKET,
            Kind::CompatSyscall => k::COMPAT_SYSCALL,
            Kind::Dns => k::DNS,
            Kind::Flood => k::FLOOD,
            Kind::PolicyReload => k::POLICY_RELOAD,
        }
    }

    pub fn from_wire(n: u16) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.wire() == n)
    }

    pub fn mask(kinds: &[Kind]) -> u32 {
        kinds
            .iter()
            .fold(0, |m, k| m | agentguard_common::filter::kind_bit(k.wire()))
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Kind-specific part; serialized as one key named after the part.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Detail {
    Exec(ExecDetail),
    Fork(ForkDetail),
    Exit(ExitDetail),
    File(FileDetail),
    Rename(RenameDetail),
    Net(NetDetail),
    IoUring(IoUringDetail),
    Compat(CompatDetail),
    Dns(DnsDetail),
    Flood(FloodDetail),
    PolicyReload(ReloadDetail),
}

/// How an absolute path was obtained.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Resolution {
    /// The process passed an absolute path.
    Absolute,
    /// Relative to the working directory, walked in the kernel at entry.
    Cwd,
    /// Relative to a directory fd, walked in the kernel at entry.
    Dirfd,
    /// The directory was too deep or long; outer components are missing and
    /// the path starts with "...". Best effort.
    Truncated,
    /// The directory could not be read; `path` is the relative path as given.
    Unresolved,
    /// The file the kernel opened, walked from the returned descriptor at
    /// exit (symlinks and `/proc/self/root` resolved); `raw` is the string.
    File,
    /// A removal's directory resolved by the daemon through the process's
    /// root after the event (symlinked directories, `/proc/self/root`);
    /// best effort, `raw` is the string.
    Resolved,
}

/// A path argument, made absolute and lexically normalized.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PathInfo {
    pub path: String,
    /// The string the process passed, when it differs from `path`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw: Option<String>,
    pub resolution: Resolution,
    /// The path filled the kernel's buffer and may be cut.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExecDetail {
    /// The executable as resolved from the exec argument.
    pub file: PathInfo,
    pub argv: Vec<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub argv_truncated: bool,
    /// execveat flags (AT_EMPTY_PATH...), 0 for execve.
    #[serde(default)]
    pub flags: u32,
    /// The executable the kernel actually loaded (`/proc/PID/exe`) when it
    /// differs from `file.path`: a symlink, `/proc/self/exe`, an fd
    /// (fexecve), a memfd. Read by the daemon as the event arrives; absent
    /// when equal or when the process was already gone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binary: Option<String>,
    /// Inode numbers of the pipes the program got as stdin and stdout
    /// (`curl URL | sh`: the same pipe at both ends).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdin_pipe: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdout_pipe: Option<u64>,
    /// The executable of the process writing into this one's stdin pipe,
    /// when the daemon saw it start first (a `stdin_from` rule matches on
    /// it; the kernel decides either order itself).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdin_from: Option<String>,
}

impl ExecDetail {
    /// The names this exec goes by: the path as run, then the binary.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.file.path.as_str()).chain(self.binary.as_deref())
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ForkDetail {
    pub child_pid: u32,
    pub clone_flags: u64,
    /// A kernel map was full and the child was left out of it
    /// (`task_filter`, `enforce_tasks`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub map_full: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExitDetail {
    /// exit(2) code when the process exited normally.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<i32>,
    /// Killing signal number when it died of a signal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FileDetail {
    #[serde(flatten)]
    pub file: PathInfo,
    /// open flags / unlinkat flags, raw.
    pub flags: u32,
    /// open: "read", "write" or "read_write".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access: Option<Cow<'static, str>>,
    /// open: O_CREAT, O_TRUNC... as names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub flag_names: Vec<Cow<'static, str>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<u32>,
    /// truncate: the new length.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// unlink: the file is one the container created itself (checked by
    /// the kernel on the file's identity): volume rules let it go.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub own_file: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RenameDetail {
    pub from: PathInfo,
    pub to: PathInfo,
    /// renameat2 flags.
    #[serde(default)]
    pub flags: u32,
    /// The source is a file the container created itself (as for
    /// [`FileDetail::own_file`]).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub own_file: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NetDetail {
    /// "inet", "inet6" or "unix".
    pub family: String,
    /// Destination address; IPv4-mapped IPv6 is shown as IPv4 (see `v4_mapped`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub addr: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub v4_mapped: bool,
    /// AF_UNIX path; abstract names start with "@".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unix_path: Option<String>,
    pub fd: i32,
    /// send: bytes requested (sendto).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub len: Option<u64>,
    /// The address argument could not be read.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub addr_unreadable: bool,
    /// The DNS name that gave the subject this address (an answer it
    /// received for a name of a domain rule, TTL not run out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// Kernel subject key and the rule bits a DNS answer let through (for
    /// the daemon to find `domain`; not reported).
    #[serde(skip)]
    pub dns_subject: u64,
    #[serde(skip)]
    pub dns_rules: u32,
    /// socket: the socket type (3 = SOCK_RAW) and protocol.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socket_type: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<u32>,
}

/// Records of one kernel subject (a cgroup) dropped in the kernel because
/// the subject went past its quota: its own events are lost first, so it
/// cannot blind the daemon to everyone else.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct FloodDetail {
    /// Records dropped since the last report, by kind.
    pub dropped: std::collections::BTreeMap<String, u64>,
    /// Their sum.
    pub total: u64,
    /// The quota: records per subject per second.
    pub quota_per_sec: u64,
}

/// A policy reload the daemon applied (or refused): what changed, by
/// content hash, so an unexpected change of enforcement is on the record.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ReloadDetail {
    pub dir: String,
    /// SHA-256 over the policy files' names and contents, before and after.
    pub old_hash: String,
    pub new_hash: String,
    /// The set now in force changed (false: refused, the old set stays).
    pub applied: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files_added: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files_removed: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files_changed: Vec<String>,
    /// Rules as `policy/rule`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules_added: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules_removed: Vec<String>,
    /// Refused: the first diagnostics.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A DNS message read on the wire for a subject under a domain rule.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DnsDetail {
    /// "query" (egress) or "answer" (ingress).
    pub direction: String,
    /// The question's name (lower case); absent if it could not be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Record type asked for: "A", "AAAA", or the number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qtype: Option<String>,
    /// The resolver (where the query went, where the answer came from).
    pub resolver: String,
    /// The query was dropped in the kernel (name outside the lists).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dropped: bool,
    /// The name could not be read (counts as outside every list).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unreadable: bool,
    /// An answer from somewhere other than the resolver queried: ignored.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub foreign: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub tcp: bool,
    /// Answer: the addresses now allowed to the subject.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addrs: Vec<String>,
    /// Answer: the smallest TTL of those addresses, as sent (the kernel
    /// clamps it to 5 s..1 h).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<u32>,
    /// Kernel subject key and rule bits (for the daemon, not reported).
    #[serde(skip)]
    pub subject: u64,
    #[serde(skip)]
    pub rules: u32,
    #[serde(skip)]
    pub subject_rules: u32,
}

/// A 32-bit ABI syscall: its number in the i386 table (5 open, 10 unlink,
/// 11 execve...).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CompatDetail {
    pub nr: i64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IoUringDetail {
    /// The ring's fd on success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fd: Option<i32>,
}

impl Event {
    /// An event the daemon raises about itself or about a subject as a
    /// whole (`flood`, `policy_reload`): no syscall, `pid` is who it is
    /// about (the daemon's own pid for a reload).
    pub fn daemon(kind: Kind, pid: u32, comm: &str, cgroup_id: u64, detail: Detail) -> Event {
        Event {
            ts_ns: boot_ns(),
            kind,
            syscall: Cow::Borrowed(""),
            pid,
            tid: pid,
            ppid: 0,
            uid: 0,
            gid: 0,
            comm: comm.to_owned(),
            cgroup_id,
            ret: 0,
            error: None,
            kernel_action: None,
            detail,
            identity: None,
        }
    }

    /// Did the syscall succeed?
    pub fn ok(&self) -> bool {
        self.ret >= 0
    }

    /// The main path of a file event (for exec, the executable).
    pub fn path(&self) -> Option<&str> {
        match &self.detail {
            Detail::File(f) => Some(&f.file.path),
            Detail::Exec(e) => Some(&e.file.path),
            Detail::Rename(r) => Some(&r.from.path),
            _ => None,
        }
    }
}

/// Now on the clock of [`Event::ts_ns`] (CLOCK_BOOTTIME, what
/// `bpf_ktime_get_boot_ns` reads). Async-signal-safe: no allocation.
pub fn boot_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid out pointer; CLOCK_BOOTTIME always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Errno name for a positive errno value.
pub fn errno_name(errno: i64) -> String {
    let name = match errno {
        1 => "EPERM",
        2 => "ENOENT",
        3 => "ESRCH",
        4 => "EINTR",
        5 => "EIO",
        7 => "E2BIG",
        8 => "ENOEXEC",
        9 => "EBADF",
        11 => "EAGAIN",
        12 => "ENOMEM",
        13 => "EACCES",
        14 => "EFAULT",
        16 => "EBUSY",
        17 => "EEXIST",
        18 => "EXDEV",
        20 => "ENOTDIR",
        21 => "EISDIR",
        22 => "EINVAL",
        23 => "ENFILE",
        24 => "EMFILE",
        26 => "ETXTBSY",
        27 => "EFBIG",
        28 => "ENOSPC",
        30 => "EROFS",
        31 => "EMLINK",
        36 => "ENAMETOOLONG",
        39 => "ENOTEMPTY",
        40 => "ELOOP",
        88 => "ENOTSOCK",
        90 => "EMSGSIZE",
        95 => "EOPNOTSUPP",
        97 => "EAFNOSUPPORT",
        98 => "EADDRINUSE",
        99 => "EADDRNOTAVAIL",
        100 => "ENETDOWN",
        101 => "ENETUNREACH",
        104 => "ECONNRESET",
        106 => "EISCONN",
        110 => "ETIMEDOUT",
        111 => "ECONNREFUSED",
        113 => "EHOSTUNREACH",
        114 => "EALREADY",
        115 => "EINPROGRESS",
        // Kernel-internal restart codes; seen when a signal (a kill at
        // entry) interrupts the call.
        512 => "ERESTARTSYS",
        513 => "ERESTARTNOINTR",
        514 => "ERESTARTNOHAND",
        516 => "ERESTART_RESTARTBLOCK",
        _ => return format!("E{errno}"),
    };
    name.to_owned()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::identity::model::{Agent, AgentSource, Ancestor, ContainerTag, Identity, Scope};

    fn open_event(identity: Option<Identity>) -> Event {
        let mut ev = Event::daemon(
            Kind::Open,
            42,
            "sh\"x",
            7,
            Detail::File(FileDetail {
                file: PathInfo {
                    path: "/data/\u{e9}\n.env".into(),
                    raw: Some(".env".into()),
                    resolution: Resolution::Cwd,
                    truncated: false,
                },
                flags: 0o102,
                access: Some("write".into()),
                flag_names: vec!["O_CREAT".into()],
                mode: Some(0o644),
                size: None,
                own_file: false,
            }),
        );
        ev.syscall = "openat".into();
        ev.identity = identity;
        ev
    }

    fn ancestry(n: u32) -> Arc<[Ancestor]> {
        (0..n)
            .map(|i| Ancestor {
                pid: 100 + i,
                exe: Arc::from(format!("/bin/p{i}").as_str()),
                argv: Arc::from("p \"quoted\" arg"),
            })
            .collect::<Vec<_>>()
            .into()
    }

    /// write_json is serde_json's own output, byte for byte, from the cache
    /// or not, and a cached identity never stands in for another one made
    /// of other parts (same ancestry, another agent or container).
    #[test]
    fn spliced_json_is_serde_json() -> serde_json::Result<()> {
        let chain = ancestry(3);
        let agent = Arc::new(Agent {
            name: "codex".into(),
            session: None,
            source: AgentSource::Label,
            pid: Some(100),
            runner: None,
        });
        let host = Identity {
            scope: Scope::Host,
            container: None,
            agent: None,
            ancestry: Arc::clone(&chain),
        };
        let with_agent = Identity {
            agent: Some(Arc::clone(&agent)),
            ..host.clone()
        };
        let in_container = Identity {
            scope: Scope::Container,
            container: Some(ContainerTag {
                id: Arc::from("abc"),
                info: None,
            }),
            ..with_agent.clone()
        };
        let empty = Identity::host();
        let mut ids = IdentityJson::default();
        for id in [
            None,
            Some(host.clone()),
            Some(host),
            Some(with_agent.clone()),
            Some(in_container.clone()),
            Some(with_agent),
            Some(in_container),
            Some(empty),
            Some(Identity {
                ancestry: ancestry(1),
                ..Identity::host()
            }),
        ] {
            let ev = open_event(id);
            let mut buf = b"prefix ".to_vec();
            ev.write_json(&mut buf, &mut ids)?;
            assert_eq!(
                String::from_utf8_lossy(&buf[7..]),
                String::from_utf8_lossy(&serde_json::to_vec(&ev)?)
            );
            // And plain serialization still carries the identity.
            let back: Event = serde_json::from_slice(&buf[7..])?;
            assert_eq!(back, ev);
        }
        Ok(())
    }
}
