//! What the eBPF object holds and where each part attaches: the
//! tracepoint programs (and the syscall number each serves under raw
//! dispatch), the cgroup, skb and LSM programs, the kernel struct offsets
//! the programs read, and where the daemon pins its state. Data only.

use crate::event::Kind;

/// One tracepoint program: its name in the object, its tracefs place and the
/// kinds that need it (empty = always attached).
pub(super) struct ProbeSpec {
    pub(super) program: &'static str,
    pub(super) category: &'static str,
    pub(super) kinds: &'static [Kind],
    /// Legacy syscalls absent on some architectures: warn, don't fail.
    pub(super) optional: bool,
    /// The syscall's x86-64 number (raw dispatch slot); NO_NR for the
    /// non-syscall tracepoints.
    pub(super) nr: u32,
}

pub(super) const NO_NR: u32 = u32::MAX;

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
pub(super) const PROBES: &[ProbeSpec] = &[
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
pub(super) const OFFSETS: &[(&str, &str, &str)] = &[
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
