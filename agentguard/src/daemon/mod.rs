//! `agentguard run`: the daemon. Wires the stages in the data's order —
//! sensor -> identity -> policy -> enforcement -> outputs — and owns the
//! operational loop: signals (SIGHUP reloads, SIGTERM/SIGINT stop after
//! flushing), policy file watch, metrics and the status snapshot.
//!
//! Size: the one place that sees every stage (start-up report, reloads,
//! status snapshot, housekeeping, shutdown); alert grouping (`grouping.rs`)
//! and pipe writers (`pipes.rs`) live beside it.

mod grouping;
mod pipes;

use grouping::AlertGroups;
use pipes::PipeWriters;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};

use crate::alert::{Alert, Decision};
use crate::config::{BackendChoice, Config, WatchMode};
use crate::enforcement::kernel::KernelEnforcer;
use crate::enforcement::{Capabilities, Enforcer};
use crate::event::{Event, Kind};
use crate::identity::resolver::{AgentSource, ContainerMap, Resolver, DEFAULT_AGENTS};
use crate::identity::stage::{IdentityStage, DEFAULT_MAX_WAIT};
use crate::identity::watch;
use crate::outputs::metrics::{self, Metrics};
use crate::outputs::Outputs;
use crate::policy::plan::Backend;
use crate::policy::stream::stream_plan;
use crate::policy::{Diagnostic, LoadOptions, PolicySet, Reloader};
use crate::sensor::cgroups::CgroupClass;
use crate::sensor::{features, Sensor, SensorOptions, PIN_DIR};
use crate::status::{self, PolicyStatus, SharedStatus, Status};

/// Removes what the daemon leaves in bpffs (the pinned network-deny links
/// and enforcement maps): every deny stops.
pub fn cleanup(pin_dir: &Path) -> Result<()> {
    match std::fs::remove_dir_all(pin_dir) {
        Ok(()) => {
            eprintln!(
                "agentguard: removed {} (pinned deny programs detached, maps freed)",
                pin_dir.display()
            );
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!("agentguard: nothing pinned at {}", pin_dir.display());
            Ok(())
        }
        Err(e) => Err(anyhow!(e).context(format!("removing {}", pin_dir.display()))),
    }
}

fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: buf is writable for its length; gethostname NUL-terminates
    // within it on success.
    let r = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if r != 0 {
        return String::new();
    }
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

