//! Alert grouping: alerts of one rule, subject and object within a window
//! are one alert with a `group` (count, span, pids); after it is sent, the
//! same alert again within the repeat hold is folded into one summary sent
//! when the hold ends. Bounded: past [`MAX_PENDING_ALERTS`] alerts go out
//! at once, ungrouped.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::alert::Alert;

/// Waiting groups and repeat holds, by group key.
pub(super) struct AlertGroups {
    groups: HashMap<u64, PendingAlert>,
    window: Duration,
    repeats: HashMap<u64, RepeatHold>,
    repeat: Duration,
}

impl AlertGroups {
    /// `window` 0: every alert goes out at once; `repeat` 0: no holds.
    pub(super) fn new(window: Duration, repeat: Duration) -> AlertGroups {
        AlertGroups {
            groups: HashMap::new(),
            window,
            repeats: HashMap::new(),
            repeat,
        }
    }

    /// Takes `alert`: returned to be sent now, or held (folded into its
    /// waiting group or its repeat summary).
    pub(super) fn offer(&mut self, mut alert: Alert, now: Instant) -> Option<Alert> {
        if self.window.is_zero() {
            return Some(alert);
        }
        let key = group_key(&alert);
        if let Some(p) = self.groups.get_mut(&key) {
            p.fold(&alert);
            return None;
        }
        if let Some(r) = self.repeats.get_mut(&key).filter(|r| now < r.until) {
            match &mut r.summary {
                Some(sum) => fold_into(sum, &alert),
                None => {
                    alert.group = None;
                    r.summary = Some(alert);
                }
            }
            return None;
        }
        if self.groups.len() >= MAX_PENDING_ALERTS {
            return Some(alert);
        }
        alert.group = None;
        self.groups.insert(
            key,
            PendingAlert {
                alert,
                deadline: now + self.window,
            },
        );
        None
    }

    /// The alerts whose window or hold has ended (all with `all`), in the
    /// order their events happened.
    pub(super) fn due(&mut self, now: Instant, all: bool) -> Vec<Alert> {
        if self.groups.is_empty() && self.repeats.is_empty() {
            return Vec::new();
        }
        let due: Vec<u64> = self
            .groups
            .iter()
            .filter(|(_, p)| all || p.deadline <= now)
            .map(|(k, _)| *k)
            .collect();
        let mut out: Vec<Alert> = Vec::with_capacity(due.len());
        for k in due {
            let Some(p) = self.groups.remove(&k) else {
                continue;
            };
            // The same alert again within the hold is one summary.
            if !self.repeat.is_zero() && self.repeats.len() < MAX_PENDING_ALERTS {
                self.repeats.insert(
                    k,
                    RepeatHold {
                        until: now + self.repeat,
                        summary: None,
                    },
                );
            }
            out.push(p.alert);
        }
        let ended: Vec<u64> = self
            .repeats
            .iter()
            .filter(|(_, r)| all || r.until <= now)
            .map(|(k, _)| *k)
            .collect();
        for k in ended {
            let Some(r) = self.repeats.remove(&k) else {
                continue;
            };
            if let Some(sum) = r.summary {
                out.push(sum);
                // Still repeating: another hold, one summary per hold.
                if !all {
                    self.repeats.insert(
                        k,
                        RepeatHold {
                            until: now + self.repeat,
                            summary: None,
                        },
                    );
                }
            }
        }
        out.sort_by_key(|a| a.event.ts_ns);
        out
    }

    /// When the next waiting alert is due.
    pub(super) fn next_due(&self) -> Option<Instant> {
        self.groups.values().map(|p| p.deadline).min()
    }
}

/// An alert held while events of its group may still come.
struct PendingAlert {
    alert: Alert,
    deadline: Instant,
}

impl PendingAlert {
    /// Folds `alert` (same group key) into this one's `group`.
    fn fold(&mut self, alert: &Alert) {
        fold_into(&mut self.alert, alert);
    }
}

/// Folds `alert` into `p`'s `group` (count, time span, pids, outcomes).
fn fold_into(p: &mut Alert, alert: &Alert) {
    use crate::alert::AlertGroup;
    let g = p.group.get_or_insert_with(|| AlertGroup {
        count: 1,
        first_ts_ns: p.event.ts_ns,
        last_ts_ns: p.event.ts_ns,
        pids: vec![p.event.pid],
        other_outcomes: Vec::new(),
        actors: p.actor.into_iter().collect(),
    });
    if let Some(a) = alert.actor {
        if !g.actors.contains(&a) {
            g.actors.push(a);
        }
    }
    g.count += 1;
    g.last_ts_ns = g.last_ts_ns.max(alert.event.ts_ns);
    if g.pids.len() < 16 && !g.pids.contains(&alert.event.pid) {
        g.pids.push(alert.event.pid);
    }
    let o = alert.result.outcome;
    if o != p.result.outcome && !g.other_outcomes.contains(&o) {
        g.other_outcomes.push(o);
    }
}

