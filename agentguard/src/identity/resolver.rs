//! Tags events with who did them: container (and pod), agent, ancestry.
//!
//! The process table is kept from the events themselves (fork copies the
//! parent's identity to the child before it runs, exec updates it, exit
//! drops it), so a cache hit is two hash lookups and a few `Arc` clones. A
//! process seen for the first time (started before the daemon) is read once
//! from /proc. Container metadata comes from a shared map that the runtime
//! watchers fill; a container not there yet is still tagged with the id its
//! cgroup path names, and its metadata is asked for, never waited on.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};

use super::cgroup;
use super::docker::{ContainerInfo, AGENT_LABEL, SESSION_LABEL};
use super::procfs;
use crate::event::{Detail, Event, Kind};

/// Executable names that make a process (and its descendants) an agent.
pub const DEFAULT_AGENTS: &[&str] = &[
    "claude",
    "codex",
    "cursor-agent",
    "aider",
    "gemini",
    "goose",
    "opencode",
];

/// Longest ancestry chain carried by an event.
pub const MAX_ANCESTRY: usize = 8;

/// How the agent was recognized.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentSource {
    /// The container's `agentguard.io/agent` label.
    Label,
    /// An ancestor process runs a known agent executable.
    Ancestry,
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
    pub id: String,
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
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ancestry: Vec<Ancestor>,
}

/// Containers by id, shared with the runtime watchers.
pub type ContainerMap = Arc<RwLock<HashMap<String, Arc<ContainerInfo>>>>;

#[derive(Clone, Debug)]
struct Proc {
    ppid: u32,
    /// cgroup v2 id last seen: a change means the process moved (runc moves
    /// a container's first process after forking it on the host).
    cgroup_id: u64,
    exe: Arc<str>,
    argv: Arc<str>,
    container: Option<Arc<str>>,
    agent: Option<Arc<Agent>>,
}

/// Pids are small dense integers chosen by the kernel, not by an attacker
/// who could aim collisions at the table: a multiplicative hash is enough
/// and far cheaper than SipHash on the per-event path.
#[derive(Default)]
pub struct PidHasher(u64);

