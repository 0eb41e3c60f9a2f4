//! Raw ring-buffer records -> typed events. Everything read from the kernel
//! is length-checked; a record that doesn't fit is an error, never a panic.

use std::net::{Ipv4Addr, Ipv6Addr};

use agentguard_common::{
    event::{self as raw, family, flags, kind, syscall},
    user::{read_record, read_record_prefix},
};

use crate::event::*;
use crate::sensor::paths::{cstring, resolve};

#[derive(Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// Shorter than its kind's record: kernel object and daemon disagree.
    Short {
        kind: u16,
        len: usize,
    },
    UnknownKind(u16),
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecodeError::Short { kind, len } => {
                write!(f, "record of kind {kind} too short ({len} bytes)")
            }
            DecodeError::UnknownKind(k) => write!(f, "unknown record kind {k}"),
        }
    }
}

impl std::error::Error for DecodeError {}

fn syscall_name(n: u16) -> &'static str {
    match n {
        syscall::EXECVE => "execve",
        syscall::EXECVEAT => "execveat",
        syscall::CLONE => "clone",
        syscall::EXIT => "exit",
        syscall::OPEN => "open",
        syscall::OPENAT => "openat",
        syscall::OPENAT2 => "openat2",
        syscall::CREAT => "creat",
        syscall::UNLINK => "unlink",
        syscall::UNLINKAT => "unlinkat",
        syscall::RMDIR => "rmdir",
        syscall::RENAME => "rename",
        syscall::RENAMEAT => "renameat",
        syscall::RENAMEAT2 => "renameat2",
        syscall::TRUNCATE => "truncate",
        syscall::CONNECT => "connect",
        syscall::SENDTO => "sendto",
        syscall::SENDMSG => "sendmsg",
        syscall::SOCKET => "socket",
        syscall::COMPAT => "int80",
        syscall::DNS_QUERY => "dns:query",
        syscall::DNS_ANSWER => "dns:answer",
        syscall::IO_URING_SETUP => "io_uring_setup",
        syscall::LSM_FILE_OPEN => "lsm:file_open",
        syscall::LSM_PATH_UNLINK => "lsm:path_unlink",
        syscall::LSM_PATH_RMDIR => "lsm:path_rmdir",
        syscall::LSM_PATH_RENAME => "lsm:path_rename",
        syscall::LSM_PATH_TRUNCATE => "lsm:path_truncate",
        syscall::LSM_PATH_LINK => "lsm:path_link",
        syscall::LSM_BPRM_CHECK => "lsm:bprm_check_security",
        syscall::LSM_SOCKET_CREATE => "lsm:socket_create",
        syscall::LSM_SOCKET_CONNECT => "lsm:socket_connect",
        syscall::LSM_SOCKET_SENDMSG => "lsm:socket_sendmsg",
        syscall::LSM_UNIX_CONNECT => "lsm:unix_stream_connect",
        syscall::LSM_FILE_TRUNCATE => "lsm:file_truncate",
        _ => "unknown",
    }
}

fn kernel_action(verdict: u32) -> Option<KernelAction> {
    use agentguard_common::enforce::verdict as v;
    let slot = verdict & v::RULE_MASK;
    let acted = verdict & (v::KILLED | v::DENIED | v::MATCHED | v::KILL_FAILED) != 0;
    (acted && slot > 0).then(|| KernelAction {
        killed: verdict & v::KILLED != 0,
        kill_failed: verdict & v::KILL_FAILED != 0,
        denied: verdict & v::DENIED != 0,
        slot: slot - 1,
        hook: if verdict & v::LSM != 0 {
            KernelHook::Lsm
        } else {
            KernelHook::Tracepoint
        },
    })
}

fn base(h: &raw::Header, k: Kind, detail: Detail) -> Event {
    Event {
        ts_ns: h.ts_ns,
        kind: k,
        syscall: syscall_name(h.syscall).into(),
        pid: h.tgid,
        tid: h.tid,
        ppid: h.ppid,
        uid: h.uid,
        gid: h.gid,
        comm: cstring(&h.comm),
        cgroup_id: h.cgroup_id,
        ret: h.ret,
        error: (h.ret < 0 && h.ret > -4096).then(|| errno_name(-h.ret)),
        kernel_action: kernel_action(h.verdict),
        detail,
        identity: None,
    }
}

