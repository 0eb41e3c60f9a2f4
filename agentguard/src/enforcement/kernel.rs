//! Compiles the policy rules the kernel can decide on its own into the
//! enforcement maps (agentguard_common::enforce), and keeps the subject
//! maps (which tasks and containers each rule covers) current from the
//! tagged events.
//!
//! What compiles: network rules with `dest` CIDRs/ports (deny in the cgroup
//! hooks, kill in the connect/send tracepoints), `under_mount` kill rules
//! (per container: its volume destinations), exec kill rules whose globs are
//! directory prefixes (`/tmp/**`), and io_uring_setup kill rules — each only
//! when it has no other condition, since the kernel checks nothing else.
//! Everything else is decided in userspace from the event.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;

use anyhow::{Context as _, Result};
use aya::maps::lpm_trie::{Key, LpmTrie};
use aya::maps::{Array, HashMap as BpfHashMap, MapData};

use agentguard_common::enforce::{
    net_flags, op, rule_action, NetKey, NetVerdict, PathKey, PathVerdict, PortRange as KPorts,
    RuleSlot, KILL_PATH_LEN, MAX_PORT_RANGES, MAX_RULES, NET_KEY_RULE_BITS, PATH_KEY_CGROUP_BITS,
};
use agentguard_common::filter::config;

use crate::alert::{Action, Mode};
use crate::event::{Event, Kind};
use crate::identity::resolver::AgentSource;
use crate::policy::rules::Rule;
use crate::policy::spec::{AgentSel, Cidr, PortRange};
use crate::policy::PolicySet;
use crate::sensor::Sensor;

/// What a kernel slot does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlotKind {
    Net,
    Mount,
    Exec,
    IoUring,
}

/// One compiled rule.
#[derive(Clone, Debug)]
pub struct Slot {
    pub policy: Arc<str>,
    pub rule: Arc<str>,
    pub action: Action,
    pub kind: SlotKind,
    /// Index in `PolicySet::rules()`.
    pub index: usize,
    /// Mount rules: which ops (agentguard_common::enforce::op).
    ops: u32,
}

/// The rules of `set` the kernel can enforce, in a stable order (the same
/// policy gives the same slots, so a restarted daemon rewrites identical
/// entries over the pinned maps).
pub fn plan(set: &PolicySet) -> (Vec<Slot>, Vec<String>) {
    let mut slots = Vec::new();
    let mut notes = Vec::new();
    for (index, r) in set.rules().iter().enumerate() {
        if r.mode() != Mode::Enforce {
            continue;
        }
        let Some((kind, ops)) = kernel_kind(r) else {
            continue;
        };
        if slots.len() as u32 >= MAX_RULES {
            notes.push(format!(
                "rule {}/{}: more than {MAX_RULES} kernel rules; enforced from userspace",
                r.policy(),
                r.name()
            ));
            continue;
        }
        slots.push(Slot {
            policy: Arc::from(r.policy()),
            rule: Arc::from(r.name()),
            action: r.action(),
            kind,
            index,
            ops,
        });
    }
    (slots, notes)
}

/// Exec globs that are plain directory prefixes: `/tmp/**` -> `/tmp/`.
fn exec_prefixes(r: &Rule) -> Option<Vec<String>> {
    r.spec()
        .when
        .exec
        .iter()
        .map(|g| {
            let p = g.0.strip_suffix("**")?;
            let plain = p.starts_with('/')
                && p.ends_with('/')
                && !p.contains(['*', '?', '[', '{'])
                && p.len() <= KILL_PATH_LEN;
            plain.then(|| p.to_owned())
        })
        .collect()
}

