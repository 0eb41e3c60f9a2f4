//! The identity data types: who did an event (container, pod, agent,
//! ancestry). A leaf: the runtime adapters (Docker, containerd) produce
//! them, the resolver fills them in, every later stage reads them.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};

/// The runtime that owns a cgroup path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Runtime {
    Docker,
    Containerd,
    Crio,
    Podman,
}

/// Labels that name the agent (see the identity docs).
pub const AGENT_LABEL: &str = "agentguard.io/agent";
pub const SESSION_LABEL: &str = "agentguard.io/session";

/// One mount of a container.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountInfo {
    pub source: String,
    pub destination: String,
    pub read_only: bool,
    /// "bind", "volume", "tmpfs", ...
    pub kind: String,
}

/// Kubernetes pod facts from the CRI labels.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodInfo {
    pub name: String,
    pub namespace: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
}

/// What an event's container is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerInfo {
    pub id: String,
    pub name: String,
    pub image: String,
    pub runtime: Runtime,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub mounts: Vec<MountInfo>,
    /// Host pid of the container's init process while it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init_pid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<PodInfo>,
}

impl ContainerInfo {
    /// The agent named by the container's label, if any.
    pub fn agent_label(&self) -> Option<&str> {
        self.labels.get(AGENT_LABEL).map(String::as_str)
    }
}

/// Pod identity from CRI labels (Docker or containerd carry the same keys).
pub fn pod_from_labels(labels: &BTreeMap<String, String>) -> Option<PodInfo> {
    Some(PodInfo {
        name: labels.get("io.kubernetes.pod.name")?.clone(),
        namespace: labels.get("io.kubernetes.pod.namespace")?.clone(),
        uid: labels.get("io.kubernetes.pod.uid").cloned(),
        container: labels.get("io.kubernetes.container.name").cloned(),
    })
}

/// How the agent was recognized.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentSource {
    /// The container's `agentguard.io/agent` label.
    Label,
    /// An ancestor process runs a known agent executable.
    Ancestry,
    /// The container's image matches a configured pattern.
    Image,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Agent {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    pub source: AgentSource,
    /// The agent's own process (ancestry), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// When `pid` is a launcher (npm's node wrapper starting Codex's native
    /// binary): the agent's program it started, which runs the tools and
    /// acts as the agent. Never changes the agent's name or session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runner: Option<u32>,
}

impl Agent {
    /// Is `pid` the agent's own process (or the program its launcher ran)?
    pub fn is_process(&self, pid: u32) -> bool {
        self.pid == Some(pid) || self.runner == Some(pid)
    }
}

/// One link of the chain from the acting process up to the agent or the
/// container's init.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ancestor {
    pub pid: u32,
    /// Shared with the process table: no copy per event.
    pub exe: Arc<str>,
    /// argv joined by spaces, cut at 120 bytes.
    pub argv: Arc<str>,
}

/// A container as tagged on an event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerTag {
    pub id: Arc<str>,
    /// Full metadata once the runtime has described it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub info: Option<Arc<ContainerInfo>>,
}

/// Where the process runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    Host,
    Container,
}

/// Who did it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub scope: Scope,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<ContainerTag>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<Arc<Agent>>,
    /// From the acting process up; shared with the resolver's cache.
    #[serde(default, skip_serializing_if = "slice_is_empty")]
    pub ancestry: Arc<[Ancestor]>,
}

fn slice_is_empty(a: &Arc<[Ancestor]>) -> bool {
    a.is_empty()
}

impl Identity {
    /// The identity of a process nothing is known about.
    pub fn host() -> Identity {
        Identity {
            scope: Scope::Host,
            container: None,
            agent: None,
            ancestry: Arc::from(Vec::new()),
        }
    }
}

/// Containers by id, shared with the runtime watchers.
pub type ContainerMap = Arc<RwLock<HashMap<String, Arc<ContainerInfo>>>>;
