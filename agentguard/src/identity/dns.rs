//! Which DNS name gave a subject an address: the answers the kernel read
//! for domain rules (`Kind::Dns`), remembered per kernel subject for the
//! clamped TTL, name the destination of that subject's later connects
//! (`NetDetail::domain`), so rules and reports see what the kernel saw.

use std::collections::HashMap;

use agentguard_common::enforce::{DNS_TTL_CEILING_S, DNS_TTL_FLOOR_S};

use crate::event::{Detail, Event, Kind};

/// Entries kept at most (the kernel's map is larger; a miss only loses the
/// name in the report, never a verdict, which the kernel made).
const MAX_ENTRIES: usize = 65536;

#[derive(Default)]
pub struct DnsNames {
    /// (subject, address as shown) -> (name, expiry on the boot clock).
    names: HashMap<(u64, String), (String, u64)>,
}

impl DnsNames {
    /// Learns from an answer; names a connect or send.
    pub fn observe(&mut self, ev: &mut Event) {
        match (&ev.kind, &mut ev.detail) {
            (Kind::Dns, Detail::Dns(d)) if !d.addrs.is_empty() => {
                let (Some(name), Some(ttl)) = (&d.name, d.ttl) else {
                    return;
                };
                let ttl = u64::from(ttl.clamp(DNS_TTL_FLOOR_S, DNS_TTL_CEILING_S));
                // The record's clock is not trusted to be far from the end.
                let until = ev.ts_ns.saturating_add(ttl * 1_000_000_000);
                if self.names.len() >= MAX_ENTRIES {
                    let now = ev.ts_ns;
                    self.names.retain(|_, (_, t)| *t > now);
                    if self.names.len() >= MAX_ENTRIES {
                        self.names.clear();
                    }
                }
                for a in &d.addrs {
                    self.names
                        .insert((d.subject, a.clone()), (name.clone(), until));
                }
            }
            (Kind::Connect | Kind::Send, Detail::Net(n)) if n.dns_subject != 0 => {
                let Some(addr) = &n.addr else { return };
                if let Some((name, until)) = self.names.get(&(n.dns_subject, addr.clone())) {
                    if *until > ev.ts_ns {
                        n.domain = Some(name.clone());
                    }
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{DnsDetail, NetDetail};

    fn event(kind: Kind, ts: u64, detail: Detail) -> Event {
        let mut ev: Event = serde_json::from_value(serde_json::json!({
            "ts_ns": ts, "kind": kind.as_str(), "syscall": "x", "pid": 1, "tid": 1,
            "ppid": 0, "uid": 0, "gid": 0, "comm": "t", "cgroup_id": 0, "ret": 0,
            "exit": { "code": 0 }
        }))
        .expect("event");
        ev.detail = detail;
        ev
    }

    #[test]
    fn an_answer_names_the_subjects_connects_until_its_ttl_runs_out() {
        let mut names = DnsNames::default();
        let mut answer = event(
            Kind::Dns,
            1_000,
            Detail::Dns(DnsDetail {
                direction: "answer".into(),
                name: Some("api.example.com".into()),
                addrs: vec!["10.1.2.3".into()],
                ttl: Some(1),
                subject: 7,
                ..Default::default()
            }),
        );
        names.observe(&mut answer);
        let connect = |ts: u64, subject: u64| {
            event(
                Kind::Connect,
                ts,
                Detail::Net(NetDetail {
                    family: "inet".into(),
                    addr: Some("10.1.2.3".into()),
                    port: Some(443),
                    fd: 3,
                    dns_subject: subject,
                    dns_rules: 1,
                    ..Default::default()
                }),
            )
        };
        let domain = |ev: &Event| match &ev.detail {
            Detail::Net(n) => n.domain.clone(),
            _ => None,
        };
        // TTL 1 s is clamped up to the floor: still named 4 s later.
        let mut c = connect(1_000 + 4_000_000_000, 7);
        names.observe(&mut c);
        assert_eq!(domain(&c).as_deref(), Some("api.example.com"));
        // Another subject's lookups name nothing for this one.
        let mut other = connect(2_000, 8);
        names.observe(&mut other);
        assert_eq!(domain(&other), None);
        // After the floor, the name is gone.
        let mut late = connect(1_000 + u64::from(DNS_TTL_FLOOR_S) * 1_000_000_000 + 1, 7);
        names.observe(&mut late);
        assert_eq!(domain(&late), None);
    }

    #[test]
    fn an_answer_at_the_end_of_the_clock_does_not_overflow() {
        // Found by fuzzing (fuzz/fuzz_targets/dns.rs): `ts + ttl` overflowed.
        let mut names = DnsNames::default();
        let mut answer = event(
            Kind::Dns,
            u64::MAX - 2,
            Detail::Dns(DnsDetail {
                direction: "answer".into(),
                name: Some("api.example.com".into()),
                addrs: vec!["10.1.2.3".into()],
                ttl: Some(60),
                subject: 7,
                ..Default::default()
            }),
        );
        names.observe(&mut answer);
        let mut connect = event(
            Kind::Connect,
            u64::MAX - 1,
            Detail::Net(NetDetail {
                family: "inet".into(),
                addr: Some("10.1.2.3".into()),
                port: Some(443),
                fd: 3,
                dns_subject: 7,
                dns_rules: 1,
                ..Default::default()
            }),
        );
        names.observe(&mut connect);
        let Detail::Net(n) = &connect.detail else {
            panic!("not a connect")
        };
        assert_eq!(n.domain.as_deref(), Some("api.example.com"));
    }
}
