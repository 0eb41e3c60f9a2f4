//! The `agentguard` binary, run as a user would: `events` and `check`.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn events_prints_relative_open_as_absolute_json() {
    if !common::privileged() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("agentguard-cli-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("nested")).expect("mkdir");
    let dir = dir.canonicalize().expect("canonicalize");
    std::fs::write(dir.join("nested/cli-marker.txt"), b"x").expect("write");
    let ready = dir.join("ready");
    let mut daemon = common::daemon::spawn_ready(
        Command::new(env!("CARGO_BIN_EXE_agentguard"))
            .args(["events", "--kind", "open,connect", "--comm", "cat"])
            .stdout(Stdio::piped()),
        &ready,
        None,
    );
    let st = Command::new("cat")
        .arg("nested/./cli-marker.txt")
        .current_dir(&dir)
        .stdout(Stdio::null())
        .status()
        .expect("run cat");
    assert!(st.success());
    let want = dir.join("nested/cli-marker.txt").display().to_string();
    let stdout = daemon.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut found = None;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(60) {
        let Ok(line) = rx.recv_timeout(Duration::from_secs(1)) else {
            continue;
        };
        let v: serde_json::Value = serde_json::from_str(&line).expect("each line is JSON");
        assert_eq!(v["comm"], "cat", "--comm filter: {line}");
        if v["file"]["path"] == want.as_str() {
            found = Some(v);
            break;
        }
    }
    // SAFETY: plain kill(2) of our own child.
    unsafe { libc::kill(daemon.id() as i32, libc::SIGINT) };
    // Bounded: a daemon that ignores SIGINT fails the test instead of hanging it.
    let stop = Instant::now();
    let st = loop {
        if let Some(st) = daemon.try_wait().expect("wait") {
            break st;
        }
        if stop.elapsed() > Duration::from_secs(10) {
            let _ = daemon.kill();
            panic!("agentguard events ignored SIGINT for 10 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        st.success(),
        "agentguard events exits cleanly on SIGINT: {st}"
    );
    let v = found.unwrap_or_else(|| panic!("no open event for {want}"));
    assert_eq!(v["kind"], "open");
    assert_eq!(v["file"]["raw"], "nested/./cli-marker.txt");
    assert_eq!(v["file"]["resolution"], "cwd");
    assert!(v["ret"].as_i64().is_some_and(|r| r >= 0));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn check_reports_probes_and_capabilities() {
    if !common::privileged() {
        return;
    }
    let out = Command::new(env!("CARGO_BIN_EXE_agentguard"))
        .args(["check", "--json"])
        .output()
        .expect("run agentguard check");
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("check --json is JSON");
    let probes = v["probes"].as_array().expect("probes array");
    let status = |name: &str| {
        probes
            .iter()
            .find(|p| p["name"] == name)
            .map(|p| p["status"].clone())
            .unwrap_or_else(|| panic!("probe {name} missing"))
    };
    // Each verdict agrees with what the kernel shows without agentguard.
    common::KernelFacts::of_this_host().agree_with(&v);
    // The sensor's needs are met wherever this suite runs as root (it loads
    // the sensor in other tests).
    for p in ["ringbuf", "tracepoint_prog", "send_signal"] {
        assert_eq!(status(p), "supported", "{p}");
    }
    let table = Command::new(env!("CARGO_BIN_EXE_agentguard"))
        .arg("check")
        .output()
        .expect("run agentguard check");
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(
        text.contains("bpf_lsm") && text.contains("sock_addr"),
        "{text}"
    );
}

#[test]
fn ps_lists_agent_processes_and_labelled_containers() {
    if !common::docker_ready() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("agentguard-ps-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::copy("/bin/sleep", dir.join("aider")).expect("copy sleep");
    let mut agent = Command::new(dir.join("aider"))
        .arg("30")
        .spawn()
        .expect("spawn fake aider");
    let name = format!("agtest-ps-{}", std::process::id());
    let _guard = common::ContainerGuard(name.clone());
    common::docker(&[
        "run",
        "-d",
        "--name",
        &name,
        "--label",
        "agentguard.io/agent=goose",
        common::TEST_IMAGE,
        "sleep",
        "30",
    ]);
    let out = Command::new(env!("CARGO_BIN_EXE_agentguard"))
        .args(["ps", "--json"])
        .output()
        .expect("run agentguard ps");
    let _ = agent.kill();
    let _ = agent.wait();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("ps --json is JSON");
    let agents = v["agents"].as_array().expect("agents");
    assert!(
        agents
            .iter()
            .any(|a| a["pid"] == agent.id() && a["name"] == "aider"),
        "{v}"
    );
    let containers = v["containers"].as_array().expect("containers");
    let c = containers
        .iter()
        .find(|c| c["name"] == name.as_str())
        .unwrap_or_else(|| panic!("{name} not listed: {v}"));
    assert_eq!(c["labels"]["agentguard.io/agent"], "goose");
    let table = Command::new(env!("CARGO_BIN_EXE_agentguard"))
        .arg("ps")
        .output()
        .expect("ps");
    assert!(String::from_utf8_lossy(&table.stdout).contains(&name));
    let _ = std::fs::remove_dir_all(&dir);
}

/// `events --watch agents`: the kernel streams file opens only for agents
/// and their descendants; other processes send exec/fork/exit only.
#[test]
fn watch_agents_streams_only_agent_workloads() {
    if !common::privileged() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("agentguard-watch-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("mkdir");
    let dir = dir.canonicalize().expect("canonicalize");
    std::fs::copy("/bin/sh", dir.join("claude")).expect("copy /bin/sh");
    std::fs::write(dir.join("agent-file"), b"x").expect("write");
    std::fs::write(dir.join("other-file"), b"x").expect("write");
    let ready = dir.join("ready");
    let out = dir.join("events.jsonl");
    let mut daemon = common::daemon::spawn_ready(
        Command::new(env!("CARGO_BIN_EXE_agentguard"))
            .args(["events", "--watch", "agents", "--output"])
            .arg(&out)
            .stdout(Stdio::null()),
        &ready,
        None,
    );
    // The agent runs a while (its exec is seen, it gets widened), then its
    // child cats a file; an ordinary sh does the same.
    let agent = Command::new(dir.join("claude"))
        .args(["-c", "sleep 1; cat agent-file; sleep 0.2"])
        .current_dir(&dir)
        .stdout(Stdio::null())
        .status()
        .expect("run fake claude");
    assert!(agent.success());
    let other = Command::new("/bin/sh")
        .args(["-c", "sleep 1; cat other-file; sleep 0.2"])
        .current_dir(&dir)
        .stdout(Stdio::null())
        .status()
        .expect("run sh");
    assert!(other.success());
    std::thread::sleep(Duration::from_millis(500));
    // SAFETY: plain kill(2) of our own child.
    unsafe { libc::kill(daemon.id() as i32, libc::SIGINT) };
    let _ = daemon.wait();
    let lines = std::fs::read_to_string(&out).expect("events file");
    let opens: Vec<serde_json::Value> = lines
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["kind"] == "open")
        .collect();
    let path = |name: &str| dir.join(name).display().to_string();
    let agent_open = opens
        .iter()
        .find(|v| v["file"]["path"] == path("agent-file").as_str())
        .unwrap_or_else(|| panic!("agent's open not streamed:\n{lines}"));
    assert_eq!(agent_open["identity"]["agent"]["name"], "claude");
    assert!(
        !opens
            .iter()
            .any(|v| v["file"]["path"] == path("other-file").as_str()),
        "a non-agent open was streamed"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn report_commands_end_quietly_when_the_reader_goes_away() {
    // `true` exits long before `check` has probed the kernel and prints.
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "{} check --json | true",
            env!("CARGO_BIN_EXE_agentguard")
        ))
        .stderr(Stdio::piped())
        .output()
        .expect("run sh");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert!(!err.contains("Broken pipe"), "{err}");
}