fn kernel_kind(r: &Rule) -> Option<(SlotKind, u32)> {
    let w = &r.spec().when;
    let kinds = r.kinds();
    // Conditions the kernel does not check keep a rule in userspace.
    let ex = &w.except;
    let no_except = ex.cidrs.is_empty()
        && ex.ports.is_empty()
        && !ex.loopback
        && !ex.dns_resolver
        && ex.paths.is_empty()
        && ex.exec.is_empty();
    let only = |n: usize| w.count() == n && w.result.is_none() && no_except;
    match r.action() {
        Action::Deny | Action::Kill
            if w.dest.is_some()
                && w.count() == 1
                && w.result.is_none()
                && kinds
                    .iter()
                    .all(|k| matches!(k, Kind::Connect | Kind::Send))
                && w.except.paths.is_empty()
                && w.except.exec.is_empty() =>
        {
            Some((SlotKind::Net, 0))
        }
        Action::Kill if w.under_mount && only(1) => {
            let mut ops = 0;
            for k in kinds {
                ops |= match k {
                    Kind::Unlink => op::UNLINK,
                    Kind::Rmdir => op::RMDIR,
                    Kind::Rename => op::RENAME_AWAY,
                    _ => return None,
                };
            }
            Some((SlotKind::Mount, ops))
        }
        Action::Kill if kinds == [Kind::Exec] && !w.exec.is_empty() && only(1) => {
            exec_prefixes(r).map(|_| (SlotKind::Exec, op::EXEC))
        }
        Action::Kill if kinds == [Kind::IoUringSetup] && only(0) => Some((SlotKind::IoUring, 0)),
        _ => None,
    }
}

fn v6_of(c: &Cidr) -> ([u8; 16], u32) {
    match c.network() {
        IpAddr::V4(a) => (a.to_ipv6_mapped().octets(), 96 + u32::from(c.prefix())),
        IpAddr::V6(a) => (a.octets(), u32::from(c.prefix())),
    }
}

fn ports(list: &[PortRange]) -> ([KPorts; MAX_PORT_RANGES], u32) {
    let mut out = [KPorts::default(); MAX_PORT_RANGES];
    for (i, p) in list.iter().take(MAX_PORT_RANGES).enumerate() {
        out[i] = KPorts { lo: p.lo, hi: p.hi };
    }
    (out, list.len().min(MAX_PORT_RANGES) as u32)
}

/// Whether IPv6 network `(a, alen)` contains `(b, blen)`.
fn covers(a: &[u8; 16], alen: u32, b: &[u8; 16], blen: u32) -> bool {
    if alen > blen {
        return false;
    }
    let (x, y) = (u128::from_be_bytes(*a), u128::from_be_bytes(*b));
    let mask = u128::MAX.checked_shl(128 - alen).unwrap_or(0);
    (x ^ y) & mask == 0
}

/// The NET_RULES entries of one network rule: every prefix it names, each
/// carrying its longest covering match and exception (the trie returns only
/// the longest prefix, so each entry must hold the whole answer).
pub fn net_entries(slot: u32, r: &Rule) -> Vec<(Key<NetKey>, NetVerdict)> {
    let w = &r.spec().when;
    let Some(dest) = &w.dest else {
        return Vec::new();
    };
    let (match_ports, n_match) = ports(&dest.ports);
    let matches: Vec<([u8; 16], u32)> = dest.cidrs.iter().map(v6_of).collect();
    let mut excepts: Vec<([u8; 16], u32, Vec<PortRange>)> = w
        .except
        .cidrs
        .iter()
        .map(|c| {
            let (a, l) = v6_of(c);
            (a, l, Vec::new())
        })
        .collect();
    if w.except.loopback {
        for c in ["127.0.0.0/8", "::1/128"] {
            if let Ok(c) = Cidr::parse(c) {
                let (a, l) = v6_of(&c);
                excepts.push((a, l, Vec::new()));
            }
        }
    }
    if w.except.dns_resolver {
        for ip in r.dns_resolvers() {
            let c = match ip {
                IpAddr::V4(a) => Cidr::V4 {
                    addr: *a,
                    prefix: 32,
                },
                IpAddr::V6(a) => Cidr::V6 {
                    addr: *a,
                    prefix: 128,
                },
            };
            let (a, l) = v6_of(&c);
            excepts.push((a, l, vec![PortRange { lo: 53, hi: 53 }]));
        }
    }
    let mut prefixes: BTreeMap<([u8; 16], u32), ()> = BTreeMap::new();
    for (a, l) in &matches {
        prefixes.insert((*a, *l), ());
    }
    for (a, l, _) in &excepts {
        prefixes.insert((*a, *l), ());
    }
    let mut out = Vec::new();
    for (a, l) in prefixes.into_keys() {
        let mut v = NetVerdict::default();
        if matches.iter().any(|(m, ml)| covers(m, *ml, &a, l)) {
            v.flags |= net_flags::MATCH;
            v.match_ports = match_ports;
            v.n_match = n_match;
        }
        if let Some((_, _, p)) = excepts
            .iter()
            .filter(|(e, el, _)| covers(e, *el, &a, l))
            .max_by_key(|(_, el, _)| *el)
        {
            v.flags |= net_flags::EXCEPT;
            let (ep, n) = ports(p);
            v.except_ports = ep;
            v.n_except = n;
        }
        out.push((
            Key::new(
                NET_KEY_RULE_BITS + l,
                NetKey {
                    rule: slot.to_be_bytes(),
                    addr: a,
                },
            ),
            v,
        ));
    }
    out
}

