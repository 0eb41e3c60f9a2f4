//! YAML rules compiled for matching: glob sets built, regexes combined,
//! CIDRs parsed, all at load time. Matching an event borrows from it and
//! allocates nothing unless the rule fires (the message is rendered then).

use std::cell::RefCell;
use std::net::IpAddr;
use std::sync::Arc;

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use regex::RegexSet;

use super::spec::{Access, AgentSel, Cidr, PathGlob, PortRange, ResultSel, RuleSpec, TextGlob};
use crate::alert::{Action, Actor, Decision, KillScope, Mode, Severity};
use crate::event::{Detail, Event, Kind};
use crate::identity::resolver::{Identity, Scope};

/// open(2)'s O_PATH flag.
const O_PATH: u32 = 0o10000000;

/// Path globs split by the base-name rule: patterns without `/` match the
/// last component, the others the whole path.
#[derive(Debug)]
struct PathGlobs {
    full: Option<GlobSet>,
    base: Option<GlobSet>,
}

impl PathGlobs {
    fn build(globs: &[PathGlob]) -> Result<Option<PathGlobs>, String> {
        if globs.is_empty() {
            return Ok(None);
        }
        let mut full = GlobSetBuilder::new();
        let mut base = GlobSetBuilder::new();
        let (mut nf, mut nb) = (0, 0);
        for g in globs {
            let glob = GlobBuilder::new(&g.0)
                .literal_separator(true)
                .build()
                .map_err(|e| format!("bad glob {:?}: {}", g.0, e.kind()))?;
            if g.0.contains('/') {
                full.add(glob);
                nf += 1;
            } else {
                base.add(glob);
                nb += 1;
            }
        }
        let done = |b: GlobSetBuilder, n: usize| -> Result<Option<GlobSet>, String> {
            if n == 0 {
                Ok(None)
            } else {
                b.build().map(Some).map_err(|e| e.to_string())
            }
        };
        Ok(Some(PathGlobs {
            full: done(full, nf)?,
            base: done(base, nb)?,
        }))
    }

    fn is_match(&self, path: &str) -> bool {
        if let Some(b) = &self.base {
            let name = path.rsplit('/').next().unwrap_or(path);
            if b.is_match(name) {
                return true;
            }
        }
        self.full.as_ref().is_some_and(|f| f.is_match(path))
    }
}

/// One text glob in the policy's dialect (`*` crosses `/`: images,
/// labels, names), for the other stages that match such patterns (agent
/// images in the config), so a pattern means the same everywhere.
pub fn text_glob(pattern: &str) -> Result<globset::GlobMatcher, String> {
    GlobBuilder::new(pattern)
        .build()
        .map(|g| g.compile_matcher())
        .map_err(|e| format!("bad glob {pattern:?}: {}", e.kind()))
}

fn text_globs(globs: &[TextGlob]) -> Result<Option<GlobSet>, String> {
    if globs.is_empty() {
        return Ok(None);
    }
    let mut b = GlobSetBuilder::new();
    for g in globs {
        b.add(
            GlobBuilder::new(&g.0)
                .build()
                .map_err(|e| format!("bad glob {:?}: {}", g.0, e.kind()))?,
        );
    }
    b.build().map(Some).map_err(|e| e.to_string())
}

fn regex_set(pats: &[super::spec::Pattern]) -> Result<Option<RegexSet>, String> {
    if pats.is_empty() {
        return Ok(None);
    }
    RegexSet::new(pats.iter().map(|p| p.0.as_str()))
        .map(Some)
        .map_err(|e| e.to_string())
}

#[derive(Debug)]
enum AgentMatch {
    Ignore,
    Any,
    NoAgent,
    Names(Box<[Box<str>]>),
}

