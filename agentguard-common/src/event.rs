//! Raw event records as written into the ring buffer.
//!
//! Each record starts with a [`Header`]; `Header::kind` says which record
//! type follows. Records are fixed-size per kind so the verifier sees constant
//! sizes and userspace can check a record's length before reading it.

/// Length of `comm` (TASK_COMM_LEN).
pub const COMM_LEN: usize = 16;
/// Bytes kept of a path string exactly as the process passed it.
pub const PATH_LEN: usize = 256;
/// Logical budget for the walked directory chain, see [`DirChain`].
pub const DIR_LEN: usize = 512;
/// Longest single dentry name copied (NAME_MAX + NUL).
pub const NAME_LEN: usize = 256;
/// The chain buffer has room for one name past the budget so the kernel can
/// write at any offset below `DIR_LEN` without a per-byte bounds check.
pub const DIR_BUF: usize = DIR_LEN + NAME_LEN;
/// Most path components (plus mount crossings) walked for one directory.
pub const MAX_DIR_STEPS: u32 = 40;
/// Budget for argv bytes (NUL separated).
pub const ARGV_LEN: usize = 1024;
/// Longest single argument copied.
pub const ARG_LEN: usize = 256;
/// argv buffer: budget plus one argument of slack, as for [`DIR_BUF`].
pub const ARGV_BUF: usize = ARGV_LEN + ARG_LEN;
/// Most arguments copied.
pub const MAX_ARGS: u32 = 16;
/// `sun_path` length.
pub const UNIX_PATH_LEN: usize = 108;

/// `dirfd` value meaning "relative to the working directory".
pub const AT_FDCWD: i32 = -100;

/// Event kinds (`Header::kind`). Numbers are part of the wire format between
/// the kernel object and the daemon built with it; never reuse one.
pub mod kind {
    pub const EXEC: u16 = 1;
    pub const FORK: u16 = 2;
    pub const EXIT: u16 = 3;
    pub const OPEN: u16 = 4;
    pub const UNLINK: u16 = 5;
    pub const RMDIR: u16 = 6;
    pub const RENAME: u16 = 7;
    pub const TRUNCATE: u16 = 8;
    pub const CONNECT: u16 = 9;
    pub const SEND: u16 = 10;
    pub const IO_URING_SETUP: u16 = 11;
    /// socket(2) creating a raw or packet socket (`NetEvent::fd` holds the
    /// type, `msg_flags` the protocol, `family` the family).
    pub const SOCKET: u16 = 12;
    /// A syscall through the 32-bit ABI (`int 0x80` from a 64-bit process,
    /// or a 32-bit program): x86 does not feed those to the `syscalls:*`
    /// tracepoints, so every other probe is blind to them. `ProcEvent::arg`
    /// holds the (32-bit) syscall number.
    pub const COMPAT_SYSCALL: u16 = 13;
    /// A DNS query or answer of a subject under a domain rule, read on the
    /// wire by the cgroup skb programs ([`DnsEvent`]).
    pub const DNS: u16 = 14;
    /// Userspace only (never a kernel record): a subject's records dropped
    /// past its quota, and a policy reload.
    pub const FLOOD: u16 = 15;
    pub const POLICY_RELOAD: u16 = 16;
    /// One past the largest kind; sizes bitmasks.
    pub const MAX: u16 = 17;
}

/// Which syscall (or kernel event) produced a record (`Header::syscall`).
pub mod syscall {
    pub const EXECVE: u16 = 1;
    pub const EXECVEAT: u16 = 2;
    pub const CLONE: u16 = 3;
    pub const EXIT: u16 = 4;
    pub const OPEN: u16 = 5;
    pub const OPENAT: u16 = 6;
    pub const OPENAT2: u16 = 7;
    pub const CREAT: u16 = 8;
    pub const UNLINK: u16 = 9;
    pub const UNLINKAT: u16 = 10;
    pub const RMDIR: u16 = 11;
    pub const RENAME: u16 = 12;
    pub const RENAMEAT: u16 = 13;
    pub const RENAMEAT2: u16 = 14;
    pub const TRUNCATE: u16 = 15;
    pub const CONNECT: u16 = 16;
    pub const SENDTO: u16 = 17;
    pub const SENDMSG: u16 = 18;
    pub const IO_URING_SETUP: u16 = 19;
    /// socket(2) of a raw or packet socket (others are not reported).
    pub const SOCKET: u16 = 20;
    /// raw_syscalls:sys_enter of a 32-bit ABI syscall.
    pub const COMPAT: u16 = 21;
    // Records an LSM hook wrote itself: the operation reached the kernel
    // some way no syscall probe reported (io_uring, an untraced process).
    pub const LSM_FILE_OPEN: u16 = 32;
    pub const LSM_PATH_UNLINK: u16 = 33;
    pub const LSM_PATH_RMDIR: u16 = 34;
    pub const LSM_PATH_RENAME: u16 = 35;
    pub const LSM_PATH_TRUNCATE: u16 = 36;
    pub const LSM_PATH_LINK: u16 = 37;
    pub const LSM_BPRM_CHECK: u16 = 38;
    pub const LSM_SOCKET_CREATE: u16 = 39;
    pub const LSM_SOCKET_CONNECT: u16 = 40;
    pub const LSM_SOCKET_SENDMSG: u16 = 41;
    pub const LSM_UNIX_CONNECT: u16 = 42;
    pub const LSM_FILE_TRUNCATE: u16 = 43;
    /// cgroup skb egress: a DNS query of a subject under a domain rule.
    pub const DNS_QUERY: u16 = 48;
    /// cgroup skb ingress: a DNS answer it received.
    pub const DNS_ANSWER: u16 = 49;
}