fn path_key(cgroup_id: u64, prefix: &str) -> Option<Key<PathKey>> {
    let bytes = prefix.as_bytes();
    if bytes.len() > KILL_PATH_LEN || bytes.contains(&0) {
        return None;
    }
    let mut path = [0u8; KILL_PATH_LEN];
    path[..bytes.len()].copy_from_slice(bytes);
    Some(Key::new(
        PATH_KEY_CGROUP_BITS + 8 * bytes.len() as u32,
        PathKey { cgroup_id, path },
    ))
}

/// The enforcement maps, owned by this stage.
pub struct KernelEnforcer {
    tasks: BpfHashMap<MapData, u32, u32>,
    cgroups: BpfHashMap<MapData, u64, u32>,
    paths: LpmTrie<MapData, PathKey, PathVerdict>,
    net: LpmTrie<MapData, NetKey, NetVerdict>,
    rules: Array<MapData, RuleSlot>,
    slots: Vec<Slot>,
    /// Masks written, to write only changes.
    task_masks: HashMap<u32, u32>,
    cgroup_masks: HashMap<u64, u32>,
    /// Mount prefixes installed per cgroup.
    mounts_done: HashSet<u64>,
    next_entry: u32,
    pub notes: Vec<String>,
}

impl KernelEnforcer {
    /// Takes the enforcement maps from the sensor.
    pub fn new(sensor: &mut Sensor) -> Result<KernelEnforcer> {
        Ok(KernelEnforcer {
            tasks: BpfHashMap::try_from(sensor.take_map("ENFORCE_TASKS")?)?,
            cgroups: BpfHashMap::try_from(sensor.take_map("ENFORCE_CGROUPS")?)?,
            paths: LpmTrie::try_from(sensor.take_map("KILL_PATHS")?)?,
            net: LpmTrie::try_from(sensor.take_map("NET_RULES")?)?,
            rules: Array::try_from(sensor.take_map("RULES")?)?,
            slots: Vec::new(),
            task_masks: HashMap::new(),
            cgroup_masks: HashMap::new(),
            mounts_done: HashSet::new(),
            next_entry: 1,
            notes: Vec::new(),
        })
    }

    pub fn slots(&self) -> &[Slot] {
        &self.slots
    }

    pub fn slot(&self, i: u32) -> Option<&Slot> {
        self.slots.get(i as usize)
    }

    /// Is this rule compiled into the kernel?
    pub fn compiled(&self, policy: &str, rule: &str) -> Option<&Slot> {
        self.slots
            .iter()
            .find(|s| &*s.policy == policy && &*s.rule == rule)
    }

