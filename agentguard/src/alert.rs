//! The types that pass between policy, enforcement and outputs.
//!
//! A policy turns an [`Event`] into zero or more [`Decision`]s; enforcement
//! carries each out and records an [`ActionResult`]; outputs ship the
//! resulting [`Alert`]. Their JSON form is the alert schema (docs/alerts.md),
//! so fields are only ever added. Later stages (BPF-LSM blocking, stateful
//! rules, learning mode) add variants, not new shapes.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::event::Event;

/// What a rule asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Report only.
    Alert,
    /// SIGKILL the offending process (or its container, per [`KillScope`]).
    Kill,
    /// Refuse the operation (in the kernel where the host allows it).
    Deny,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Alert => "alert",
            Action::Kill => "kill",
            Action::Deny => "deny",
        }
    }
}

/// How far a kill reaches.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KillScope {
    #[default]
    Process,
    Container,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Info,
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}

/// `enforce` acts; `audit` matches the same way and only reports what it
/// would have done.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    #[default]
    Enforce,
    Audit,
}

/// One rule's verdict on one event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    /// The policy (file stem or declared name) the rule belongs to.
    pub policy: Arc<str>,
    pub rule: Arc<str>,
    pub action: Action,
    #[serde(default, skip_serializing_if = "is_process_scope")]
    pub kill_scope: KillScope,
    /// The rule takes the subject's network away (`taint: true`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub taint: bool,
    pub severity: Severity,
    /// The rule's message template, filled from the event.
    pub message: String,
    pub mode: Mode,
}

fn is_process_scope(s: &KillScope) -> bool {
    *s == KillScope::Process
}

/// What enforcement did about a decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Reported, nothing more was asked.
    Alerted,
    Killed,
    /// The kernel refused the operation.
    Denied,
    /// Audit mode: what enforce mode would have done.
    WouldKill,
    WouldDeny,
    /// The target was already gone when we acted.
    AlreadyExited,
    /// Acting failed; `ActionResult::reason` says why.
    Failed,
    /// This host can't do it (e.g. deny without BPF-LSM); reported instead.
    Unsupported,
}

/// Where the action was carried out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Enforcer {
    /// By the eBPF program at the syscall (bpf_send_signal, sock_addr, LSM).
    Kernel,
    /// By the daemon after the event reached it (pidfd, Docker API).
    Userspace,
    None,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionResult {
    pub outcome: Outcome,
    pub by: Enforcer,
    /// Whether the offending syscall had already taken effect: a kill at the
    /// entry of unlinkat without BPF-LSM does not stop that one unlink.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub syscall_completed: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The mechanism that acted or matched, finer than `by`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mechanism: Option<Mechanism>,
}

/// What carried a verdict out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mechanism {
    /// A BPF-LSM hook, on the kernel object, before the operation.
    Lsm,
    /// A syscall tracepoint at entry (`bpf_send_signal`).
    Tracepoint,
    /// A cgroup sock_addr hook (connect/sendmsg refused).
    SockAddr,
    /// The cgroup sock_create hook (a raw or packet socket refused).
    SockCreate,
    /// The cgroup skb egress program (a DNS query dropped).
    CgroupSkb,
    /// The daemon, after the event (pidfd kill).
    Userspace,
    /// The container runtime, asked by the daemon.
    Runtime,
}

impl ActionResult {
    pub fn alerted() -> ActionResult {
        ActionResult {
            outcome: Outcome::Alerted,
            by: Enforcer::None,
            syscall_completed: None,
            reason: None,
            mechanism: None,
        }
    }
}

/// One line of the alert feed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// Wall-clock time the alert was raised, RFC 3339 UTC.
    pub time: String,
    /// Host name of the node that raised it.
    pub host: String,
    pub decision: Decision,
    pub result: ActionResult,
    /// The event with its identity and ancestry.
    pub event: Event,
    /// Who acted, for an agent's event: `agent` (the agent process
    /// itself) or `tool` (a process it ran).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<Actor>,
    /// More events of the same rule, subject and object within the alert
    /// window, folded into this alert (`event` is the first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<AlertGroup>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Actor {
    Agent,
    Tool,
}

/// Events folded into one alert: one action of an agent (a tool call) is
/// often several syscalls by several threads and processes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertGroup {
    /// Events in the group, the first included.
    pub count: u64,
    /// `ts_ns` of the first and the last.
    pub first_ts_ns: u64,
    pub last_ts_ns: u64,
    /// Distinct pids that acted (at most 16).
    pub pids: Vec<u32>,
    /// Outcomes of the folded events other than the first's, when they
    /// differ (e.g. one `killed`, the rest `already_exited`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub other_outcomes: Vec<Outcome>,
    /// Who acted across the group (`agent`, `tool`), when known.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub actors: Vec<Actor>,
}
