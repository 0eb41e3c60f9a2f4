//! Real-kernel tests: load the real eBPF object, make real syscalls from child
//! processes, and check the events that come back.
//!
//! They need root. Outside CI they skip with a message when not root; under
//! CI=true they fail instead, so a privileged test can never silently skip.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use agentguard::event::{Detail, Event, Kind, Resolution};
use agentguard::sensor::{features, Sensor, SensorOptions, SyscallHooks};

/// A fresh directory, canonical (so expected paths compare exactly).
fn tempdir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("agentguard-test-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create temp dir");
    dir.canonicalize().expect("canonicalize temp dir")
}

/// A python3 child that waits for a line on stdin before running `script`,
/// so the test can point the kernel filter at it first.
struct Actor {
    child: Child,
}

impl Actor {
    fn spawn(dir: &Path, script: &str) -> Actor {
        let code = format!("import sys, os, socket\nsys.stdin.readline()\n{script}\n");
        let child = Command::new("python3")
            .arg("-c")
            .arg(code)
            .current_dir(dir)
            .stdin(Stdio::piped())
            .spawn()
            .expect("python3 must be installed for the sensor tests");
        Actor { child }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn go(&mut self) {
        let stdin = self.child.stdin.as_mut().expect("stdin piped");
        stdin.write_all(b"go\n").expect("write to actor");
        stdin.flush().expect("flush");
    }

    fn wait(mut self) {
        let status = self.child.wait().expect("wait actor");
        assert!(status.success(), "actor script failed: {status}");
    }
}

async fn start(watch_all: bool) -> Sensor {
    start_hooked(watch_all, SyscallHooks::Auto).await
}

/// A sensor on the syscall hooks asked for (`Auto`: what the host picks,
/// checked against the kernel's own answer for raw tracepoints).
async fn start_hooked(watch_all: bool, hooks: SyscallHooks) -> Sensor {
    let sensor = Sensor::start(&SensorOptions {
        watch_all,
        ring_buffer_bytes: 8 << 20,
        syscall_hooks: hooks,
        ..Default::default()
    })
    .expect("sensor starts");
    let want = match hooks {
        SyscallHooks::Auto => {
            let raw = cfg!(target_arch = "x86_64")
                && features::probe_raw_tracepoint() == features::Status::Supported;
            if raw {
                SyscallHooks::Raw
            } else {
                SyscallHooks::Tracepoints
            }
        }
        h => h,
    };
    assert_eq!(sensor.syscall_hooks(), want);
    sensor
}

/// Runs `script` in a watched actor and returns every event of it (and its
/// descendants) once `done` is satisfied or the timeout passes.
async fn run_actor(
    sensor: &mut Sensor,
    dir: &Path,
    script: &str,
    done: impl Fn(&[Event]) -> bool,
) -> (u32, Vec<Event>) {
    let mut actor = Actor::spawn(dir, script);
    let pid = actor.pid();
    sensor.set_filter(pid, &Kind::ALL).expect("set filter");
    actor.go();
    let mut events = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut exited = false;
    while Instant::now() < deadline {
        let _ = tokio::time::timeout(
            Duration::from_millis(200),
            sensor.read(&mut |e| events.push(e)),
        )
        .await;
        if !exited {
            if let Ok(Some(_)) = actor.child.try_wait() {
                exited = true;
            }
        }
        if exited && done(&events) {
            break;
        }
    }
    actor.wait();
    (pid, events)
}

fn file_events<'a>(events: &'a [Event], kind: Kind, path: &str) -> Vec<&'a Event> {
    events
        .iter()
        .filter(|e| e.kind == kind && e.path() == Some(path))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_events_have_absolute_paths_and_results() {
    file_events_on(SyscallHooks::Auto, "files").await;
}

/// The same handlers behind one tracepoint per syscall (the backend for
/// hosts without raw dispatch, and `AGENTGUARD_SYSCALL_HOOKS=tracepoints`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_events_on_per_syscall_tracepoints() {
    file_events_on(SyscallHooks::Tracepoints, "files-tp").await;
}