    /// Writes `set`'s kernel rules. New entries go in before stale ones come
    /// out, so a pinned deny never lapses during a reload or a restart.
    pub fn install(&mut self, set: &PolicySet, sensor: &mut Sensor) -> Result<()> {
        let (slots, notes) = plan(set);
        self.notes = notes;
        let mut io_uring = 0u32;
        let mut want_net: HashSet<Vec<u8>> = HashSet::new();
        let mut want_paths: HashSet<Vec<u8>> = HashSet::new();
        for (i, s) in slots.iter().enumerate() {
            let i = i as u32;
            let r = &set.rules()[s.index];
            let mut slot = RuleSlot {
                action: match s.action {
                    Action::Deny => rule_action::DENY,
                    Action::Kill => rule_action::KILL,
                    Action::Alert => rule_action::NONE,
                },
                ..RuleSlot::default()
            };
            match s.kind {
                SlotKind::Net => {
                    let (p, n) = ports(&r.spec().when.except.ports);
                    slot.except_ports = p;
                    slot.n_except_ports = n;
                    for (k, v) in net_entries(i, r) {
                        self.net.insert(&k, v, 0).context("writing NET_RULES")?;
                        want_net.insert(key_bytes(&k));
                    }
                }
                SlotKind::Exec => {
                    for prefix in exec_prefixes(r).unwrap_or_default() {
                        if let Some(k) = path_key(0, &prefix) {
                            let v = PathVerdict {
                                rules: 1 << i,
                                ops: op::EXEC,
                                entry_id: self.next_entry,
                                rule: i,
                            };
                            self.next_entry += 1;
                            self.paths.insert(&k, v, 0).context("writing KILL_PATHS")?;
                            want_paths.insert(key_bytes(&k));
                        }
                    }
                }
                SlotKind::IoUring => {
                    slot.io_uring = 1;
                    io_uring |= 1 << i;
                }
                SlotKind::Mount => {}
            }
            self.rules.set(i, slot, 0).context("writing RULES")?;
        }
        for i in slots.len() as u32..MAX_RULES {
            self.rules
                .set(i, RuleSlot::default(), 0)
                .context("clearing RULES")?;
        }
        // Stale entries out: network entries of other rules, static paths
        // no longer wanted (per-container mount entries are rebuilt below).
        let stale: Vec<Key<NetKey>> = self
            .net
            .keys()
            .filter_map(|k| k.ok())
            .filter(|k| !want_net.contains(&key_bytes(k)))
            .collect();
        for k in stale {
            let _ = self.net.remove(&k);
        }
        let stale: Vec<Key<PathKey>> = self
            .paths
            .keys()
            .filter_map(|k| k.ok())
            .filter(|k| k.data().cgroup_id == 0 && !want_paths.contains(&key_bytes(k)))
            .collect();
        for k in stale {
            let _ = self.paths.remove(&k);
        }
        // Per-container entries are re-derived as containers are seen again.
        self.mounts_done.clear();
        self.task_masks.clear();
        self.cgroup_masks.clear();
        self.slots = slots;
        sensor.set_config(config::IO_URING_RULES, io_uring)?;
        sensor.set_config(config::ENFORCE, u32::from(!self.slots.is_empty()))?;
        Ok(())
    }

