//! Identity on real events: a host agent found by ancestry, and a labelled
//! Docker container tagged with its metadata.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use agentguard::event::{Detail, Event, Kind};
use agentguard::identity::resolver::{AgentSource, ContainerMap, Resolver, Scope, DEFAULT_AGENTS};
use agentguard::identity::stage::IdentityStage;
use agentguard::identity::watch;
use agentguard::sensor::{Sensor, SensorOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_agent_is_found_by_ancestry() {
    if !common::require("root", common::is_root()) {
        return;
    }
    let dir = std::env::temp_dir().join(format!("agentguard-agent-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("mkdir");
    let dir = dir.canonicalize().expect("canonicalize");
    // A fake `claude`: a shell under the agent's name.
    std::fs::copy("/bin/sh", dir.join("claude")).expect("copy /bin/sh");
    std::fs::write(dir.join("victim.txt"), b"x").expect("write");
    let mut sensor = Sensor::start(&SensorOptions {
        watch_all: false,
        ..Default::default()
    })
    .expect("sensor");
    let mut resolver = Resolver::new(ContainerMap::default(), DEFAULT_AGENTS);
    let mut agent = Command::new(dir.join("claude"))
        .args(["-c", "read go; rm -f victim.txt; true"])
        .current_dir(&dir)
        .stdin(Stdio::piped())
        .spawn()
        .expect("spawn fake claude");
    let agent_pid = agent.id();
    sensor.set_filter(agent_pid, &Kind::ALL).expect("filter");
    agent
        .stdin
        .as_mut()
        .expect("stdin")
        .write_all(b"go\n")
        .expect("go");
    let victim = dir.join("victim.txt").display().to_string();
    let mut events = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline && !events.iter().any(|e: &Event| e.kind == Kind::Unlink) {
        let _ = tokio::time::timeout(
            Duration::from_millis(200),
            sensor.read(&mut |mut e: Event| {
                e.identity = Some(resolver.tag(&e));
                events.push(e);
            }),
        )
        .await;
    }
    assert!(agent.wait().expect("wait").success());
    let all = common::dump(&events);
    let rm = events
        .iter()
        .find(|e| e.kind == Kind::Unlink && e.path() == Some(victim.as_str()))
        .unwrap_or_else(|| panic!("no unlink of {victim}:\n{all}"));
    assert_ne!(rm.pid, agent_pid, "rm runs in a child of the agent");
    let id = rm.identity.as_ref().expect("identity");
    assert_eq!(id.scope, Scope::Host);
    let a = id
        .agent
        .as_ref()
        .unwrap_or_else(|| panic!("rm not tagged with the agent:\n{all}"));
    assert_eq!(a.name, "claude");
    assert_eq!(a.source, AgentSource::Ancestry);
    assert_eq!(a.pid, Some(agent_pid));
    // The session is this agent process instance: pid and start time.
    let session = a
        .session
        .as_deref()
        .unwrap_or_else(|| panic!("no session:\n{all}"));
    let (spid, start) = session.split_once('.').expect("PID.START");
    assert_eq!(spid, agent_pid.to_string());
    assert!(start.parse::<u64>().is_ok_and(|s| s > 0), "{session}");
    let chain: Vec<u32> = id.ancestry.iter().map(|x| x.pid).collect();
    assert_eq!(
        chain,
        vec![rm.pid, agent_pid],
        "ancestry from rm up to the agent:\n{all}"
    );
    assert!(
        id.ancestry[0].argv.starts_with("rm -f victim.txt"),
        "{:?}",
        id.ancestry[0]
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn stage_with_docker() -> IdentityStage {
    let map = ContainerMap::default();
    let wanted = watch::spawn_docker(map.clone(), None);
    IdentityStage::new(
        Resolver::new(map, DEFAULT_AGENTS),
        wanted,
        // Generous here: the engine is shared with parallel tests.
        Duration::from_secs(2),
    )
}

fn has_unlink(evs: &[Event]) -> bool {
    evs.iter().any(|e| e.kind == Kind::Unlink)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_events_carry_container_and_label_agent() {
    if !common::docker_ready() {
        return;
    }
    let name = format!("agtest-id-{}", std::process::id());
    let host_dir = std::env::temp_dir().join(&name);
    std::fs::create_dir_all(&host_dir).expect("mkdir");
    std::fs::write(host_dir.join("notes.txt"), b"x").expect("write");
    let _guard = common::ContainerGuard(name.clone());
    let mut sensor = Sensor::start(&SensorOptions::default()).expect("sensor");
    let mut stage = stage_with_docker();
    let id = common::docker(&[
        "run",
        "-d",
        "--name",
        &name,
        "--label",
        "agentguard.io/agent=codex",
        "--label",
        "agentguard.io/session=s-42",
        "-v",
        &format!("{}:/data", host_dir.display()),
        common::TEST_IMAGE,
        "sh",
        "-c",
        "sleep 1; rm /data/notes.txt; sleep 2",
    ]);
    let events = common::container_events(&mut sensor, &mut stage, &id, 30, has_unlink).await;
    let all = common::dump(&events);
    // The entrypoint's own exec is already tagged with the container and
    // its metadata (the stage held it until the inspect answered).
    let first = events
        .iter()
        .find(|e| e.kind == Kind::Exec)
        .unwrap_or_else(|| panic!("no exec from the container:\n{all}"));
    assert!(
        matches!(&first.detail, Detail::Exec(x) if x.argv.first().map(String::as_str) == Some("sh")),
        "{all}"
    );
    let first_info = common::container_info(first, "first exec has no container metadata", &all);
    assert_eq!(first_info.name, name);
    assert_eq!(
        first
            .identity
            .as_ref()
            .and_then(|i| i.agent.as_ref())
            .map(|a| a.name.as_str()),
        Some("codex"),
        "first exec carries the label agent"
    );
    let rm = events
        .iter()
        .find(|e| e.kind == Kind::Unlink)
        .unwrap_or_else(|| panic!("no unlink from the container:\n{all}"));
    assert_eq!(rm.path(), Some("/data/notes.txt"), "container path");
    assert_eq!(rm.ret, 0);
    let ident = rm.identity.as_ref().expect("identity");
    assert_eq!(ident.scope, Scope::Container);
    let info = common::container_info(rm, "no container metadata a second in", &all);
    assert_eq!(info.name, name);
    assert_eq!(info.image, common::TEST_IMAGE);
    let data = info
        .mounts
        .iter()
        .find(|m| m.destination == "/data")
        .unwrap_or_else(|| panic!("no /data mount in {:?}", info.mounts));
    assert_eq!(data.kind, "bind");
    assert!(!data.read_only);
    assert_eq!(std::path::Path::new(&data.source), host_dir.as_path());
    assert!(
        info.init_pid.is_some_and(|p| p > 1),
        "init pid {:?}",
        info.init_pid
    );
    let agent = ident.agent.as_ref().expect("label agent");
    assert_eq!(agent.name, "codex");
    assert_eq!(agent.session.as_deref(), Some("s-42"));
    assert_eq!(agent.source, AgentSource::Label);
    // The rm's ancestry stops at the container's init (the entrypoint sh).
    assert_eq!(ident.ancestry.first().map(|a| a.pid), Some(rm.pid));
    assert!(
        ident.ancestry.iter().any(|a| a.argv.starts_with("sh -c")),
        "{:?}",
        ident.ancestry
    );
    assert!(!host_dir.join("notes.txt").exists());
    let _ = std::fs::remove_dir_all(&host_dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_started_before_the_daemon_resolves() {
    if !common::docker_ready() {
        return;
    }
    let name = format!("agtest-before-{}", std::process::id());
    let _guard = common::ContainerGuard(name.clone());
    // Started first: it waits for a file to appear in its own tmp before it
    // acts, so the daemon (sensor, watcher) comes up after its start.
    let id = common::docker(&[
        "run",
        "-d",
        "--name",
        &name,
        "--label",
        "agentguard.io/agent=aider",
        common::TEST_IMAGE,
        "sh",
        "-c",
        // `; true`: the shell stays itself (busybox sh would exec its last
        // command, and the ancestry read from /proc after that is `sleep`).
        "touch /tmp/a; while [ ! -e /tmp/go ]; do sleep 0.1; done; rm /tmp/a; sleep 1; true",
    ]);
    let mut sensor = Sensor::start(&SensorOptions::default()).expect("sensor");
    let mut stage = stage_with_docker();
    common::docker(&["exec", &name, "touch", "/tmp/go"]);
    let events = common::container_events(&mut sensor, &mut stage, &id, 30, has_unlink).await;
    let all = common::dump(&events);
    let rm = events
        .iter()
        .find(|e| e.kind == Kind::Unlink && e.path() == Some("/tmp/a"))
        .unwrap_or_else(|| panic!("no unlink of /tmp/a:\n{all}"));
    let ident = rm.identity.as_ref().expect("identity");
    let info = common::container_info(
        rm,
        "no metadata for a container older than the daemon",
        &all,
    );
    assert_eq!(info.name, name);
    assert_eq!(ident.agent.as_ref().map(|a| a.name.as_str()), Some("aider"));
    // A process met mid-life is read from /proc: its ancestry has the
    // entrypoint shell.
    assert!(
        ident.ancestry.iter().any(|a| a.argv.starts_with("sh -c")),
        "{:?}",
        ident.ancestry
    );
}
