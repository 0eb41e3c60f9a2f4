//! Container identity against a real Docker engine.

mod common;

use std::time::Duration;

use agentguard::identity::{cgroup, docker::DockerClient};
use futures_util::StreamExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_container_metadata_and_cgroup_identity() {
    if !common::docker_ready() {
        return;
    }
    let name = format!("agtest-meta-{}", std::process::id());
    let host_dir = std::env::temp_dir().join(&name);
    std::fs::create_dir_all(&host_dir).expect("mkdir");
    let guard = common::ContainerGuard(name.clone());
    let client = DockerClient::connect(None)
        .await
        .expect("connect to dockerd");

    // Changes since before the start: the start must be among them.
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    let mut changes = Box::pin(client.changes(since));
    let id = common::docker(&[
        "run",
        "-d",
        "--name",
        &name,
        "--label",
        "agentguard.io/agent=claude",
        "--label",
        "io.kubernetes.pod.name=web-0",
        "--label",
        "io.kubernetes.pod.namespace=prod",
        "-v",
        &format!("{}:/data", host_dir.display()),
        "-v",
        &format!("{name}-vol:/cache:ro"),
        common::TEST_IMAGE,
        "sleep",
        "60",
    ]);
    let started = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(c) = changes.next().await {
            let c = c.expect("event stream");
            if c.id == id && c.action == "start" {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(started, Ok(true), "start event for {id}");

    let all = client.list().await.expect("list");
    let info = all
        .iter()
        .find(|c| c.id == id)
        .unwrap_or_else(|| panic!("{id} not listed"));
    assert_eq!(info.name, name);
    assert_eq!(info.image, common::TEST_IMAGE);
    assert_eq!(info.agent_label(), Some("claude"));
    let pod = info.pod.as_ref().expect("pod labels");
    assert_eq!(
        (pod.name.as_str(), pod.namespace.as_str()),
        ("web-0", "prod")
    );
    let data = info
        .mounts
        .iter()
        .find(|m| m.destination == "/data")
        .expect("/data mount");
    assert_eq!(data.kind, "bind");
    assert!(!data.read_only);
    assert_eq!(std::path::Path::new(&data.source), host_dir.as_path());
    let cache = info
        .mounts
        .iter()
        .find(|m| m.destination == "/cache")
        .expect("/cache mount");
    assert_eq!(cache.kind, "volume");
    assert!(cache.read_only);

    // The container's init process is in a cgroup that names the container.
    let pid = info.init_pid.expect("running container has an init pid");
    let cg = cgroup::for_pid(pid).expect("read /proc/PID/cgroup");
    assert_eq!(cg.container_id.as_deref(), Some(id.as_str()));
    assert_eq!(cg.runtime, Some(cgroup::Runtime::Docker));

    assert_eq!(
        client
            .inspect("agtest-no-such-container")
            .await
            .expect("inspect"),
        None
    );
    let _ = std::fs::remove_dir_all(&host_dir);
    // The container goes first: a named volume in use can't be removed.
    drop(guard);
    let _ = std::process::Command::new("docker")
        .args(["volume", "rm", "-f", &format!("{name}-vol")])
        .status();
}
