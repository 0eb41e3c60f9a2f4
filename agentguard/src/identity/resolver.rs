//! Tags events with who did them: container (and pod), agent, ancestry.
//!
//! The process table is kept from the events themselves (fork copies the
//! parent's identity to the child before it runs, exec updates it, exit
//! drops it), so a cache hit is two hash lookups and a few `Arc` clones. A
//! process seen for the first time (started before the daemon) is read once
//! from /proc. Container metadata comes from a shared map that the runtime
//! watchers fill; a container not there yet is still tagged with the id its
//! cgroup path names and its metadata is asked for (the [`super::stage`]
//! holds such events a bounded time, then lets them go as they are).
//!
//! The ancestry chain is cached per process and rebuilt only when the process
//! table changed shape (an exec or a new process), so a cache hit allocates
//! nothing.
//!
//! Size: about 600 lines of code; the rest is its tests.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

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

pub use super::model::{Agent, AgentSource, Ancestor, ContainerMap, ContainerTag, Identity, Scope};

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
    /// Ancestry built at table generation `.0`.
    chain: Option<(u64, Arc<[Ancestor]>)>,
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

/// Agent named by a container's image: `pattern` is a glob (`*`, `?`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageAgent {
    pub pattern: String,
    pub agent: String,
}

/// A container's metadata as last read from the shared map, with the agent
/// it names (computed once per metadata version, not per event).
struct KnownContainer {
    info: Arc<ContainerInfo>,
    agent: Option<Arc<Agent>>,
}

/// How long a container id without metadata waits before it is asked for
/// again (a non-Docker container would otherwise be inspected per event).
const ASK_AGAIN: Duration = Duration::from_secs(5);

pub struct Resolver {
    procs: PidMap<Proc>,
    containers: ContainerMap,
    known: HashMap<Arc<str>, KnownContainer>,
    agents: Vec<String>,
    /// With each pattern compiled (the policy's text-glob dialect).
    images: Vec<(globset::GlobMatcher, ImageAgent)>,
    /// Container ids seen without metadata, for the watcher to describe.
    wanted: Vec<String>,
    asked: HashMap<Arc<str>, Instant>,
    /// Bumped whenever a process's exe, parent or container may have
    /// changed: cached chains older than this are rebuilt.
    generation: u64,
    /// A cgroup's path by its id, as the kernel recorded it at mkdir.
    cgroup_paths: Option<CgroupPathFn>,
}

/// Looks up a cgroup's path (below the cgroup2 mount) by its id.
pub type CgroupPathFn = Box<dyn Fn(u64) -> Option<String> + Send>;

