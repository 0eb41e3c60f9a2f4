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

/// The container tests take turns: each reads every process's records from
/// the real sensor, and another test's new container (unknown to this
/// test's map) would be held by this test's stage.
static ONE_ENGINE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

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
    let _turn = ONE_ENGINE.lock().await;
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
    let _turn = ONE_ENGINE.lock().await;
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

/// While a new container's metadata is slow to come (an engine slowed by a
/// busy host), only that container's events wait for it: the host's pass
/// at once. When the metadata arrives, the held events come out carrying
/// its labels (so agent rules see the agent's first actions).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_engine_holds_only_the_new_containers_events() {
    if !common::docker_ready() {
        return;
    }
    let _turn = ONE_ENGINE.lock().await;
    let name = format!("agtest-slow-{}", std::process::id());
    let _guard = common::ContainerGuard(name.clone());
    let mut sensor = Sensor::start(&SensorOptions::default()).expect("sensor");
    let map = ContainerMap::default();
    // Nobody answers the stage's questions: the engine is "slow" until the
    // test fills the map itself.
    let (wanted_tx, mut wanted_rx) = tokio::sync::mpsc::unbounded_channel();
    let mut stage = IdentityStage::new(
        Resolver::new(map.clone(), DEFAULT_AGENTS),
        wanted_tx,
        Duration::from_secs(600),
    );
    let id = common::docker(&[
        "run",
        "-d",
        "--name",
        &name,
        "--label",
        "agentguard.io/agent=codex",
        common::TEST_IMAGE,
        "sh",
        "-c",
        "cat /etc/hostname; sleep 60",
    ]);
    let marker = format!("agtest-host-marker-{}", std::process::id());
    let mut out: Vec<Event> = Vec::new();
    let mut host_seen = false;
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut ran_host = false;
    // The test's own children are silenced in the kernel (the sensor
    // ignores its own process): this one is let back in before it acts.
    let mut host = Command::new("/bin/sh")
        .args(["-c", &format!("read go; exec /bin/echo {marker}")])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn sh");
    sensor.set_filter(host.id(), &Kind::ALL).expect("filter");
    while Instant::now() < deadline && !host_seen {
        let _ = tokio::time::timeout(
            Duration::from_millis(20),
            sensor.read(&mut |e: Event| stage.push(e, Instant::now(), &mut |x| out.push(x))),
        )
        .await;
        stage.drain(Instant::now(), &mut |x| out.push(x));
        // The host acts only once the container is held.
        if stage.is_holding() && !ran_host {
            if let Some(mut stdin) = host.stdin.take() {
                stdin.write_all(b"go\n").expect("go");
            }
            ran_host = true;
        }
        host_seen = out
            .iter()
            .any(|e| matches!(&e.detail, Detail::Exec(x) if x.argv.iter().any(|a| a == &marker)));
    }
    let _ = host.wait();
    assert!(ran_host, "the container's events were never held");
    assert!(host_seen, "the host's exec waited behind the container's");
    let of_container = |e: &Event| {
        e.identity
            .as_ref()
            .and_then(|i| i.container.as_ref())
            .is_some_and(|c| *c.id == *id)
    };
    assert!(
        !out.iter().any(of_container),
        "an event of the unknown container was let go:\n{}",
        common::dump(&out)
    );
    assert!(stage.is_holding());
    assert_eq!(wanted_rx.try_recv().ok().as_deref(), Some(id.as_str()));
    // The metadata arrives: the held events come out with it, in order.
    let info = agentguard::identity::docker::DockerClient::connect(None)
        .await
        .expect("docker")
        .inspect(&id)
        .await
        .expect("inspect")
        .expect("container exists");
    map.write()
        .expect("map")
        .insert(info.id.clone(), std::sync::Arc::new(info));
    out.clear();
    stage.drain(Instant::now(), &mut |x| out.push(x));
    assert!(!stage.is_holding());
    let held: Vec<&Event> = out.iter().filter(|e| of_container(e)).collect();
    let all = common::dump(&out);
    let first = held
        .first()
        .unwrap_or_else(|| panic!("nothing held:\n{all}"));
    assert!(
        matches!(&first.detail, Detail::Exec(x) if x.argv.first().map(String::as_str) == Some("sh")),
        "the container's first event first:\n{all}"
    );
    for e in &held {
        assert_eq!(
            e.identity
                .as_ref()
                .and_then(|i| i.agent.as_ref())
                .map(|a| a.name.as_str()),
            Some("codex"),
            "{all}"
        );
    }
    assert!(
        held.iter()
            .any(|e| e.kind == Kind::Open && e.path() == Some("/etc/hostname")),
        "{all}"
    );
}

/// A container whose processes (and cgroup) are gone before the daemon
/// reads their records, as when the daemon is behind a flood: the records
/// still name the container and its agent, from the cgroup id the kernel
/// put in each record and the path it recorded at the cgroup's creation
/// (not from /proc, where nothing is left to read).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_gone_before_its_records_are_read_is_still_known() {
    if !common::docker_ready() {
        return;
    }
    let _turn = ONE_ENGINE.lock().await;
    let name = format!("agtest-gone-{}", std::process::id());
    let _guard = common::ContainerGuard(name.clone());
    let mut sensor = Sensor::start(&SensorOptions::default()).expect("sensor");
    let paths = sensor
        .take_cgroup_paths(&agentguard::sensor::cgroups::walk_host().unwrap_or_default())
        .expect("the cgroup:cgroup_mkdir probe is attached");
    let map = ContainerMap::default();
    let wanted = watch::spawn_docker(map.clone(), None);
    let mut stage = IdentityStage::new(
        Resolver::new(map, DEFAULT_AGENTS).with_cgroup_paths(Box::new(move |cg| paths.get(cg))),
        wanted,
        Duration::from_secs(5),
    );
    let id = common::docker(&[
        "run",
        "-d",
        "--name",
        &name,
        "--label",
        "agentguard.io/agent=gone",
        common::TEST_IMAGE,
        "sh",
        "-c",
        "cat /etc/hostname",
    ]);
    common::docker(&["wait", &name]);
    // Everything of it has exited: its records wait in the ring buffer.
    let events = common::container_events(&mut sensor, &mut stage, &id, 20, |evs| {
        evs.iter()
            .any(|e| e.kind == Kind::Open && e.path() == Some("/etc/hostname"))
    })
    .await;
    let all = common::dump(&events);
    let open = events
        .iter()
        .find(|e| e.kind == Kind::Open && e.path() == Some("/etc/hostname"))
        .unwrap_or_else(|| panic!("the container's open was not tagged with it:\n{all}"));
    let ident = open.identity.as_ref().expect("identity");
    assert_eq!(ident.scope, Scope::Container);
    assert_eq!(
        ident.agent.as_ref().map(|a| a.name.as_str()),
        Some("gone"),
        "{all}"
    );
}