fn diagnostics(d: &[Diagnostic]) -> String {
    d.iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

fn policy_status(set: &PolicySet) -> Vec<PolicyStatus> {
    use crate::alert::Mode;
    // Rules, and which modes they run in (bit 0 enforce, bit 1 audit).
    let mut by: std::collections::BTreeMap<String, (usize, u8)> = Default::default();
    let bit = |m: Mode| if m == Mode::Audit { 2 } else { 1 };
    for r in set.rules() {
        let e = by.entry(r.policy().to_owned()).or_default();
        (e.0, e.1) = (e.0 + 1, e.1 | bit(r.mode()));
    }
    for p in set.rego_policies() {
        let e = by.entry(p.name().to_owned()).or_default();
        (e.0, e.1) = (e.0 + 1, e.1 | bit(p.mode()));
    }
    by.into_iter()
        .map(|(name, (rules, modes))| PolicyStatus {
            name,
            rules,
            mode: match modes {
                1 => Some("enforce".into()),
                2 => Some("audit".into()),
                3 => Some("enforce+audit".into()),
                _ => None,
            },
            file: None,
        })
        .collect()
}

/// Everything after identity, per event.
struct Pipeline {
    policy: Arc<PolicySet>,
    enforcer: Enforcer,
    outputs: Outputs,
    metrics: Arc<Metrics>,
    host: String,
    decisions: Vec<Decision>,
    alerts: u64,
    events: u64,
    /// Agents only stream (watch agents, or auto with a policy about
    /// agents only): agent processes to widen to `widen_kinds`.
    widen_agents: bool,
    widen_kinds: Vec<Kind>,
    watch: WatchMode,
    widen: Vec<u32>,
    /// Agent processes widened and alive (the kernel drops a filter entry
    /// at exit, so a reused pid must be widened again).
    widened: std::collections::HashSet<u32>,
    /// Host agent processes (found by ancestry) seen and not yet exited,
    /// by pid: their name, for `status`.
    host_agents: std::collections::BTreeMap<u32, String>,
    /// Who writes into which pipe, for `stdin_from` rules.
    pipe_writers: PipeWriters,
    /// Cgroups to classify for the kernel's stream filter, and the last one
    /// asked (consecutive events mostly share a cgroup).
    classify: Vec<(u64, CgroupClass)>,
    last_class: Option<(u64, CgroupClass)>,
    /// Maps whose overflow was already alerted.
    map_full_alerted: std::collections::HashSet<String>,
    /// Names DNS answers gave each subject's addresses.
    dns: crate::identity::dns::DnsNames,
    /// `strict:`: a policy with a rule this host can't carry out is refused.
    strict: bool,
    /// Flood isolation: what was reported of each flooding subject.
    floods: std::collections::HashMap<u64, FloodSeen>,
    flood_quota: u32,
    /// Alerts waiting for their window or folded into a repeat hold.
    grouping: AlertGroups,
}

/// One flooding subject's drops as last reported.
struct FloodSeen {
    reported: [u64; agentguard_common::filter::flood::KINDS],
    at: Instant,
}

/// A flooding subject is alerted at most this often (its drops add up
/// in between).
const FLOOD_ALERT_EVERY: Duration = Duration::from_secs(5);

impl Pipeline {
    /// Sends an alert the daemon raises itself (no rule matched an event):
    /// straight to the outputs, nothing to enforce.
    fn raise(&mut self, ev: Event, decision: Decision) {
        let alert = Alert {
            time: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            host: self.host.clone(),
            decision,
            result: crate::alert::ActionResult::alerted(),
            event: ev,
            actor: None,
            group: None,
        };
        self.metrics.alert(&alert);
        self.outputs.send(&alert);
        self.alerts += 1;
    }

    /// Every reload attempt is on the alert feed: who can write the policy
    /// directory changes enforcement, so each change is recorded with the
    /// content hashes before and after.
    fn audit_reload(&mut self, audit: crate::event::ReloadDetail) {
        let (rule, severity, message) = if audit.applied {
            (
                "policy-reload",
                crate::alert::Severity::Medium,
                format!(
                    "policies reloaded from {}: {} -> {}; rules added [{}], removed [{}]; files added [{}], removed [{}], changed [{}]",
                    audit.dir,
                    short(&audit.old_hash),
                    short(&audit.new_hash),
                    audit.rules_added.join(", "),
                    audit.rules_removed.join(", "),
                    audit.files_added.join(", "),
                    audit.files_removed.join(", "),
                    audit.files_changed.join(", "),
                ),
            )
        } else {
            (
                "policy-reload-refused",
                crate::alert::Severity::High,
                format!(
                    "policy change in {} refused ({}), {} stays in force: {}",
                    audit.dir,
                    short(&audit.new_hash),
                    short(&audit.old_hash),
                    audit.error.as_deref().unwrap_or("?"),
                ),
            )
        };
        let ev = Event::daemon(
            Kind::PolicyReload,
            std::process::id(),
            "agentguard",
            0,
            crate::event::Detail::PolicyReload(audit),
        );
        self.raise(
            ev,
            Decision {
                policy: "agentguard".into(),
                rule: rule.into(),
                action: crate::alert::Action::Alert,
                kill_scope: Default::default(),
                taint: false,
                severity,
                message,
                mode: crate::alert::Mode::Enforce,
            },
        );
    }

    /// A `flood` event for a subject whose drops grew since it was last
    /// reported (at most every [`FLOOD_ALERT_EVERY`]); metrics by kind.
    fn flood_event(&mut self, f: &crate::sensor::FloodCount, now: Instant) -> Option<Event> {
        use std::collections::hash_map::Entry;
        let seen = match self.floods.entry(f.cgroup_id) {
            Entry::Occupied(e) => {
                let seen = e.into_mut();
                if now.duration_since(seen.at) < FLOOD_ALERT_EVERY {
                    return None;
                }
                seen
            }
            Entry::Vacant(e) => e.insert(FloodSeen {
                reported: [0; agentguard_common::filter::flood::KINDS],
                at: now,
            }),
        };
        let mut detail = crate::event::FloodDetail {
            quota_per_sec: u64::from(self.flood_quota),
            ..Default::default()
        };
        for (wire, (&n, old)) in f.dropped.iter().zip(seen.reported.iter_mut()).enumerate() {
            // Below what was reported: the LRU evicted the entry and it
            // started again.
            let delta = if n >= *old { n - *old } else { n };
            *old = n;
            if delta == 0 {
                continue;
            }
            let kind = Kind::from_wire(wire as u16).map_or("other", Kind::as_str);
            self.metrics
                .flooded
                .with_label_values(&[kind])
                .inc_by(delta);
            *detail.dropped.entry(kind.to_owned()).or_default() += delta;
            detail.total += delta;
        }
        if detail.total == 0 {
            return None;
        }
        seen.at = now;
        let comm = std::fs::read_to_string(format!("/proc/{}/comm", f.last_pid))
            .map(|c| c.trim_end().to_owned())
            .unwrap_or_default();
        Some(Event::daemon(
            Kind::Flood,
            f.last_pid,
            &comm,
            f.cgroup_id,
            crate::event::Detail::Flood(detail),
        ))
    }

    /// Sends `alert` or folds it into the alert already waiting for the
    /// same rule, subject and object, or into the repeat summary of one
    /// sent within `alert_repeat`.
    /// Counts `alert` and sends it now, or holds it for its group.
    fn emit(&mut self, alert: Alert, now: Instant) {
        self.metrics.alert(&alert);
        if let Some(a) = self.grouping.offer(alert, now) {
            self.outputs.send(&a);
            self.alerts += 1;
        }
    }

    /// Sends the alerts whose window or hold has ended (all with `all`).
    fn flush_alerts(&mut self, now: Instant, all: bool) {
        for a in self.grouping.due(now, all) {
            self.outputs.send(&a);
            self.alerts += 1;
        }
    }

    /// When the next waiting alert is due.
    fn next_alert_due(&self) -> Option<Instant> {
        self.grouping.next_due()
    }

    fn handle(&mut self, mut ev: Event) {
        self.pipe_writers.note(&mut ev);
        self.events += 1;
        self.metrics.event(ev.kind);
        if ev.kind == Kind::Exit {
            self.host_agents.remove(&ev.pid);
        } else if let Some(a) = ev.identity.as_ref().and_then(|i| i.agent.as_ref()) {
            if let (AgentSource::Ancestry, Some(pid)) = (a.source, a.pid) {
                self.host_agents
                    .entry(pid)
                    .or_insert_with(|| a.name.clone());
            }
        }
        if let Some(k) = self.enforcer.kernel.as_mut() {
            k.observe(&ev, &self.policy);
            if ev.kind == Kind::Exit {
                k.exited(ev.pid);
            }
        }
        if self.widen_agents {
            if ev.kind == Kind::Exit {
                self.widened.remove(&ev.pid);
            } else if ev.identity.as_ref().is_some_and(|i| i.agent.is_some())
                && !self.widened.contains(&ev.pid)
            {
                self.widen.push(ev.pid);
            }
            // A container's cgroup is classified from an event carrying the
            // container's metadata (the identity stage holds events until it
            // comes): an agent's if a label or image says so. A host agent
            // shares its session's cgroup with everything else, and the host's
            // cgroups are classified by the sweep.
            let class = ev.identity.as_ref().and_then(|i| {
                i.container.as_ref().filter(|c| c.info.is_some()).map(|_| {
                    if i.agent
                        .as_ref()
                        .is_some_and(|a| a.source != AgentSource::Ancestry)
                    {
                        CgroupClass::Agent
                    } else {
                        CgroupClass::Other
                    }
                })
            });
            if let Some(class) = class.filter(|_| ev.cgroup_id != 0) {
                if self.last_class != Some((ev.cgroup_id, class)) {
                    self.last_class = Some((ev.cgroup_id, class));
                    self.classify.push((ev.cgroup_id, class));
                }
            }
        }
        let mut ev = ev;
        self.dns.observe(&mut ev);
        self.outputs.observe(&ev);
        if ev.identity.as_ref().is_some_and(|i| i.agent.is_some()) {
            resolve_removal(&mut ev);
        }
        self.decisions.clear();
        let t = Instant::now();
        self.policy.evaluate(&ev, &mut self.decisions);
        // A kernel verdict is always reported under its rule, even when the
        // event as userspace sees it (the string a process passed) would
        // not match: the kernel decided on the object itself.
        if let Some(index) = self.enforcer.kernel_rule(&ev) {
            if let Some(r) = self.policy.rules().get(index) {
                if !self
                    .decisions
                    .iter()
                    .any(|d| &*d.policy == r.policy() && &*d.rule == r.name())
                {
                    self.decisions.push(r.decide(&ev));
                }
            }
        }
        self.metrics.evaluation(t.elapsed());
        if let crate::event::Detail::Flood(f) = &ev.detail {
            let who = ev
                .identity
                .as_ref()
                .and_then(|i| {
                    i.agent
                        .as_ref()
                        .map(|a| format!("agent {}", a.name))
                        .or_else(|| {
                            i.container.as_ref().map(|c| {
                                let name = c.info.as_ref().map_or(&*c.id, |x| x.name.as_str());
                                format!("container {name}")
                            })
                        })
                })
                .unwrap_or_else(|| format!("cgroup {}", ev.cgroup_id));
            self.decisions.push(Decision {
                policy: "agentguard".into(),
                rule: "flood".into(),
                action: crate::alert::Action::Alert,
                kill_scope: Default::default(),
                taint: false,
                severity: crate::alert::Severity::High,
                message: format!(
                    "{who} ({} pid {}) went past its quota of {} records/s: {} of its records dropped in the kernel, its own only (in-kernel enforcement is unaffected; rules decided in userspace did not see them)",
                    ev.comm, ev.pid, f.quota_per_sec, f.total
                ),
                mode: crate::alert::Mode::Enforce,
            });
        }
        // A kernel map that overflowed is an alert, once per map.
        if let crate::event::Detail::Fork(f) = &ev.detail {
            if let Some(map) = &f.map_full {
                if self.map_full_alerted.insert(map.clone()) {
                    self.decisions.push(Decision {
                        policy: "agentguard".into(),
                        rule: "kernel-map-full".into(),
                        action: crate::alert::Action::Alert,
                        kill_scope: Default::default(),
                        taint: false,
                        severity: crate::alert::Severity::High,
                        message: format!(
                            "kernel map {map} is full: pid {} and its children are not covered by it (agentguard_kernel_map_full_total)",
                            f.child_pid
                        ),
                        mode: crate::alert::Mode::Enforce,
                    });
                }
            }
        }
        // A connect or send the kernel refused because its subject is
        // tainted: said as such, under the rule that tainted it.
        if matches!(ev.kind, Kind::Connect | Kind::Send)
            && ev.ret == -i64::from(libc::EPERM)
            && self
                .decisions
                .iter()
                .all(|d| d.action != crate::alert::Action::Deny)
        {
            if let Some(t) = self.enforcer.tainted(&ev) {
                let dest = match &ev.detail {
                    crate::event::Detail::Net(n) => format!(
                        " to {}:{}",
                        n.addr.as_deref().unwrap_or("?"),
                        n.port.unwrap_or(0)
                    ),
                    _ => String::new(),
                };
                self.decisions.push(Decision {
                    policy: t.policy.clone(),
                    rule: t.rule.clone(),
                    action: crate::alert::Action::Deny,
                    kill_scope: Default::default(),
                    taint: true,
                    severity: crate::alert::Severity::High,
                    message: format!(
                        "{} {}{} refused: tainted by {} at {}{}",
                        ev.comm,
                        ev.kind,
                        dest,
                        t.rule,
                        t.since,
                        t.what
                            .as_ref()
                            .map_or_else(String::new, |w| format!(" ({w})"))
                    ),
                    mode: crate::alert::Mode::Enforce,
                });
            }
        }
        if ev.kind == Kind::Exit {
            self.enforcer.forget(ev.pid);
        }
        if self.decisions.is_empty() {
            return;
        }
        let time = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        for d in std::mem::take(&mut self.decisions) {
            let mut result = self.enforcer.act(&ev, &d);
            // A taint rule's own match (not the refusal it causes later).
            if d.taint && d.mode == crate::alert::Mode::Enforce && ev.ret != -i64::from(libc::EPERM)
            {
                let why = self.enforcer.taint(&ev, &d, &time);
                result.reason = Some(match result.reason.take() {
                    Some(r) => format!("{r}; {why}"),
                    None => why,
                });
            }
            let actor = crate::policy::rules::actor(&ev);
            let alert = Alert {
                time: time.clone(),
                host: self.host.clone(),
                decision: d,
                result,
                event: ev.clone(),
                actor,
                group: None,
            };
            self.emit(alert, Instant::now());
        }
    }
}

/// The first 12 hex digits of a hash, for messages (the event has it all).
fn short(h: &str) -> &str {
    h.get(..12).unwrap_or(h)
}

/// An agent's unlink, rmdir or rename names its file by the string it
/// passed; the tracepoint backend decided on it. Rules see the real
/// location too: the directory resolved through the process's root.
fn resolve_removal(ev: &mut Event) {
    use crate::event::{Detail, Resolution};
    let info = match &mut ev.detail {
        Detail::File(f) if matches!(ev.kind, Kind::Unlink | Kind::Rmdir) => &mut f.file,
        Detail::Rename(r) => &mut r.from,
        _ => return,
    };
    if matches!(info.resolution, Resolution::File | Resolution::Unresolved) {
        return;
    }
    if let Some(real) = crate::sensor::paths::real_removed_path(&[ev.pid, ev.ppid], &info.path) {
        if info.raw.is_none() {
            info.raw = Some(std::mem::take(&mut info.path));
        }
        info.path = real;
        info.resolution = Resolution::Resolved;
    }
}

/// Runs until SIGINT/SIGTERM.
pub async fn run(cfg: Config, ready_file: Option<&Path>) -> Result<()> {
    let opts = LoadOptions {
        trusted_only: true,
        ..LoadOptions::system()
    };
    let mut reloader = Reloader::new(&cfg.policies, opts).map_err(|d| {
        anyhow!(
            "policies in {} refused:\n{}",
            cfg.policies.display(),
            diagnostics(&d)
        )
    })?;
    let policy = reloader.current();
    if policy.is_empty() {
        tracing::warn!(
            "no policy files in {}: events are only counted",
            cfg.policies.display()
        );
    }
    let metrics = Arc::new(Metrics::new().context("creating metrics")?);
    let _metrics_server = match cfg.metrics_addr {
        Some(addr) => Some(
            metrics::serve(Arc::clone(&metrics), addr)
                .await
                .with_context(|| format!("serving metrics on {addr}"))?,
        ),
        None => None,
    };
    let status: SharedStatus = Status::new().shared();
    // Fatal, and before anything is loaded: a second daemon on the same
    // socket must not double the enforcement (a stale socket of a killed
    // daemon is replaced, see status::serve).
    let _status_server = status::serve(&cfg.status_socket, Arc::clone(&status))
        .await
        .with_context(|| format!("status socket {}", cfg.status_socket.display()))?;
    let mut outputs =
        Outputs::from_config(&cfg.alerts, cfg.format()).context("starting alert sinks")?;
    // The live page (`--ui`): its own module; it reads the status snapshot.
    let _ui = crate::outputs::ui::start(&cfg, Arc::clone(&status), &mut outputs).await?;
    metrics.watch_sinks(outputs.sink_stats());

    let pin_dir = Path::new(PIN_DIR);
    let mut sensor = Sensor::start(&SensorOptions {
        kinds: Kind::ALL.to_vec(),
        watch_all: cfg.watch == WatchMode::All,
        // Smaller than `events`' default: the kernel filter and prefilter
        // keep `run`'s stream to what rules need, and the ring is mapped
        // twice into the daemon (2 x its size of resident memory).
        ring_buffer_bytes: cfg.ring_buffer_bytes.map_or(RUN_RING_BUFFER_BYTES, |r| r.0),
        pin_dir: Some(pin_dir.to_path_buf()),
        map_sizes: cfg.kernel_maps.sizes(),
        ..SensorOptions::default()
    })?;
    if cfg.watch != WatchMode::All {
        // Until the policy says more (apply_stream below).
        sensor.set_default(&[Kind::Exec, Kind::Fork, Kind::Exit])?;
    }
    // The backend: BPF-LSM wherever the kernel runs it, else tracepoints.
    let backend = match (
        cfg.backend == BackendChoice::Tracepoint,
        features::bpf_lsm_status(),
    ) {
        (true, _) => {
            tracing::info!("BPF-LSM backend disabled by configuration: tracepoint backend");
            Backend::Tracepoint
        }
        (false, features::Status::Supported) => match sensor.attach_lsm() {
            Ok(hooks) => {
                tracing::info!("enforcement backend: lsm ({})", hooks.join(", "));
                Backend::Lsm
            }
            Err(e) => {
                tracing::warn!(
                    "BPF-LSM is active but its hooks failed to load ({e:#}): tracepoint backend"
                );
                Backend::Tracepoint
            }
        },
        (false, features::Status::Unsupported(why) | features::Status::Error(why)) => {
            tracing::info!(
                "enforcement backend: tracepoint (no BPF-LSM: {why}); file denies only alert, kills happen at syscall entry"
            );
            Backend::Tracepoint
        }
    };
    if backend == Backend::Lsm
        && std::env::var_os("AGENTGUARD_LSM_TIMING").is_some_and(|v| v == "1")
    {
        // Benchmarks only: two clock reads per decision.
        sensor.set_lsm_timing(true)?;
    }
    sensor.set_config(
        agentguard_common::filter::config::LSM_ACTIVE,
        u32::from(backend == Backend::Lsm),
    )?;
    let mut kernel = KernelEnforcer::new(&mut sensor, backend)?;
    kernel.install(&policy, &mut sensor)?;
    for n in &kernel.notes {
        tracing::warn!("{n}");
    }
    let mut caps = Capabilities {
        // Probed, not assumed (the loaded programs call it; a kernel that
        // refused it would have refused them too, but say what we know).
        kernel_kill: matches!(features::probe_send_signal(), features::Status::Supported),
        network_deny: false,
        lsm: backend == Backend::Lsm,
        dns: false,
    };
    if let Err(e) = sensor.set_flood_quota(cfg.flood_quota) {
        tracing::warn!("flood isolation unavailable (a flooding process can fill the ring buffer for everyone): {e:#}");
    }
    match features::cgroup2_mount() {
        Some(root) => match sensor.attach_sock_addr(&root, pin_dir) {
            Ok(now) => {
                caps.network_deny = true;
                match sensor.attach_dns(&root, pin_dir) {
                    Ok(now) => {
                        caps.dns = true;
                        if !now.is_empty() {
                            tracing::info!("egress by domain: attached {}", now.join(","));
                        }
                    }
                    Err(e) => tracing::warn!(
                        "egress by domain unavailable: {e:#}; rules with except.domains refuse every address outside their other exceptions"
                    ),
                }
                if now.is_empty() {
                    tracing::info!(
                        "network deny: adopted the pinned programs in {}",
                        pin_dir.display()
                    );
                } else {
                    tracing::info!(
                        "network deny: attached {} at {}",
                        now.join(","),
                        root.display()
                    );
                }
            }
            Err(e) => tracing::warn!("network deny unavailable, deny rules only alert: {e:#}"),
        },
        None => {
            tracing::warn!("no cgroup v2 mount: network deny unavailable, deny rules only alert")
        }
    }
    let degraded = crate::enforcement::degraded_rules(&policy, &caps, Some(kernel.backend()));
    report_degraded(&degraded, &metrics, &status);
    if cfg.strict && !degraded.is_empty() {
        bail!(
            "strict: {} rule(s) ask for what this host cannot do (fix them, or run without --strict to have them alert):\n  {}",
            degraded.len(),
            degraded.join("\n  ")
        );
    }
    tracing::info!(
        "kernel rules: {}",
        kernel
            .slots()
            .iter()
            .map(|s| format!("{}/{} ({})", s.policy(), s.rule(), s.plan.kernel.name()))
            .collect::<Vec<_>>()
            .join(", ")
    );

    let container_map = ContainerMap::default();
    let (wanted, docker_status) = watch::spawn_runtimes(
        container_map.clone(),
        cfg.docker_socket.clone(),
        cfg.containerd_socket.as_ref().map(std::path::PathBuf::from),
    );
    let mut agents: Vec<String> = DEFAULT_AGENTS.iter().map(|a| (*a).to_owned()).collect();
    agents.extend(cfg.agents.iter().cloned());
    let agent_refs: Vec<&str> = agents.iter().map(String::as_str).collect();
    let mut resolver = Resolver::new(container_map.clone(), &agent_refs)
        .with_image_agents(cfg.agent_images.0.clone());
    // One walk of the cgroup tree at start: the kernel's path record is
    // filled with the cgroups older than its probe, and the host's cgroups
    // are classified below.
    let cgroups_at_start = crate::sensor::cgroups::walk_host();
    match sensor.take_cgroup_paths(cgroups_at_start.as_deref().unwrap_or_default()) {
        Some(paths) => resolver = resolver.with_cgroup_paths(Box::new(move |cg| paths.get(cg))),
        None => tracing::warn!("no cgroup:cgroup_mkdir probe: a container whose processes are gone before the daemon looks is tagged as the host"),
    }
    let mut stage = IdentityStage::new(resolver, wanted, DEFAULT_MAX_WAIT);
    let mut pipe = Pipeline {
        policy,
        enforcer: Enforcer::new(Some(kernel), caps, cfg.docker_socket.clone()),
        outputs,
        metrics: Arc::clone(&metrics),
        host: hostname(),
        decisions: Vec::new(),
        alerts: 0,
        events: 0,
        widen_agents: false,
        widen_kinds: Kind::ALL.to_vec(),
        watch: cfg.watch,
        widen: Vec::new(),
        widened: Default::default(),
        host_agents: Default::default(),
        pipe_writers: Default::default(),
        classify: Vec::new(),
        last_class: None,
        map_full_alerted: Default::default(),
        dns: Default::default(),
        strict: cfg.strict,
        floods: Default::default(),
        flood_quota: cfg.flood_quota,
        grouping: AlertGroups::new(
            Duration::from_millis(cfg.alert_window_ms),
            Duration::from_millis(cfg.alert_repeat_ms),
        ),
    };
    apply_stream(&mut pipe, &mut sensor);
    // Set-up (LSM programs, BTF, policy compilation) is done: hand its
    // freed heap back to the system.
    crate::alloc::release_free_memory();
    if let Ok(mut s) = status.write() {
        s.probes = sensor.attached().to_vec();
        let mut caps = serde_json::to_value(pipe.enforcer.caps).unwrap_or_default();
        if let Some(o) = caps.as_object_mut() {
            o.insert(
                "backend".into(),
                serde_json::json!(pipe.enforcer.kernel.as_ref().map(|k| format!(
                    "{:?}",
                    k.backend()
                )
                .to_lowercase())),
            );
            o.insert(
                "syscall_hooks".into(),
                serde_json::json!(sensor.syscall_hooks().as_str()),
            );
        }
        s.capabilities = Some(caps);
        s.policies = policy_status(&pipe.policy);
        s.touch();
    }

    use tokio::signal::unix::{signal, SignalKind};
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sighup = signal(SignalKind::hangup())?;
    if let Some(path) = ready_file {
        std::fs::write(path, format!("{}\n", std::process::id()))
            .with_context(|| format!("writing ready file {}", path.display()))?;
    }
    eprintln!(
        "agentguard: running with {} policy rule(s) from {} ({} in the kernel); {} probes (syscall hooks: {}); Ctrl-C to stop",
        pipe.policy.rules().len() + pipe.policy.rego_policies().len(),
        cfg.policies.display(),
        pipe.enforcer.kernel.as_ref().map_or(0, |k| k.slots().len()),
        sensor.attached().len(),
        sensor.syscall_hooks().as_str()
    );
    crate::notify::tell(&format!(
        "READY=1\nSTATUS=guarding: {} policy rule(s), {} in the kernel, {} probes",
        pipe.policy.rules().len() + pipe.policy.rego_policies().len(),
        pipe.enforcer.kernel.as_ref().map_or(0, |k| k.slots().len()),
        sensor.attached().len()
    ));
    // The host's cgroups leave the "not classified yet" stream at once.
    if let Some(all) = &cgroups_at_start {
        sensor.sweep_cgroups(all, is_container_cgroup);
    }
    let mut tick = tokio::time::interval(Duration::from_millis(5));
    let mut housekeeping = tokio::time::interval(Duration::from_secs(1));
    let mut refresh_ticks: u64 = 0;
    let mut map_full_said: std::collections::HashSet<&str> = Default::default();
    loop {
        let holding = stage.is_holding();
        let alert_due = pipe.next_alert_due();
        let mut reload = false;
        let mut floods = Vec::new();
        let mut on_event = |ev: Event| stage.push(ev, Instant::now(), &mut |e| pipe.handle(e));
        tokio::select! {
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
            _ = sighup.recv() => reload = true,
            r = sensor.read(&mut on_event) => { r?; }
            _ = tick.tick(), if holding => {}
            _ = tokio::time::sleep_until(alert_due.unwrap_or_else(Instant::now).into()), if alert_due.is_some() => {}
            _ = housekeeping.tick() => {
                metrics.set_events_lost(sensor.lost_events());
                metrics.prefiltered.set(sensor.prefiltered() as i64);
                metrics.dns_dropped.set(sensor.dns_dropped() as i64);
                if pipe.flood_quota != 0 {
                    floods = sensor.floods();
                }
                for (map, n) in sensor.map_full() {
                    metrics.map_full.with_label_values(&[map]).set(n as i64);
                    if n > 0 && map_full_said.insert(map) {
                        if map.starts_with("pending_") {
                            // LRU maps: nothing is refused, an old record
                            // waiting for its syscall's exit was evicted.
                            tracing::error!("kernel map {map}: {n} syscall record(s) evicted before their syscall returned (those records are lost; see agentguard_kernel_map_full_total)");
                        } else {
                            tracing::error!("kernel map {map} is full: {n} insert(s) refused; new tasks are not covered by it (see agentguard_kernel_map_full_total)");
                        }
                    }
                    if let Ok(mut s) = status.write() {
                        s.counters.insert(format!("map_full_{map}"), n);
                    }
                }
                metrics.containers_watched.set(container_map.read().map_or(0, |m| m.len()) as i64);
                metrics.agents_watched.set(pipe.widened.len() as i64);
                let containers = container_statuses(&container_map);
                // An agent whose exit was lost is dropped when its pid is gone.
                pipe.host_agents
                    .retain(|pid, _| Path::new(&format!("/proc/{pid}")).exists());
                let agents = agent_statuses(&pipe.host_agents, &containers);
                if let Ok(mut s) = status.write() {
                    s.containers = containers;
                    s.agents = agents;
                    pipe.enforcer.sync_taints();
                    s.tainted = pipe.enforcer.taints();
                    s.counters.insert("events".into(), pipe.events);
                    s.counters.insert("alerts".into(), pipe.alerts);
                    s.counters.insert("events_lost".into(), sensor.lost_events());
                    s.counters.insert("events_prefiltered".into(), sensor.prefiltered());
                    s.counters.insert("dns_dropped".into(), sensor.dns_dropped());
                    s.counters.insert("events_flooded".into(), sensor.flooded());
                    s.counters.insert("identity_waited".into(), stage.waited);
                    s.counters.insert("identity_expired".into(), stage.expired);
                    s.counters.insert("docker_connected".into(),
                        u64::from(docker_status.connected.load(std::sync::atomic::Ordering::Relaxed)));
                    s.touch();
                }
                let mut check = strict_check(&pipe);
                if let Some(r) = reloader.poll(&mut check) {
                    apply_reload(r, &mut pipe, &mut sensor, &metrics, &status);
                }
                // Files created since under a protected glob (a new key in
                // ~/.ssh, a new home directory) get their inode entries.
                refresh_ticks += 1;
                if refresh_ticks.is_multiple_of(5) {
                    if let Some(k) = pipe.enforcer.kernel.as_mut() {
                        k.refresh_files();
                    }
                }
                // What describes processes and containers that are gone is
                // forgotten (exits lost in the ring buffer, containers
                // removed), so a long run does not grow with all it saw.
                if refresh_ticks.is_multiple_of(5) {
                    let alive = live_pids();
                    let is_alive = |pid: u32| alive.contains(&pid);
                    let pruned = stage.prune(is_alive, |id| {
                        container_map.read().is_ok_and(|m| m.contains_key(id))
                    });
                    pipe.widened.retain(|pid| alive.contains(pid));
                    if let Some(k) = pipe.enforcer.kernel.as_mut() {
                        k.prune_pids(is_alive);
                    }
                    if let Ok(mut s) = status.write() {
                        s.counters.insert("identity_procs_pruned".into(), pruned as u64);
                        s.counters.insert("identity_procs".into(), stage.resolver().procs_known() as u64);
                    }
                }
                // Freed heap goes back to the system (glibc keeps it per
                // thread arena otherwise).
                if refresh_ticks.is_multiple_of(60) {
                    crate::alloc::release_free_memory();
                }
                // New host cgroups are classified, and classified cgroups
                // that are gone leave the stream filter.
                // What was written for containers that are gone is
                // forgotten.
                if refresh_ticks.is_multiple_of(5) {
                    if let Some(all) = crate::sensor::cgroups::walk_host() {
                        let n = sensor.sweep_cgroups(&all, is_container_cgroup);
                        let live: std::collections::HashSet<u64> =
                            all.iter().map(|(c, _)| *c).collect();
                        let enforced = pipe.enforcer.kernel.as_mut().map_or(0, |k| {
                            k.forget_cgroups(&live);
                            k.cgroups_enforced()
                        });
                        pipe.floods.retain(|cg, _| live.contains(cg));
                        if let Ok(mut s) = status.write() {
                            s.counters.insert("cgroups_classified".into(), n as u64);
                            s.counters.insert("cgroups_enforced".into(), enforced as u64);
                        }
                    }
                }
            }
        }
        if reload {
            tracing::info!(
                "SIGHUP: reloading policies from {}",
                reloader.dir().display()
            );
            crate::notify::tell(&format!(
                "RELOADING=1\nMONOTONIC_USEC={}",
                crate::notify::monotonic_usec()
            ));
            let r = reloader.reload_checked(&mut strict_check(&pipe));
            apply_reload(r, &mut pipe, &mut sensor, &metrics, &status);
            crate::notify::tell("READY=1");
        }
        let now = Instant::now();
        for f in &floods {
            if let Some(ev) = pipe.flood_event(f, now) {
                stage.push(ev, now, &mut |e| pipe.handle(e));
            }
        }
        stage.drain(Instant::now(), &mut |e| pipe.handle(e));
        pipe.flush_alerts(Instant::now(), false);
        for pid in std::mem::take(&mut pipe.widen) {
            // Not for a process already gone: its pid's next owner would
            // inherit the entry.
            // Only a live one is remembered: an agent process that ran and
            // exited within one drain would otherwise stay in the set.
            if !pipe.widened.contains(&pid)
                && Path::new(&format!("/proc/{pid}")).exists()
                && pipe.widened.insert(pid)
            {
                if let Err(e) = sensor.set_filter(pid, &pipe.widen_kinds) {
                    tracing::warn!("widening the kernel filter to agent pid {pid}: {e:#}");
                }
            }
        }
        for (cg, class) in std::mem::take(&mut pipe.classify) {
            if let Err(e) = sensor.classify_cgroup(cg, class) {
                if sensor.cgroups_refused() == 1 {
                    tracing::warn!("classifying cgroup {cg} for the stream filter: {e:#}; unclassified cgroups stream what the rules need");
                }
            }
        }
    }
    crate::notify::tell("STOPPING=1");
    // Queued alerts go out before exit; pinned deny programs stay.
    stage.flush(&mut |e| pipe.handle(e));
    pipe.flush_alerts(Instant::now(), true);
    let Pipeline {
        outputs,
        events,
        alerts,
        ..
    } = pipe;
    outputs.close();
    let (walks, hits) = sensor.lsm_walks();
    if walks > 0 {
        eprintln!(
            "agentguard: LSM hooks walked {walks} objects for guarded tasks, {hits} protected"
        );
    }
    if let Some((n, p50, p99)) = sensor.lsm_timing() {
        eprintln!("agentguard: LSM decision time for guarded tasks: n={n} p50={p50}ns p99={p99}ns");
    }
    eprintln!(
        "agentguard: stopped after {events} events and {alerts} alerts; {} lost in the kernel. Network denies stay pinned in {} (agentguard run --cleanup removes them)",
        sensor.lost_events(),
        pin_dir.display()
    );
    if let Some(path) = ready_file {
        let _ = std::fs::remove_file(path);
    }
    Ok(())
}

/// `strict:`: a set with a rule this host can't carry out is refused like
/// a broken one (and stays out of force).
fn strict_check(pipe: &Pipeline) -> impl FnMut(&PolicySet) -> Result<(), Vec<Diagnostic>> {
    let strict = pipe.strict;
    let caps = pipe.enforcer.caps;
    let backend = pipe.enforcer.kernel.as_ref().map(|k| k.backend());
    move |set| {
        if !strict {
            return Ok(());
        }
        let degraded = crate::enforcement::degraded_rules(set, &caps, backend);
        if degraded.is_empty() {
            return Ok(());
        }
        Err(degraded
            .into_iter()
            .map(|d| {
                Diagnostic::new(
                    std::path::Path::new("strict"),
                    0,
                    0,
                    format!("cannot be carried out on this host: {d}"),
                )
            })
            .collect())
    }
}

fn apply_reload(
    r: crate::policy::Reload,
    pipe: &mut Pipeline,
    sensor: &mut Sensor,
    metrics: &Metrics,
    status: &SharedStatus,
) {
    pipe.audit_reload(r.audit);
    match r.result {
        Ok(set) => {
            let backend = pipe.enforcer.kernel.as_ref().map(|k| k.backend());
            let degraded = crate::enforcement::degraded_rules(&set, &pipe.enforcer.caps, backend);
            if let Some(k) = pipe.enforcer.kernel.as_mut() {
                if let Err(e) = k.install(&set, sensor) {
                    tracing::error!("installing the new kernel rules: {e:#}");
                }
            }
            pipe.policy = set;
            apply_stream(pipe, sensor);
            report_degraded(&degraded, metrics, status);
            metrics.policy_reloads.inc();
            tracing::info!("policies reloaded: {} rule(s)", pipe.policy.rules().len());
            if let Ok(mut s) = status.write() {
                s.policies = policy_status(&pipe.policy);
                s.last_reload = Some(chrono::Utc::now().to_rfc3339());
                s.last_reload_error = None;
                s.touch();
            }
        }
        Err(d) => {
            metrics.policy_reload_failures.inc();
            let text = diagnostics(&d);
            tracing::error!("policy reload refused, the last good policies stay in force:\n{text}");
            if let Ok(mut s) = status.write() {
                s.last_reload_error = Some(text);
                s.touch();
            }
        }
    }
}

/// `run`'s ring buffer unless configured (`ring_buffer_bytes`): 4 MiB
/// holds 16 wakeup batches.
const RUN_RING_BUFFER_BYTES: u32 = 4 << 20;

/// Derives what the kernel streams from the policy in force (after the
/// kernel rules are installed: the prefilter relies on their entries).
fn apply_stream(pipe: &mut Pipeline, sensor: &mut Sensor) {
    use agentguard_common::filter::config;
    let sp = stream_plan(
        &pipe.policy,
        pipe.enforcer
            .kernel
            .as_ref()
            .map(|k| (k.plan(), k.backend())),
    );
    let agents = match pipe.watch {
        WatchMode::All => false,
        WatchMode::Agents => true,
        WatchMode::Auto => sp.agents_only,
    };
    // `--watch all` streams everything: no prefilter either.
    let prefilter = if pipe.watch == WatchMode::All {
        0
    } else {
        sp.prefilter
    };
    let result = (|| -> Result<()> {
        match pipe.watch {
            WatchMode::All => sensor.set_default(&Kind::ALL)?,
            _ if agents => sensor.set_default(&[Kind::Exec, Kind::Fork, Kind::Exit])?,
            _ => sensor.set_default(&sp.kinds)?,
        }
        sensor.set_guarded(&sp.kinds)?;
        sensor.set_config(config::URGENT_KINDS, sp.urgent)?;
        sensor.set_basenames(&sp.basenames)?;
        // The kernel's cache of directories that start no rule path is
        // about the old names.
        let epoch = sensor.config(config::TOP_EPOCH)?;
        sensor.set_config(config::TOP_EPOCH, epoch.wrapping_add(1))?;
        sensor.set_config(config::PREFILTER_KINDS, prefilter)?;
        sensor.set_config(
            config::ROOTED_OPENS,
            u32::from(prefilter != 0 && sp.rooted_opens),
        )?;
        Ok(())
    })();
    if let Err(e) = result {
        tracing::error!("applying the kernel stream filter: {e:#}; streaming everything");
        let _ = sensor.set_config(config::PREFILTER_KINDS, 0);
        let _ = sensor.set_default(&Kind::ALL);
    }
    let kinds = |mask: u32| -> String {
        let v: Vec<String> = Kind::ALL
            .iter()
            .filter(|k| mask & Kind::mask(&[**k]) != 0)
            .map(ToString::to_string)
            .collect();
        if v.is_empty() {
            "none".into()
        } else {
            v.join(",")
        }
    };
    tracing::info!(
        "streaming: {}; kinds {}; kept in the kernel unless a rule could match: {}{}; wake at once: {}{}",
        if agents {
            "agents (others: exec,fork,exit)"
        } else {
            "every process"
        },
        kinds(Kind::mask(&sp.kinds)),
        kinds(prefilter),
        if prefilter & Kind::mask(&[Kind::Open]) != 0 && sp.rooted_opens {
            " (containers' opens too, by first path component)"
        } else {
            ""
        },
        kinds(sp.urgent),
        if sp.urgent & agentguard_common::filter::URGENT_UNIX != 0 {
            ",unix connect"
        } else {
            ""
        }
    );
    for n in &sp.notes {
        tracing::info!("{n}");
    }
    pipe.widen_agents = agents;
    pipe.widen_kinds = sp.kinds;
}

/// Whether a cgroup path is a container's (or below one): such a cgroup is
/// classified from its events, once the container's metadata is known.
fn is_container_cgroup(path: &str) -> bool {
    crate::identity::cgroup::parse_path(path)
        .container_id
        .is_some()
}

/// `run` refuses to start without root before touching anything.
pub fn preflight() -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("agentguard run needs root (it loads eBPF programs and pins them in bpffs)");
    }
    Ok(())
}