fn get<T: agentguard_common::user::Record>(bytes: &[u8], k: u16) -> Result<T, DecodeError> {
    read_record::<T>(bytes).ok_or(DecodeError::Short {
        kind: k,
        len: bytes.len(),
    })
}

fn get_prefix<T: agentguard_common::user::Record>(
    bytes: &[u8],
    k: u16,
    min: usize,
) -> Result<T, DecodeError> {
    read_record_prefix::<T>(bytes, min).ok_or(DecodeError::Short {
        kind: k,
        len: bytes.len(),
    })
}

/// Decodes one ring-buffer record.
pub fn decode(bytes: &[u8]) -> Result<Event, DecodeError> {
    let h: raw::Header = get(bytes, 0)?;
    let k = Kind::from_wire(h.kind).ok_or(DecodeError::UnknownKind(h.kind))?;
    let detail = match h.kind {
        kind::EXEC => {
            let e: raw::ExecEvent = get_prefix(bytes, h.kind, raw::EXEC_EVENT_MIN)?;
            Detail::Exec(exec_detail(&e))
        }
        kind::COMPAT_SYSCALL => {
            let p: raw::ProcEvent = get(bytes, h.kind)?;
            Detail::Compat(CompatDetail { nr: p.arg as i64 })
        }
        kind::FORK | kind::EXIT | kind::IO_URING_SETUP => {
            let p: raw::ProcEvent = get(bytes, h.kind)?;
            match h.kind {
                kind::FORK => Detail::Fork(ForkDetail {
                    child_pid: p.child_pid,
                    clone_flags: p.arg,
                    map_full: (p.header.flags & flags::MAP_FULL != 0).then(|| {
                        match p.exit_code {
                            raw::map_full::TASK_FILTER => "task_filter",
                            raw::map_full::ENFORCE_TASKS => "enforce_tasks",
                            _ => "unknown",
                        }
                        .to_owned()
                    }),
                }),
                kind::EXIT => Detail::Exit(exit_detail(p.exit_code)),
                _ => Detail::IoUring(IoUringDetail {
                    fd: (p.header.ret >= 0).then_some(p.header.ret as i32),
                }),
            }
        }
        kind::OPEN | kind::UNLINK | kind::RMDIR | kind::TRUNCATE => {
            let f: raw::FileEvent = get_prefix(bytes, h.kind, raw::FILE_EVENT_MIN)?;
            Detail::File(file_detail(&f))
        }
        kind::RENAME => {
            let r: raw::RenameEvent = get_prefix(bytes, h.kind, raw::RENAME_EVENT_MIN)?;
            Detail::Rename(RenameDetail {
                from: resolve(
                    &r.oldpath,
                    &r.olddir,
                    r.olddirfd != raw::AT_FDCWD,
                    h.flags & flags::PATH_TRUNCATED != 0,
                ),
                to: resolve(
                    &r.newpath,
                    &r.newdir,
                    r.newdirfd != raw::AT_FDCWD,
                    h.flags & flags::PATH2_TRUNCATED != 0,
                ),
                flags: r.flags,
                own_file: h.flags & flags::OWN_FILE != 0,
            })
        }
        kind::CONNECT | kind::SEND | kind::SOCKET => {
            let n: raw::NetEvent = get(bytes, h.kind)?;
            Detail::Net(net_detail(&n))
        }
        kind::DNS => {
            let d: raw::DnsEvent = get(bytes, h.kind)?;
            Detail::Dns(dns_detail(&d))
        }
        other => return Err(DecodeError::UnknownKind(other)),
    };
    Ok(base(&h, k, detail))
}

fn exec_detail(e: &raw::ExecEvent) -> ExecDetail {
    let used = (e.argv_len as usize).min(e.argv.len());
    let argv = e.argv[..used]
        .split(|&b| b == 0)
        .take(e.argc as usize)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    ExecDetail {
        file: resolve(
            &e.path,
            &e.dir,
            e.dirfd != raw::AT_FDCWD,
            e.header.flags & flags::PATH_TRUNCATED != 0,
        ),
        argv,
        argv_truncated: e.header.flags & flags::ARGV_TRUNCATED != 0,
        flags: e.flags,
        binary: None,
        stdin_pipe: (e.stdin_pipe != 0).then_some(e.stdin_pipe),
        stdout_pipe: (e.stdout_pipe != 0).then_some(e.stdout_pipe),
        stdin_from: None,
    }
}

