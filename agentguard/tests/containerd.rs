//! containerd identity on a real engine: containers started with `ctr` in
//! the `k8s.io` namespace carrying Kubernetes and agentguard labels, read
//! back by the gRPC client and the watcher, and joined to the cgroup path of
//! their init process the way the resolver joins them.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use agentguard::identity::cgroup::{self, Runtime};
use agentguard::identity::containerd::{self, ContainerdClient};
use agentguard::identity::containerd_watch::{self, ContainerdWatchOptions};
use agentguard::identity::docker::ContainerInfo;
use agentguard::identity::resolver::ContainerMap;

const NS: &str = "k8s.io";
/// What `docker save` of the test image is called once imported.
const CTR_IMAGE: &str = "docker.io/agentguard-test/busybox:1";

/// The containerd socket, or None (then the test skips, or fails under CI).
fn containerd_socket() -> Option<PathBuf> {
    if !common::privileged() {
        return None;
    }
    // containerd comes with dockerd on this kind of host.
    let sock = containerd::find_socket();
    if sock.is_none()
        && !common::require(
            "a running Docker engine (its containerd)",
            common::docker_up(),
        )
    {
        return None;
    }
    let sock = containerd::find_socket();
    if !common::require("a containerd socket", sock.is_some()) {
        return None;
    }
    if !common::require("docker (to build the test image)", common::docker_up()) {
        return None;
    }
    sock
}

fn ctr_cmd(sock: &Path, ns: &str, args: &[&str]) -> Command {
    let mut c = Command::new("ctr");
    c.arg("-a").arg(sock).args(["-n", ns]).args(args);
    c
}

/// `ctr -a SOCK -n k8s.io ARGS`, panicking with stderr on failure.
fn ctr(sock: &Path, args: &[&str]) -> String {
    let out = ctr_cmd(sock, NS, args).output().expect("run ctr");
    assert!(
        out.status.success(),
        "ctr {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Imports the busybox test image into k8s.io once per test binary.
fn ensure_ctr_image(sock: &Path) {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        common::ensure_test_image();
        let have = ctr(sock, &["images", "ls", "-q"]);
        if have.lines().any(|l| l.trim() == CTR_IMAGE) {
            return;
        }
        let st = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "docker save {} | ctr -a {} -n {NS} images import -",
                common::TEST_IMAGE,
                sock.display()
            ))
            .stdout(Stdio::null())
            .status()
            .expect("run docker save | ctr import");
        assert!(st.success(), "importing the test image into containerd");
        let have = ctr(sock, &["images", "ls", "-q"]);
        assert!(
            have.lines().any(|l| l.trim() == CTR_IMAGE),
            "{CTR_IMAGE} missing after import:\n{have}"
        );
    });
}

/// Kills and deletes a ctr container (task, container, snapshot) when
/// dropped, even if the test panics; removes the pod cgroup it asked for.
struct CtrGuard {
    sock: PathBuf,
    id: String,
    pod_cgroup: Option<String>,
}

impl CtrGuard {
    fn kill(&self) {
        let quiet = |args: &[&str]| {
            let _ = ctr_cmd(&self.sock, NS, args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        };
        quiet(&["tasks", "kill", "-s", "SIGKILL", &self.id]);
        quiet(&["tasks", "delete", "-f", &self.id]);
    }
}

impl Drop for CtrGuard {
    fn drop(&mut self) {
        self.kill();
        let _ = ctr_cmd(&self.sock, NS, &["containers", "delete", &self.id])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if let Some(pod) = &self.pod_cgroup {
            // The container's own cgroup goes with the task; the pod's
            // parents are ours to remove (in every hierarchy).
            if let Ok(dirs) = std::fs::read_dir("/sys/fs/cgroup") {
                for h in dirs.flatten() {
                    let mut p = h.path().join(pod.trim_start_matches('/'));
                    for _ in 0..3 {
                        let _ = std::fs::remove_dir(&p);
                        if !p.pop() {
                            break;
                        }
                    }
                }
            }
        }
    }
}

struct Spec<'a> {
    id: &'a str,
    labels: &'a [(&'a str, &'a str)],
    /// (host dir, container path), mounted read-only.
    bind: Option<(&'a Path, &'a str)>,
    /// `--cgroup` (defaults to /k8s.io/<id>).
    cgroup: Option<String>,
}