    /// Updates which rules cover the event's process and container, and
    /// the container's volume entries. Cheap when nothing changed: one map
    /// lookup per process on its first event and at each exec.
    pub fn observe(&mut self, ev: &Event, set: &PolicySet) {
        if self.slots.is_empty() || ev.kind == Kind::Exit {
            return;
        }
        let first = !self.task_masks.contains_key(&ev.pid);
        let cgroup_new = !self.cgroup_masks.contains_key(&ev.cgroup_id);
        if !first && !cgroup_new && ev.kind != Kind::Exec {
            return;
        }
        let id = ev.identity.as_ref();
        let info = id
            .and_then(|i| i.container.as_ref())
            .and_then(|c| c.info.as_ref());
        let agent_by_container = id
            .and_then(|i| i.agent.as_ref())
            .is_none_or(|a| a.source != AgentSource::Ancestry);
        let (mut task, mut cgroup) = (0u32, 0u32);
        for (i, s) in self.slots.iter().enumerate() {
            let r = &set.rules()[s.index];
            if !r.selects(ev) {
                continue;
            }
            task |= 1 << i;
            // A whole container is covered only when nothing about the
            // process itself decided it.
            let by_agent_ok = match &r.spec().selector.agent {
                None | Some(AgentSel::NoAgent) => true,
                Some(_) => agent_by_container,
            };
            if info.is_some() && r.selects_by_container_only() && by_agent_ok {
                cgroup |= 1 << i;
            }
        }
        let old = self.task_masks.insert(ev.pid, task).unwrap_or(0);
        if old != task {
            if task == 0 {
                // Entry may be gone already (the kernel drops it at exit).
                let _ = self.tasks.remove(&ev.pid);
            } else if let Err(e) = self.tasks.insert(ev.pid, task, 0) {
                tracing::warn!("ENFORCE_TASKS[{}]: {e}", ev.pid);
            }
        }
        if info.is_some() && (cgroup_new || cgroup != 0) {
            let old = self.cgroup_masks.get(&ev.cgroup_id).copied().unwrap_or(0);
            let mask = old | cgroup;
            if cgroup_new || mask != old {
                if mask != 0 {
                    if let Err(e) = self.cgroups.insert(ev.cgroup_id, mask, 0) {
                        tracing::warn!("ENFORCE_CGROUPS[{}]: {e}", ev.cgroup_id);
                    }
                }
                self.cgroup_masks.insert(ev.cgroup_id, mask);
            }
        }
        if let Some(info) = info {
            if ev.cgroup_id > 1 && !self.mounts_done.contains(&ev.cgroup_id) {
                self.mounts_done.insert(ev.cgroup_id);
                self.install_mounts(ev.cgroup_id, &info.mounts, task | cgroup);
            }
        }
    }

    fn install_mounts(
        &mut self,
        cgroup_id: u64,
        mounts: &[crate::identity::docker::MountInfo],
        mask: u32,
    ) {
        for (i, s) in self.slots.iter().enumerate() {
            if s.kind != SlotKind::Mount || mask & (1 << i) == 0 {
                continue;
            }
            for m in mounts
                .iter()
                .filter(|m| m.kind == "bind" || m.kind == "volume")
            {
                let prefix = format!("{}/", m.destination.trim_end_matches('/'));
                let Some(k) = path_key(cgroup_id, &prefix) else {
                    self.notes.push(format!(
                        "mount {} is longer than {KILL_PATH_LEN} bytes: guarded from userspace",
                        m.destination
                    ));
                    continue;
                };
                let v = PathVerdict {
                    rules: 1 << i,
                    ops: s.ops,
                    entry_id: self.next_entry,
                    rule: i as u32,
                };
                self.next_entry += 1;
                if let Err(e) = self.paths.insert(&k, v, 0) {
                    tracing::warn!("KILL_PATHS {prefix} (cgroup {cgroup_id}): {e}");
                }
            }
        }
    }

    /// A process is gone: forget its mask (the kernel dropped its entry).
    pub fn exited(&mut self, pid: u32) {
        self.task_masks.remove(&pid);
    }
}

fn key_bytes<K: aya::Pod>(k: &Key<K>) -> Vec<u8> {
    let mut v = k.prefix_len().to_ne_bytes().to_vec();
    let d = k.data();
    // SAFETY: K is Pod (repr(C) plain data); reading its bytes is sound.
    let bytes = unsafe {
        std::slice::from_raw_parts((&d as *const K).cast::<u8>(), std::mem::size_of::<K>())
    };
    v.extend_from_slice(bytes);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cover_math() {
        let a = [0u8; 16];
        let mut b = [0u8; 16];
        b[15] = 1;
        assert!(covers(&a, 0, &b, 128));
        assert!(covers(&a, 120, &b, 128));
        assert!(!covers(&a, 128, &b, 128));
        assert!(!covers(&b, 128, &a, 0));
    }

    #[test]
    fn path_keys_bound_and_prefix_bits() {
        let k = path_key(7, "/data/").expect("key");
        assert_eq!(k.prefix_len(), 64 + 48);
        assert_eq!(&k.data().path[..6], b"/data/");
        assert!(path_key(7, &"x".repeat(KILL_PATH_LEN + 1)).is_none());
    }
}