/// A compiled YAML rule.
#[derive(Debug)]
pub struct Rule {
    spec: RuleSpec,
    policy: Arc<str>,
    name: Arc<str>,
    mode: Mode,
    kill_scope: KillScope,
    agent: AgentMatch,
    labels: Box<[(Box<str>, globset::GlobMatcher)]>,
    image: Option<GlobSet>,
    namespace: Option<GlobSet>,
    exe: Option<PathGlobs>,
    comm: Option<GlobSet>,
    ancestor: Option<PathGlobs>,
    path: Option<PathGlobs>,
    path_prefix: Box<[Box<str>]>,
    access: Box<[&'static str]>,
    exec: Option<PathGlobs>,
    argv: Option<RegexSet>,
    cmdline: Option<RegexSet>,
    stdin_from: Option<PathGlobs>,
    dest_cidrs: Box<[Cidr]>,
    dest_ports: Box<[PortRange]>,
    unix_path: Option<PathGlobs>,
    ex_cidrs: Box<[Cidr]>,
    ex_ports: Box<[PortRange]>,
    ex_paths: Option<PathGlobs>,
    ex_exec: Option<PathGlobs>,
    resolvers: Arc<[IpAddr]>,
}

/// The acting process's executable: the first ancestry link (the resolver
/// updates it at exec), else for an exec event the executable run.
pub fn exe_of(ev: &Event) -> Option<&str> {
    if let Some(a) = ev.identity.as_ref().and_then(|i| i.ancestry.first()) {
        if !a.exe.is_empty() {
            return Some(&a.exe);
        }
    }
    match &ev.detail {
        Detail::Exec(x) => Some(&x.file.path),
        _ => None,
    }
}

/// `path` equals `dir` or lies below it (whole components).
pub fn path_under(path: &str, dir: &str) -> bool {
    let dir = dir.trim_end_matches('/');
    path.strip_prefix(dir)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// Mount destinations a file rule protects: bind mounts and volumes (host
/// storage), not tmpfs and not `/` (that would be the image layer).
fn volume_mounts(id: Option<&Identity>) -> impl Iterator<Item = &str> {
    id.and_then(|i| i.container.as_ref())
        .and_then(|c| c.info.as_ref())
        .into_iter()
        .flat_map(|info| info.mounts.iter())
        .filter(|m| m.kind == "bind" || m.kind == "volume")
        .map(|m| m.destination.trim_end_matches('/'))
        .filter(|d| !d.is_empty())
}

fn net_addr(addr: Option<&str>) -> Option<IpAddr> {
    addr.and_then(|a| a.parse().ok())
}

thread_local! {
    /// Reused buffer for `cmdline` matching: no allocation per event.
    static CMDLINE: RefCell<String> = const { RefCell::new(String::new()) };
}

impl Rule {
    pub(crate) fn compile(
        spec: RuleSpec,
        policy: Arc<str>,
        mode: Mode,
        resolvers: Arc<[IpAddr]>,
    ) -> Result<Rule, String> {
        let sel = &spec.selector;
        let when = &spec.when;
        let agent = match &sel.agent {
            None => AgentMatch::Ignore,
            Some(AgentSel::Any) => AgentMatch::Any,
            Some(AgentSel::NoAgent) => AgentMatch::NoAgent,
            Some(AgentSel::Names(n)) => {
                AgentMatch::Names(n.iter().map(|s| s.as_str().into()).collect())
            }
        };
        let labels = sel
            .labels
            .iter()
            .map(|(k, v)| {
                GlobBuilder::new(&v.0)
                    .build()
                    .map(|g| (k.as_str().into(), g.compile_matcher()))
                    .map_err(|e| format!("bad glob {:?}: {}", v.0, e.kind()))
            })
            .collect::<Result<_, String>>()?;
        let mut ex_cidrs = when.except.cidrs.clone();
        if when.except.loopback {
            ex_cidrs.extend([
                Cidr::V4 {
                    addr: std::net::Ipv4Addr::new(127, 0, 0, 0),
                    prefix: 8,
                },
                Cidr::V6 {
                    addr: std::net::Ipv6Addr::LOCALHOST,
                    prefix: 128,
                },
            ]);
        }
        Ok(Rule {
            name: spec.name.as_str().into(),
            policy,
            mode,
            kill_scope: spec.kill_scope.unwrap_or_default(),
            agent,
            labels,
            image: text_globs(&sel.image)?,
            namespace: text_globs(&sel.namespace)?,
            exe: PathGlobs::build(&sel.exe)?,
            comm: text_globs(&sel.comm)?,
            ancestor: PathGlobs::build(&sel.ancestor)?,
            path: PathGlobs::build(&when.path)?,
            path_prefix: when
                .path_prefix
                .iter()
                .map(|p| p.0.as_str().into())
                .collect(),
            access: when.access.iter().map(|a: &Access| a.as_str()).collect(),
            exec: PathGlobs::build(&when.exec)?,
            argv: regex_set(&when.argv)?,
            cmdline: regex_set(&when.cmdline)?,
            stdin_from: PathGlobs::build(&when.stdin_from)?,
            dest_cidrs: when
                .dest
                .as_ref()
                .map(|d| d.cidrs.clone())
                .unwrap_or_default()
                .into(),
            dest_ports: when
                .dest
                .as_ref()
                .map(|d| d.ports.clone())
                .unwrap_or_default()
                .into(),
            unix_path: PathGlobs::build(&when.unix_path)?,
            ex_cidrs: ex_cidrs.into(),
            ex_ports: when.except.ports.clone().into(),
            ex_paths: PathGlobs::build(&when.except.paths)?,
            ex_exec: PathGlobs::build(&when.except.exec)?,
            resolvers: if when.except.dns_resolver {
                resolvers
            } else {
                Arc::from(Vec::new())
            },
            spec,
        })
    }

    /// The rule as written.
    pub fn spec(&self) -> &RuleSpec {
        &self.spec
    }
    pub fn name(&self) -> &str {
        &self.name
    }
    /// The policy it belongs to.
    pub fn policy(&self) -> &str {
        &self.policy
    }
    pub fn mode(&self) -> Mode {
        self.mode
    }
    pub fn action(&self) -> Action {
        self.spec.action
    }
    pub fn kill_scope(&self) -> KillScope {
        self.kill_scope
    }
    pub fn severity(&self) -> Severity {
        self.spec.severity
    }
    pub fn kinds(&self) -> &[Kind] {
        &self.spec.kinds
    }
    /// DNS resolvers this rule lets through on port 53 (empty unless it
    /// asks for `except: {dns_resolver: true}`).
    pub fn dns_resolvers(&self) -> &[IpAddr] {
        &self.resolvers
    }

    /// The verdict for a matching event.
    pub fn decide(&self, ev: &Event) -> Decision {
        Decision {
            policy: Arc::clone(&self.policy),
            rule: Arc::clone(&self.name),
            action: self.spec.action,
            kill_scope: self.kill_scope,
            taint: self.spec.taint,
            severity: self.spec.severity,
            message: match &ev.detail {
                // The rule's template speaks of connects.
                Detail::Dns(d) => format!(
                    "{}{} DNS query for {} via {} dropped: not in {}'s domains",
                    ev.comm,
                    ev.identity
                        .as_ref()
                        .and_then(|i| i.agent.as_ref())
                        .map_or_else(String::new, |a| format!(" ({})", a.name)),
                    d.name.as_deref().unwrap_or("(an unreadable name)"),
                    d.resolver,
                    self.name
                ),
                _ => self.spec.message.render(ev),
            },
            mode: self.mode,
        }
    }

    /// Does `ev` (of one of this rule's kinds) match?
    pub fn matches(&self, ev: &Event) -> bool {
        self.selected(ev) && self.holds(ev)
    }

    /// Whether the acting subject (agent, container, process) is one this
    /// rule is about, whatever the event did: the enforcement stage uses it
    /// to decide which tasks the kernel maps cover.
    pub fn selects(&self, ev: &Event) -> bool {
        self.selected(ev)
    }

    /// True when the selector only looks at the container (labels, image,
    /// namespace, scope, label agent), not at the process: the verdict then
    /// holds for every process of the container.
    pub fn selects_by_container_only(&self) -> bool {
        let s = &self.spec.selector;
        s.exe.is_empty() && s.comm.is_empty() && s.ancestor.is_empty() && s.actor.is_none()
    }

    fn selected(&self, ev: &Event) -> bool {
        let id = ev.identity.as_ref();
        let agent = id.and_then(|i| i.agent.as_deref());
        let ok = match &self.agent {
            AgentMatch::Ignore => true,
            AgentMatch::Any => agent.is_some(),
            AgentMatch::NoAgent => agent.is_none(),
            AgentMatch::Names(n) => agent.is_some_and(|a| n.iter().any(|x| **x == *a.name)),
        };
        if !ok {
            return false;
        }
        if let Some(scope) = self.spec.selector.scope {
            let got = id.map_or(Scope::Host, |i| i.scope);
            if got != scope {
                return false;
            }
        }
        let info = id
            .and_then(|i| i.container.as_ref())
            .and_then(|c| c.info.as_deref());
        if !self.labels.is_empty() {
            let Some(info) = info else { return false };
            for (k, g) in self.labels.iter() {
                if !info.labels.get(&**k).is_some_and(|v| g.is_match(v)) {
                    return false;
                }
            }
        }
        if let Some(g) = &self.image {
            if !info.is_some_and(|i| g.is_match(&i.image)) {
                return false;
            }
        }
        if let Some(g) = &self.namespace {
            let ns = info
                .and_then(|i| i.pod.as_ref())
                .map(|p| p.namespace.as_str());
            if !ns.is_some_and(|n| g.is_match(n)) {
                return false;
            }
        }
        if let Some(g) = &self.comm {
            if !g.is_match(&ev.comm) {
                return false;
            }
        }
        if let Some(g) = &self.exe {
            if !exe_of(ev).is_some_and(|e| g.is_match(e)) {
                return false;
            }
        }
        if let Some(g) = &self.ancestor {
            let hit = id.is_some_and(|i| i.ancestry.iter().skip(1).any(|a| g.is_match(&a.exe)));
            if !hit {
                return false;
            }
        }
        if let Some(want) = self.spec.selector.actor {
            let got = actor(ev).unwrap_or(Actor::Tool);
            if got != want {
                return false;
            }
        }
        true
    }

    fn holds(&self, ev: &Event) -> bool {
        match self.spec.when.result {
            Some(ResultSel::Success) if !ev.ok() => return false,
            Some(ResultSel::Failure) if ev.ok() => return false,
            _ => {}
        }
        match &ev.detail {
            Detail::File(f) => {
                // An O_PATH descriptor reads and writes nothing (a reopen
                // through /proc/self/fd is an open of its own): agents and
                // their runtimes take them to look paths up.
                if ev.kind == Kind::Open && f.flags & O_PATH != 0 {
                    return false;
                }
                if !self.access.is_empty()
                    && ev.kind == Kind::Open
                    && !f
                        .access
                        .as_deref()
                        .is_some_and(|a| self.access.contains(&a))
                {
                    return false;
                }
                let id = ev.identity.as_ref();
                // A volume rule guards the data that was there: a file the
                // container created itself (its lock, its temp file) is its
                // own to remove, as the kernel checked.
                self.path_holds(&f.file.path)
                    && (!self.spec.when.under_mount
                        || (!f.own_file && volume_mounts(id).any(|m| path_under(&f.file.path, m))))
            }
            Detail::Rename(r) => {
                let id = ev.identity.as_ref();
                // Moving away from a volume is removing it from there; a
                // rename inside the same mount (atomic save) is not.
                self.path_holds(&r.from.path)
                    && (!self.spec.when.under_mount
                        || (!r.own_file
                            && volume_mounts(id).any(|m| {
                                path_under(&r.from.path, m) && !path_under(&r.to.path, m)
                            })))
            }
            Detail::Exec(x) => {
                // The path as run or the binary loaded: a symlink or
                // /proc/self/exe does not hide what runs.
                if let Some(g) = &self.exec {
                    if !x.names().any(|n| g.is_match(n)) {
                        return false;
                    }
                }
                if let Some(s) = &self.argv {
                    if !x.argv.iter().any(|a| s.is_match(a)) {
                        return false;
                    }
                }
                if let Some(g) = &self.stdin_from {
                    if !x.stdin_from.as_deref().is_some_and(|w| g.is_match(w)) {
                        return false;
                    }
                }
                if let Some(s) = &self.cmdline {
                    let hit = CMDLINE.with(|buf| {
                        let mut buf = buf.borrow_mut();
                        buf.clear();
                        for (i, a) in x.argv.iter().enumerate() {
                            if i > 0 {
                                buf.push(' ');
                            }
                            buf.push_str(a);
                        }
                        s.is_match(&buf)
                    });
                    if !hit {
                        return false;
                    }
                }
                !self
                    .ex_exec
                    .as_ref()
                    .is_some_and(|g| g.is_match(&x.file.path))
            }
            Detail::Net(n) => {
                if let Some(g) = &self.unix_path {
                    if !n.unix_path.as_deref().is_some_and(|p| g.is_match(p)) {
                        return false;
                    }
                }
                let ip = net_addr(n.addr.as_deref());
                if !self.dest_cidrs.is_empty() {
                    let Some(ip) = ip else { return false };
                    if !self.dest_cidrs.iter().any(|c| c.contains(ip)) {
                        return false;
                    }
                    if !self.dest_ports.is_empty()
                        && !n
                            .port
                            .is_some_and(|p| self.dest_ports.iter().any(|r| r.contains(p)))
                    {
                        return false;
                    }
                }
                // The address came from a DNS answer for a listed name.
                if n.domain
                    .as_deref()
                    .is_some_and(|d| self.spec.when.except.domains.iter().any(|p| p.matches(d)))
                {
                    return false;
                }
                if let Some(ip) = ip {
                    if self.ex_cidrs.iter().any(|c| c.contains(ip)) {
                        return false;
                    }
                    if n.port == Some(53) && self.resolvers.iter().any(|r| same_ip(*r, ip)) {
                        return false;
                    }
                }
                if let Some(p) = n.port {
                    if self.ex_ports.iter().any(|r| r.contains(p)) {
                        return false;
                    }
                }
                true
            }
            // A query for a name outside the rule's domain list (an
            // unreadable name is outside every list).
            Detail::Dns(d) => {
                d.direction == "query"
                    && !d
                        .name
                        .as_deref()
                        .is_some_and(|n| self.spec.when.except.domains.iter().any(|p| p.matches(n)))
            }
            Detail::Fork(_)
            | Detail::Exit(_)
            | Detail::IoUring(_)
            | Detail::Compat(_)
            | Detail::Flood(_)
            | Detail::PolicyReload(_) => true,
        }
    }

    fn path_holds(&self, path: &str) -> bool {
        if let Some(g) = &self.path {
            if !g.is_match(path) {
                return false;
            }
        }
        if !self.path_prefix.is_empty() && !self.path_prefix.iter().any(|p| path_under(path, p)) {
            return false;
        }
        !self.ex_paths.as_ref().is_some_and(|g| g.is_match(path))
    }
}

/// Equal, counting an IPv4-mapped IPv6 address as its IPv4 address.
fn same_ip(a: IpAddr, b: IpAddr) -> bool {
    let canon = |ip: IpAddr| match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    canon(a) == canon(b)
}

/// Who acted, for an agent whose process is known (found by ancestry):
/// the agent process itself, or a program it ran. None otherwise.
pub fn actor(ev: &Event) -> Option<Actor> {
    let a = ev.identity.as_ref()?.agent.as_ref()?;
    a.pid?;
    Some(if a.is_process(ev.pid) {
        Actor::Agent
    } else {
        Actor::Tool
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_under_is_component_wise() {
        assert!(path_under("/data", "/data"));
        assert!(path_under("/data/x", "/data/"));
        assert!(!path_under("/database", "/data"));
        assert!(path_under("/x", "/"));
    }

    #[test]
    fn base_name_rule() {
        let g = PathGlobs::build(&[PathGlob("curl".into()), PathGlob("/tmp/**".into())])
            .unwrap()
            .unwrap();
        assert!(g.is_match("/usr/bin/curl"));
        assert!(g.is_match("curl"));
        assert!(!g.is_match("/usr/bin/curly"));
        assert!(g.is_match("/tmp/a/b"));
        assert!(!g.is_match("/var/tmp/a"));
        let s = PathGlobs::build(&[PathGlob("/home/*/.ssh/**".into())])
            .unwrap()
            .unwrap();
        assert!(s.is_match("/home/me/.ssh/id_rsa"));
        assert!(!s.is_match("/home/me/x/.ssh/id_rsa"));
    }
}