/// Starts a detached `sleep 60` container; returns its guard and init pid.
fn run(sock: &Path, spec: Spec<'_>) -> (CtrGuard, u32) {
    let pod_cgroup = spec.cgroup.as_ref().map(|c| {
        // The pod's directory: the path without its last element.
        c.rsplit_once('/')
            .map(|(p, _)| p.to_owned())
            .unwrap_or_default()
    });
    let guard = CtrGuard {
        sock: sock.to_owned(),
        id: spec.id.to_owned(),
        pod_cgroup,
    };
    let mut args: Vec<String> = vec!["run".into(), "-d".into()];
    for (k, v) in spec.labels {
        args.push("--label".into());
        args.push(format!("{k}={v}"));
    }
    if let Some((src, dst)) = spec.bind {
        args.push("--mount".into());
        args.push(format!(
            "type=bind,src={},dst={dst},options=rbind:ro",
            src.display()
        ));
    }
    if let Some(cg) = &spec.cgroup {
        args.push("--cgroup".into());
        args.push(cg.clone());
    }
    for a in [CTR_IMAGE, spec.id, "sleep", "60"] {
        args.push(a.into());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    ctr(sock, &args);
    let pid = task_pid(sock, spec.id).expect("a running task after ctr run -d");
    (guard, pid)
}

/// The pid `ctr tasks ls` shows for a running task.
fn task_pid(sock: &Path, id: &str) -> Option<u32> {
    ctr(sock, &["tasks", "ls"]).lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.len() >= 3 && f[0] == id && f[2] == "RUNNING")
            .then(|| f[1].parse().ok())
            .flatten()
    })
}