/// Bits of `Header::flags`.
pub mod flags {
    /// More than `MAX_ARGS` arguments or `ARGV_LEN` bytes: argv is cut.
    pub const ARGV_TRUNCATED: u32 = 1 << 0;
    /// A path string filled its whole buffer: it may be cut.
    pub const PATH_TRUNCATED: u32 = 1 << 1;
    /// The second path (rename target) filled its buffer.
    pub const PATH2_TRUNCATED: u32 = 1 << 2;
    /// The user path could not be read (bad pointer).
    pub const PATH_UNREADABLE: u32 = 1 << 3;
    /// The fork created a thread, not a process.
    pub const THREAD: u32 = 1 << 4;
    /// The process that caused this event was the last of its thread group.
    pub const GROUP_DEAD: u32 = 1 << 5;
    /// The syscall's address argument could not be read.
    pub const ADDR_UNREADABLE: u32 = 1 << 6;
    /// fork: a kernel map was full, the child was left out of it;
    /// `ProcEvent::exit_code` names the map (`map_full`).
    pub const MAP_FULL: u32 = 1 << 8;
    /// open: the DirChain holds the path of the file the kernel opened,
    /// walked from the returned descriptor at exit (symlinks, `..`,
    /// `/proc/self/root` resolved); `path` keeps the string as passed.
    pub const PATH_FROM_FD: u32 = 1 << 7;
    /// unlink, rename: the file is one the container created itself,
    /// checked by the kernel on its dentry and inode (`OWN_FILES`): a
    /// volume rule lets it go.
    pub const OWN_FILE: u32 = 1 << 9;
}

/// Common prefix of every record.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Header {
    pub kind: u16,
    pub syscall: u16,
    pub flags: u32,
    /// `bpf_ktime_get_boot_ns` at syscall entry.
    pub ts_ns: u64,
    /// Thread id (the kernel's pid).
    pub tid: u32,
    /// Process id (the kernel's tgid).
    pub tgid: u32,
    /// tgid of the real parent.
    pub ppid: u32,
    pub uid: u32,
    pub gid: u32,
    /// What the probe itself did about this syscall; see
    /// [`crate::enforce::verdict`]. 0: nothing.
    pub verdict: u32,
    /// `bpf_get_current_cgroup_id` (cgroup v2 id; see the identity module).
    pub cgroup_id: u64,
    /// Syscall return value (negative errno on failure); 0 where none.
    pub ret: i64,
    pub comm: [u8; COMM_LEN],
}

/// Status of a [`DirChain`].
pub mod dir_status {
    /// No directory was needed: the path was absolute.
    pub const NONE: u16 = 0;
    /// The chain reaches the task's root.
    pub const COMPLETE: u16 = 1;
    /// Too deep or too long: the outermost components are missing.
    pub const TRUNCATED: u16 = 2;
    /// The directory could not be read (bad dirfd, unreadable kernel memory).
    pub const FAILED: u16 = 3;
}

/// The directory a relative path is relative to, as the kernel saw it at
/// syscall entry: dentry names from the directory itself up to the task's
/// root (so a container process sees container paths), each NUL-terminated,
/// innermost first. Userspace reverses and joins them.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct DirChain {
    pub status: u16,
    /// Number of names in `buf`.
    pub depth: u16,
    /// Bytes used in `buf`.
    pub len: u32,
    pub buf: [u8; DIR_BUF],
}

/// Records whose last field is a [`DirChain`] are sent only up to the used
/// part of its buffer; these are the shortest valid lengths.
pub const FILE_EVENT_MIN: usize =
    core::mem::offset_of!(FileEvent, dir) + core::mem::offset_of!(DirChain, buf);
pub const EXEC_EVENT_MIN: usize =
    core::mem::offset_of!(ExecEvent, dir) + core::mem::offset_of!(DirChain, buf);
pub const RENAME_EVENT_MIN: usize =
    core::mem::offset_of!(RenameEvent, newdir) + core::mem::offset_of!(DirChain, buf);

/// open, openat, openat2, creat, unlink, unlinkat, rmdir, truncate.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct FileEvent {
    pub header: Header,
    /// dirfd argument, or `AT_FDCWD`.
    pub dirfd: i32,
    /// open flags, unlinkat flags.
    pub flags: u32,
    /// open mode.
    pub mode: u32,
    pub _pad: u32,
    /// truncate length.
    pub size: u64,
    pub path: [u8; PATH_LEN],
    pub dir: DirChain,
}

