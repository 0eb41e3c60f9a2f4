//! Writes the rule plan (crate::policy::plan) into the enforcement maps
//! (agentguard_common::enforce), and keeps the subject maps (which tasks
//! and containers each rule covers) current from the tagged events.
//!
//! It reads no rule conditions itself: the plan says which hook and which
//! entries; this stage resolves them against the host (file globs to
//! inodes, a container's volumes to their source inodes or mount
//! prefixes) and reconciles the maps with them.
//!
//! Size: the only writer of the enforcement maps, kept together so rule-slot
//! hashing, scrubbing, adoption of pinned state and per-container entries share
//! one view of what is in the kernel.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use aya::maps::lpm_trie::{Key, LpmTrie};
use aya::maps::{Array, HashMap as BpfHashMap, MapData};

use agentguard_common::enforce::{
    net_flags, op, rule_action, DnsAllow, DnsAllowKey, DnsKey, DnsSock, InodeKey, InodeRules,
    NetKey, NetVerdict, PathKey, PathVerdict, PipeProg, PortRange as KPorts, RuleSlot,
    DNS_KEY_RULE_BITS, DNS_NAME_LEN, KILL_PATH_LEN, MAX_PORT_RANGES, MAX_RULES, NET_KEY_RULE_BITS,
    PATH_KEY_CGROUP_BITS, PIPE_PROG_LEN, TAINT_CGROUP,
};
use agentguard_common::filter::config;

use crate::alert::Action;
use crate::event::{Event, Kind};
use crate::identity::resolver::AgentSource;
use crate::policy::plan::{plan, Backend, FileTarget, KernelPart, Plan, SlotPlan};
use crate::policy::rules::Rule;
use crate::policy::spec::{AgentSel, Cidr, DomainPattern, PortRange};
use crate::policy::PolicySet;
use crate::sensor::Sensor;

/// One rule in a kernel slot (bit `bit` of every mask).
#[derive(Clone, Debug)]
pub struct Slot {
    pub bit: u32,
    pub plan: SlotPlan,
}

impl Slot {
    pub fn policy(&self) -> &str {
        &self.plan.policy
    }
    pub fn rule(&self) -> &str {
        &self.plan.rule
    }
    pub fn action(&self) -> Action {
        self.plan.action
    }
}

/// Converts a userspace `st_dev` to the kernel's `s_dev` encoding.
pub fn kernel_dev(st_dev: u64) -> u32 {
    let (major, minor) = (libc::major(st_dev), libc::minor(st_dev));
    (major << 20) | (minor & 0xf_ffff)
}

fn inode_key(path: &Path) -> Option<InodeKey> {
    let m = std::fs::metadata(path).ok()?;
    Some(InodeKey {
        dev: kernel_dev(m.dev()),
        _pad: 0,
        ino: m.ino(),
    })
}

/// Existing paths a kernel glob names (`*`, `?`, `[..]` per component,
/// expanded on the filesystem), and whether it covers what is below them
/// (a trailing `/**`) rather than the path itself.
pub fn resolve_glob(pattern: &str) -> (Vec<PathBuf>, bool) {
    let (base, subtree) = match pattern.strip_suffix("/**") {
        Some(b) => (if b.is_empty() { "/" } else { b }, true),
        None => (pattern, false),
    };
    let mut found = vec![PathBuf::from("/")];
    for comp in base.split('/').filter(|c| !c.is_empty()) {
        let wild = comp.contains(['*', '?', '[']);
        let matcher = if wild {
            match globset::GlobBuilder::new(comp)
                .literal_separator(true)
                .build()
            {
                Ok(g) => Some(g.compile_matcher()),
                Err(_) => return (Vec::new(), subtree),
            }
        } else {
            None
        };
        let mut next = Vec::new();
        for dir in &found {
            match &matcher {
                None => {
                    let p = dir.join(comp);
                    if std::fs::symlink_metadata(&p).is_ok() {
                        next.push(p);
                    }
                }
                Some(m) => {
                    let Ok(rd) = std::fs::read_dir(dir) else {
                        continue;
                    };
                    for e in rd.flatten() {
                        if m.is_match(e.file_name()) {
                            next.push(e.path());
                        }
                    }
                }
            }
        }
        // Bound the expansion: a pattern that names thousands of files
        // belongs in a directory rule.
        next.truncate(4096);
        found = next;
    }
    (found, subtree)
}

/// Most files below one protected directory that get an entry of their
/// own (so that a hard link made elsewhere is still the same file).
const MAX_FILES_PER_TARGET: usize = 4096;
const MAX_FILE_DEPTH: usize = 8;

/// The inode entries of one file target: the paths it names (their own
/// inode, or their subtree) and, below a protected directory, every file
/// already there by identity: a hard link elsewhere reaches the same inode
/// but not the directory.
/// `files`: also each file already below a protected directory (not
/// needed where only directories are walked: removals on the tracepoint
/// backend).
fn target_entries(t: &FileTarget, bit: u32, want: &mut HashMap<InodeKey, InodeRules>, files: bool) {
    let (found, below) = resolve_glob(&t.pattern);
    for p in found {
        let Some(k) = inode_key(&p) else {
            continue;
        };
        add_inode(want, k, bit, t.ops, !below, below);
        if !below || !files {
            continue;
        }
        let mut stack = vec![(p, 0usize)];
        let mut n = 0;
        while let Some((dir, depth)) = stack.pop() {
            let Ok(rd) = std::fs::read_dir(&dir) else {
                continue;
            };
            for e in rd.flatten() {
                let Ok(ft) = e.file_type() else {
                    continue;
                };
                if ft.is_dir() && depth + 1 < MAX_FILE_DEPTH {
                    stack.push((e.path(), depth + 1));
                } else if ft.is_file() {
                    if let Ok(m) = e.metadata() {
                        let k = InodeKey {
                            dev: kernel_dev(m.dev()),
                            _pad: 0,
                            ino: m.ino(),
                        };
                        add_inode(want, k, bit, t.ops, true, false);
                        n += 1;
                    }
                }
                if n >= MAX_FILES_PER_TARGET {
                    return;
                }
            }
        }
    }
}

