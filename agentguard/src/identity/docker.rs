//! Container metadata from the Docker engine (bollard).
//!
//! Docker 20.10 here speaks API 1.41: the client negotiates down.

use std::collections::{BTreeMap, HashMap};

use anyhow::{Context as _, Result};
use bollard::query_parameters::{EventsOptionsBuilder, ListContainersOptionsBuilder};
use bollard::Docker;
use futures_util::StreamExt;

use super::cgroup::Runtime;

pub use super::model::{
    pod_from_labels, ContainerInfo, MountInfo, PodInfo, AGENT_LABEL, SESSION_LABEL,
};

/// A connected Docker client.
#[derive(Clone)]
pub struct DockerClient {
    docker: Docker,
}

/// A container lifecycle change from the event stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerChange {
    /// "create", "start", "die", "destroy", "rename", ...
    pub action: String,
    pub id: String,
}

impl DockerClient {
    /// Connects to `socket` (default /var/run/docker.sock) and negotiates
    /// the API version.
    pub async fn connect(socket: Option<&str>) -> Result<DockerClient> {
        let docker = match socket {
            Some(path) => Docker::connect_with_unix(path, 10, bollard::API_DEFAULT_VERSION),
            None => Docker::connect_with_unix_defaults(),
        }
        .context("Docker socket")?;
        let docker = docker
            .negotiate_version()
            .await
            .context("Docker API unreachable (is dockerd running?)")?;
        Ok(DockerClient { docker })
    }

    /// Every running container, inspected.
    pub async fn list(&self) -> Result<Vec<ContainerInfo>> {
        let opts = ListContainersOptionsBuilder::new().all(false).build();
        let summaries = self.docker.list_containers(Some(opts)).await?;
        let mut out = Vec::with_capacity(summaries.len());
        for s in summaries {
            let Some(id) = s.id else { continue };
            // A container that exits between list and inspect is skipped.
            if let Some(info) = self.inspect(&id).await? {
                out.push(info);
            }
        }
        Ok(out)
    }

    /// SIGKILLs a container (policy kill with container scope).
    pub async fn kill(&self, id: &str) -> Result<()> {
        let opts = bollard::query_parameters::KillContainerOptionsBuilder::default()
            .signal("SIGKILL")
            .build();
        self.docker
            .kill_container(id, Some(opts))
            .await
            .with_context(|| format!("killing container {id}"))
    }

    /// Inspects one container by id or name; Ok(None) when it doesn't exist.
    pub async fn inspect(&self, id: &str) -> Result<Option<ContainerInfo>> {
        let r = match self
            .docker
            .inspect_container(
                id,
                None::<bollard::query_parameters::InspectContainerOptions>,
            )
            .await
        {
            Ok(r) => r,
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let config = r.config.unwrap_or_default();
        let labels: BTreeMap<String, String> =
            config.labels.unwrap_or_default().into_iter().collect();
        let mounts = r
            .mounts
            .unwrap_or_default()
            .into_iter()
            .map(|m| MountInfo {
                source: m.source.unwrap_or_default(),
                destination: m.destination.unwrap_or_default(),
                read_only: !m.rw.unwrap_or(true),
                kind: m.typ.map(|t| t.to_string()).unwrap_or_default(),
            })
            .collect();
        let init_pid = r
            .state
            .as_ref()
            .and_then(|s| s.pid)
            .filter(|p| *p > 0)
            .and_then(|p| u32::try_from(p).ok());
        Ok(Some(ContainerInfo {
            id: r.id.unwrap_or_else(|| id.to_owned()),
            name: r
                .name
                .unwrap_or_default()
                .trim_start_matches('/')
                .to_owned(),
            image: config.image.unwrap_or_default(),
            runtime: Runtime::Docker,
            pod: pod_from_labels(&labels),
            labels,
            mounts,
            init_pid,
        }))
    }

    /// Container lifecycle changes since `since` (unix seconds), replayed
    /// by dockerd and then followed live: the stream connects lazily, so a
    /// start time is what makes "nothing missed" hold (also on reconnect).
    pub fn changes(
        &self,
        since: i64,
    ) -> impl futures_util::Stream<Item = Result<ContainerChange>> + '_ {
        let mut filters = HashMap::new();
        filters.insert("type", vec!["container"]);
        let since = since.to_string();
        let opts = EventsOptionsBuilder::new()
            .filters(&filters)
            .since(&since)
            .build();
        self.docker.events(Some(opts)).map(|m| {
            let m = m?;
            Ok(ContainerChange {
                action: m.action.unwrap_or_default(),
                id: m.actor.and_then(|a| a.id).unwrap_or_default(),
            })
        })
    }
}