/// rename, renameat, renameat2.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct RenameEvent {
    pub header: Header,
    pub olddirfd: i32,
    pub newdirfd: i32,
    /// renameat2 flags (RENAME_NOREPLACE, RENAME_EXCHANGE, ...).
    pub flags: u32,
    pub _pad: u32,
    pub oldpath: [u8; PATH_LEN],
    pub newpath: [u8; PATH_LEN],
    pub olddir: DirChain,
    pub newdir: DirChain,
}

/// execve, execveat.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ExecEvent {
    pub header: Header,
    pub dirfd: i32,
    /// execveat flags.
    pub flags: u32,
    /// Arguments copied into `argv`.
    pub argc: u32,
    /// Bytes used in `argv`.
    pub argv_len: u32,
    /// Inode numbers of the pipes the program gets as stdin and stdout
    /// (0: not a pipe): `curl | sh` is the same pipe at both ends.
    pub stdin_pipe: u64,
    pub stdout_pipe: u64,
    pub path: [u8; PATH_LEN],
    pub argv: [u8; ARGV_BUF],
    pub dir: DirChain,
}

/// fork/clone (`kind::FORK`), exit (`kind::EXIT`), io_uring_setup.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ProcEvent {
    pub header: Header,
    /// FORK: the child's pid (its tid; equal to its tgid unless `THREAD`).
    pub child_pid: u32,
    /// EXIT: wait(2)-style status (code << 8 | signal).
    pub exit_code: u32,
    /// FORK: clone flags. IO_URING_SETUP: requested entries.
    pub arg: u64,
}

/// Which map a fork's `MAP_FULL` names (`ProcEvent::exit_code`).
pub mod map_full {
    pub const TASK_FILTER: u32 = 1;
    pub const ENFORCE_TASKS: u32 = 2;
}

/// Address families carried in [`NetEvent::family`].
pub mod family {
    pub const UNIX: u16 = 1;
    pub const INET: u16 = 2;
    pub const INET6: u16 = 10;
}

/// connect, and sendto/sendmsg that name a destination.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct NetEvent {
    pub header: Header,
    pub fd: i32,
    /// sendto/sendmsg flags.
    pub msg_flags: u32,
    /// sendto: bytes requested.
    pub len: u64,
    /// `sa_family` as passed.
    pub family: u16,
    /// Destination port, host byte order.
    pub port: u16,
    /// Bytes of the address argument the process passed.
    pub addrlen: u32,
    /// IPv4 in the first 4 bytes, or IPv6, network order.
    pub addr: [u8; 16],
    /// AF_UNIX `sun_path` (abstract names start with NUL).
    pub unix_path: [u8; UNIX_PATH_LEN],
    /// Rules (bits) whose domain list let the task's subject reach this
    /// address: a DNS answer for an allowed name gave it, and its TTL has
    /// not run out.
    pub dns_rules: u32,
    /// The task's subject under domain rules (see
    /// `enforce::DnsAllowKey`); 0 when it has none.
    pub subject: u64,
}

/// Bits of [`DnsEvent::status`].
pub mod dns_status {
    /// The query was dropped: its name is outside a domain rule's list (or
    /// could not be read, which counts as outside).
    pub const DROPPED: u32 = 1 << 0;
    /// The name could not be read (compressed, too long, odd bytes, more
    /// than one question, a TCP message split over segments).
    pub const UNREADABLE: u32 = 1 << 1;
    /// Answer: the addresses were written to `DNS_ALLOW`.
    pub const ALLOWED: u32 = 1 << 2;
    /// Answer: from an address other than the one the socket queried.
    pub const FOREIGN: u32 = 1 << 3;
    /// Over TCP.
    pub const TCP: u32 = 1 << 4;
}

/// A DNS message of a subject under a domain rule (`kind::DNS`). The
/// header's tgid and comm are those of the last process that sent on the
/// socket (the skb programs run where no process is known).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct DnsEvent {
    pub header: Header,
    pub subject: u64,
    /// [`dns_status`] bits.
    pub status: u32,
    /// Domain rules (bits) whose list holds the name.
    pub rules: u32,
    /// Rules (bits) of the subject's domain rules.
    pub subject_rules: u32,
    pub qtype: u16,
    /// DNS transaction id.
    pub txid: u16,
    /// Smallest TTL of the answer's addresses, seconds (as sent).
    pub ttl: u32,
    /// Addresses in `addrs` (IPv6, IPv4 mapped).
    pub n_addrs: u32,
    /// The resolver (destination of a query, source of an answer).
    pub peer: [u8; 16],
    pub addrs: [[u8; 16]; crate::enforce::DNS_MAX_ADDRS],
    /// Length of `name`.
    pub name_len: u32,
    pub _pad: u32,
    /// The question's name, dotted, lower case.
    pub name: [u8; 256],
}
