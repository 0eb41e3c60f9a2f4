//! Operating the real daemon: `/metrics` scraped while it sees real events,
//! `agentguard status` over its socket, and SIGHUP reloads (a broken policy
//! is refused with file:line, the last good one stays in force).

mod common;

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_agentguard");

/// The daemons of these tests share the pinned maps in /sys/fs/bpf: one
/// test at a time.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

fn scrape(addr: &str) -> String {
    let mut s = TcpStream::connect(addr).expect("connect metrics");
    s.set_read_timeout(Some(Duration::from_secs(5))).ok();
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

/// Value of the first sample of `name` whose labels contain `labels`.
fn sample(text: &str, name: &str, labels: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(name) && l.contains(labels))
        .find_map(|l| l.rsplit(' ').next()?.parse().ok())
}

fn status(sock: &Path) -> serde_json::Value {
    let out = Command::new(BIN)
        .args(["status", "--json", "--socket"])
        .arg(sock)
        .output()
        .expect("agentguard status");
    assert!(
        out.status.success(),
        "status failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("status JSON")
}

/// The repository's policy pack.
fn pack() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies")
}

/// A fresh work directory for test `tag`: `policies/` holding `files` of
/// the pack (mode 0755, as a root-owned policy directory must be).
fn scratch(tag: &str, files: &[&str]) -> (std::path::PathBuf, std::path::PathBuf) {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = std::env::temp_dir().join(format!("agentguard-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let pol = dir.join("policies");
    std::fs::create_dir_all(&pol).expect("mkdir");
    std::fs::set_permissions(&pol, std::fs::Permissions::from_mode(0o755)).expect("chmod dir");
    for f in files {
        std::fs::copy(pack().join(f), pol.join(f)).expect("copy policy");
    }
    (dir, pol)
}

/// Removes what the daemons left pinned, and `dir`.
fn clean_up(dir: &Path) {
    let _ = Command::new(BIN)
        .args(["run", "--cleanup"])
        .stderr(Stdio::null())
        .status();
    let _ = std::fs::remove_dir_all(dir);
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn metrics_status_and_sighup_reload_on_the_running_daemon() {
    if !common::privileged() {
        return;
    }
    let _serial = one_at_a_time();
    let (dir, pol) = scratch("ops", &["files.yaml", "exec.yaml"]);
    let pack = pack();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let addr = format!("127.0.0.1:{port}");
    let sock = dir.join("status.sock");
    let ready = dir.join("ready");
    let mut daemon = common::daemon::spawn_ready(
        Command::new(BIN)
            .args(["run", "--policies"])
            .arg(&pol)
            .args(["--metrics-addr", &addr, "--alerts-file"])
            .arg(dir.join("alerts.jsonl"))
            .arg("--status-socket")
            .arg(&sock)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("daemon.log")).expect("log")),
        &ready,
        Some(&dir.join("daemon.log")),
    );
    let log = || std::fs::read_to_string(dir.join("daemon.log")).unwrap_or_default();

    // Real events move the counters.
    let before = sample(&scrape(&addr), "agentguard_events_total", "kind=\"exec\"").unwrap_or(0.0);
    for _ in 0..5 {
        let st = Command::new("/bin/true").status().expect("true");
        assert!(st.success());
    }
    wait_for("exec events counted", || {
        sample(&scrape(&addr), "agentguard_events_total", "kind=\"exec\"")
            .is_some_and(|v| v >= before + 5.0)
    });
    let text = scrape(&addr);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(
        text.contains("# TYPE agentguard_events_total counter"),
        "{text}"
    );
    assert!(sample(&text, "agentguard_policy_evaluations_total", "").is_some_and(|v| v > 0.0));
    assert!(text.contains("agentguard_build_info"), "{text}");

    let s = status(&sock);
    assert_eq!(s["pid"], daemon.id());
    // The capabilities status reports are the probed ones (`check`), not
    // assumed.
    let check: serde_json::Value = serde_json::from_slice(
        &Command::new(BIN)
            .args(["check", "--json"])
            .output()
            .expect("check")
            .stdout,
    )
    .expect("check JSON");
    let probe = |name: &str| {
        check["probes"]
            .as_array()
            .and_then(|p| p.iter().find(|p| p["name"] == name))
            .map(|p| p["status"] == "supported")
    };
    let caps = &s["capabilities"];
    assert_eq!(caps["kernel_kill"].as_bool(), probe("send_signal"), "{s}");
    assert_eq!(caps["lsm"].as_bool(), probe("bpf_lsm"), "{caps} vs {check}");
    assert_eq!(caps["network_deny"], true, "{s}");
    assert!(caps["syscall_hooks"].is_string(), "{s}");
    assert!(s["probes"].as_array().is_some_and(|p| p.len() > 10), "{s}");
    let names: Vec<&str> = s["policies"]
        .as_array()
        .expect("policies")
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert!(names.contains(&"files") && names.contains(&"exec"), "{s}");
    // The syscall hooks taken are named among the probes.
    assert!(
        s["probes"].as_array().is_some_and(|p| p
            .iter()
            .any(|p| p == "raw_syscalls/sys_enter" || p == "syscalls/sys_enter_openat")),
        "{s}"
    );

    // The containers the daemon knows are listed, with their agent.
    if common::docker_ready() {
        let name = format!("agtest-ops-{}", std::process::id());
        let _guard = common::ContainerGuard(name.clone());
        common::docker(&[
            "run",
            "-d",
            "--name",
            &name,
            "--label",
            "agentguard.io/agent=opsbot",
            common::TEST_IMAGE,
            "sleep",
            "60",
        ]);
        wait_for("the container in status", || {
            status(&sock)["containers"].as_array().is_some_and(|cs| {
                cs.iter().any(|c| {
                    c["name"] == name.as_str()
                        && c["agent"] == "opsbot"
                        && c["image"] == common::TEST_IMAGE
                })
            })
        });
    }

    // A broken policy: refused with file:line, the old set stays.
    std::fs::write(
        pol.join("broken.yaml"),
        "name: broken\nrules:\n  - name: x\n    bogus: 1\n",
    )
    .expect("write broken");
    // SAFETY: kill(2) of our own child.
    unsafe { libc::kill(daemon.id() as i32, libc::SIGHUP) };
    wait_for("the reload failure", || {
        sample(
            &scrape(&addr),
            "agentguard_policy_reload_failures_total",
            "",
        )
        .is_some_and(|v| v >= 1.0)
    });
    let s = status(&sock);
    let err = s["last_reload_error"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(err.contains("broken.yaml:"), "no file:line in {err:?}");
    assert!(err.contains("bogus"), "{err}");
    let still: Vec<&str> = s["policies"]
        .as_array()
        .expect("policies")
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert!(still.contains(&"files"), "last good set dropped: {s}");
    // The refused change is on the alert feed, with both content hashes.
    let alerts = || -> Vec<serde_json::Value> {
        std::fs::read_to_string(dir.join("alerts.jsonl"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .filter(|a: &serde_json::Value| a["event"]["kind"] == "policy_reload")
            .collect()
    };
    wait_for("the refused reload's audit alert", || !alerts().is_empty());
    let refused = &alerts()[0];
    assert_eq!(
        refused["decision"]["rule"], "policy-reload-refused",
        "{refused}"
    );
    let r = &refused["event"]["policy_reload"];
    assert_eq!(r["applied"], false, "{refused}");
    assert_eq!(r["files_added"][0], "broken.yaml", "{refused}");
    assert!(
        r["error"].as_str().is_some_and(|e| e.contains("bogus")),
        "{refused}"
    );
    let first_hash = r["old_hash"].as_str().expect("old_hash").to_owned();
    assert_eq!(first_hash.len(), 64, "{refused}");
    assert_ne!(r["new_hash"], first_hash.as_str(), "{refused}");
    assert!(
        daemon.try_wait().expect("wait").is_none(),
        "daemon died:\n{}",
        log()
    );

    // Fixed: the next SIGHUP applies it.
    std::fs::remove_file(pol.join("broken.yaml")).expect("rm");
    std::fs::copy(pack.join("network.yaml"), pol.join("network.yaml")).expect("copy");
    // SAFETY: as above.
    unsafe { libc::kill(daemon.id() as i32, libc::SIGHUP) };
    wait_for("the reload", || {
        sample(&scrape(&addr), "agentguard_policy_reloads_total", "").is_some_and(|v| v >= 1.0)
    });
    let s = status(&sock);
    assert!(s["last_reload_error"].is_null(), "{s}");
    assert!(
        s["policies"]
            .as_array()
            .is_some_and(|p| p.iter().any(|p| p["name"] == "network")),
        "{s}"
    );
    // The applied change: against the last set in force, with the rules
    // it brought.
    wait_for("the reload's audit alert", || alerts().len() >= 2);
    let applied = &alerts()[1];
    assert_eq!(applied["decision"]["rule"], "policy-reload", "{applied}");
    let r = &applied["event"]["policy_reload"];
    assert_eq!(r["applied"], true, "{applied}");
    assert_eq!(r["old_hash"], first_hash.as_str(), "{applied}");
    assert_ne!(r["new_hash"], first_hash.as_str(), "{applied}");
    assert_eq!(
        r["files_added"],
        serde_json::json!(["network.yaml"]),
        "{applied}"
    );
    assert!(
        r["rules_added"].as_array().is_some_and(|a| !a.is_empty()
            && a.iter()
                .all(|n| n.as_str().is_some_and(|n| n.starts_with("network/")))),
        "{applied}"
    );
    assert!(r.get("rules_removed").is_none(), "{applied}");

    // SIGTERM stops it cleanly.
    // SAFETY: as above.
    unsafe { libc::kill(daemon.id() as i32, libc::SIGTERM) };
    let st = daemon.wait().expect("wait");
    assert!(st.success(), "exit {st}:\n{}", log());
    clean_up(&dir);
}

/// `agentguard run` on `pol` with status socket `sock`; its alerts and log
/// are named after `tag` in `dir`.
fn daemon_cmd(dir: &Path, pol: &Path, sock: &Path, tag: &str) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(["run", "--policies"])
        .arg(pol)
        .arg("--alerts-file")
        .arg(dir.join(format!("alerts-{tag}.jsonl")))
        .arg("--status-socket")
        .arg(sock)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join(format!("daemon-{tag}.log"))).expect("log"));
    cmd
}

/// [`daemon_cmd`] started and ready (ready file `ready-TAG` in `dir`).
fn start_daemon(dir: &Path, pol: &Path, sock: &Path, tag: &str) -> std::process::Child {
    common::daemon::spawn_ready(
        &mut daemon_cmd(dir, pol, sock, tag),
        &dir.join(format!("ready-{tag}")),
        Some(&dir.join(format!("daemon-{tag}.log"))),
    )
}

/// One daemon per status socket: a second one is refused before it loads
/// anything (no doubled enforcement), with an error naming the socket;
/// after a `kill -9` the stale socket is replaced and `status` answers.
#[test]
fn a_second_daemon_is_refused_and_a_killed_ones_socket_is_replaced() {
    if !common::privileged() {
        return;
    }
    let _serial = one_at_a_time();
    let (dir, pol) = scratch("ops2", &["files.yaml"]);
    let sock = dir.join("status.sock");
    let log = |tag: &str| {
        std::fs::read_to_string(dir.join(format!("daemon-{tag}.log"))).unwrap_or_default()
    };

    let mut first = start_daemon(&dir, &pol, &sock, "a");
    // Not waited for: it must be refused.
    let mut second = daemon_cmd(&dir, &pol, &sock, "b")
        .spawn()
        .expect("spawn the second daemon");
    let deadline = Instant::now() + Duration::from_secs(30);
    let st = loop {
        if let Some(st) = second.try_wait().expect("wait") {
            break st;
        }
        assert!(
            Instant::now() < deadline,
            "the second daemon keeps running:\n{}",
            log("b")
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(!st.success(), "second daemon: {st}");
    assert!(
        log("b").contains("another agentguard is serving status"),
        "{}",
        log("b")
    );
    assert!(!dir.join("ready-b").exists());
    assert_eq!(
        status(&sock)["pid"],
        first.id(),
        "the first daemon still answers"
    );

    // kill -9: the socket file stays behind, nobody answers on it.
    first.kill().expect("kill -9");
    let _ = first.wait();
    assert!(sock.exists());
    let mut third = start_daemon(&dir, &pol, &sock, "c");
    assert_eq!(status(&sock)["pid"], third.id(), "{}", log("c"));
    // SAFETY: kill(2) of our own child.
    unsafe { libc::kill(third.id() as i32, libc::SIGTERM) };
    let st = third.wait().expect("wait");
    assert!(st.success(), "exit {st}:\n{}", log("c"));
    clean_up(&dir);
}

/// A rule whose action this host cannot carry out (the pack's
/// `docker-socket` deny of an open, without BPF-LSM) is said at load:
/// `status` lists it and `--strict` refuses to start. Compared with the
/// kernel's own answer about BPF-LSM, so it holds on either kind of host.
#[test]
fn rules_the_host_cannot_carry_out_are_reported_and_strict_refuses_them() {
    if !common::privileged() {
        return;
    }
    let _serial = one_at_a_time();
    let lsm = agentguard::sensor::features::bpf_lsm_status()
        == agentguard::sensor::features::Status::Supported;
    let (dir, pol) = scratch("ops3", &["files.yaml"]);
    let sock = dir.join("status.sock");

    let mut d = start_daemon(&dir, &pol, &sock, "a");
    let s = status(&sock);
    let degraded: Vec<String> = s["degraded_rules"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(
        degraded
            .iter()
            .any(|d| d.starts_with("files/docker-socket:")),
        !lsm,
        "BPF-LSM {lsm}: {degraded:?}"
    );
    // SAFETY: kill(2) of our own child.
    unsafe { libc::kill(d.id() as i32, libc::SIGTERM) };
    let _ = d.wait();

    let out = Command::new(BIN)
        .args(["run", "--strict", "--policies"])
        .arg(&pol)
        .arg("--status-socket")
        .arg(&sock)
        .arg("--ready-file")
        .arg(dir.join("ready-strict"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn strict");
    if lsm {
        // Nothing degraded: strict starts.
        wait_for("the strict daemon", || dir.join("ready-strict").exists());
        // SAFETY: as above.
        unsafe { libc::kill(out.id() as i32, libc::SIGTERM) };
        let _ = out.wait_with_output();
    } else {
        let out = out.wait_with_output().expect("wait strict");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "strict started:\n{err}");
        assert!(
            err.contains("strict") && err.contains("files/docker-socket"),
            "{err}"
        );
        assert!(!dir.join("ready-strict").exists());
    }
    clean_up(&dir);
}

/// Only root may change enforcement: a policy file others can write is
/// refused at start (named, with the fix), and a reload that finds one is
/// refused with the last good policies kept.
#[test]
fn policy_files_others_can_write_are_refused() {
    if !common::privileged() {
        return;
    }
    use std::os::unix::fs::PermissionsExt as _;
    let _serial = one_at_a_time();
    let (dir, pol) = scratch("ops4", &["files.yaml"]);
    let mode = |p: &Path, m: u32| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).expect("chmod")
    };
    let sock = dir.join("status.sock");

    mode(&pol.join("files.yaml"), 0o664);
    let out = Command::new(BIN)
        .args(["run", "--policies"])
        .arg(&pol)
        .arg("--status-socket")
        .arg(&sock)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "started with a group-writable policy:\n{err}"
    );
    assert!(
        err.contains("files.yaml") && err.contains("chmod go-w"),
        "{err}"
    );

    mode(&pol.join("files.yaml"), 0o644);
    let mut d = start_daemon(&dir, &pol, &sock, "a");
    std::fs::copy(pack().join("exec.yaml"), pol.join("exec.yaml")).expect("copy");
    mode(&pol.join("exec.yaml"), 0o666);
    // SAFETY: kill(2) of our own child.
    unsafe { libc::kill(d.id() as i32, libc::SIGHUP) };
    wait_for("the refused reload", || {
        status(&sock)["last_reload_error"]
            .as_str()
            .is_some_and(|e| e.contains("exec.yaml") && e.contains("writable"))
    });
    let names: Vec<String> = status(&sock)["policies"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|p| p["name"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(names, ["files"], "the last good set stays");
    // SAFETY: as above.
    unsafe { libc::kill(d.id() as i32, libc::SIGTERM) };
    let _ = d.wait();
    clean_up(&dir);
}

/// The systemd unit is `Type=notify`: the daemon says READY=1 only once
/// `status` answers (probes attached, policy in force), RELOADING=1 then
/// READY=1 around a SIGHUP reload, and STOPPING=1 at SIGTERM.
#[test]
fn the_service_manager_is_told_ready_reloading_and_stopping() {
    if !common::privileged() {
        return;
    }
    let _serial = one_at_a_time();
    let (dir, pol) = scratch("notify", &["files.yaml"]);
    let sock = dir.join("status.sock");
    let notify = std::os::unix::net::UnixDatagram::bind(dir.join("notify.sock")).expect("bind");
    notify
        .set_read_timeout(Some(Duration::from_secs(60)))
        .expect("timeout");
    let recv = || {
        let mut buf = [0u8; 512];
        let n = notify.recv(&mut buf).expect("a notify message in 60 s");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let mut d = Command::new(BIN)
        .args(["run", "--policies"])
        .arg(&pol)
        .arg("--alerts-file")
        .arg(dir.join("alerts.jsonl"))
        .arg("--status-socket")
        .arg(&sock)
        .env("NOTIFY_SOCKET", dir.join("notify.sock"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("daemon.log")).expect("log"))
        .spawn()
        .expect("spawn daemon");
    let ready = recv();
    assert!(ready.starts_with("READY=1\n"), "{ready}");
    assert!(ready.contains("STATUS=guarding"), "{ready}");
    // Ready means ready: status answers at once.
    assert_eq!(status(&sock)["pid"], d.id());
    // SAFETY: kill(2) of our own child.
    unsafe { libc::kill(d.id() as i32, libc::SIGHUP) };
    let reloading = recv();
    assert!(
        reloading.starts_with("RELOADING=1\nMONOTONIC_USEC="),
        "{reloading}"
    );
    assert_eq!(recv(), "READY=1");
    // SAFETY: as above.
    unsafe { libc::kill(d.id() as i32, libc::SIGTERM) };
    assert_eq!(recv(), "STOPPING=1");
    let st = d.wait().expect("wait");
    assert!(st.success(), "exit {st}");
    clean_up(&dir);
}

/// Kernel entries keyed by a pid whose process has exited are removed by
/// the daemon's housekeeping: one written after the exit probe ran (a late
/// event, a quarantine after a userspace kill) would otherwise wait for the
/// next process given that pid (pids wrap at 32768 here; a soak saw host
/// `runc` processes killed that way). A live process's entry, one the
/// daemon never wrote (a fork inherits its parent's in the kernel), stays.
#[test]
fn entries_of_exited_pids_are_swept_and_live_ones_kept() {
    use agentguard_common::enforce::Taint;
    use aya::maps::{HashMap as BpfHashMap, Map, MapData};

    if !common::privileged() {
        return;
    }
    let _serial = one_at_a_time();
    let (dir, pol) = scratch("ops-sweep", &["files.yaml"]);
    let sock = dir.join("status.sock");
    // Killed however the test ends: a panic must not leave it running.
    let mut daemon = common::daemon::Daemon {
        child: start_daemon(&dir, &pol, &sock, "a"),
        dir: dir.clone(),
    };
    let open = |name: &str| {
        MapData::from_pin(format!("/sys/fs/bpf/agentguard/{name}"))
            .unwrap_or_else(|e| panic!("pinned {name}: {e}"))
    };
    let mut tasks: BpfHashMap<MapData, u32, u32> =
        BpfHashMap::try_from(Map::HashMap(open("ENFORCE_TASKS"))).expect("ENFORCE_TASKS");
    let mut taints: BpfHashMap<MapData, u64, Taint> =
        BpfHashMap::try_from(Map::LruHashMap(open("TAINTS"))).expect("TAINTS");

    let mut done = Command::new("true").spawn().expect("spawn true");
    let dead = done.id();
    done.wait().expect("wait true");
    let mut live = Command::new("sleep")
        .arg("60")
        .spawn()
        .expect("spawn sleep");
    let taint = Taint {
        rule: 0,
        _pad: 0,
        ts_ns: 1,
    };
    tasks.insert(dead, u32::MAX, 0).expect("write dead entry");
    tasks.insert(live.id(), 1, 0).expect("write live entry");
    taints
        .insert(u64::from(dead), taint, 0)
        .expect("write dead taint");
    taints
        .insert(u64::from(live.id()), taint, 0)
        .expect("write live taint");

    let deadline = Instant::now() + Duration::from_secs(20);
    while tasks.get(&dead, 0).is_ok() || taints.get(&u64::from(dead), 0).is_ok() {
        assert!(
            Instant::now() < deadline,
            "entries of exited pid {dead} still in the kernel after 20 s"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        tasks.get(&live.id(), 0).ok(),
        Some(1),
        "a live process's entry went"
    );
    assert!(
        taints.get(&u64::from(live.id()), 0).is_ok(),
        "a live process's taint went"
    );

    let _ = tasks.remove(&live.id());
    let _ = taints.remove(&u64::from(live.id()));
    let _ = live.kill();
    let _ = live.wait();
    // SAFETY: kill(2) of our own child.
    unsafe { libc::kill(daemon.child.id() as i32, libc::SIGTERM) };
    let st = daemon.child.wait().expect("wait");
    assert!(st.success(), "daemon exit {st}");
    clean_up(&dir);
}