/// The pids in /proc now (one directory read for a whole prune).
fn live_pids() -> std::collections::HashSet<u32> {
    std::fs::read_dir("/proc")
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The agents running now, for `status`: host agents by process, agent
/// containers by name.
fn agent_statuses(
    host: &std::collections::BTreeMap<u32, String>,
    containers: &[crate::status::ContainerStatus],
) -> Vec<crate::status::AgentStatus> {
    let mut v: Vec<_> = host
        .iter()
        .map(|(pid, name)| crate::status::AgentStatus {
            name: name.clone(),
            pid: Some(*pid),
            container: None,
        })
        .collect();
    v.extend(containers.iter().filter_map(|c| {
        Some(crate::status::AgentStatus {
            name: c.agent.clone()?,
            pid: None,
            container: Some(c.name.clone().unwrap_or_else(|| c.id.clone())),
        })
    }));
    v
}

/// The containers the identity stage knows now, by name, for `status`.
fn container_statuses(
    map: &crate::identity::resolver::ContainerMap,
) -> Vec<crate::status::ContainerStatus> {
    let Ok(m) = map.read() else {
        return Vec::new();
    };
    let mut v: Vec<_> = m
        .values()
        .map(|c| crate::status::ContainerStatus {
            id: c.id.clone(),
            name: (!c.name.is_empty()).then(|| c.name.clone()),
            image: (!c.image.is_empty()).then(|| c.image.clone()),
            agent: c.agent_label().map(str::to_owned),
        })
        .collect();
    v.sort_by(|a, b| a.name.cmp(&b.name).then_with(|| a.id.cmp(&b.id)));
    v
}

/// Says which rules this host can't carry out as written: the log, the
/// `rules_degraded` gauge and `status`.
fn report_degraded(degraded: &[String], metrics: &Metrics, status: &SharedStatus) {
    for d in degraded {
        tracing::warn!("rule cannot be carried out on this host: {d}");
    }
    metrics.rules_degraded.set(degraded.len() as i64);
    if let Ok(mut s) = status.write() {
        s.degraded_rules = degraded.to_vec();
        s.touch();
    }
}