fn exit_detail(status: u32) -> ExitDetail {
    // wait(2) encoding: low 7 bits = signal, next byte = exit code.
    let sig = (status & 0x7f) as i32;
    if sig == 0 {
        ExitDetail {
            code: Some(((status >> 8) & 0xff) as i32),
            signal: None,
        }
    } else {
        ExitDetail {
            code: None,
            signal: Some(sig),
        }
    }
}

const O_ACCMODE: u32 = 0o3;
const OPEN_FLAG_NAMES: &[(u32, &str)] = &[
    (0o100, "O_CREAT"),
    (0o200, "O_EXCL"),
    (0o1000, "O_TRUNC"),
    (0o2000, "O_APPEND"),
    (0o4000, "O_NONBLOCK"),
    (0o200000, "O_DIRECTORY"),
    (0o400000, "O_NOFOLLOW"),
    (0o2000000, "O_CLOEXEC"),
    (0o10000000, "O_PATH"),
    (0o20000000, "O_TMPFILE"),
];

fn file_detail(f: &raw::FileEvent) -> FileDetail {
    let h = &f.header;
    let from_fd = h.flags & flags::PATH_FROM_FD != 0;
    let file = match crate::sensor::paths::chain_dir(&f.dir).filter(|_| from_fd) {
        Some((path, res)) => PathInfo {
            raw: Some(cstring(&f.path)).filter(|r| *r != path),
            path,
            resolution: if res == Resolution::Truncated {
                Resolution::Truncated
            } else {
                Resolution::File
            },
            truncated: h.flags & flags::PATH_TRUNCATED != 0,
        },
        None => resolve(
            &f.path,
            &f.dir,
            f.dirfd != raw::AT_FDCWD,
            h.flags & flags::PATH_TRUNCATED != 0,
        ),
    };
    let is_open = h.kind == kind::OPEN;
    FileDetail {
        file,
        flags: f.flags,
        access: is_open.then(|| {
            match f.flags & O_ACCMODE {
                0 => "read",
                1 => "write",
                _ => "read_write",
            }
            .into()
        }),
        flag_names: if is_open {
            OPEN_FLAG_NAMES
                .iter()
                .filter(|(bit, _)| f.flags & bit == *bit)
                .map(|(_, n)| (*n).into())
                .collect()
        } else {
            Vec::new()
        },
        mode: (is_open && f.flags & 0o100 != 0).then_some(f.mode),
        size: (h.kind == kind::TRUNCATE).then_some(f.size),
        own_file: h.flags & flags::OWN_FILE != 0,
    }
}

/// An address as the kernel maps keep it (IPv6, IPv4 mapped).
fn addr16(a: &[u8; 16]) -> String {
    let v6 = Ipv6Addr::from(*a);
    v6.to_ipv4_mapped()
        .map_or_else(|| v6.to_string(), |v4| v4.to_string())
}

fn dns_detail(d: &raw::DnsEvent) -> DnsDetail {
    use raw::dns_status as st;
    let len = (d.name_len as usize).min(d.name.len());
    let unreadable = d.status & st::UNREADABLE != 0;
    let n = (d.n_addrs as usize).min(d.addrs.len());
    DnsDetail {
        direction: if d.header.syscall == syscall::DNS_QUERY {
            "query"
        } else {
            "answer"
        }
        .into(),
        name: (!unreadable && len > 0)
            .then(|| String::from_utf8_lossy(&d.name[..len]).into_owned()),
        qtype: (d.qtype != 0).then(|| match d.qtype {
            1 => "A".to_owned(),
            28 => "AAAA".to_owned(),
            5 => "CNAME".to_owned(),
            16 => "TXT".to_owned(),
            other => other.to_string(),
        }),
        resolver: addr16(&d.peer),
        dropped: d.status & st::DROPPED != 0,
        unreadable,
        foreign: d.status & st::FOREIGN != 0,
        tcp: d.status & st::TCP != 0,
        addrs: d.addrs[..n].iter().map(addr16).collect(),
        ttl: (d.status & st::ALLOWED != 0).then_some(d.ttl),
        subject: d.subject,
        rules: d.rules,
        subject_rules: d.subject_rules,
    }
}

