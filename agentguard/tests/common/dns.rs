//! A small authoritative DNS server for the tests (UDP and TCP), answering
//! its zone's names with A records or CNAME chains and the TTLs it is
//! given, and recording every question it receives: a query the guard
//! dropped never shows up here.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

#[derive(Clone, Debug)]
pub enum Rec {
    A(Ipv4Addr),
    Cname(String),
}

pub struct DnsServer {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<String>>>,
    threads: Vec<JoinHandle<()>>,
}

impl DnsServer {
    /// Serves `zone` (name -> record, TTL) on `addr`:53, UDP and TCP.
    pub fn start(addr: Ipv4Addr, zone: HashMap<String, (Rec, u32)>) -> DnsServer {
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let zone = Arc::new(zone);
        let sa = SocketAddr::from((addr, 53));
        let udp = UdpSocket::bind(sa).unwrap_or_else(|e| panic!("bind udp {sa}: {e}"));
        udp.set_read_timeout(Some(Duration::from_millis(100)))
            .expect("timeout");
        let tcp = TcpListener::bind(sa).unwrap_or_else(|e| panic!("bind tcp {sa}: {e}"));
        tcp.set_nonblocking(true).expect("nonblocking");
        let mut threads = Vec::new();
        {
            let (stop, seen, zone) = (stop.clone(), seen.clone(), zone.clone());
            threads.push(std::thread::spawn(move || {
                let mut buf = [0u8; 1500];
                while !stop.load(Ordering::Relaxed) {
                    let Ok((n, from)) = udp.recv_from(&mut buf) else {
                        continue;
                    };
                    if let Some(r) = answer(&buf[..n], &zone, &seen) {
                        let _ = udp.send_to(&r, from);
                    }
                }
            }));
        }
        {
            let (stop, seen, zone) = (stop.clone(), seen.clone(), zone.clone());
            threads.push(std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let Ok((mut s, _)) = tcp.accept() else {
                        std::thread::sleep(Duration::from_millis(20));
                        continue;
                    };
                    let _ = s.set_nonblocking(false);
                    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                    let mut len = [0u8; 2];
                    if s.read_exact(&mut len).is_err() {
                        continue;
                    }
                    let mut q = vec![0u8; usize::from(u16::from_be_bytes(len))];
                    if s.read_exact(&mut q).is_err() {
                        continue;
                    }
                    if let Some(r) = answer(&q, &zone, &seen) {
                        let mut out = (r.len() as u16).to_be_bytes().to_vec();
                        out.extend_from_slice(&r);
                        let _ = s.write_all(&out);
                    }
                }
            }));
        }
        DnsServer {
            stop,
            seen,
            threads,
        }
    }

    /// Every question name received so far.
    pub fn seen(&self) -> Vec<String> {
        self.seen.lock().map(|v| v.clone()).unwrap_or_default()
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn labels(name: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for l in name.split('.').filter(|l| !l.is_empty()) {
        out.push(l.len() as u8);
        out.extend_from_slice(l.as_bytes());
    }
    out.push(0);
    out
}

/// The response to query `q`, or None if it is not a query we can read.
fn answer(
    q: &[u8],
    zone: &HashMap<String, (Rec, u32)>,
    seen: &Mutex<Vec<String>>,
) -> Option<Vec<u8>> {
    if q.len() < 12 {
        return None;
    }
    let mut i = 12;
    let mut parts = Vec::new();
    while *q.get(i)? != 0 {
        let l = usize::from(q[i]);
        parts.push(String::from_utf8_lossy(q.get(i + 1..i + 1 + l)?).to_lowercase());
        i += 1 + l;
    }
    let qname = parts.join(".");
    let qtype = u16::from_be_bytes([*q.get(i + 1)?, *q.get(i + 2)?]);
    let question = &q[12..i + 5];
    if let Ok(mut s) = seen.lock() {
        s.push(qname.clone());
    }
    let mut answers = Vec::new();
    let mut count = 0u16;
    let mut name = qname.clone();
    let mut first = true;
    let mut found = zone.contains_key(&name);
    while let Some((rec, ttl)) = zone.get(&name) {
        // The first owner is a pointer to the question, later ones are
        // written out (both forms occur in real answers).
        let owner = if first {
            vec![0xc0, 0x0c]
        } else {
            labels(&name)
        };
        first = false;
        match rec {
            Rec::Cname(target) => {
                let rd = labels(target);
                answers.extend_from_slice(&owner);
                answers.extend_from_slice(&5u16.to_be_bytes());
                answers.extend_from_slice(&1u16.to_be_bytes());
                answers.extend_from_slice(&ttl.to_be_bytes());
                answers.extend_from_slice(&(rd.len() as u16).to_be_bytes());
                answers.extend_from_slice(&rd);
                count += 1;
                name = target.clone();
                found = zone.contains_key(&name);
            }
            Rec::A(a) => {
                // Only A records here: an AAAA question gets the chain.
                if qtype == 1 {
                    answers.extend_from_slice(&owner);
                    answers.extend_from_slice(&1u16.to_be_bytes());
                    answers.extend_from_slice(&1u16.to_be_bytes());
                    answers.extend_from_slice(&ttl.to_be_bytes());
                    answers.extend_from_slice(&4u16.to_be_bytes());
                    answers.extend_from_slice(&a.octets());
                    count += 1;
                }
                break;
            }
        }
    }
    let mut r = Vec::with_capacity(12 + question.len() + answers.len());
    r.extend_from_slice(&q[0..2]);
    // QR, RD, RA; NXDOMAIN for a name outside the zone.
    r.extend_from_slice(&[0x81, if found || count > 0 { 0x80 } else { 0x83 }]);
    r.extend_from_slice(&1u16.to_be_bytes());
    r.extend_from_slice(&count.to_be_bytes());
    r.extend_from_slice(&[0, 0, 0, 0]);
    r.extend_from_slice(question);
    r.extend_from_slice(&answers);
    Some(r)
}
