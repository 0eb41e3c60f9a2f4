//! Keeps the container map current from the Docker engine: a first listing,
//! then the change stream, plus on-demand lookups of ids the resolver met
//! first. Reconnects with backoff when dockerd restarts; without a socket the
//! resolver still tags events with the container id from the cgroup path.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::mpsc;

use super::docker::DockerClient;
use super::resolver::ContainerMap;

const BACKOFF_MIN: Duration = Duration::from_millis(500);
// A local socket is cheap to try: a short cap keeps the untagged gap after
// a dockerd restart short.
const BACKOFF_MAX: Duration = Duration::from_secs(5);

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

async fn describe(client: &DockerClient, map: &ContainerMap, id: &str) {
    match client.inspect(id).await {
        Ok(Some(info)) => {
            if let Ok(mut m) = map.write() {
                m.insert(info.id.clone(), Arc::new(info));
            }
        }
        Ok(None) => {}
        Err(e) => tracing::debug!("inspect {id}: {e:#}"),
    }
}

/// How the watcher is doing, for status and metrics.
#[derive(Debug, Default)]
pub struct WatchStatus {
    /// Listing done and following the event stream.
    pub connected: AtomicBool,
    /// Successful (re)connections so far.
    pub connections: AtomicU64,
}

/// Spawns the watcher; send container ids that need metadata on the returned channel.
pub fn spawn_docker(map: ContainerMap, socket: Option<String>) -> mpsc::UnboundedSender<String> {
    spawn_docker_status(map, socket).0
}

/// [`spawn_docker`], also returning the watcher's status.
pub fn spawn_docker_status(
    map: ContainerMap,
    socket: Option<String>,
) -> (mpsc::UnboundedSender<String>, Arc<WatchStatus>) {
    let (tx, mut rx) = mpsc::unbounded_channel::<String>();
    let status = Arc::new(WatchStatus::default());
    let st = Arc::clone(&status);
    tokio::spawn(async move {
        let mut backoff = BACKOFF_MIN;
        let mut warned = false;
        loop {
            let client = match DockerClient::connect(socket.as_deref()).await {
                Ok(c) => c,
                Err(e) => {
                    if !warned {
                        tracing::warn!("Docker unavailable ({e:#}); containers are tagged by cgroup id only, retrying");
                        warned = true;
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    continue;
                }
            };
            warned = false;
            backoff = BACKOFF_MIN;
            // Subscribe from just before the listing so nothing falls between.
            let since = now_secs() - 1;
            match client.list().await {
                Ok(list) => {
                    if let Ok(mut m) = map.write() {
                        // Containers removed while Docker was away sent no
                        // destroy event: only the listed ones stay.
                        let listed: std::collections::HashSet<&str> =
                            list.iter().map(|c| c.id.as_str()).collect();
                        m.retain(|id, c| {
                            c.runtime != crate::identity::model::Runtime::Docker
                                || listed.contains(id.as_str())
                        });
                        for c in list {
                            m.insert(c.id.clone(), Arc::new(c));
                        }
                    }
                    st.connected.store(true, Ordering::Relaxed);
                    st.connections.fetch_add(1, Ordering::Relaxed);
                    tracing::info!("Docker connected; following container changes");
                }
                Err(e) => {
                    tracing::warn!("listing containers: {e:#}");
                    continue;
                }
            }
            let mut changes = Box::pin(client.changes(since));
            loop {
                tokio::select! {
                    change = changes.next() => match change {
                        Some(Ok(c)) => match c.action.as_str() {
                            "destroy" => {
                                if let Ok(mut m) = map.write() {
                                    m.remove(&c.id);
                                }
                            }
                            "create" | "start" | "rename" | "die" => describe(&client, &map, &c.id).await,
                            _ => {}
                        },
                        Some(Err(e)) => {
                            tracing::warn!("Docker event stream: {e:#}; reconnecting");
                            break;
                        }
                        None => {
                            tracing::warn!("Docker event stream ended; reconnecting");
                            break;
                        }
                    },
                    id = rx.recv() => match id {
                        Some(id) => describe(&client, &map, &id).await,
                        None => return,
                    },
                }
            }
            st.connected.store(false, Ordering::Relaxed);
            tokio::time::sleep(BACKOFF_MIN).await;
        }
    });
    (tx, status)
}

/// Both runtime watchers on one container map: Docker, and containerd
/// (Kubernetes nodes, `k8s.io`). Ids the resolver asks about go to both;
/// each answers for its own containers.
pub fn spawn_runtimes(
    map: ContainerMap,
    docker_socket: Option<String>,
    containerd_socket: Option<std::path::PathBuf>,
) -> (mpsc::UnboundedSender<String>, Arc<WatchStatus>) {
    let (docker_tx, status) = spawn_docker_status(map.clone(), docker_socket);
    let containerd_tx = super::containerd_watch::spawn_containerd(map, containerd_socket);
    let (tx, mut rx) = mpsc::unbounded_channel::<String>();
    tokio::spawn(async move {
        while let Some(id) = rx.recv().await {
            let _ = containerd_tx.send(id.clone());
            if docker_tx.send(id).is_err() {
                break;
            }
        }
    });
    (tx, status)
}
