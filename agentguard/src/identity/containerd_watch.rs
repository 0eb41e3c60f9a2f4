//! Keeps the container map current from containerd: subscribe to container
//! and task events, list every container of the watched namespaces, then
//! follow the events, plus on-demand lookups of ids the resolver met first.
//! Reconnects with backoff when containerd restarts; without a socket the
//! resolver still tags events with the container id from the cgroup path.
//!
//! Entries are keyed by containerd's container id, which is what
//! `identity::cgroup` reads from the cgroup path (`/k8s.io/<id>` for plain
//! containerd, `.../pod<uid>/<id>` or `cri-containerd-<id>.scope` under
//! Kubernetes). The watcher only ever removes entries whose runtime is
//! containerd, so it can share a map with the Docker watcher.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::cgroup::Runtime;
use super::containerd::{ContainerdClient, DEFAULT_NAMESPACES};
use super::resolver::ContainerMap;

const BACKOFF_MIN: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// Where and what to watch.
#[derive(Clone, Debug)]
pub struct ContainerdWatchOptions {
    /// The socket; None tries `containerd::SOCKET_CANDIDATES` in order.
    pub socket: Option<PathBuf>,
    /// Namespaces, searched in order for on-demand lookups.
    pub namespaces: Vec<String>,
}

impl Default for ContainerdWatchOptions {
    fn default() -> Self {
        ContainerdWatchOptions {
            socket: None,
            namespaces: DEFAULT_NAMESPACES.iter().map(|s| s.to_string()).collect(),
        }
    }
}

fn remove_containerd_entry(map: &ContainerMap, id: &str) {
    if let Ok(mut m) = map.write() {
        if m.get(id).is_some_and(|c| c.runtime == Runtime::Containerd) {
            m.remove(id);
        }
    }
}

/// Looks `id` up (in `namespace`, or in every watched one) and records it.
async fn describe(
    client: &ContainerdClient,
    map: &ContainerMap,
    namespace: Option<&str>,
    id: &str,
) {
    let found = match namespace {
        Some(ns) => client.inspect_in(ns, id).await,
        None => client.inspect(id).await,
    };
    match found {
        Ok(Some(info)) => {
            if let Ok(mut m) = map.write() {
                m.insert(info.id.clone(), Arc::new(info));
            }
        }
        // Deleted meanwhile; ids of other runtimes are not found either.
        Ok(None) => remove_containerd_entry(map, id),
        Err(e) => tracing::debug!("containerd inspect {id}: {e:#}"),
    }
}

/// Spawns the watcher; send container ids that need metadata on the
/// returned channel (the same contract as `watch::spawn_docker`).
pub fn spawn_containerd(
    map: ContainerMap,
    socket: Option<PathBuf>,
) -> mpsc::UnboundedSender<String> {
    let (tx, rx) = mpsc::unbounded_channel::<String>();
    tokio::spawn(run_containerd(
        map,
        ContainerdWatchOptions {
            socket,
            ..Default::default()
        },
        rx,
    ));
    tx
}

/// The watcher itself, for callers that spawn it (or feed `wanted` from a
/// channel shared with another watcher). Returns when `wanted` is closed.
pub async fn run_containerd(
    map: ContainerMap,
    opts: ContainerdWatchOptions,
    mut wanted: mpsc::UnboundedReceiver<String>,
) {
    let mut backoff = BACKOFF_MIN;
    let mut warned = false;
    loop {
        let client = match ContainerdClient::connect(opts.socket.as_deref()).await {
            Ok(c) => c.with_namespaces(opts.namespaces.iter().cloned()),
            Err(e) => {
                if !warned {
                    tracing::warn!(
                        "containerd unavailable ({e:#}); containers are tagged by cgroup id only, retrying"
                    );
                    warned = true;
                }
                // Ids asked for meanwhile are covered by the listing after
                // the reconnect; stop when the asking side is gone.
                let sleep = tokio::time::sleep(backoff);
                tokio::pin!(sleep);
                loop {
                    tokio::select! {
                        _ = &mut sleep => break,
                        id = wanted.recv() => if id.is_none() { return },
                    }
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
                continue;
            }
        };
        warned = false;
        backoff = BACKOFF_MIN;
        // Subscribe before listing so no change falls between the two.
        let mut events = match client.subscribe() {
            Ok(ev) => ev,
            Err(e) => {
                tracing::warn!("containerd event subscription: {e:#}");
                tokio::time::sleep(BACKOFF_MIN).await;
                continue;
            }
        };
        match client.list().await {
            Ok(list) => {
                let present: HashSet<String> = list.iter().map(|c| c.id.clone()).collect();
                if let Ok(mut m) = map.write() {
                    // Containers deleted while disconnected.
                    m.retain(|id, c| c.runtime != Runtime::Containerd || present.contains(id));
                    for c in list {
                        m.insert(c.id.clone(), Arc::new(c));
                    }
                }
                tracing::info!(
                    "containerd {} at {} connected (namespaces {}); following container changes",
                    client.version(),
                    client.socket().display(),
                    client.namespaces().join(", ")
                );
            }
            Err(e) => {
                tracing::warn!("listing containerd containers: {e:#}");
                tokio::time::sleep(BACKOFF_MIN).await;
                continue;
            }
        }
        loop {
            tokio::select! {
                ev = events.next() => match ev {
                    Ok(Some(ev)) => {
                        if !client.namespaces().contains(&ev.namespace) {
                            continue;
                        }
                        let Some(id) = ev.container_id.as_deref() else { continue };
                        if ev.is_container_delete() {
                            remove_containerd_entry(&map, id);
                        } else if ev.changes_container() {
                            describe(&client, &map, Some(&ev.namespace), id).await;
                        }
                    }
                    Ok(None) => {
                        tracing::warn!("containerd event stream ended; reconnecting");
                        break;
                    }
                    Err(e) => {
                        tracing::warn!("containerd event stream: {e:#}; reconnecting");
                        break;
                    }
                },
                id = wanted.recv() => match id {
                    Some(id) => describe(&client, &map, None, &id).await,
                    None => return,
                },
            }
        }
        tokio::time::sleep(BACKOFF_MIN).await;
    }
}