async fn file_events_on(hooks: SyscallHooks, tag: &str) {
    if !common::privileged() {
        return;
    }
    let dir = tempdir(tag);
    std::fs::create_dir_all(dir.join("sub")).expect("mkdir");
    std::fs::write(dir.join("data.txt"), b"hello").expect("write");
    let d = dir.display().to_string();
    let script = r#"
open("sub/../data.txt").read()
try:
    open("missing.txt")
except FileNotFoundError:
    pass
fd = os.open(".", os.O_RDONLY)
os.close(os.open("data.txt", os.O_RDONLY, dir_fd=fd))
os.truncate("data.txt", 2)
os.rename("data.txt", "sub/renamed.txt")
os.mkdir("gone")
os.rmdir("gone")
os.unlink("sub/renamed.txt", dir_fd=fd)
"#;
    let mut sensor = start_hooked(false, hooks).await;
    let unlinked = format!("{d}/sub/renamed.txt");
    let (pid, events) = run_actor(&mut sensor, &dir, script, |evs| {
        !file_events(evs, Kind::Unlink, &unlinked).is_empty()
    })
    .await;
    let all = common::dump(&events);

    let data = format!("{d}/data.txt");
    let opens = file_events(&events, Kind::Open, &data);
    assert!(
        opens.len() >= 2,
        "expected relative and dirfd opens of {data}:\n{all}"
    );
    let rel = opens
        .iter()
        .find(|e| matches!(&e.detail, Detail::File(f) if f.file.raw.as_deref() == Some("sub/../data.txt")))
        .unwrap_or_else(|| panic!("no open of sub/../data.txt:\n{all}"));
    assert_eq!(rel.pid, pid);
    assert!(rel.ret >= 0, "open succeeded: {rel:?}");
    let Detail::File(f) = &rel.detail else {
        unreachable!()
    };
    assert_eq!(f.file.resolution, Resolution::Cwd);
    assert_eq!(f.access.as_deref(), Some("read"));
    assert!(
        opens.iter().any(
            |e| matches!(&e.detail, Detail::File(f) if f.file.resolution == Resolution::Dirfd)
        ),
        "dirfd-relative open resolved through the fd:\n{all}"
    );

    let missing = file_events(&events, Kind::Open, &format!("{d}/missing.txt"));
    assert_eq!(missing.len(), 1, "{all}");
    assert_eq!(missing[0].ret, -2);
    assert_eq!(missing[0].error.as_deref(), Some("ENOENT"));

    let tr = file_events(&events, Kind::Truncate, &data);
    assert_eq!(tr.len(), 1, "{all}");
    assert!(matches!(&tr[0].detail, Detail::File(f) if f.size == Some(2)));

    let ren: Vec<&Event> = events.iter().filter(|e| e.kind == Kind::Rename).collect();
    assert_eq!(ren.len(), 1, "{all}");
    let Detail::Rename(r) = &ren[0].detail else {
        unreachable!()
    };
    assert_eq!(r.from.path, data);
    assert_eq!(r.to.path, format!("{d}/sub/renamed.txt"));
    assert_eq!(ren[0].ret, 0);

    let rm = file_events(&events, Kind::Rmdir, &format!("{d}/gone"));
    assert_eq!(rm.len(), 1, "{all}");
    assert_eq!(rm[0].ret, 0);

    let un = file_events(&events, Kind::Unlink, &unlinked);
    assert_eq!(un.len(), 1, "{all}");
    assert_eq!(un[0].syscall, "unlinkat");
    assert_eq!(un[0].ret, 0);
    assert!(!dir.join("sub/renamed.txt").exists());
    // Only the watched actor and what it forked stream (the kernel filter
    // follows forks; python3 may itself be a shim script with children).
    let mut family = std::collections::HashSet::from([pid]);
    for e in &events {
        assert!(
            family.contains(&e.pid),
            "event from outside the watched tree: {e:?}\n{all}"
        );
        if let Detail::Fork(f) = &e.detail {
            family.insert(f.child_pid);
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

const UNIX_TARGET: &str = "/nonexistent/agentguard.sock";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_events_carry_destination_and_result() {
    network_events_on(SyscallHooks::Auto, "net").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_events_on_per_syscall_tracepoints() {
    network_events_on(SyscallHooks::Tracepoints, "net-tp").await;
}

async fn network_events_on(hooks: SyscallHooks, tag: &str) {
    if !common::privileged() {
        return;
    }
    let dir = tempdir(tag);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let open_port = listener.local_addr().expect("addr").port();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let closed_port = closed.local_addr().expect("addr").port();
    drop(closed);
    let v6 = std::net::TcpListener::bind("[::1]:0").ok();
    let v6_port = v6
        .as_ref()
        .and_then(|l| l.local_addr().ok())
        .map(|a| a.port())
        .unwrap_or(0);
    let script = format!(
        r#"
s = socket.socket(); s.connect(("127.0.0.1", {open_port})); s.close()
s = socket.socket()
try:
    s.connect(("127.0.0.1", {closed_port}))
except ConnectionRefusedError:
    pass
s.close()
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.sendto(b"q", ("127.0.0.1", 5353))
u.sendmsg([b"q"], [], 0, ("127.0.0.1", 5354))
u.close()
s6 = socket.socket(socket.AF_INET6)
try:
    s6.connect(("::ffff:127.0.0.1", {open_port}))
except OSError:
    pass
s6.close()
if {v6_port}:
    s6 = socket.socket(socket.AF_INET6); s6.connect(("::1", {v6_port})); s6.close()
x = socket.socket(socket.AF_UNIX)
try:
    x.connect("{UNIX_TARGET}")
except OSError:
    pass
"#
    );
    let mut sensor = start_hooked(false, hooks).await;
    let (pid, events) = run_actor(&mut sensor, &dir, &script, |evs| {
        evs.iter().any(
            |e| matches!(&e.detail, Detail::Net(n) if n.unix_path.as_deref() == Some(UNIX_TARGET)),
        )
    })
    .await;
    let all = common::dump(&events);
    let net: Vec<(&Event, &agentguard::event::NetDetail)> = events
        .iter()
        .filter_map(|e| match &e.detail {
            Detail::Net(n) => Some((e, n)),
            _ => None,
        })
        .collect();
    let find = |kind: Kind, fam: &str, port: u16| {
        net.iter()
            .find(|(e, n)| e.kind == kind && n.family == fam && n.port == Some(port))
            .unwrap_or_else(|| panic!("no {kind} {fam} port {port}:\n{all}"))
    };
    let (ok, n) = find(Kind::Connect, "inet", open_port);
    assert_eq!(ok.ret, 0);
    assert_eq!(ok.pid, pid);
    assert_eq!(n.addr.as_deref(), Some("127.0.0.1"));
    let (refused, _) = find(Kind::Connect, "inet", closed_port);
    assert_eq!(refused.error.as_deref(), Some("ECONNREFUSED"));
    let (sent, n) = find(Kind::Send, "inet", 5353);
    assert_eq!(sent.syscall, "sendto");
    assert_eq!(sent.ret, 1);
    assert_eq!(n.len, Some(1));
    let (sent, _) = find(Kind::Send, "inet", 5354);
    assert_eq!(sent.syscall, "sendmsg");
    let (_, mapped) = find(Kind::Connect, "inet6", open_port);
    assert!(mapped.v4_mapped, "{all}");
    assert_eq!(mapped.addr.as_deref(), Some("127.0.0.1"));
    if v6_port != 0 {
        let (c6, n) = find(Kind::Connect, "inet6", v6_port);
        assert_eq!(c6.ret, 0);
        assert_eq!(n.addr.as_deref(), Some("::1"));
    }
    // Match on the path: glibc may connect to other unix sockets first (nscd on some hosts).
    let unix = net
        .iter()
        .find(|(_, n)| n.family == "unix" && n.unix_path.as_deref() == Some(UNIX_TARGET))
        .unwrap_or_else(|| panic!("no unix connect to {UNIX_TARGET}:\n{all}"));
    assert_eq!(unix.0.error.as_deref(), Some("ENOENT"));
    drop(listener);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_fork_exit_of_descendants_are_streamed() {
    if !common::privileged() {
        return;
    }
    let dir = tempdir("exec");
    // A copied binary: its path is not a well-known one.
    std::fs::copy("/bin/true", dir.join("agent-tool")).expect("copy /bin/true");
    // Run through a symlink: the event names the binary loaded as well. The
    // daemon reads that from /proc/PID/exe, so the program must outlive the
    // read (a best-effort field, see docs/events.md).
    std::fs::copy("/bin/sleep", dir.join("agent-sleep")).expect("copy /bin/sleep");
    std::os::unix::fs::symlink("agent-sleep", dir.join("tool-link")).expect("symlink");
    let d = dir.display().to_string();
    let script = r#"
import subprocess
subprocess.run(["./agent-tool", "--flag", "value with space"], check=True)
subprocess.run(["./tool-link", "1"], check=True)
r = subprocess.run(["sh", "-c", "exit 7"])
assert r.returncode == 7
"#;
    let mut sensor = start(false).await;
    let tool = format!("{d}/agent-tool");
    let (pid, events) = run_actor(&mut sensor, &dir, script, |evs| {
        evs.iter().filter(|e| e.kind == Kind::Exit).count() >= 4
    })
    .await;
    let all = common::dump(&events);
    let exec = events
        .iter()
        .find(|e| e.kind == Kind::Exec && e.path() == Some(tool.as_str()))
        .unwrap_or_else(|| panic!("no exec of {tool}:\n{all}"));
    assert_eq!(exec.ret, 0);
    assert_ne!(exec.pid, pid, "the tool runs in a forked child");
    assert_eq!(exec.ppid, pid);
    assert_eq!(exec.comm, "agent-tool", "comm refreshed after exec");
    let Detail::Exec(x) = &exec.detail else {
        unreachable!()
    };
    assert_eq!(x.argv, vec!["./agent-tool", "--flag", "value with space"]);
    assert_eq!(x.file.resolution, Resolution::Cwd);
    assert_eq!(x.binary, None, "run by its own path:\n{all}");
    let link = format!("{d}/tool-link");
    let linked = events
        .iter()
        .find_map(|e| match &e.detail {
            Detail::Exec(x) if x.file.path == link => Some(x),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no exec of {link}:\n{all}"));
    assert_eq!(
        linked.binary.as_deref(),
        Some(format!("{d}/agent-sleep").as_str()),
        "{all}"
    );
    let fork = events
        .iter()
        .find(|e| matches!(&e.detail, Detail::Fork(f) if f.child_pid == exec.pid))
        .unwrap_or_else(|| panic!("no fork of {}:\n{all}", exec.pid));
    assert_eq!(fork.pid, pid);
    let exit7 = events
        .iter()
        .find(|e| matches!(&e.detail, Detail::Exit(x) if x.code == Some(7)))
        .unwrap_or_else(|| panic!("no exit code 7:\n{all}"));
    assert_ne!(exit7.pid, pid);
    assert!(
        events.iter().any(|e| e.kind == Kind::Exit && e.pid == pid),
        "actor's own exit:\n{all}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unwatched_processes_stream_nothing() {
    if !common::privileged() {
        return;
    }
    let dir = tempdir("filter");
    std::fs::write(dir.join("marker-watched"), b"").expect("write");
    std::fs::write(dir.join("marker-unwatched"), b"").expect("write");
    let mut sensor = start(false).await;
    // Unwatched actor: no filter entry, default is "none".
    let mut quiet = Actor::spawn(&dir, "open('marker-unwatched').close()");
    quiet.go();
    quiet.wait();
    let d = dir.display().to_string();
    let watched = format!("{d}/marker-watched");
    let (_, events) = run_actor(&mut sensor, &dir, "open('marker-watched').close()", |evs| {
        !file_events(evs, Kind::Open, &watched).is_empty()
    })
    .await;
    let all = common::dump(&events);
    assert!(
        !file_events(&events, Kind::Open, &watched).is_empty(),
        "{all}"
    );
    assert!(
        file_events(&events, Kind::Open, &format!("{d}/marker-unwatched")).is_empty(),
        "{all}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn io_uring_setup_is_reported() {
    if !common::privileged() {
        return;
    }
    let dir = tempdir("uring");
    let script = r#"
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
params = ctypes.create_string_buffer(120)
fd = libc.syscall(425, 4, params)
if fd >= 0:
    os.close(fd)
"#;
    let mut sensor = start(false).await;
    let (pid, events) = run_actor(&mut sensor, &dir, script, |evs| {
        evs.iter().any(|e| e.kind == Kind::IoUringSetup)
    })
    .await;
    let all = common::dump(&events);
    let ev = events
        .iter()
        .find(|e| e.kind == Kind::IoUringSetup)
        .unwrap_or_else(|| panic!("no io_uring_setup:\n{all}"));
    assert_eq!(ev.pid, pid);
    assert_eq!(ev.syscall, "io_uring_setup");
    let _ = std::fs::remove_dir_all(&dir);
}
