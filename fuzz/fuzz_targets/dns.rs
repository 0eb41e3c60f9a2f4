//! DNS answers in userspace. The wire format is parsed in the kernel
//! (agentguard-ebpf/src/dns.rs, cgroup skb programs: not reachable from
//! here); what reaches the daemon is its `DnsEvent` record: the name, the
//! addresses let through, the TTL. This target lays the input over such a
//! record (kind DNS, an answer unless it says query), decodes it, lets
//! `DnsNames` learn from it and checks that a connect of the same subject
//! to each address right after is named after the answer; the pack judges
//! the answer and the connects (domain rules match the name), and the
//! name's `DomainPattern` and kernel key agree with it.
#![no_main]

use std::mem::{offset_of, size_of};

use agentguard::enforcement::kernel::dns_key;
use agentguard::event::{Detail, Event};
use agentguard::identity::dns::DnsNames;
use agentguard::policy::spec::DomainPattern;
use agentguard::sensor::decode::decode;
use agentguard_common::enforce::DNS_TTL_CEILING_S;
use agentguard_common::event::{family, kind, syscall, DnsEvent, Header, NetEvent};
use libfuzzer_sys::fuzz_target;

fn put(buf: &mut [u8], off: usize, bytes: &[u8]) {
    buf[off..off + bytes.len()].copy_from_slice(bytes);
}

/// An agent identity from the sample events: the pack's domain rule
/// (agent-egress) selects agents.
fn agent() -> Option<agentguard::identity::resolver::Identity> {
    agentguard_fuzz::events()
        .iter()
        .filter_map(|e| e.identity.clone())
        .find(|i| i.agent.is_some())
}

fn judge(ev: &Event) {
    let mut out = Vec::new();
    agentguard_fuzz::pack().evaluate(ev, &mut out);
    for d in &out {
        serde_json::to_string(d).expect("a decision serializes");
    }
}

fuzz_target!(|data: &[u8]| {
    let mut rec = vec![0u8; size_of::<DnsEvent>()];
    let n = data.len().min(rec.len());
    rec[..n].copy_from_slice(&data[..n]);
    let hdr = offset_of!(DnsEvent, header);
    put(
        &mut rec,
        hdr + offset_of!(Header, kind),
        &kind::DNS.to_ne_bytes(),
    );
    let sc = hdr + offset_of!(Header, syscall);
    if u16::from_ne_bytes([rec[sc], rec[sc + 1]]) != syscall::DNS_QUERY {
        put(&mut rec, sc, &syscall::DNS_ANSWER.to_ne_bytes());
    }
    let mut answer = decode(&rec).expect("a whole DNS record decodes");
    let Detail::Dns(d) = answer.detail.clone() else {
        panic!("a DNS record decoded as {:?}", answer.kind);
    };
    answer.identity = agent();
    judge(&answer);
    let mut names = DnsNames::default();
    names.observe(&mut answer);
    // (An answer at the clock's very end never expires: not checked.)
    let learned = d.name.is_some()
        && d.ttl.is_some()
        && !d.addrs.is_empty()
        && d.subject != 0
        && answer.ts_ns < u64::MAX - u64::from(DNS_TTL_CEILING_S) * 1_000_000_000;

    // A connect of the subject to each address of the answer, 1 ns later,
    // as the kernel reports it (IPv4-mapped addresses as AF_INET).
    let addrs_at = offset_of!(DnsEvent, addrs);
    for i in 0..d.addrs.len() {
        let raw: [u8; 16] = rec[addrs_at + 16 * i..addrs_at + 16 * (i + 1)]
            .try_into()
            .expect("16 bytes");
        let mut c = vec![0u8; size_of::<NetEvent>()];
        let h = offset_of!(NetEvent, header);
        put(
            &mut c,
            h + offset_of!(Header, kind),
            &kind::CONNECT.to_ne_bytes(),
        );
        put(
            &mut c,
            h + offset_of!(Header, syscall),
            &syscall::CONNECT.to_ne_bytes(),
        );
        let ts = answer.ts_ns.saturating_add(1);
        put(&mut c, h + offset_of!(Header, ts_ns), &ts.to_ne_bytes());
        put(
            &mut c,
            h + offset_of!(Header, tgid),
            &answer.pid.to_ne_bytes(),
        );
        put(
            &mut c,
            offset_of!(NetEvent, subject),
            &d.subject.to_ne_bytes(),
        );
        put(&mut c, offset_of!(NetEvent, port), &443u16.to_ne_bytes());
        let (fam, addr) = match raw {
            [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, a, b, c4, d4] => {
                let mut v4 = [0u8; 16];
                v4[..4].copy_from_slice(&[a, b, c4, d4]);
                (family::INET, v4)
            }
            _ => (family::INET6, raw),
        };
        put(&mut c, offset_of!(NetEvent, family), &fam.to_ne_bytes());
        put(&mut c, offset_of!(NetEvent, addr), &addr);
        let mut connect = decode(&c).expect("a whole connect record decodes");
        connect.identity = answer.identity.clone();
        names.observe(&mut connect);
        let Detail::Net(net) = &connect.detail else {
            panic!("a connect record decoded as {:?}", connect.kind);
        };
        if learned {
            assert_eq!(
                net.domain, d.name,
                "a connect to {:?} right after the answer is not named after it",
                net.addr
            );
        }
        judge(&connect);
    }

    // The name as a domain list would hold it: it matches itself, names
    // below it match its `*.` form, and both fit the kernel's key.
    if let Some(name) = &d.name {
        if let Ok(p) = DomainPattern::parse(name) {
            assert!(p.matches(name), "{p} does not match {name:?}");
            assert!(dns_key(0, &p).is_some(), "{p} has no kernel key");
            let below = format!("x.{name}");
            if let Ok(s) = DomainPattern::parse(&format!("*.{name}")) {
                assert!(s.matches(&below) && !s.matches(name), "{s} vs {name:?}");
                assert!(dns_key(0, &s).is_some(), "{s} has no kernel key");
            }
        }
    }
});