fn unique(tag: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("agtest-{tag}-{}-{nanos}", std::process::id())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_reads_pod_labels_image_mounts_and_pid() {
    let Some(sock) = containerd_socket() else {
        return;
    };
    ensure_ctr_image(&sock);
    let id = unique("ctrd");
    let host_dir = std::env::temp_dir().join(&id);
    std::fs::create_dir_all(&host_dir).expect("mkdir");
    let (_guard, pid) = run(
        &sock,
        Spec {
            id: &id,
            labels: &[
                ("io.kubernetes.pod.name", "web-0"),
                ("io.kubernetes.pod.namespace", "prod"),
                (
                    "io.kubernetes.pod.uid",
                    "6a1f0e55-6e0c-4d3e-9a57-0d7d2f0c1b2a",
                ),
                ("io.kubernetes.container.name", "app"),
                ("agentguard.io/agent", "claude"),
                ("agentguard.io/session", "s-42"),
            ],
            bind: Some((&host_dir, "/data")),
            cgroup: None,
        },
    );

    let client = ContainerdClient::connect(Some(&sock))
        .await
        .expect("connect to containerd");
    assert!(!client.version().is_empty());
    let info = client
        .inspect(&id)
        .await
        .expect("inspect")
        .unwrap_or_else(|| panic!("containerd does not know {id}"));
    assert_eq!(info.id, id);
    assert_eq!(info.runtime, Runtime::Containerd);
    assert_eq!(info.image, CTR_IMAGE);
    assert_eq!(info.name, "app");
    assert_eq!(info.init_pid, Some(pid), "init pid as ctr reports it");
    assert_eq!(info.agent_label(), Some("claude"));
    assert_eq!(
        info.labels.get("agentguard.io/session").map(String::as_str),
        Some("s-42")
    );
    let pod = info.pod.as_ref().expect("pod from the CRI labels");
    assert_eq!(pod.name, "web-0");
    assert_eq!(pod.namespace, "prod");
    assert_eq!(
        pod.uid.as_deref(),
        Some("6a1f0e55-6e0c-4d3e-9a57-0d7d2f0c1b2a")
    );
    assert_eq!(pod.container.as_deref(), Some("app"));
    let data = info
        .mounts
        .iter()
        .find(|m| m.destination == "/data")
        .unwrap_or_else(|| panic!("no /data mount in {:?}", info.mounts));
    assert_eq!(Path::new(&data.source), host_dir.as_path());
    assert!(data.read_only);
    assert_eq!(data.kind, "bind");
    assert!(
        !info.mounts.iter().any(|m| m.destination == "/proc"),
        "runtime mounts are left out: {:?}",
        info.mounts
    );

    // The resolver joins events to this metadata by the id in the cgroup path.
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).expect("read cgroup");
    eprintln!("/proc/{pid}/cgroup of a ctr container:\n{text}");
    let cg = cgroup::parse_file(&text);
    assert_eq!(cg.container_id.as_deref(), Some(id.as_str()), "{text}");
    assert_eq!(cg.runtime, Some(Runtime::Containerd), "{text}");
    assert_eq!(cg.namespace.as_deref(), Some(NS), "{text}");
    let v2 = text
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .expect("a cgroup v2 line");
    assert_eq!(v2, format!("/{NS}/{id}"), "the unified hierarchy path");

    let listed = client.list().await.expect("list");
    let mine = listed
        .iter()
        .find(|c| c.id == id)
        .unwrap_or_else(|| panic!("{id} not listed"));
    assert_eq!(mine, &info, "list and inspect agree");
    assert!(client
        .inspect("agtest-no-such-container")
        .await
        .expect("inspect of a missing id")
        .is_none());
    let _ = std::fs::remove_dir_all(&host_dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubepods_cgroup_layout_joins_by_id_and_pod_uid() {
    let Some(sock) = containerd_socket() else {
        return;
    };
    ensure_ctr_image(&sock);
    // A CRI-shaped container: 64-hex id in a kubepods pod cgroup.
    let seed = unique("k8s");
    let hex: String = seed
        .bytes()
        .flat_map(|b| [b >> 4, b & 15])
        .map(|n| char::from_digit(u32::from(n), 16).unwrap_or('0'))
        .chain(std::iter::repeat('a'))
        .take(64)
        .collect();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let uid = format!(
        "{:08x}-1111-4222-8333-{:012x}",
        nanos,
        u64::from(std::process::id())
    );
    let cgroup_path = format!("/kubepods/besteffort/pod{uid}/{hex}");
    let (_guard, pid) = run(
        &sock,
        Spec {
            id: &hex,
            labels: &[
                ("io.kubernetes.pod.name", "agent-7f9c"),
                ("io.kubernetes.pod.namespace", "agents"),
                ("io.kubernetes.pod.uid", &uid),
                ("io.kubernetes.container.name", "worker"),
                ("agentguard.io/agent", "codex"),
            ],
            bind: None,
            cgroup: Some(cgroup_path.clone()),
        },
    );
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).expect("read cgroup");
    eprintln!("/proc/{pid}/cgroup with --cgroup {cgroup_path}:\n{text}");
    let cg = cgroup::parse_file(&text);
    assert_eq!(cg.container_id.as_deref(), Some(hex.as_str()), "{text}");
    assert_eq!(cg.pod_uid.as_deref(), Some(uid.as_str()), "{text}");
    assert_eq!(cg.runtime, Some(Runtime::Containerd), "{text}");

    let client = ContainerdClient::connect(None)
        .await
        .expect("connect by socket discovery");
    let info = client
        .inspect(cg.container_id.as_deref().unwrap_or_default())
        .await
        .expect("inspect")
        .expect("found by the cgroup's id");
    let pod = info.pod.expect("pod");
    assert_eq!(pod.uid.as_deref(), Some(uid.as_str()));
    assert_eq!(
        (pod.name.as_str(), pod.namespace.as_str()),
        ("agent-7f9c", "agents")
    );
    assert_eq!(
        info.labels.get("agentguard.io/agent").map(String::as_str),
        Some("codex")
    );
    assert_eq!(info.init_pid, Some(pid));
}

/// Waits until `ok` holds for the entry of `id` (None: absent) or panics.
async fn wait_for(
    map: &ContainerMap,
    id: &str,
    what: &str,
    ok: impl Fn(Option<&Arc<ContainerInfo>>) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let last = map.read().expect("map").get(id).cloned();
        if ok(last.as_ref()) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{id}: {what} did not happen; last entry {last:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watcher_lists_follows_events_and_answers_asks() {
    let Some(sock) = containerd_socket() else {
        return;
    };
    ensure_ctr_image(&sock);
    let labels = [
        ("io.kubernetes.pod.name", "w-0"),
        ("io.kubernetes.pod.namespace", "prod"),
        ("agentguard.io/agent", "aider"),
    ];
    let before = unique("ctrd-before");
    let (_g1, pid1) = run(
        &sock,
        Spec {
            id: &before,
            labels: &labels,
            bind: None,
            cgroup: None,
        },
    );
    // The watcher's log lands in the test output on failure.
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_max_level(tracing::Level::INFO)
        .try_init();
    let map = ContainerMap::default();
    let wanted = containerd_watch::spawn_containerd(map.clone(), Some(sock.clone()));
    wait_for(&map, &before, "listing at start", |c| {
        c.is_some_and(|c| c.init_pid == Some(pid1) && c.agent_label() == Some("aider"))
    })
    .await;

    // Started after the watcher: known from the event stream alone.
    let after = unique("ctrd-after");
    let (g2, pid2) = run(
        &sock,
        Spec {
            id: &after,
            labels: &labels,
            bind: None,
            cgroup: None,
        },
    );
    wait_for(&map, &after, "task start event", |c| {
        c.is_some_and(|c| c.init_pid == Some(pid2) && c.pod.is_some())
    })
    .await;
    g2.kill();
    wait_for(&map, &after, "task exit/delete event", |c| {
        c.is_some_and(|c| c.init_pid.is_none())
    })
    .await;
    drop(g2);
    wait_for(&map, &after, "container delete event", |c| c.is_none()).await;

    // An id the resolver met before its metadata: asked for on the channel.
    map.write().expect("map").remove(&before);
    wanted.send(before.clone()).expect("watcher alive");
    wait_for(&map, &before, "on-demand lookup", |c| {
        c.is_some_and(|c| c.init_pid == Some(pid1))
    })
    .await;
    // Ids of other runtimes are not found and leave no entry.
    wanted
        .send("agtest-not-containerd".into())
        .expect("watcher alive");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!map
        .read()
        .expect("map")
        .contains_key("agtest-not-containerd"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_or_wrong_socket_is_an_error_not_a_panic() {
    let missing = Path::new("/nonexistent/agentguard/containerd.sock");
    let err = ContainerdClient::connect(Some(missing))
        .await
        .expect_err("no socket there");
    let msg = format!("{err:#}");
    assert!(msg.contains(&missing.display().to_string()), "{msg}");

    // Something that is not containerd (HTTP/1 on a unix socket) fails in time.
    let dir = std::env::temp_dir().join(unique("notctrd"));
    std::fs::create_dir_all(&dir).expect("mkdir");
    let path = dir.join("fake.sock");
    let listener = tokio::net::UnixListener::bind(&path).expect("bind");
    let served = Arc::new(Mutex::new(0u32));
    let count = served.clone();
    let server = tokio::spawn(async move {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        while let Ok((mut s, _)) = listener.accept().await {
            if let Ok(mut n) = count.lock() {
                *n += 1;
            }
            let mut buf = [0u8; 256];
            let _ = s.read(&mut buf).await;
            let _ = s
                .write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                .await;
        }
    });
    let started = Instant::now();
    let err = ContainerdClient::connect(Some(&path))
        .await
        .expect_err("not containerd");
    assert!(started.elapsed() < Duration::from_secs(8), "bounded");
    assert!(
        format!("{err:#}").contains(&path.display().to_string()),
        "{err:#}"
    );
    assert!(*served.lock().expect("count") >= 1);
    server.abort();

    // The watcher keeps retrying without a socket and stops with its asker.
    let map = ContainerMap::default();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let task = tokio::spawn(containerd_watch::run_containerd(
        map.clone(),
        ContainerdWatchOptions {
            socket: Some(missing.to_owned()),
            ..Default::default()
        },
        rx,
    ));
    tx.send("x".to_owned()).expect("send");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(map.read().expect("map").is_empty());
    drop(tx);
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("watcher ends when the asking side is gone")
        .expect("no panic");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The whole path as the daemon will run it: sensor events from a ctr
/// container, the identity stage asking the containerd watcher, the resolver
/// joining by the cgroup path's id. Also pins what `bpf_get_current_cgroup_id`
/// gives such a container here: its own cgroup v2 directory's id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sensor_events_of_a_ctr_container_carry_its_pod_and_agent() {
    use agentguard::event::{Event, Kind};
    use agentguard::identity::resolver::{Resolver, Scope, DEFAULT_AGENTS};
    use agentguard::identity::stage::IdentityStage;
    use agentguard::sensor::{Sensor, SensorOptions};
    use std::os::unix::fs::MetadataExt as _;

    let Some(sock) = containerd_socket() else {
        return;
    };
    ensure_ctr_image(&sock);
    let mut sensor = Sensor::start(&SensorOptions::default()).expect("sensor");
    let map = ContainerMap::default();
    let mut stage = IdentityStage::new(
        Resolver::new(map.clone(), DEFAULT_AGENTS),
        containerd_watch::spawn_containerd(map, Some(sock.clone())),
        Duration::from_secs(2),
    );
    let id = unique("ctrd-e2e");
    let mut args = vec!["run", "-d"];
    let labels = [
        "io.kubernetes.pod.name=agent-0",
        "io.kubernetes.pod.namespace=agents",
        "io.kubernetes.container.name=worker",
        "agentguard.io/agent=codex",
        "agentguard.io/session=s-7",
    ];
    for l in &labels {
        args.extend(["--label", l]);
    }
    args.extend([
        CTR_IMAGE,
        &id,
        "sh",
        "-c",
        "sleep 1; touch /tmp/victim; rm /tmp/victim; sleep 2",
    ]);
    let _guard = CtrGuard {
        sock: sock.clone(),
        id: id.clone(),
        pod_cgroup: None,
    };
    ctr(&sock, &args);
    let v2_dir = Path::new("/sys/fs/cgroup/unified").join(NS).join(&id);
    let v2_id = std::fs::metadata(&v2_dir)
        .map(|m| m.ino())
        .unwrap_or_else(|e| panic!("{}: {e}", v2_dir.display()));

    let mut events: Vec<Event> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mine = |e: &Event| {
        e.identity
            .as_ref()
            .and_then(|i| i.container.as_ref())
            .is_some_and(|c| *c.id == *id)
    };
    let done = |evs: &[Event]| evs.iter().any(|e| e.kind == Kind::Unlink);
    while Instant::now() < deadline && !done(&events) {
        let _ = tokio::time::timeout(
            Duration::from_millis(20),
            sensor.read(&mut |e: Event| {
                stage.push(e, Instant::now(), &mut |x| {
                    if mine(&x) {
                        events.push(x)
                    }
                })
            }),
        )
        .await;
        stage.drain(Instant::now(), &mut |x| {
            if mine(&x) {
                events.push(x)
            }
        });
    }
    stage.flush(&mut |x| {
        if mine(&x) {
            events.push(x)
        }
    });
    let all = common::dump(&events);
    let rm = events
        .iter()
        .find(|e| e.kind == Kind::Unlink)
        .unwrap_or_else(|| panic!("no unlink from {id}:\n{all}"));
    assert_eq!(rm.path(), Some("/tmp/victim"), "{all}");
    assert_eq!(
        rm.cgroup_id,
        v2_id,
        "the event's cgroup id is the container's own v2 cgroup ({})",
        v2_dir.display()
    );
    let ident = rm.identity.as_ref().expect("identity");
    assert_eq!(ident.scope, Scope::Container);
    let info = common::container_info(rm, "no containerd metadata on the unlink", &all);
    assert_eq!(info.runtime, Runtime::Containerd);
    assert_eq!(info.image, CTR_IMAGE);
    let pod = info.pod.as_ref().expect("pod");
    assert_eq!(
        (pod.name.as_str(), pod.namespace.as_str()),
        ("agent-0", "agents")
    );
    let agent = ident.agent.as_ref().expect("label agent");
    assert_eq!(agent.name, "codex");
    assert_eq!(agent.session.as_deref(), Some("s-7"));
    // The first exec (the entrypoint) was held until the metadata came.
    let first = events
        .iter()
        .find(|e| e.kind == Kind::Exec)
        .unwrap_or_else(|| panic!("no exec from {id}:\n{all}"));
    assert!(
        first
            .identity
            .as_ref()
            .and_then(|i| i.container.as_ref())
            .is_some_and(|c| c.info.is_some()),
        "first exec without metadata:\n{all}"
    );
}