fn net_detail(n: &raw::NetEvent) -> NetDetail {
    let mut d = NetDetail {
        family: String::new(),
        addr: None,
        port: None,
        v4_mapped: false,
        unix_path: None,
        fd: n.fd,
        len: (n.header.syscall == syscall::SENDTO).then_some(n.len),
        addr_unreadable: n.header.flags & flags::ADDR_UNREADABLE != 0,
        socket_type: None,
        protocol: None,
        domain: None,
        dns_subject: n.subject,
        dns_rules: n.dns_rules,
    };
    if n.header.kind == kind::SOCKET {
        // Only created, never addressed: the type and protocol are what
        // is known (see agentguard_common::event::kind::SOCKET).
        d.family = match n.family {
            family::INET => "inet".into(),
            family::INET6 => "inet6".into(),
            17 => "packet".into(),
            other => format!("af_{other}"),
        };
        d.socket_type = Some(n.fd as u32);
        d.protocol = Some(n.msg_flags);
        d.fd = -1;
        return d;
    }
    match n.family {
        family::INET => {
            d.family = "inet".into();
            d.addr = Some(Ipv4Addr::new(n.addr[0], n.addr[1], n.addr[2], n.addr[3]).to_string());
            d.port = Some(n.port);
        }
        family::INET6 => {
            d.family = "inet6".into();
            let v6 = Ipv6Addr::from(n.addr);
            // ::ffff:a.b.c.d reaches an IPv4 host: policies match it as IPv4.
            match v6.to_ipv4_mapped() {
                Some(v4) => {
                    d.addr = Some(v4.to_string());
                    d.v4_mapped = true;
                }
                None => d.addr = Some(v6.to_string()),
            }
            d.port = Some(n.port);
        }
        family::UNIX => {
            d.family = "unix".into();
            // addrlen bounds the name: sun_path is not NUL-terminated when full,
            // and abstract names (leading NUL) may contain NULs.
            let max = (n.addrlen as usize)
                .saturating_sub(2)
                .min(n.unix_path.len());
            let bytes = &n.unix_path[..max];
            d.unix_path = Some(match bytes.first() {
                Some(0) => format!("@{}", String::from_utf8_lossy(&bytes[1..])),
                _ => cstring(bytes),
            });
        }
        other => d.family = format!("af_{other}"),
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;
    use agentguard_common::event::*;

    #[test]
    fn a_kill_the_kernel_could_not_send_is_not_reported_as_killed() {
        use agentguard_common::enforce::verdict as v;
        let sent = kernel_action(v::KILLED | 3).expect("acted");
        assert!(sent.killed && !sent.kill_failed);
        assert_eq!(sent.slot, 2);
        let failed = kernel_action(v::KILL_FAILED | 3).expect("acted");
        assert!(!failed.killed && failed.kill_failed, "{failed:?}");
        // LSM: refused, the signal failed.
        let lsm = kernel_action(v::DENIED | v::LSM | v::KILL_FAILED | 1).expect("acted");
        assert!(lsm.denied && !lsm.killed && lsm.kill_failed);
        assert_eq!(kernel_action(3), None, "no verdict, no action");
    }

    fn bytes_of<T: Copy>(v: &T) -> Vec<u8> {
        // SAFETY: test-only view of a repr(C) POD value as bytes.
        unsafe {
            std::slice::from_raw_parts((v as *const T).cast::<u8>(), std::mem::size_of::<T>())
        }
        .to_vec()
    }

    fn header(k: u16, sc: u16, ret: i64) -> Header {
        let mut comm = [0u8; COMM_LEN];
        comm[..4].copy_from_slice(b"curl");
        Header {
            kind: k,
            syscall: sc,
            ts_ns: 42,
            tid: 11,
            tgid: 10,
            ppid: 1,
            uid: 1000,
            gid: 1000,
            cgroup_id: 7,
            ret,
            comm,
            ..Default::default()
        }
    }

    fn net(fam: u16, addr: [u8; 16], port: u16) -> NetEvent {
        NetEvent {
            header: header(kind::CONNECT, syscall::CONNECT, -111),
            fd: 3,
            msg_flags: 0,
            len: 0,
            family: fam,
            port,
            addrlen: 16,
            addr,
            unix_path: [0; UNIX_PATH_LEN],
            dns_rules: 0,
            subject: 0,
        }
    }

    #[test]
    fn fork_that_overflowed_a_map_says_which() {
        let mut h = header(kind::FORK, syscall::CLONE, 77);
        h.flags = flags::MAP_FULL;
        let p = ProcEvent {
            header: h,
            child_pid: 77,
            exit_code: map_full::ENFORCE_TASKS,
            arg: 0,
        };
        let ev = decode(&bytes_of(&p)).expect("decodes");
        let Detail::Fork(f) = ev.detail else {
            panic!("not a fork")
        };
        assert_eq!(f.map_full.as_deref(), Some("enforce_tasks"));
        let p = ProcEvent {
            header: header(kind::FORK, syscall::CLONE, 78),
            child_pid: 78,
            exit_code: 0,
            arg: 0,
        };
        let Detail::Fork(f) = decode(&bytes_of(&p)).expect("decodes").detail else {
            panic!("not a fork")
        };
        assert_eq!(f.map_full, None);
    }

    #[test]
    fn connect_v4() {
        let mut a = [0u8; 16];
        a[..4].copy_from_slice(&[10, 0, 0, 1]);
        let ev = decode(&bytes_of(&net(family::INET, a, 443))).expect("decodes");
        assert_eq!(ev.kind, Kind::Connect);
        assert_eq!(ev.pid, 10);
        assert_eq!(ev.tid, 11);
        assert_eq!(ev.comm, "curl");
        assert_eq!(ev.error.as_deref(), Some("ECONNREFUSED"));
        let Detail::Net(n) = ev.detail else {
            panic!("not net")
        };
        assert_eq!(n.addr.as_deref(), Some("10.0.0.1"));
        assert_eq!(n.port, Some(443));
        assert!(!n.v4_mapped);
    }

    #[test]
    fn connect_v6_and_mapped() {
        let v6: Ipv6Addr = "2001:db8::1".parse().expect("addr");
        let ev = decode(&bytes_of(&net(family::INET6, v6.octets(), 80))).expect("decodes");
        let Detail::Net(n) = ev.detail else {
            panic!("not net")
        };
        assert_eq!(n.addr.as_deref(), Some("2001:db8::1"));
        let mapped: Ipv6Addr = "::ffff:169.254.169.254".parse().expect("addr");
        let ev = decode(&bytes_of(&net(family::INET6, mapped.octets(), 80))).expect("decodes");
        let Detail::Net(n) = ev.detail else {
            panic!("not net")
        };
        assert_eq!(n.addr.as_deref(), Some("169.254.169.254"));
        assert!(n.v4_mapped);
        assert_eq!(n.family, "inet6");
    }

    #[test]
    fn unix_paths() {
        let mut n = net(family::UNIX, [0; 16], 0);
        n.unix_path[..20].copy_from_slice(b"/var/run/docker.soc\0");
        n.addrlen = 110;
        let Detail::Net(d) = decode(&bytes_of(&n)).expect("decodes").detail else {
            panic!()
        };
        assert_eq!(d.unix_path.as_deref(), Some("/var/run/docker.soc"));
        let mut n = net(family::UNIX, [0; 16], 0);
        n.unix_path[..5].copy_from_slice(b"\0abcX");
        n.addrlen = 2 + 4;
        let Detail::Net(d) = decode(&bytes_of(&n)).expect("decodes").detail else {
            panic!()
        };
        assert_eq!(d.unix_path.as_deref(), Some("@abc"));
    }

    #[test]
    fn exec_argv_and_truncation() {
        // SAFETY: all-zero is a valid ExecEvent (integers and byte arrays).
        let mut e: ExecEvent = unsafe { std::mem::zeroed() };
        e.header = header(kind::EXEC, syscall::EXECVE, 0);
        e.header.flags = flags::ARGV_TRUNCATED;
        e.dirfd = AT_FDCWD;
        e.path[..8].copy_from_slice(b"/bin/ls\0");
        let args = b"ls\0-la\0/tmp\0";
        e.argv[..args.len()].copy_from_slice(args);
        e.argv_len = args.len() as u32;
        e.argc = 3;
        let ev = decode(&bytes_of(&e)).expect("decodes");
        let Detail::Exec(x) = ev.detail else { panic!() };
        assert_eq!(x.argv, vec!["ls", "-la", "/tmp"]);
        assert!(x.argv_truncated);
        assert_eq!(x.file.path, "/bin/ls");
        // A corrupt argv_len is clamped to the buffer.
        e.argv_len = u32::MAX;
        assert!(decode(&bytes_of(&e)).is_ok());
    }

    #[test]
    fn open_flags_and_mode() {
        // SAFETY: all-zero is a valid FileEvent.
        let mut f: FileEvent = unsafe { std::mem::zeroed() };
        f.header = header(kind::OPEN, syscall::OPENAT, 3);
        f.dirfd = AT_FDCWD;
        f.flags = 0o1101; // O_WRONLY|O_CREAT|O_TRUNC
        f.mode = 0o644;
        f.path[..6].copy_from_slice(b"/tmp/x");
        let ev = decode(&bytes_of(&f)).expect("decodes");
        assert_eq!(ev.syscall, "openat");
        assert!(ev.ok());
        assert_eq!(ev.path(), Some("/tmp/x"));
        let Detail::File(d) = ev.detail else { panic!() };
        assert_eq!(d.access.as_deref(), Some("write"));
        assert_eq!(d.flag_names, vec!["O_CREAT", "O_TRUNC"]);
        assert_eq!(d.mode, Some(0o644));
    }

    #[test]
    fn trimmed_file_record_decodes_and_too_short_fails() {
        // SAFETY: all-zero is a valid FileEvent.
        let mut f: FileEvent = unsafe { std::mem::zeroed() };
        f.header = header(kind::UNLINK, syscall::UNLINKAT, 0);
        f.dirfd = AT_FDCWD;
        f.path[..1].copy_from_slice(b"x");
        f.dir.status = dir_status::COMPLETE;
        f.dir.depth = 1;
        f.dir.len = 4;
        f.dir.buf[..4].copy_from_slice(b"tmp\0");
        let bytes = bytes_of(&f);
        let ev = decode(&bytes[..FILE_EVENT_MIN + 4]).expect("trimmed record decodes");
        assert_eq!(ev.path(), Some("/tmp/x"));
        assert!(decode(&bytes[..FILE_EVENT_MIN - 1]).is_err());
    }

    #[test]
    fn exit_status() {
        assert_eq!(
            exit_detail(3 << 8),
            ExitDetail {
                code: Some(3),
                signal: None
            }
        );
        assert_eq!(
            exit_detail(9),
            ExitDetail {
                code: None,
                signal: Some(9)
            }
        );
    }

    #[test]
    fn short_and_unknown_records_are_errors() {
        let h = header(kind::OPEN, syscall::OPENAT, 0);
        assert_eq!(
            decode(&bytes_of(&h)),
            Err(DecodeError::Short {
                kind: kind::OPEN,
                len: std::mem::size_of::<Header>()
            })
        );
        let h = header(99, 0, 0);
        assert_eq!(decode(&bytes_of(&h)), Err(DecodeError::UnknownKind(99)));
        assert!(decode(&[1, 2, 3]).is_err());
    }

    #[test]
    fn json_roundtrip() {
        let mut a = [0u8; 16];
        a[..4].copy_from_slice(&[127, 0, 0, 1]);
        let ev = decode(&bytes_of(&net(family::INET, a, 53))).expect("decodes");
        let json = serde_json::to_string(&ev).expect("serializes");
        assert!(json.contains("\"net\":{"), "{json}");
        assert!(json.contains("\"kind\":\"connect\""), "{json}");
        let back: Event = serde_json::from_str(&json).expect("parses");
        assert_eq!(back, ev);
    }
}