/// A tracepoint-backend removal target whose directories get inode
/// entries: a whole tree (`/dir/**`) removed by unlink or rmdir.
fn tracepoint_walks(t: &FileTarget) -> bool {
    t.ops & (op::UNLINK | op::RMDIR) != 0 && t.pattern.ends_with("/**")
}

fn op_index(o: u32) -> impl Iterator<Item = usize> {
    (0..op::COUNT).filter(move |i| o & (1 << i) != 0)
}

fn add_inode(
    want: &mut HashMap<InodeKey, InodeRules>,
    key: InodeKey,
    bit: u32,
    ops: u32,
    own: bool,
    below: bool,
) {
    let e = want.entry(key).or_default();
    if own {
        e.self_rules |= 1 << bit;
    }
    if below {
        e.sub_rules |= 1 << bit;
    }
    for i in op_index(ops) {
        e.op_rules[i] |= 1 << bit;
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
        // The longest covering exceptions decide; several of that length
        // (a CIDR exception that is also the DNS resolver) add up: one
        // without ports covers every port.
        let best = excepts
            .iter()
            .filter(|(e, el, _)| covers(e, *el, &a, l))
            .map(|(_, el, _)| *el)
            .max();
        if let Some(best) = best {
            let same: Vec<&Vec<PortRange>> = excepts
                .iter()
                .filter(|(e, el, _)| *el == best && covers(e, *el, &a, l))
                .map(|(_, _, p)| p)
                .collect();
            let p: Vec<PortRange> = if same.iter().any(|p| p.is_empty()) {
                Vec::new()
            } else {
                same.into_iter().flatten().copied().collect()
            };
            v.flags |= net_flags::EXCEPT;
            let (ep, n) = ports(&p);
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

/// The DNS_NAMES key of one domain pattern of the rule in `slot` (see
/// `DnsKey`); None for a name longer than the key.
pub fn dns_key(slot: u32, p: &DomainPattern) -> Option<Key<DnsKey>> {
    let rev: Vec<u8> = p.name.bytes().rev().collect();
    let len = rev.len() + 1;
    if len > DNS_NAME_LEN {
        return None;
    }
    let mut name = [0u8; DNS_NAME_LEN];
    name[..rev.len()].copy_from_slice(&rev);
    // `*.name` ends in the label dot (names below it); an exact name in
    // its NUL (itself only).
    name[rev.len()] = if p.suffix { b'.' } else { 0 };
    Some(Key::new(
        DNS_KEY_RULE_BITS + 8 * len as u32,
        DnsKey {
            rule: slot.to_be_bytes(),
            name,
        },
    ))
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

fn action_code(a: Action) -> u32 {
    match a {
        Action::Deny => rule_action::DENY,
        Action::Kill => rule_action::KILL,
        Action::Alert => rule_action::ALERT,
    }
}

/// The enforcement maps, owned by this stage.
pub struct KernelEnforcer {
    backend: Backend,
    tasks: BpfHashMap<MapData, u32, u32>,
    cgroups: BpfHashMap<MapData, u64, u32>,
    paths: LpmTrie<MapData, PathKey, PathVerdict>,
    net: LpmTrie<MapData, NetKey, NetVerdict>,
    rules: Array<MapData, RuleSlot>,
    inodes: BpfHashMap<MapData, InodeKey, InodeRules>,
    pipe_progs: BpfHashMap<MapData, [u8; PIPE_PROG_LEN], PipeProg>,
    quarantine: BpfHashMap<MapData, u32, u32>,
    agent_roots: BpfHashMap<MapData, u32, u32>,
    roots_written: HashSet<u32>,
    quarantine_on: Array<MapData, u32>,
    /// Tainted subjects (pinned: the sock_addr hooks read it).
    taints: BpfHashMap<MapData, u64, agentguard_common::enforce::Taint>,
    /// Domain lists, what DNS answers allowed, DNS sockets, and the mask
    /// of domain rules (all pinned: the skb programs read them).
    dns_names: LpmTrie<MapData, DnsKey, u32>,
    dns_allow: BpfHashMap<MapData, DnsAllowKey, DnsAllow>,
    dns_socks: BpfHashMap<MapData, u64, DnsSock>,
    dns_config: Array<MapData, u32>,
    slots: Vec<Slot>,
    /// Masks written, to write only changes.
    task_masks: HashMap<u32, u32>,
    cgroup_masks: HashMap<u64, u32>,
    /// Volume entries installed per container cgroup (LSM: the inodes of
    /// the mount sources, with their rule bits and ops).
    mounts_done: HashMap<u64, Vec<(InodeKey, u32, u32)>>,
    /// INODE_RULES as written.
    inode_written: HashMap<InodeKey, InodeRules>,
    next_entry: u32,
    pub notes: Vec<String>,
    /// The plan last installed (the stream filter is derived from it).
    plan: Plan,
}

impl KernelEnforcer {
    /// Takes the enforcement maps from the sensor.
    pub fn new(sensor: &mut Sensor, backend: Backend) -> Result<KernelEnforcer> {
        let mut alive: BpfHashMap<MapData, u32, u64> =
            BpfHashMap::try_from(sensor.take_map("ALIVE")?)?;
        // The previous daemon's last heartbeat (0: none, fresh maps).
        let last_alive = alive.get(&0, 0).unwrap_or(0);
        let mut k = KernelEnforcer {
            backend,
            tasks: BpfHashMap::try_from(sensor.take_map("ENFORCE_TASKS")?)?,
            cgroups: BpfHashMap::try_from(sensor.take_map("ENFORCE_CGROUPS")?)?,
            paths: LpmTrie::try_from(sensor.take_map("KILL_PATHS")?)?,
            net: LpmTrie::try_from(sensor.take_map("NET_RULES")?)?,
            rules: Array::try_from(sensor.take_map("RULES")?)?,
            inodes: BpfHashMap::try_from(sensor.take_map("INODE_RULES")?)?,
            pipe_progs: BpfHashMap::try_from(sensor.take_map("PIPE_PROGS")?)?,
            quarantine: BpfHashMap::try_from(sensor.take_map("QUARANTINE")?)?,
            agent_roots: BpfHashMap::try_from(sensor.take_map("AGENT_ROOTS")?)?,
            roots_written: HashSet::new(),
            quarantine_on: Array::try_from(sensor.take_map("QUARANTINE_ON")?)?,
            taints: BpfHashMap::try_from(sensor.take_map("TAINTS")?)?,
            dns_names: LpmTrie::try_from(sensor.take_map("DNS_NAMES")?)?,
            dns_allow: BpfHashMap::try_from(sensor.take_map("DNS_ALLOW")?)?,
            dns_socks: BpfHashMap::try_from(sensor.take_map("DNS_SOCKS")?)?,
            dns_config: Array::try_from(sensor.take_map("DNS_CONFIG")?)?,
            slots: Vec::new(),
            task_masks: HashMap::new(),
            cgroup_masks: HashMap::new(),
            mounts_done: HashMap::new(),
            inode_written: HashMap::new(),
            next_entry: 1,
            notes: Vec::new(),
            plan: Plan::default(),
        };
        let pruned = k.prune_reused_pids(last_alive, sensor.started_ns());
        if pruned > 0 {
            tracing::info!(
                "adopted pinned maps: dropped {pruned} per-process entr(y/ies) of processes gone (or pids reused) since the last daemon"
            );
        }
        // The sock_addr programs outlive us and tell a dead process's
        // entry from a live one by this heartbeat: a thread of its own, so
        // a busy event loop never looks like a dead daemon.
        let _ = alive.insert(0, crate::event::boot_ns(), 0);
        std::thread::Builder::new()
            .name("agentguard-alive".into())
            .spawn(move || loop {
                std::thread::sleep(std::time::Duration::from_secs(1));
                if let Err(e) = alive.insert(0, crate::event::boot_ns(), 0) {
                    tracing::warn!("ALIVE heartbeat: {e}");
                }
            })
            .context("starting the heartbeat thread")?;
        Ok(k)
    }

    /// Drops the pinned per-process entries (`ENFORCE_TASKS`, `TAINTS` by
    /// tgid) whose process is gone, or whose pid now belongs to a process
    /// that started after the daemon that owned them last said it was
    /// alive: with no daemon, nothing forgets an entry at its process's
    /// exit, and a reused pid must not inherit another's rules. Returns
    /// how many went.
    /// Processes started since `now_from_ns` (our own probes are on) keep
    /// theirs.
    pub fn prune_reused_pids(&mut self, last_alive_ns: u64, now_from_ns: u64) -> usize {
        use crate::identity::procfs::start_boottime_ns;
        let stale = |pid: u32| match start_boottime_ns(pid) {
            None => true,
            Some(start) => last_alive_ns != 0 && start > last_alive_ns && start < now_from_ns,
        };
        self.remove_pid_entries(stale)
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The rule plan last installed.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    pub fn slots(&self) -> &[Slot] {
        &self.slots
    }

    /// The slot with bit `i`.
    pub fn slot(&self, i: u32) -> Option<&Slot> {
        self.slots.iter().find(|s| s.bit == i)
    }

    /// Is this rule compiled into the kernel?
    pub fn compiled(&self, policy: &str, rule: &str) -> Option<&Slot> {
        self.slots
            .iter()
            .find(|s| s.policy() == policy && s.rule() == rule)
    }

    /// Writes `set`'s kernel rules, reconciling with what the maps hold
    /// (from a reload, or pinned by a previous daemon): a slot whose rule is
    /// unchanged keeps its bit and entries (a pinned deny never lapses); a
    /// slot whose rule changed or went away is stopped first (its action
    /// cleared) and its bit removed from every entry before it is reused.
    pub fn install(&mut self, set: &PolicySet, sensor: &mut Sensor) -> Result<()> {
        let plan = plan(set, self.backend);
        self.notes = plan.notes.clone();
        self.plan = plan.clone();
        let current: Vec<u32> = (0..MAX_RULES)
            .map(|i| match self.rules.get(&i, 0) {
                Ok(s) if s.action != rule_action::NONE => s.id,
                _ => 0,
            })
            .collect();
        // Bits: keep the bit of an unchanged rule, give free bits to the rest.
        let mut taken = [false; MAX_RULES as usize];
        let mut bits: Vec<Option<u32>> = vec![None; plan.slots.len()];
        for (n, sp) in plan.slots.iter().enumerate() {
            if let Some(i) = (0..MAX_RULES as usize).find(|&i| current[i] == sp.id && !taken[i]) {
                taken[i] = true;
                bits[n] = Some(i as u32);
            }
        }
        let wanted: HashSet<u32> = plan.slots.iter().map(|s| s.id).collect();
        for b in bits.iter_mut() {
            if b.is_none() {
                // Prefer a bit that was empty, then one whose rule is gone.
                let free = (0..MAX_RULES as usize)
                    .find(|&i| !taken[i] && current[i] == 0)
                    .or_else(|| {
                        (0..MAX_RULES as usize)
                            .find(|&i| !taken[i] && !wanted.contains(&current[i]))
                    });
                if let Some(i) = free {
                    taken[i] = true;
                    *b = Some(i as u32);
                }
            }
        }
        let slots: Vec<Slot> = plan
            .slots
            .into_iter()
            .zip(bits)
            .filter_map(|(p, b)| b.map(|bit| Slot { bit, plan: p }))
            .collect();
        // Stop every bit whose occupant changes, and scrub it everywhere.
        let mut stale = 0u32;
        for i in 0..MAX_RULES {
            let now = slots.iter().find(|s| s.bit == i).map_or(0, |s| s.plan.id);
            if current[i as usize] != now {
                stale |= 1 << i;
                self.rules
                    .set(i, RuleSlot::default(), 0)
                    .context("clearing RULES")?;
            }
        }
        if stale != 0 {
            self.scrub(stale);
        }
        let mut io_uring = 0u32;
        let mut compat = 0u32;
        let mut net_slots = 0u32;
        let mut dns_rules = 0u32;
        let mut pipe_rules = 0u32;
        let mut want_pipes: HashMap<[u8; PIPE_PROG_LEN], PipeProg> = HashMap::new();
        let mut want_dns: HashSet<Vec<u8>> = HashSet::new();
        let mut want_net: HashSet<Vec<u8>> = HashSet::new();
        let mut want_paths: HashSet<Vec<u8>> = HashSet::new();
        let mut want_inodes: HashMap<InodeKey, InodeRules> = HashMap::new();
        let mut rule_slots = Vec::new();
        for s in &slots {
            let i = s.bit;
            let r = &set.rules()[s.plan.index];
            let mut slot = RuleSlot {
                action: action_code(s.plan.action),
                id: s.plan.id,
                contain_cgroup: u32::from(s.plan.contain_container),
                taint: u32::from(r.spec().taint),
                ..RuleSlot::default()
            };
            match &s.plan.kernel {
                KernelPart::RawSockets => slot.raw_sockets = 1,
                KernelPart::Net => {
                    net_slots |= 1 << i;
                    let (p, n) = ports(&r.spec().when.except.ports);
                    slot.except_ports = p;
                    slot.n_except_ports = n;
                    for (k, v) in net_entries(i, r) {
                        self.net.insert(&k, v, 0).context("writing NET_RULES")?;
                        want_net.insert(key_bytes(&k));
                    }
                    let domains = &r.spec().when.except.domains;
                    if !domains.is_empty() {
                        slot.domains = 1;
                        dns_rules |= 1 << i;
                        for d in domains {
                            let Some(k) = dns_key(i, d) else { continue };
                            self.dns_names
                                .insert(&k, 1, 0)
                                .context("writing DNS_NAMES")?;
                            want_dns.insert(key_bytes(&k));
                        }
                    }
                }
                KernelPart::Files { targets } => match self.backend {
                    Backend::Lsm => {
                        for t in targets {
                            target_entries(t, i, &mut want_inodes, true);
                        }
                    }
                    Backend::Tracepoint => {
                        for t in targets {
                            if t.ops & (op::OPEN | op::LINK) != 0 {
                                // Opens: checked by identity at exit.
                                target_entries(t, i, &mut want_inodes, true);
                                continue;
                            }
                            if tracepoint_walks(t) {
                                // Removals by a bare name relative to a
                                // directory: checked at entry by walking up
                                // from the directory object.
                                target_entries(t, i, &mut want_inodes, false);
                            }
                            let prefix = t.pattern.trim_end_matches("**");
                            if let Some(k) = path_key(0, prefix) {
                                let v = PathVerdict {
                                    rules: 1 << i,
                                    ops: t.ops,
                                    entry_id: self.next_entry,
                                    rule: i,
                                };
                                self.next_entry += 1;
                                self.paths.insert(&k, v, 0).context("writing KILL_PATHS")?;
                                want_paths.insert(key_bytes(&k));
                            }
                        }
                    }
                },
                KernelPart::IoUring => {
                    slot.io_uring = 1;
                    io_uring |= 1 << i;
                }
                KernelPart::Compat => compat |= 1 << i,
                KernelPart::Pipe { readers, writers } => {
                    pipe_rules |= 1 << i;
                    for (names, reader) in [(readers, true), (writers, false)] {
                        for n in names {
                            let mut key = [0u8; PIPE_PROG_LEN];
                            let b = n.as_bytes();
                            if b.len() >= PIPE_PROG_LEN {
                                continue;
                            }
                            key[..b.len()].copy_from_slice(b);
                            let e = want_pipes.entry(key).or_default();
                            if reader {
                                e.reader_rules |= 1 << i;
                            } else {
                                e.writer_rules |= 1 << i;
                            }
                        }
                    }
                }
                KernelPart::Mount { .. } => {}
            }
            rule_slots.push((i, slot));
        }
        // Per-container volume entries are re-derived as containers are
        // seen again; until then their inodes stay as written (their bits
        // were scrubbed above if their rule changed).
        for entries in self.mounts_done.values() {
            for (k, bit, ops) in entries {
                if stale & (1 << bit) == 0 {
                    add_inode(&mut want_inodes, *k, *bit, *ops, true, true);
                }
            }
        }
        self.write_inodes(want_inodes);
        for (i, slot) in rule_slots {
            self.rules.set(i, slot, 0).context("writing RULES")?;
        }
        // Stale entries out: network entries of other rules, static paths
        // no longer wanted.
        remove_where(&mut self.net, |k| !want_net.contains(&key_bytes(k)));
        remove_where(&mut self.dns_names, |k| !want_dns.contains(&key_bytes(k)));
        self.dns_config
            .set(0, dns_rules, 0)
            .context("writing DNS_CONFIG")?;
        remove_where(&mut self.paths, |k| {
            k.data().cgroup_id == 0 && !want_paths.contains(&key_bytes(k))
        });
        self.mounts_done.retain(|_, v| {
            v.retain(|(_, bit, _)| stale & (1 << bit) == 0);
            true
        });
        // Subjects are re-derived from the next event of each process.
        self.task_masks.clear();
        self.cgroup_masks.clear();
        self.slots = slots;
        sensor.set_config(config::IO_URING_RULES, io_uring)?;
        sensor.set_config(config::COMPAT_RULES, compat)?;
        // Program names of pipe rules: exactly the wanted ones.
        let stale_pipes: Vec<[u8; PIPE_PROG_LEN]> = self
            .pipe_progs
            .keys()
            .flatten()
            .filter(|k| !want_pipes.contains_key(k))
            .collect();
        for k in stale_pipes {
            let _ = self.pipe_progs.remove(&k);
        }
        for (k, v) in &want_pipes {
            self.pipe_progs
                .insert(k, v, 0)
                .context("writing PIPE_PROGS")?;
        }
        sensor.set_config(config::PIPE_RULES, pipe_rules)?;
        sensor.set_config(config::NET_SLOTS, net_slots)?;
        sensor.set_config(config::ENFORCE, u32::from(!self.slots.is_empty()))?;
        Ok(())
    }

    /// Clears the `bits` from every subject and every entry: nothing that
    /// was written for a rule that changed or went away can fire.
    fn scrub(&mut self, bits: u32) {
        let tasks: Vec<(u32, u32)> = self.tasks.iter().filter_map(|e| e.ok()).collect();
        for (k, m) in tasks {
            if m & bits != 0 {
                let _ = self.tasks.insert(k, m & !bits, 0);
            }
        }
        let cgroups: Vec<(u64, u32)> = self.cgroups.iter().filter_map(|e| e.ok()).collect();
        for (k, m) in cgroups {
            if m & bits != 0 {
                let _ = self.cgroups.insert(k, m & !bits, 0);
            }
        }
        let paths: Vec<(Key<PathKey>, PathVerdict)> =
            self.paths.iter().filter_map(|e| e.ok()).collect();
        for (k, mut v) in paths {
            if v.rules & bits != 0 {
                v.rules &= !bits;
                if v.rules == 0 {
                    let _ = self.paths.remove(&k);
                } else {
                    let _ = self.paths.insert(&k, v, 0);
                }
            }
        }
        remove_where(&mut self.net, |k| rule_in(k.data().rule, bits));
        // What DNS answers allowed for a rule that changed goes with it.
        let allow: Vec<(DnsAllowKey, DnsAllow)> =
            self.dns_allow.iter().filter_map(|e| e.ok()).collect();
        for (k, mut v) in allow {
            if v.rules & bits != 0 {
                v.rules &= !bits;
                if v.rules == 0 {
                    let _ = self.dns_allow.remove(&k);
                } else {
                    let _ = self.dns_allow.insert(k, v, 0);
                }
            }
        }
        let socks: Vec<u64> = self.dns_socks.keys().filter_map(|k| k.ok()).collect();
        for k in socks {
            let _ = self.dns_socks.remove(&k);
        }
        remove_where(&mut self.dns_names, |k| rule_in(k.data().rule, bits));
        let inodes: Vec<(InodeKey, InodeRules)> =
            self.inodes.iter().filter_map(|e| e.ok()).collect();
        for (k, mut v) in inodes {
            if (v.self_rules | v.sub_rules) & bits != 0 {
                v.self_rules &= !bits;
                v.sub_rules &= !bits;
                for m in v.op_rules.iter_mut() {
                    *m &= !bits;
                }
                let _ = self.inodes.insert(k, v, 0);
                self.inode_written.insert(k, v);
            }
        }
    }

    /// Makes INODE_RULES hold exactly `want` (writes first, then removals).
    fn write_inodes(&mut self, want: HashMap<InodeKey, InodeRules>) {
        tracing::debug!("INODE_RULES: {} entries: {want:?}", want.len());
        for (k, v) in &want {
            if self.inode_written.get(k) != Some(v) {
                if let Err(e) = self.inodes.insert(*k, *v, 0) {
                    tracing::warn!("INODE_RULES {k:?}: {e}");
                    continue;
                }
            }
        }
        let existing: Vec<InodeKey> = self.inodes.keys().filter_map(|k| k.ok()).collect();
        for k in existing {
            if !want.contains_key(&k) {
                let _ = self.inodes.remove(&k);
            }
        }
        self.inode_written = want;
    }

    /// Re-resolves the file targets (new files or directories matching a
    /// protected glob since the last look).
    pub fn refresh_files(&mut self) {
        let mut want: HashMap<InodeKey, InodeRules> = HashMap::new();
        for s in &self.slots {
            if let KernelPart::Files { targets } = &s.plan.kernel {
                for t in targets {
                    // Tracepoints: opens by identity, removals by their
                    // directory's identity.
                    if self.backend == Backend::Lsm || t.ops & (op::OPEN | op::LINK) != 0 {
                        target_entries(t, s.bit, &mut want, true);
                    } else if tracepoint_walks(t) {
                        target_entries(t, s.bit, &mut want, false);
                    }
                }
            }
        }
        for entries in self.mounts_done.values() {
            for (k, bit, ops) in entries {
                add_inode(&mut want, *k, *bit, *ops, true, true);
            }
        }
        if want != self.inode_written {
            self.write_inodes(want);
        }
    }

    /// Takes the network of the event's subject away (a taint rule
    /// matched in userspace, or to mirror the kernel's own entry): its
    /// container when rules cover the whole container, else the process
    /// and its ancestors up to the agent. Returns the keys written.
    pub fn taint(&mut self, ev: &Event, rule: &str) -> Vec<u64> {
        use agentguard_common::enforce::Taint;
        let slot = self
            .slots
            .iter()
            .find(|s| &*s.plan.rule == rule)
            .map_or(u32::MAX, |s| s.bit);
        let t = Taint {
            rule: slot,
            _pad: 0,
            ts_ns: crate::event::boot_ns(),
        };
        let keys = taint_keys(ev, self.cgroup_masks.get(&ev.cgroup_id).copied());
        for k in &keys {
            if let Err(e) = self.taints.insert(*k, t, 0) {
                tracing::warn!("TAINTS[{k:#x}]: {e}");
            }
        }
        keys
    }

    /// The `TAINTS` keys in the kernel now.
    /// Forgets what was written for cgroups that are gone (cgroup ids are
    /// never reused while the host runs): their rule masks, volume entries
    /// and taints, so neither the kernel maps nor the daemon's memory grow
    /// with every container ever run. Returns how many were forgotten.
    pub fn forget_cgroups(&mut self, live: &HashSet<u64>) -> usize {
        let gone: HashSet<u64> = self
            .cgroup_masks
            .keys()
            .chain(self.mounts_done.keys())
            .filter(|c| !live.contains(c))
            .copied()
            .collect();
        for cg in &gone {
            self.cgroup_masks.remove(cg);
            self.mounts_done.remove(cg);
            let _ = self.cgroups.remove(cg);
        }
        if !gone.is_empty() {
            remove_where(&mut self.paths, |k| {
                let c = k.data().cgroup_id;
                c != 0 && gone.contains(&c)
            });
        }
        let dead_taints: Vec<u64> = self
            .taints
            .keys()
            .filter_map(|k| k.ok())
            .filter(|&k| k & TAINT_CGROUP != 0 && !live.contains(&(k & !TAINT_CGROUP)))
            .collect();
        for k in &dead_taints {
            let _ = self.taints.remove(k);
        }
        gone.len()
    }

    /// Container cgroups the kernel maps hold rules or volumes for.
    pub fn cgroups_enforced(&self) -> usize {
        let mut all: HashSet<u64> = self.cgroup_masks.keys().copied().collect();
        all.extend(self.mounts_done.keys());
        all.len()
    }

    pub fn taint_keys_live(&self) -> HashSet<u64> {
        self.taints.keys().filter_map(|k| k.ok()).collect()
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
        // The agent process itself is never quarantined for a child's kill:
        // its own process (by ancestry, or found inside a labelled
        // container) and the program its launcher started.
        if let Some(a) = id.and_then(|i| i.agent.as_ref()) {
            for pid in a.pid.into_iter().chain(a.runner) {
                if self.roots_written.insert(pid) {
                    let _ = self.agent_roots.insert(pid, 1, 0);
                }
            }
        }
        let info = id
            .and_then(|i| i.container.as_ref())
            .and_then(|c| c.info.as_ref());
        let agent_by_container = id
            .and_then(|i| i.agent.as_ref())
            .is_none_or(|a| a.source != AgentSource::Ancestry);
        let (mut task, mut cgroup) = (0u32, 0u32);
        for s in &self.slots {
            let Some(r) = set.rules().get(s.plan.index) else {
                continue;
            };
            if !r.selects(ev) {
                continue;
            }
            // A volume rule is the container's: it covers a task only
            // through its container's cgroup, never through a per-task
            // entry, which is inherited at fork wherever the child runs (a
            // host runtime process with such a bit was killed deleting a
            // container's state directory under a `/` volume in a soak).
            let mount_rule = matches!(s.plan.kernel, KernelPart::Mount { .. });
            if !mount_rule {
                task |= 1 << s.bit;
            }
            // A whole container is covered only when nothing about the
            // process itself decided it.
            let by_agent_ok = match &r.spec().selector.agent {
                None | Some(AgentSel::NoAgent) => true,
                Some(_) => agent_by_container,
            };
            if info.is_some() && r.selects_by_container_only() && by_agent_ok {
                cgroup |= 1 << s.bit;
            }
        }
        let old = self.task_masks.insert(ev.pid, task).unwrap_or(0);
        if old != task {
            if task == 0 {
                // Entry may be gone already (the kernel drops it at exit).
                let _ = self.tasks.remove(&ev.pid);
            } else if ev.kind == Kind::Exit || !same_process(ev.pid, ev.ts_ns) {
                // The event came after the process ended (the kernel has
                // dropped its entry at exit), or the pid is another
                // process's now: an entry written now would belong to
                // whoever has the pid.
            } else if let Err(e) = self.tasks.insert(ev.pid, task, 0) {
                tracing::warn!("ENFORCE_TASKS[{}]: {e}", ev.pid);
            } else if !same_process(ev.pid, ev.ts_ns) {
                // It ended while the entry was written (after the exit
                // probe ran): take it back.
                let _ = self.tasks.remove(&ev.pid);
            }
        }
        // Never the root cgroup (id 1): on a hybrid host a container's
        // process can be seen there (runc init, v1-only placement), and an
        // entry would give every host process in it the agents' rules.
        if info.is_some() && ev.cgroup_id > 1 && (cgroup_new || cgroup != 0) {
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
            if ev.cgroup_id > 1 && !self.mounts_done.contains_key(&ev.cgroup_id) {
                self.install_mounts(ev.cgroup_id, &info.mounts, cgroup);
            }
        }
    }

    fn install_mounts(
        &mut self,
        cgroup_id: u64,
        mounts: &[crate::identity::docker::MountInfo],
        mask: u32,
    ) {
        let mut done = Vec::new();
        let volumes: Vec<&crate::identity::docker::MountInfo> = mounts
            .iter()
            .filter(|m| m.kind == "bind" || m.kind == "volume")
            .collect();
        let mut want = self.inode_written.clone();
        let mut inodes_changed = false;
        for s in &self.slots {
            let KernelPart::Mount { ops } = s.plan.kernel else {
                continue;
            };
            if mask & (1 << s.bit) == 0 {
                continue;
            }
            for m in &volumes {
                if self.backend == Backend::Lsm || ops & (op::UNLINK | op::RMDIR) != 0 {
                    // The mount's source as the kernel sees it: every path
                    // into the volume ends at its inodes (LSM hooks; on
                    // tracepoints, bare names removed relative to a
                    // directory).
                    let host = Path::new(&m.source);
                    let key = inode_key(host).or_else(|| {
                        inode_key(
                            &Path::new("/proc/1/root").join(host.strip_prefix("/").unwrap_or(host)),
                        )
                    });
                    match key {
                        Some(k) => {
                            add_inode(&mut want, k, s.bit, ops, true, true);
                            done.push((k, s.bit, ops));
                            inodes_changed = true;
                        }
                        // Logged, not kept: one per container would grow
                        // with every container of a long run.
                        None => tracing::info!(
                            "volume source {} not found: {} guarded from userspace",
                            m.source,
                            m.destination
                        ),
                    }
                }
                if self.backend == Backend::Tracepoint {
                    // Absolute paths by the mount's destination prefix.
                    let prefix = format!("{}/", m.destination.trim_end_matches('/'));
                    let Some(k) = path_key(cgroup_id, &prefix) else {
                        tracing::info!(
                            "mount {} is longer than {KILL_PATH_LEN} bytes: guarded from userspace",
                            m.destination
                        );
                        continue;
                    };
                    let v = PathVerdict {
                        rules: 1 << s.bit,
                        ops,
                        entry_id: self.next_entry,
                        rule: s.bit,
                    };
                    self.next_entry += 1;
                    if let Err(e) = self.paths.insert(&k, v, 0) {
                        tracing::warn!("KILL_PATHS {prefix} (cgroup {cgroup_id}): {e}");
                    }
                }
            }
        }
        if inodes_changed {
            self.write_inodes(want);
        }
        self.mounts_done.insert(cgroup_id, done);
    }

    /// Contains a process the daemon killed (a rule decided in userspace):
    /// like an in-kernel kill, its guarded parent dies at its next probed
    /// syscall or fork, so the loop that started it starts nothing more.
    pub fn quarantine(&mut self, pid: u32, ppid: u32, slot: u32) {
        let v = slot + 1;
        let _ = self.quarantine.insert(pid, v, 0);
        let guarded =
            self.tasks.get(&ppid, 0).is_ok_and(|m| m != 0) && !self.roots_written.contains(&ppid);
        if ppid > 1 && guarded {
            if let Err(e) = self.quarantine.insert(ppid, v, 0) {
                tracing::warn!("QUARANTINE[{ppid}]: {e}");
            }
        }
        if let Err(e) = self.quarantine_on.set(0, 1, 0) {
            tracing::warn!("QUARANTINE_ON: {e}");
        }
    }

    /// A process is gone: forget its mask (the kernel dropped its entry).
    pub fn exited(&mut self, pid: u32) {
        self.task_masks.remove(&pid);
        self.roots_written.remove(&pid);
    }

    /// Forgets processes whose exit was lost (housekeeping).
    pub fn prune_pids(&mut self, alive: impl Fn(u32) -> bool) {
        self.task_masks.retain(|pid, _| alive(*pid));
        self.roots_written.retain(|pid| alive(*pid));
        crate::identity::resolver::shrink(&mut self.task_masks);
        self.sweep_dead_pids(&alive);
    }

    /// Removes the kernel's entries keyed by a tgid whose process is gone.
    /// The exit probe drops them at exit, but one written here after the
    /// exit (its event came late: a quarantine after a userspace kill, a
    /// first mask) would wait for whoever gets the pid next, and pids wrap
    /// (at 32768 on a default host): a soak saw host `runc` processes
    /// killed that way. A pid is looked up again just before its entry
    /// goes, so a process born since `alive` was taken (a fork that
    /// inherited its parent's entry in the kernel) keeps it. Returns how
    /// many entries went.
    pub fn sweep_dead_pids(&mut self, alive: &impl Fn(u32) -> bool) -> usize {
        let n = self.remove_pid_entries(|pid| {
            pid > 1 && !alive(pid) && !std::path::Path::new(&format!("/proc/{pid}")).exists()
        });
        if n > 0 {
            tracing::debug!("{n} kernel entries of exited processes removed");
        }
        n
    }

    /// Removes every entry keyed by a tgid that `stale` picks: rules,
    /// quarantine, agent roots, and taints by process (not by cgroup).
    /// Returns how many went.
    fn remove_pid_entries(&mut self, stale: impl Fn(u32) -> bool) -> usize {
        let mut n = 0;
        for map in [&mut self.tasks, &mut self.quarantine, &mut self.agent_roots] {
            let dead: Vec<u32> = map
                .keys()
                .filter_map(Result::ok)
                .filter(|&pid| stale(pid))
                .collect();
            for pid in dead {
                n += usize::from(map.remove(&pid).is_ok());
            }
        }
        let dead: Vec<u64> = self
            .taints
            .keys()
            .filter_map(Result::ok)
            .filter(|&k| k & TAINT_CGROUP == 0 && u32::try_from(k).is_ok_and(&stale))
            .collect();
        for k in dead {
            n += usize::from(self.taints.remove(&k).is_ok());
        }
        n
    }
}

/// Is `pid` still the process that made an event at `ts_ns` (boot clock)?
/// Not when it is gone, nor when the pid's process now started after the
/// event (a reused pid; /proc gives the start to the clock tick).
fn same_process(pid: u32, ts_ns: u64) -> bool {
    crate::identity::procfs::start_boottime_ns(pid).is_some_and(|start| start <= ts_ns)
}

/// Removes the entries of `trie` whose key `pick` selects (keys collected
/// first: removing while iterating would skip some).
fn remove_where<K: aya::Pod, V: aya::Pod>(
    trie: &mut LpmTrie<MapData, K, V>,
    pick: impl Fn(&Key<K>) -> bool,
) {
    let keys: Vec<Key<K>> = trie
        .keys()
        .filter_map(|k| k.ok())
        .filter(|k| pick(k))
        .collect();
    for k in keys {
        let _ = trie.remove(&k);
    }
}

/// Is the rule index of a trie key (big-endian) one of `bits`?
fn rule_in(rule: [u8; 4], bits: u32) -> bool {
    bits & (1 << u32::from_be_bytes(rule).min(31)) != 0
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

/// The `TAINTS` keys of an event's subject: its container's cgroup when
/// rules cover the whole container (`cgroup_mask` non-zero), else the
/// process and its ancestors up to the agent process (the agent gets the
/// secret its tool read).
pub fn taint_keys(ev: &Event, cgroup_mask: Option<u32>) -> Vec<u64> {
    use agentguard_common::enforce::TAINT_CGROUP;
    if cgroup_mask.is_some_and(|m| m != 0) {
        return vec![TAINT_CGROUP | ev.cgroup_id];
    }
    let id = ev.identity.as_ref();
    let agent = id
        .and_then(|i| i.agent.as_ref())
        .filter(|a| a.source == AgentSource::Ancestry)
        .and_then(|a| a.pid);
    let mut keys = vec![u64::from(ev.pid)];
    if let Some(agent) = agent {
        for a in id.map(|i| &i.ancestry[..]).unwrap_or_default() {
            if a.pid != ev.pid && a.pid > 1 {
                keys.push(u64::from(a.pid));
            }
            if a.pid == agent {
                break;
            }
        }
    }
    keys
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
    fn a_cidr_exception_that_is_also_the_resolver_covers_every_port() {
        let dir = std::env::temp_dir().join(format!("ag-netent-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::write(
            dir.join("n.yaml"),
            "name: n\ndns_resolvers: [10.0.0.2]\nrules:\n  - name: r\n    kinds: [connect]\n    match: { agent: any }\n    when:\n      dest: { cidrs: [0.0.0.0/0] }\n      except: { dns_resolver: true, cidrs: [10.0.0.2/32] }\n    action: deny\n    severity: high\n    message: m\n",
        )
        .expect("write");
        let set = PolicySet::load_dir(&dir).expect("load");
        let _ = std::fs::remove_dir_all(&dir);
        let entries = net_entries(0, &set.rules()[0]);
        let (_, v) = entries
            .iter()
            .find(|(k, _)| k.prefix_len() == NET_KEY_RULE_BITS + 128)
            .expect("the /32 entry");
        assert!(v.flags & net_flags::EXCEPT != 0);
        // Every port, not only the resolver's 53.
        assert_eq!(v.n_except, 0);
    }

    #[test]
    fn dns_keys_reverse_the_name_and_mark_suffixes() {
        let exact = dns_key(3, &DomainPattern::parse("API.example.com").expect("p")).expect("k");
        assert_eq!(exact.prefix_len(), DNS_KEY_RULE_BITS + 8 * 16);
        assert_eq!(&exact.data().name[..16], b"moc.elpmaxe.ipa\0");
        assert_eq!(exact.data().rule, 3u32.to_be_bytes());
        let suffix = dns_key(3, &DomainPattern::parse("*.example.com").expect("p")).expect("k");
        assert_eq!(suffix.prefix_len(), DNS_KEY_RULE_BITS + 8 * 12);
        assert_eq!(&suffix.data().name[..12], b"moc.elpmaxe.");
        let long = DomainPattern {
            name: "a".repeat(DNS_NAME_LEN),
            suffix: false,
        };
        assert!(dns_key(0, &long).is_none());
    }

    #[test]
    fn path_keys_bound_and_prefix_bits() {
        let k = path_key(7, "/data/").expect("key");
        assert_eq!(k.prefix_len(), 64 + 48);
        assert_eq!(&k.data().path[..6], b"/data/");
        assert!(path_key(7, &"x".repeat(KILL_PATH_LEN + 1)).is_none());
    }
}