/// A group just sent: the same alert again before `until` is folded into
/// one summary, sent when the hold ends (a retry storm is two alerts a
/// minute, not one a second).
struct RepeatHold {
    until: Instant,
    summary: Option<Alert>,
}

/// At most this many alerts wait for their window; past it, alerts go
/// out at once, ungrouped (no unbounded memory under a storm of objects).
const MAX_PENDING_ALERTS: usize = 4096;

/// What makes two alerts one: the rule, its verdict, the subject (agent
/// session, else container, else process) and the object (path, or
/// destination).
fn group_key(a: &Alert) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    let ev = &a.event;
    (&*a.decision.policy, &*a.decision.rule, a.decision.action).hash(&mut h);
    // The way in is part of the object: another syscall or ABI, or another
    // string for the same file, is another alert (an evasion shows as such).
    (ev.kind, &ev.syscall, ev.kernel_action.map(|k| k.hook)).hash(&mut h);
    match ev.identity.as_ref() {
        Some(i) => match (&i.agent, &i.container) {
            (Some(ag), _) if ag.session.is_some() => ag.session.hash(&mut h),
            (_, Some(c)) => c.id.hash(&mut h),
            _ => ev.pid.hash(&mut h),
        },
        None => ev.pid.hash(&mut h),
    }
    use crate::event::Detail;
    match &ev.detail {
        Detail::Net(n) => {
            (&n.family, &n.addr, n.port, &n.unix_path).hash(&mut h);
            (n.socket_type, n.protocol).hash(&mut h);
        }
        Detail::Dns(d) => (&d.name, &d.direction).hash(&mut h),
        Detail::File(f) => (&f.file.path, &f.file.raw).hash(&mut h),
        Detail::Exec(x) => (&x.file.path, &x.file.raw, &x.argv).hash(&mut h),
        Detail::Rename(r) => (&r.from.path, &r.from.raw, &r.to.path).hash(&mut h),
        Detail::Compat(c) => c.nr.hash(&mut h),
        _ => ev.path().hash(&mut h),
    }
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Kind;
    use crate::outputs::ocsf::tests::sample_alert;

    fn at(ms: u64, base: Instant) -> Instant {
        base + Duration::from_millis(ms)
    }

    /// One rule, subject and object within the window is one alert with a
    /// count; after it is sent, repeats within the hold are one summary,
    /// sent when the hold ends.
    #[test]
    fn a_window_groups_and_a_hold_summarises_repeats() {
        let t0 = Instant::now();
        let mut g = AlertGroups::new(Duration::from_millis(100), Duration::from_millis(1000));
        // The subject of an alert without identity is its process.
        for i in 0..3 {
            let mut a = sample_alert(Kind::Open);
            a.event.tid = 100 + i;
            assert!(g.offer(a, at(u64::from(i), t0)).is_none(), "held");
        }
        assert!(g.due(at(50, t0), false).is_empty(), "window still open");
        let sent = g.due(at(100, t0), false);
        assert_eq!(sent.len(), 1);
        let group = sent[0].group.as_ref().expect("group");
        assert_eq!((group.count, group.pids.len()), (3, 1));
        // Another object is another alert.
        let mut other = sample_alert(Kind::Open);
        if let crate::event::Detail::File(f) = &mut other.event.detail {
            f.file.path = "/etc/gshadow".into();
        }
        assert!(g.offer(other, at(200, t0)).is_none());
        // Repeats within the hold: nothing goes out until the hold ends.
        for i in 0..5 {
            assert!(g.offer(sample_alert(Kind::Open), at(200 + i, t0)).is_none());
        }
        let mid = g.due(at(400, t0), false);
        assert_eq!(mid.len(), 1, "only the other object's window closed");
        assert_eq!(mid[0].group, None);
        let end = g.due(at(1100, t0), false);
        assert_eq!(end.len(), 1, "one summary of the repeats");
        assert_eq!(end[0].group.as_ref().map(|g| g.count), Some(5));
        assert_eq!(g.next_due(), None);
    }

    #[test]
    fn no_window_sends_at_once_and_a_full_table_stops_holding() {
        let t0 = Instant::now();
        let mut g = AlertGroups::new(Duration::ZERO, Duration::from_secs(60));
        assert!(g.offer(sample_alert(Kind::Open), t0).is_some());
        let mut g = AlertGroups::new(Duration::from_secs(1), Duration::ZERO);
        for i in 0..MAX_PENDING_ALERTS {
            let mut a = sample_alert(Kind::Connect);
            if let crate::event::Detail::Net(n) = &mut a.event.detail {
                n.port = Some(i as u16);
            }
            assert!(g.offer(a, t0).is_none());
        }
        assert!(
            g.offer(sample_alert(Kind::Open), t0).is_some(),
            "past the bound alerts go out ungrouped"
        );
        assert_eq!(g.due(t0, true).len(), MAX_PENDING_ALERTS);
    }
}