/// Glob match with `*` (any run) and `?` (one char), iterative with
/// single-star backtracking: linear enough for image names.
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
            known: HashMap::new(),
            agents: agents.iter().map(|a| (*a).to_owned()).collect(),
            images: Vec::new(),
            wanted: Vec::new(),
            asked: HashMap::new(),
            generation: 0,
            cgroup_paths: None,
        }
    }

    /// Tags events by the cgroup id they carry (the kernel's word, good
    /// after the process and its cgroup are gone) before /proc.
    pub fn with_cgroup_paths(mut self, f: CgroupPathFn) -> Resolver {
        self.cgroup_paths = Some(f);
        self
    }

    /// The container of cgroup `cg` from its recorded path: None when the
    /// path is not recorded, Some(None) for a cgroup that is no container's.
    fn container_by_cgroup(&self, cg: u64) -> Option<Option<Arc<str>>> {
        let path = self.cgroup_paths.as_ref()?(cg)?;
        Some(cgroup::parse_path(&path).container_id.map(Arc::<str>::from))
    }

    /// A process that was gone before the table met it: built from its
    /// record (the container from the cgroup id, the agent from a known
    /// parent).
    fn adopt(&mut self, ev: &Event) {
        let container = self.container_by_cgroup(ev.cgroup_id).flatten();
        let agent = self.procs.get(&ev.ppid).and_then(|p| p.agent.clone());
        let (exe, argv) = match &ev.detail {
            Detail::Exec(x) if ev.ok() => (Arc::from(x.file.path.as_str()), summary(&x.argv)),
            _ => (Arc::from(""), Arc::from("")),
        };
        self.procs.insert(
            ev.pid,
            Proc {
                ppid: ev.ppid,
                cgroup_id: ev.cgroup_id,
                exe,
                argv,
                container,
                agent,
                chain: None,
            },
        );
        self.generation += 1;
    }

    /// Adds agents named by image patterns (first match wins; a container's
    /// `agentguard.io/agent` label still takes precedence).
    /// A pattern that is not a glob (the config refuses those at load) is
    /// left out, with a warning.
    pub fn with_image_agents(mut self, images: Vec<ImageAgent>) -> Resolver {
        self.images = images
            .into_iter()
            .filter_map(|i| match crate::policy::rules::text_glob(&i.pattern) {
                Ok(m) => Some((m, i)),
                Err(e) => {
                    tracing::warn!("agent image pattern left out: {e}");
                    None
                }
            })
            .collect();
        self
    }

    /// Whether a process is tagged with an agent now (for the kernel filter).
    pub fn agent_of(&self, pid: u32) -> Option<&Arc<Agent>> {
        self.procs.get(&pid).and_then(|p| p.agent.as_ref())
    }

    /// Container ids that need metadata (drained by the caller).
    /// Forgets what describes things that are gone: containers the
    /// watchers dropped, asks past their wait, processes whose exit was
    /// lost (`alive` says whether a pid still runs). Called from the
    /// daemon's housekeeping, so a long run does not grow with every
    /// container and process it ever saw. Returns how many processes went.
    pub fn prune(&mut self, alive: impl Fn(u32) -> bool) -> usize {
        if let Ok(m) = self.containers.read() {
            self.known.retain(|id, _| m.contains_key(id.as_ref()));
        }
        let now = Instant::now();
        self.asked.retain(|_, t| now.duration_since(*t) < ASK_AGAIN);
        let before = self.procs.len();
        self.procs.retain(|pid, _| alive(*pid));
        shrink(&mut self.procs);
        shrink(&mut self.known);
        shrink(&mut self.asked);
        before - self.procs.len()
    }

    /// Processes described now (for `status`).
    pub fn procs_known(&self) -> usize {
        self.procs.len()
    }

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

    /// A launcher's agent program starting: the exec, by a direct child of
    /// an ancestry agent's process, of a binary of the agent's own name,
    /// where that process was known by its exec path or argv[0] only (an
    /// interpreter: npm's `node .bin/codex` starting Codex's native binary).
    /// Then the child runs the tools and acts as the agent: the same agent,
    /// with it as `runner`. Only one level, and never below a process that
    /// is itself the agent's binary: a program of the agent's name that the
    /// agent ran is a tool of it, not the agent.
    fn launched(&self, ev: &Event) -> Option<Arc<Agent>> {
        let Detail::Exec(x) = &ev.detail else {
            return None;
        };
        if !ev.ok() {
            return None;
        }
        let p = self.procs.get(&ev.pid)?;
        let a = p.agent.as_ref()?;
        if a.source != AgentSource::Ancestry || a.runner.is_some() || a.pid != Some(p.ppid) {
            return None;
        }
        let binary = x.binary.as_deref().unwrap_or(&x.file.path);
        if basename(binary) != a.name {
            return None;
        }
        let root = self.procs.get(&p.ppid)?;
        if basename(&root.exe) == a.name {
            return None;
        }
        Some(Arc::new(Agent {
            runner: Some(ev.pid),
            ..(**a).clone()
        }))
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
                    session: process_session(pid),
                    source: AgentSource::Ancestry,
                    pid: Some(pid),
                    runner: None,
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
                chain: None,
            },
        );
        self.generation += 1;
        Some(())
    }

    /// Updates the table from `ev` and returns its identity.
    pub fn tag(&mut self, ev: &Event) -> Identity {
        let _ = self.load(ev.pid, 0);
        // Records the daemon made itself (a flood report) name a pid that
        // may be long gone: identified, never kept.
        let synthetic = matches!(ev.kind, Kind::Flood | Kind::PolicyReload);
        let adopted = !self.procs.contains_key(&ev.pid) && ev.pid != 0;
        if adopted {
            self.adopt(ev);
        }
        let recheck = self
            .procs
            .get(&ev.pid)
            .is_some_and(|p| p.cgroup_id != ev.cgroup_id || (ev.kind == Kind::Exec && ev.ok()));
        let by_id = if recheck {
            self.container_by_cgroup(ev.cgroup_id)
        } else {
            None
        };
        if let Some(p) = self.procs.get_mut(&ev.pid) {
            // Re-read the container when the cgroup changed, and at every
            // exec (on v1-only hosts the v2 id may not move): by the
            // record's cgroup id, else from /proc.
            if recheck {
                p.cgroup_id = ev.cgroup_id;
                match by_id {
                    Some(c) => p.container = c,
                    None => {
                        if let Ok(cg) = cgroup::for_pid(ev.pid) {
                            p.container = cg.container_id.map(Arc::<str>::from);
                        }
                    }
                }
                self.generation += 1;
            }
            if let Detail::Exec(x) = &ev.detail {
                if ev.ok() {
                    // A /proc path (busybox applets run /proc/self/exe)
                    // says nothing; the binary does.
                    let exe = match &x.binary {
                        Some(b) if x.file.path.starts_with("/proc/") => b,
                        _ => &x.file.path,
                    };
                    p.exe = Arc::from(exe.as_str());
                    p.argv = summary(&x.argv);
                    self.generation += 1;
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
                Detail::Exec(x) if ev.ok() => self
                    .agent_exe(&x.file.path, x.argv.first().map(String::as_str))
                    .or_else(|| {
                        let b = x.binary.as_deref()?;
                        self.agent_exe(b, None)
                    }),
                _ => None,
            }
            .or_else(|| self.agents.iter().find(|a| **a == ev.comm).cloned());
            if let (Some(name), Some(p)) = (found, self.procs.get_mut(&ev.pid)) {
                self.generation += 1;
                p.agent = Some(Arc::new(Agent {
                    name,
                    session: process_session(ev.pid),
                    source: AgentSource::Ancestry,
                    pid: Some(ev.pid),
                    runner: None,
                }));
            }
        } else if let Some(runner) = self.launched(ev) {
            if let Some(p) = self.procs.get_mut(&ev.pid) {
                self.generation += 1;
                p.agent = Some(runner);
            }
        }
        if let Detail::Fork(f) = &ev.detail {
            if let Some(parent) = self.procs.get(&ev.pid).cloned() {
                self.procs.insert(
                    f.child_pid,
                    Proc {
                        ppid: ev.pid,
                        chain: None,
                        ..parent
                    },
                );
            }
        }
        let id = self.identify(ev.pid);
        if ev.kind == Kind::Exit || (adopted && synthetic) {
            self.procs.remove(&ev.pid);
        }
        id
    }

    /// Metadata for a container id, with the agent its label or image names;
    /// re-derived only when the watcher replaced the metadata.
    fn container(&mut self, id: &Arc<str>) -> Option<(Arc<ContainerInfo>, Option<Arc<Agent>>)> {
        let info = self
            .containers
            .read()
            .ok()
            .and_then(|m| m.get(id.as_ref()).cloned());
        let Some(info) = info else {
            self.known.remove(id);
            return None;
        };
        if let Some(k) = self.known.get(id) {
            if Arc::ptr_eq(&k.info, &info) {
                return Some((Arc::clone(&k.info), k.agent.clone()));
            }
        }
        let agent = self.container_agent(&info);
        self.known.insert(
            Arc::clone(id),
            KnownContainer {
                info: Arc::clone(&info),
                agent: agent.clone(),
            },
        );
        Some((info, agent))
    }

    fn container_agent(&self, c: &ContainerInfo) -> Option<Arc<Agent>> {
        // A container label names the agent for everything inside; an image
        // pattern is the fallback for images one can't relabel.
        if let Some(name) = c.labels.get(AGENT_LABEL) {
            return Some(Arc::new(Agent {
                name: name.clone(),
                session: c.labels.get(SESSION_LABEL).cloned(),
                source: AgentSource::Label,
                pid: None,
                runner: None,
            }));
        }
        self.images
            .iter()
            .find(|(m, _)| m.is_match(&c.image))
            .map(|(_, i)| {
                Arc::new(Agent {
                    name: i.agent.clone(),
                    session: c.labels.get(SESSION_LABEL).cloned(),
                    source: AgentSource::Image,
                    pid: None,
                    runner: None,
                })
            })
    }

    /// Fills in container metadata that arrived after `id` was made (the
    /// bounded wait of the identity stage). True when it is complete.
    pub fn refresh(&mut self, id: &mut Identity) -> bool {
        let Some(tag) = id.container.as_mut() else {
            return true;
        };
        if tag.info.is_some() {
            return true;
        }
        let cid = Arc::clone(&tag.id);
        let Some((info, agent)) = self.container(&cid) else {
            return false;
        };
        tag.info = Some(info);
        if agent.is_some() {
            id.agent = agent;
        }
        true
    }

    fn chain(
        &self,
        pid: u32,
        container: &Option<Arc<str>>,
        stop_at: Option<u32>,
    ) -> Arc<[Ancestor]> {
        let mut ancestry = Vec::new();
        let mut cur = self.procs.get(&pid).map(|p| (pid, p));
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
                .filter(|pp| pp.container == *container || container.is_none())
                .map(|pp| (cp.ppid, pp));
        }
        Arc::from(ancestry)
    }

    fn identify(&mut self, pid: u32) -> Identity {
        let Some(p) = self.procs.get(&pid) else {
            return Identity::host();
        };
        let container = p.container.clone();
        let own_agent = p.agent.clone();
        let known = container.as_ref().and_then(|id| self.container(id));
        let (info, container_agent) = match known {
            Some((i, a)) => (Some(i), a),
            None => (None, None),
        };
        let agent = match (container_agent, own_agent) {
            // The container's label names the agent; its process, found
            // by its binary inside, says which process is the agent itself
            // (for `actor`, and so a tool's kill never takes the agent).
            (Some(c), Some(own)) if c.pid.is_none() && own.name == c.name && own.pid.is_some() => {
                Some(Arc::new(Agent {
                    pid: own.pid,
                    runner: own.runner,
                    ..(*c).clone()
                }))
            }
            (c, own) => c.or(own),
        };
        let stop_at = agent.as_ref().and_then(|a| a.pid);
        let generation = self.generation;
        let cached = self
            .procs
            .get(&pid)
            .and_then(|p| p.chain.as_ref())
            .filter(|(g, _)| *g == generation)
            .map(|(_, c)| Arc::clone(c));
        let ancestry = match cached {
            Some(c) => c,
            None => {
                let c = self.chain(pid, &container, stop_at);
                if let Some(p) = self.procs.get_mut(&pid) {
                    p.chain = Some((generation, Arc::clone(&c)));
                }
                c
            }
        };
        if let Some(id) = &container {
            if info.is_none() {
                self.ask(id);
            }
        }
        Identity {
            scope: if container.is_some() {
                Scope::Container
            } else {
                Scope::Host
            },
            container: container.map(|id| ContainerTag { id, info }),
            agent,
            ancestry,
        }
    }

    /// Queues a metadata request for `id`, at most once per [`ASK_AGAIN`].
    fn ask(&mut self, id: &Arc<str>) {
        let now = Instant::now();
        match self.asked.get(id) {
            Some(t) if now.duration_since(*t) < ASK_AGAIN => {}
            _ => {
                if self.asked.len() >= 4096 {
                    // Containers come and go: forget the stale asks.
                    self.asked.retain(|_, t| now.duration_since(*t) < ASK_AGAIN);
                }
                self.asked.insert(Arc::clone(id), now);
                self.wanted.push(id.to_string());
            }
        }
    }

    /// Processes currently tracked.
    pub fn tracked(&self) -> usize {
        self.procs.len()
    }
}

