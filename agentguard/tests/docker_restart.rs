//! The Docker watcher survives a dockerd restart: containers started after
//! it are described again. Its own test binary, because restarting the
//! engine stops every container (cargo runs test binaries one at a time).

mod common;

use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use agentguard::event::Kind;
use agentguard::identity::resolver::{ContainerMap, Resolver, DEFAULT_AGENTS};
use agentguard::identity::stage::IdentityStage;
use agentguard::identity::watch::{self, WatchStatus};
use agentguard::sensor::{Sensor, SensorOptions};

const DOCKERD_LOG: &str = "/var/log/agentguard-dockerd.log";

fn pids_of(name: &str) -> Vec<u32> {
    let Ok(out) = Command::new("pidof").arg(name).output() else {
        return Vec::new();
    };
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

fn dockerd_pid() -> Option<u32> {
    pids_of("dockerd").first().copied()
}

/// Whether `pid` still runs. A zombie counts as gone: when `cargo xtask test`
/// started dockerd, xtask is its parent and only reaps it later.
fn running(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised comm, which may hold spaces.
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z') && !rest.starts_with('X')),
        Err(_) => false,
    }
}

/// Stops dockerd (SIGTERM, as an operator's restart would) and starts it
/// again the way `cargo xtask setup` does.
fn restart_dockerd() {
    let pid = dockerd_pid().expect("dockerd runs");
    // SAFETY: kill(2) on a pid we just read; no memory is involved.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGTERM) }, 0);
    let deadline = Instant::now() + Duration::from_secs(60);
    while running(pid) {
        assert!(Instant::now() < deadline, "dockerd did not stop");
        std::thread::sleep(Duration::from_millis(100));
    }
    let st = Command::new("sh")
        .arg("-c")
        .arg(format!("setsid dockerd >>{DOCKERD_LOG} 2>&1 < /dev/null &"))
        .stdout(Stdio::null())
        .status()
        .expect("start dockerd");
    assert!(st.success());
    while !common::docker_up() {
        assert!(
            Instant::now() < deadline,
            "dockerd did not come back; see {DOCKERD_LOG}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

async fn wait_connections(status: &WatchStatus, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while status.connections.load(Ordering::Relaxed) < n {
        assert!(Instant::now() < deadline, "watcher did not (re)connect");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watcher_recovers_after_dockerd_restart() {
    if !common::docker_ready() {
        return;
    }
    let mut sensor = Sensor::start(&SensorOptions::default()).expect("sensor");
    let map = ContainerMap::default();
    let (wanted, status) = watch::spawn_docker_status(map.clone(), None);
    let mut stage = IdentityStage::new(
        Resolver::new(map, DEFAULT_AGENTS),
        wanted,
        Duration::from_secs(2),
    );
    wait_connections(&status, 1).await;
    tokio::task::spawn_blocking(restart_dockerd)
        .await
        .expect("restart");
    wait_connections(&status, 2).await;
    // The new engine is this test's descendant and so inherited the
    // sensor's "ignore myself" filter entry at fork: give the engine (and
    // so the containers it starts from now on) the default again.
    for pid in pids_of("dockerd").into_iter().chain(pids_of("containerd")) {
        sensor.clear_filter(pid).expect("clear filter");
    }

    let name = format!("agtest-restart-{}", std::process::id());
    let _guard = common::ContainerGuard(name.clone());
    let id = common::docker(&[
        "run",
        "-d",
        "--name",
        &name,
        "--label",
        "agentguard.io/agent=goose",
        common::TEST_IMAGE,
        "sh",
        "-c",
        "sleep 1; touch /tmp/x; rm /tmp/x; sleep 1",
    ]);
    let events = common::container_events(&mut sensor, &mut stage, &id, 30, |evs| {
        evs.iter().any(|e| e.kind == Kind::Unlink)
    })
    .await;
    let all = common::dump(&events);
    let rm = events
        .iter()
        .find(|e| e.kind == Kind::Unlink)
        .unwrap_or_else(|| panic!("no unlink from {name} ({id}) after the restart:\n{all}"));
    let ident = rm.identity.as_ref().expect("identity");
    let info = common::container_info(rm, "no metadata after the dockerd restart", &all);
    assert_eq!(info.name, name);
    assert_eq!(ident.agent.as_ref().map(|a| a.name.as_str()), Some("goose"));
}