impl std::hash::Hasher for PidHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(*b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u32(&mut self, n: u32) {
        self.0 = u64::from(n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

type PidMap<V> = HashMap<u32, V, std::hash::BuildHasherDefault<PidHasher>>;

pub struct Resolver {
    procs: PidMap<Proc>,
    containers: ContainerMap,
    agents: Vec<String>,
    /// Container ids seen without metadata, for the watcher to describe.
    wanted: Vec<String>,
}

fn basename(p: &str) -> &str {
    p.rsplit('/').next().unwrap_or(p)
}

fn summary(argv: &[String]) -> Arc<str> {
    let mut s = argv.join(" ");
    if s.len() > 120 {
        let mut cut = 120;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    Arc::from(s)
}

impl Resolver {
    pub fn new(containers: ContainerMap, agents: &[&str]) -> Resolver {
        Resolver {
            procs: PidMap::default(),
            containers,
            agents: agents.iter().map(|a| (*a).to_owned()).collect(),
            wanted: Vec::new(),
        }
    }

    /// Container ids that need metadata (drained by the caller).
    pub fn take_wanted(&mut self) -> Vec<String> {
        std::mem::take(&mut self.wanted)
    }

    fn agent_exe(&self, exe: &str, argv0: Option<&str>) -> Option<String> {
        let names = [Some(basename(exe)), argv0.map(basename)];
        names
            .into_iter()
            .flatten()
            .find(|n| self.agents.iter().any(|a| a == n))
            .map(str::to_owned)
    }

    /// Loads a process unknown to the table from /proc (and its ancestors,
    /// for an inherited agent). Bounded depth.
    fn load(&mut self, pid: u32, depth: usize) -> Option<()> {
        if self.procs.contains_key(&pid) {
            return Some(());
        }
        let info = procfs::read(pid)?;
        let container = cgroup::for_pid(pid)
            .ok()
            .and_then(|c| c.container_id)
            .map(Arc::<str>::from);
        let exe = info
            .exe
            .as_ref()
            .map(|e| e.display().to_string())
            .unwrap_or_default();
        let own = self
            .agent_exe(&exe, info.argv.first().map(String::as_str))
            .map(|name| {
                Arc::new(Agent {
                    name,
                    session: None,
                    source: AgentSource::Ancestry,
                    pid: Some(pid),
                })
            });
        let agent = match own {
            Some(a) => Some(a),
            None if depth < 16 && info.ppid > 1 => {
                self.load(info.ppid, depth + 1);
                self.procs.get(&info.ppid).and_then(|p| p.agent.clone())
            }
            None => None,
        };
        self.procs.insert(
            pid,
            Proc {
                ppid: info.ppid,
                cgroup_id: 0,
                exe: Arc::from(exe),
                argv: summary(&info.argv),
                container,
                agent,
            },
        );
        Some(())
    }

    /// Updates the table from `ev` and returns its identity.
    pub fn tag(&mut self, ev: &Event) -> Identity {
        let _ = self.load(ev.pid, 0);
        if let Some(p) = self.procs.get_mut(&ev.pid) {
            // Re-read the container when the cgroup changed, and at every
            // exec (on v1-only hosts the v2 id may not move).
            if p.cgroup_id != ev.cgroup_id || (ev.kind == Kind::Exec && ev.ok()) {
                p.cgroup_id = ev.cgroup_id;
                if let Ok(cg) = cgroup::for_pid(ev.pid) {
                    p.container = cg.container_id.map(Arc::<str>::from);
                }
            }
            if let Detail::Exec(x) = &ev.detail {
                if ev.ok() {
                    p.exe = Arc::from(x.file.path.as_str());
                    p.argv = summary(&x.argv);
                }
            }
        }
        // Agent by executable, argv[0] or, as a last resort, the process
        // name (a process first met mid-exec has no readable exe yet).
        // Claiming an agent's name only makes a process more watched, so
        // trusting these is safe. Before a fork is recorded, so the child
        // inherits it.
        let needs_agent = self.procs.get(&ev.pid).is_some_and(|p| p.agent.is_none());
        if needs_agent {
            let found = match &ev.detail {
                Detail::Exec(x) if ev.ok() => {
                    self.agent_exe(&x.file.path, x.argv.first().map(String::as_str))
                }
                _ => None,
            }
            .or_else(|| self.agents.iter().find(|a| **a == ev.comm).cloned());
            if let (Some(name), Some(p)) = (found, self.procs.get_mut(&ev.pid)) {
                p.agent = Some(Arc::new(Agent {
                    name,
                    session: None,
                    source: AgentSource::Ancestry,
                    pid: Some(ev.pid),
                }));
            }
        }
        if let Detail::Fork(f) = &ev.detail {
            if let Some(parent) = self.procs.get(&ev.pid).cloned() {
                self.procs.insert(
                    f.child_pid,
                    Proc {
                        ppid: ev.pid,
                        ..parent
                    },
                );
            }
        }
        let id = self.identify(ev.pid);
        if ev.kind == Kind::Exit {
            self.procs.remove(&ev.pid);
        }
        id
    }

    fn identify(&mut self, pid: u32) -> Identity {
        let Some(p) = self.procs.get(&pid) else {
            return Identity {
                scope: Scope::Host,
                container: None,
                agent: None,
                ancestry: Vec::new(),
            };
        };
        let container = p.container.clone();
        let info = container.as_ref().and_then(|id| {
            self.containers
                .read()
                .ok()
                .and_then(|m| m.get(id.as_ref()).cloned())
        });
        // A container label names the agent for everything inside.
        let label_agent = info.as_ref().and_then(|c| {
            c.labels.get(AGENT_LABEL).map(|name| {
                Arc::new(Agent {
                    name: name.clone(),
                    session: c.labels.get(SESSION_LABEL).cloned(),
                    source: AgentSource::Label,
                    pid: None,
                })
            })
        });
        let agent = label_agent.or_else(|| p.agent.clone());
        let stop_at = agent.as_ref().and_then(|a| a.pid);
        let mut ancestry = Vec::new();
        let mut cur = Some((pid, p));
        while let Some((cpid, cp)) = cur {
            if ancestry.len() >= MAX_ANCESTRY {
                break;
            }
            ancestry.push(Ancestor {
                pid: cpid,
                exe: Arc::clone(&cp.exe),
                argv: Arc::clone(&cp.argv),
            });
            // Stop at the agent, or where the container ends.
            if Some(cpid) == stop_at {
                break;
            }
            cur = self
                .procs
                .get(&cp.ppid)
                .filter(|pp| pp.container == container || container.is_none())
                .map(|pp| (cp.ppid, pp));
        }
        if let Some(id) = &container {
            if info.is_none() && !self.wanted.iter().any(|w| w.as_str() == id.as_ref()) {
                self.wanted.push(id.to_string());
            }
        }
        Identity {
            scope: if container.is_some() {
                Scope::Container
            } else {
                Scope::Host
            },
            container: container.map(|id| ContainerTag {
                id: id.to_string(),
                info,
            }),
            agent,
            ancestry,
        }
    }

    /// Processes currently tracked.
    pub fn tracked(&self) -> usize {
        self.procs.len()
    }
}