/// The session of an agent found by its process: that process instance,
/// `PID.START` (START: its start, CLOCK_BOOTTIME ns at tick precision), so
/// a SIEM can group one run's actions and never mixes two runs that shared
/// a pid.
fn process_session(pid: u32) -> Option<String> {
    procfs::start_boottime_ns(pid).map(|start| format!("{pid}.{start}"))
}

/// Gives back what a burst left reserved: a map a quarter full keeps twice
/// what it holds.
pub(crate) fn shrink<K: Eq + std::hash::Hash, V, S: std::hash::BuildHasher>(
    m: &mut HashMap<K, V, S>,
) {
    if m.capacity() > 64 && m.len() < m.capacity() / 4 {
        m.shrink_to(m.len() * 2);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::cgroup::Runtime;
    use std::collections::BTreeMap;

    fn glob_match(pattern: &str, s: &str) -> bool {
        crate::policy::rules::text_glob(pattern).is_ok_and(|m| m.is_match(s))
    }

    /// Agent image patterns in the policy's text-glob dialect.
    #[test]
    fn glob_cases() {
        assert!(glob_match("*", ""));
        assert!(glob_match(
            "ghcr.io/acme/agent-*",
            "ghcr.io/acme/agent-claude:1.2"
        ));
        assert!(!glob_match(
            "ghcr.io/acme/agent-*",
            "docker.io/acme/agent-claude"
        ));
        assert!(glob_match("*claude*", "my/claude-code:latest"));
        assert!(glob_match("a?c", "abc"));
        assert!(!glob_match("a?c", "ac"));
        assert!(glob_match("a*b*c", "aXXbYYbZc"));
        assert!(!glob_match("a*b*c", "aXXbYY"));
    }

    fn info(id: &str, image: &str, labels: &[(&str, &str)]) -> Arc<ContainerInfo> {
        Arc::new(ContainerInfo {
            id: id.into(),
            name: "n".into(),
            image: image.into(),
            runtime: Runtime::Docker,
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<BTreeMap<_, _>>(),
            mounts: Vec::new(),
            init_pid: None,
            pod: None,
        })
    }

    #[test]
    fn late_metadata_is_filled_in_and_names_the_agent() {
        let map = ContainerMap::default();
        let mut r =
            Resolver::new(map.clone(), DEFAULT_AGENTS).with_image_agents(vec![ImageAgent {
                pattern: "acme/agent-*".into(),
                agent: "acme".into(),
            }]);
        let mut id = Identity {
            scope: Scope::Container,
            container: Some(ContainerTag {
                id: Arc::from("c1"),
                info: None,
            }),
            agent: None,
            ancestry: Arc::from(Vec::new()),
        };
        assert!(!r.refresh(&mut id), "nothing known yet");
        map.write()
            .expect("lock")
            .insert("c1".into(), info("c1", "acme/agent-x:1", &[]));
        assert!(r.refresh(&mut id));
        let a = id.agent.as_ref().expect("image agent");
        assert_eq!((a.name.as_str(), a.source), ("acme", AgentSource::Image));
        // A label wins over the image pattern, and a replaced entry is re-read.
        map.write().expect("lock").insert(
            "c1".into(),
            info(
                "c1",
                "acme/agent-x:1",
                &[(AGENT_LABEL, "codex"), (SESSION_LABEL, "s1")],
            ),
        );
        let (_, agent) = r.container(&Arc::from("c1")).expect("known");
        let agent = agent.expect("label agent");
        assert_eq!(agent.name, "codex");
        assert_eq!(agent.session.as_deref(), Some("s1"));
        assert_eq!(agent.source, AgentSource::Label);
    }

    #[test]
    fn unknown_containers_are_asked_for_once() {
        let mut r = Resolver::new(ContainerMap::default(), DEFAULT_AGENTS);
        let id: Arc<str> = Arc::from("c2");
        r.ask(&id);
        r.ask(&id);
        assert_eq!(r.take_wanted(), vec!["c2".to_owned()]);
        r.ask(&id);
        assert!(
            r.take_wanted().is_empty(),
            "asked again within {ASK_AGAIN:?}"
        );
    }

    /// A long run forgets what is gone: a removed container's entry (no
    /// event would ever ask for it again), and processes whose exit was
    /// lost, while what is still there stays.
    #[test]
    fn prune_forgets_gone_containers_and_processes() {
        let map = ContainerMap::default();
        let mut r = Resolver::new(map.clone(), DEFAULT_AGENTS);
        for c in ["c1", "c2"] {
            map.write()
                .expect("lock")
                .insert(c.into(), info(c, "busybox", &[]));
            assert!(r.container(&Arc::from(c)).is_some());
        }
        for pid in [10, 11, 12] {
            r.procs.insert(
                pid,
                Proc {
                    ppid: 1,
                    cgroup_id: 0,
                    exe: Arc::from("/bin/sh"),
                    argv: Arc::from("sh"),
                    container: None,
                    agent: None,
                    chain: None,
                },
            );
        }
        map.write().expect("lock").remove("c1");
        assert_eq!(r.prune(|pid| pid != 11), 1);
        assert!(!r.known.contains_key("c1"), "removed container kept");
        assert!(r.known.contains_key("c2"), "live container forgotten");
        let mut pids: Vec<u32> = r.procs.keys().copied().collect();
        pids.sort_unstable();
        assert_eq!(pids, [10, 12]);
    }
}
