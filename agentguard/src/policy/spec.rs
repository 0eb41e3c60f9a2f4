//! The YAML policy format as parsed (docs/policy.md).
//!
//! These are the rules exactly as written, with every value already checked
//! (globs, regexes, CIDRs, ports, templates are parsed here, so serde's error
//! carries the line and column of the bad value). They are public so that the
//! enforcement stage can read what a rule asks for (CIDRs, exec globs, ...)
//! and compile it into kernel maps.

use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::de::{self, IntoDeserializer, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};

use super::template::Template;
use crate::alert::{Action, KillScope, Mode, Severity};
use crate::event::Kind;
use crate::identity::resolver::Scope;

/// One YAML policy file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySpec {
    /// Defaults to the file stem.
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub mode: Mode,
    /// Addresses that `except: {dns_resolver: true}` lets through on port 53,
    /// added to those the daemon passes in `LoadOptions`.
    #[serde(default)]
    pub dns_resolvers: Vec<IpAddr>,
    pub rules: Vec<RuleSpec>,
}

/// One rule: which events (kinds + selectors + conditions) and what to do.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(deserialize_with = "one_or_many")]
    pub kinds: Vec<Kind>,
    /// Who: agent, container, process.
    #[serde(default, rename = "match")]
    pub selector: Selector,
    /// What: conditions over the event's own fields.
    #[serde(default)]
    pub when: Conditions,
    pub action: Action,
    /// For `kill`: the process (default) or its whole container.
    #[serde(default)]
    pub kill_scope: Option<KillScope>,
    /// A match takes the subject's network away (every later connect or
    /// send refused in the kernel) until it exits or is cleared.
    #[serde(default)]
    pub taint: bool,
    pub severity: Severity,
    pub message: Template,
}

/// `agent:` selector.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AgentSel {
    /// `any`: the event has an agent, whichever.
    Any,
    /// `none`: the event has no agent.
    NoAgent,
    /// One of these agent names.
    Names(Vec<String>),
}

impl<'de> Deserialize<'de> for AgentSel {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let names: Vec<String> = one_or_many(d)?;
        Ok(match names.as_slice() {
            [one] if one == "any" => AgentSel::Any,
            [one] if one == "none" => AgentSel::NoAgent,
            _ => AgentSel::Names(names),
        })
    }
}

/// Who did it. Every given selector must match (AND); list entries are
/// alternatives (OR).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Selector {
    #[serde(default)]
    pub agent: Option<AgentSel>,
    /// `host` or `container`.
    #[serde(default)]
    pub scope: Option<Scope>,
    /// Container labels: each key must be present with a value matching the
    /// glob (`"*"`: any value).
    #[serde(default)]
    pub labels: BTreeMap<String, TextGlob>,
    /// Container image globs.
    #[serde(default, deserialize_with = "one_or_many")]
    pub image: Vec<TextGlob>,
    /// Kubernetes namespace globs (pod containers only).
    #[serde(default, deserialize_with = "one_or_many")]
    pub namespace: Vec<TextGlob>,
    /// Executable of the acting process (after an exec: the new one).
    #[serde(default, deserialize_with = "one_or_many")]
    pub exe: Vec<PathGlob>,
    /// Process name (15 bytes, as the kernel keeps it).
    #[serde(default, deserialize_with = "one_or_many")]
    pub comm: Vec<TextGlob>,
    /// Any ancestor's executable (not the process itself).
    #[serde(default, deserialize_with = "one_or_many")]
    pub ancestor: Vec<PathGlob>,
    /// `agent`: the agent process itself acted (an agent found by
    /// ancestry: its own start, its own reads); `tool`: anything else,
    /// a program it ran or any process of an agent container.
    #[serde(default)]
    pub actor: Option<crate::alert::Actor>,
}

/// Syscall result filter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResultSel {
    Success,
    Failure,
}

/// `open` access filter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Access {
    Read,
    Write,
    ReadWrite,
}

impl Access {
    pub fn as_str(self) -> &'static str {
        match self {
            Access::Read => "read",
            Access::Write => "write",
            Access::ReadWrite => "read_write",
        }
    }
}

/// What happened. Every given condition must hold (AND); a condition only
/// constrains the kinds it applies to (docs/policy.md has the table).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Conditions {
    #[serde(default)]
    pub result: Option<ResultSel>,
    /// File events: path globs (rename: the source).
    #[serde(default, deserialize_with = "one_or_many")]
    pub path: Vec<PathGlob>,
    /// File events: path prefixes, whole components only.
    #[serde(default, deserialize_with = "one_or_many")]
    pub path_prefix: Vec<AbsPath>,
    /// File events: the path lies under a bind or volume mount of the
    /// container (rename: the source does and the target leaves that mount).
    #[serde(default)]
    pub under_mount: bool,
    /// open: access mode.
    #[serde(default, deserialize_with = "one_or_many")]
    pub access: Vec<Access>,
    /// exec: executable path globs.
    #[serde(default, deserialize_with = "one_or_many")]
    pub exec: Vec<PathGlob>,
    /// exec: regexes, any single argument matching one of them.
    #[serde(default, deserialize_with = "one_or_many")]
    pub argv: Vec<Pattern>,
    /// exec: regexes over the arguments joined by single spaces.
    #[serde(default, deserialize_with = "one_or_many")]
    pub cmdline: Vec<Pattern>,
    /// exec: the program writing into the new program's stdin pipe
    /// (path globs; `curl URL | sh`: `exec: sh`, `stdin_from: curl`).
    #[serde(default, deserialize_with = "one_or_many")]
    pub stdin_from: Vec<PathGlob>,
    /// connect/send: IP destination.
    #[serde(default)]
    pub dest: Option<NetDest>,
    /// connect/send: AF_UNIX path globs (abstract names start with "@").
    #[serde(default, deserialize_with = "one_or_many")]
    pub unix_path: Vec<PathGlob>,
    /// Events that match the above but must not fire.
    #[serde(default)]
    pub except: Exceptions,
}

/// IP destinations: an address in one of `cidrs` and, if given, a port in
/// one of `ports`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetDest {
    #[serde(deserialize_with = "one_or_many")]
    pub cidrs: Vec<Cidr>,
    #[serde(default, deserialize_with = "one_or_many")]
    pub ports: Vec<PortRange>,
}

/// Allow-exceptions; any one that holds keeps the rule from firing.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Exceptions {
    #[serde(default, deserialize_with = "one_or_many")]
    pub cidrs: Vec<Cidr>,
    #[serde(default, deserialize_with = "one_or_many")]
    pub ports: Vec<PortRange>,
    /// 127.0.0.0/8 and ::1.
    #[serde(default)]
    pub loopback: bool,
    /// The configured DNS resolvers, port 53.
    #[serde(default)]
    pub dns_resolver: bool,
    /// Names (`api.example.com`) and name suffixes (`*.example.com`: every
    /// name below it, not itself): an address a DNS answer the subject
    /// received for one of them gave it, until the answer's TTL runs out.
    #[serde(default, deserialize_with = "one_or_many")]
    pub domains: Vec<DomainPattern>,
    #[serde(default, deserialize_with = "one_or_many")]
    pub paths: Vec<PathGlob>,
    #[serde(default, deserialize_with = "one_or_many")]
    pub exec: Vec<PathGlob>,
}

impl Conditions {
    /// Conditions (besides `result` and `except`) that apply to `kind`.
    pub fn applicable(&self, kind: Kind) -> usize {
        let file = !self.path.is_empty() as usize
            + !self.path_prefix.is_empty() as usize
            + self.under_mount as usize;
        match kind {
            Kind::Open => file + !self.access.is_empty() as usize,
            Kind::Unlink | Kind::Rmdir | Kind::Rename | Kind::Truncate => file,
            Kind::Exec => {
                !self.exec.is_empty() as usize
                    + !self.argv.is_empty() as usize
                    + !self.cmdline.is_empty() as usize
                    + !self.stdin_from.is_empty() as usize
            }
            Kind::Connect | Kind::Send => {
                self.dest.is_some() as usize + !self.unix_path.is_empty() as usize
            }
            Kind::Fork
            | Kind::Exit
            | Kind::IoUringSetup
            | Kind::Socket
            | Kind::CompatSyscall
            | Kind::Dns
            | Kind::Flood
            | Kind::PolicyReload => 0,
        }
    }

    /// Conditions (besides `result` and `except`) given at all.
    pub fn count(&self) -> usize {
        [
            !self.path.is_empty(),
            !self.path_prefix.is_empty(),
            self.under_mount,
            !self.access.is_empty(),
            !self.exec.is_empty(),
            !self.argv.is_empty(),
            !self.cmdline.is_empty(),
            !self.stdin_from.is_empty(),
            self.dest.is_some(),
            !self.unix_path.is_empty(),
        ]
        .into_iter()
        .filter(|b| *b)
        .count()
    }
}

/// A glob over a path: `*` stays within one component, `**` crosses them,
/// `{a,b}` alternates. A pattern without `/` matches the base name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathGlob(pub String);

/// A glob over a whole string (`*` crosses `/`): images, labels, names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TextGlob(pub String);

fn check_glob(s: &str) -> Result<(), String> {
    globset::GlobBuilder::new(s)
        .literal_separator(true)
        .build()
        .map(|_| ())
        .map_err(|e| format!("bad glob {s:?}: {}", e.kind()))
}

impl<'de> Deserialize<'de> for PathGlob {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        check_glob(&s).map_err(de::Error::custom)?;
        Ok(PathGlob(s))
    }
}

impl<'de> Deserialize<'de> for TextGlob {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        check_glob(&s).map_err(de::Error::custom)?;
        Ok(TextGlob(s))
    }
}

/// An absolute path without a trailing slash (except `/` itself).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AbsPath(pub String);

impl<'de> Deserialize<'de> for AbsPath {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if !s.starts_with('/') {
            return Err(de::Error::custom(format!(
                "path prefix {s:?} must be absolute"
            )));
        }
        let t = s.trim_end_matches('/');
        Ok(AbsPath(if t.is_empty() { "/".into() } else { t.into() }))
    }
}

/// A regular expression (Rust `regex` syntax, unanchored).
#[derive(Clone, Debug)]
pub struct Pattern(pub regex::Regex);

impl<'de> Deserialize<'de> for Pattern {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        regex::Regex::new(&s)
            .map(Pattern)
            .map_err(|e| de::Error::custom(format!("bad regex {s:?}: {e}")))
    }
}

/// An IPv4 or IPv6 network; a bare address is a /32 or /128.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Cidr {
    V4 { addr: Ipv4Addr, prefix: u8 },
    V6 { addr: Ipv6Addr, prefix: u8 },
}

impl Cidr {
    pub fn parse(s: &str) -> Result<Cidr, String> {
        let (ip, prefix) = match s.split_once('/') {
            Some((ip, p)) => (ip, Some(p)),
            None => (s, None),
        };
        let ip: IpAddr = ip
            .parse()
            .map_err(|_| format!("bad CIDR {s:?}: not an IP address"))?;
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("bad CIDR {s:?}: prefix must be 0..={max}"))?,
            None => max,
        };
        let cidr = match ip {
            IpAddr::V4(addr) => Cidr::V4 { addr, prefix },
            IpAddr::V6(addr) => Cidr::V6 { addr, prefix },
        };
        // Host bits set usually means a typo in the prefix: say so.
        if !cidr.contains(ip) || cidr.network() != ip {
            return Err(format!(
                "bad CIDR {s:?}: host bits set (network is {}/{prefix})",
                cidr.network()
            ));
        }
        Ok(cidr)
    }

    pub fn prefix(&self) -> u8 {
        match self {
            Cidr::V4 { prefix, .. } | Cidr::V6 { prefix, .. } => *prefix,
        }
    }

    /// The address with the host bits cleared.
    pub fn network(&self) -> IpAddr {
        match *self {
            Cidr::V4 { addr, prefix } => {
                IpAddr::V4(Ipv4Addr::from(u32::from(addr) & mask4(prefix)))
            }
            Cidr::V6 { addr, prefix } => {
                IpAddr::V6(Ipv6Addr::from(u128::from(addr) & mask6(prefix)))
            }
        }
    }

    /// IPv4-mapped IPv6 addresses count as their IPv4 address.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (*self, ip) {
            (Cidr::V4 { addr, prefix }, IpAddr::V4(ip)) => {
                (u32::from(addr) ^ u32::from(ip)) & mask4(prefix) == 0
            }
            (Cidr::V6 { addr, prefix }, IpAddr::V6(ip)) => {
                (u128::from(addr) ^ u128::from(ip)) & mask6(prefix) == 0
            }
            _ => false,
        }
    }
}

fn mask4(prefix: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0)
}

fn mask6(prefix: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0)
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cidr::V4 { addr, prefix } => write!(f, "{addr}/{prefix}"),
            Cidr::V6 { addr, prefix } => write!(f, "{addr}/{prefix}"),
        }
    }
}

/// A DNS name or `*.` name suffix, lower case, as `except.domains` lists it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct DomainPattern {
    /// The name without `*.`.
    pub name: String,
    /// `*.name`: names below `name`, not `name` itself.
    pub suffix: bool,
}

/// Longest name the kernel matches (its key holds 252 bytes with the NUL).
pub const MAX_DOMAIN_LEN: usize = 251;

impl DomainPattern {
    pub fn parse(s: &str) -> Result<DomainPattern, String> {
        let lower = s.trim_end_matches('.').to_ascii_lowercase();
        let (name, suffix) = match lower.strip_prefix("*.") {
            Some(rest) => (rest.to_owned(), true),
            None => (lower, false),
        };
        if name.is_empty() || name.len() > MAX_DOMAIN_LEN {
            return Err(format!(
                "bad domain {s:?}: a name of 1 to {MAX_DOMAIN_LEN} characters, or `*.` and a name"
            ));
        }
        for label in name.split('.') {
            let ok = !label.is_empty()
                && label.len() <= 63
                && label.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_'
                });
            if !ok {
                return Err(format!(
                    "bad domain {s:?}: labels of 1 to 63 letters, digits, '-' or '_' (only a leading `*.` is a wildcard)"
                ));
            }
        }
        Ok(DomainPattern { name, suffix })
    }

    /// Does `name` (any case, an optional trailing dot) match?
    pub fn matches(&self, name: &str) -> bool {
        // As bytes: `name` comes from events (`replay` reads any UTF-8),
        // and a suffix may start inside a multi-byte character.
        let n = name.trim_end_matches('.').as_bytes();
        let p = self.name.as_bytes();
        if self.suffix {
            n.len() > p.len() + 1
                && n[n.len() - p.len()..].eq_ignore_ascii_case(p)
                && n[n.len() - p.len() - 1] == b'.'
        } else {
            n.eq_ignore_ascii_case(p)
        }
    }
}

impl fmt::Display for DomainPattern {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        if self.suffix {
            write!(f, "*.{}", self.name)
        } else {
            f.write_str(&self.name)
        }
    }
}

impl<'de> Deserialize<'de> for DomainPattern {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        DomainPattern::parse(&s).map_err(de::Error::custom)
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Cidr::parse(&s).map_err(de::Error::custom)
    }
}

/// A port or an inclusive range (`443`, `"8000-8999"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PortRange {
    pub lo: u16,
    pub hi: u16,
}

impl PortRange {
    pub fn contains(&self, port: u16) -> bool {
        self.lo <= port && port <= self.hi
    }

    fn parse(s: &str) -> Result<PortRange, String> {
        let bad = || format!("bad port {s:?}: expected N or LO-HI (0..=65535)");
        let (lo, hi) = match s.split_once('-') {
            Some((a, b)) => (a.trim(), b.trim()),
            None => (s.trim(), s.trim()),
        };
        let lo = lo.parse::<u16>().map_err(|_| bad())?;
        let hi = hi.parse::<u16>().map_err(|_| bad())?;
        if lo > hi {
            return Err(bad());
        }
        Ok(PortRange { lo, hi })
    }
}

impl<'de> Deserialize<'de> for PortRange {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = PortRange;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a port number or a range \"LO-HI\"")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<PortRange, E> {
                let p = u16::try_from(v).map_err(|_| E::custom(format!("bad port {v}")))?;
                Ok(PortRange { lo: p, hi: p })
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<PortRange, E> {
                let p = u16::try_from(v).map_err(|_| E::custom(format!("bad port {v}")))?;
                Ok(PortRange { lo: p, hi: p })
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<PortRange, E> {
                PortRange::parse(v).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// Accepts `x` or `[x, y]` for a list field, keeping the element's own
/// errors (and so their location) intact.
pub fn one_or_many<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    struct V<T>(PhantomData<T>);
    impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
        type Value = Vec<T>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a value or a list of values")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
            let mut out = Vec::new();
            while let Some(x) = seq.next_element()? {
                out.push(x);
            }
            Ok(out)
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Vec<T>, E> {
            T::deserialize(v.into_deserializer()).map(|x| vec![x])
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Vec<T>, E> {
            T::deserialize(v.into_deserializer()).map(|x| vec![x])
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Vec<T>, E> {
            T::deserialize(v.into_deserializer()).map(|x| vec![x])
        }
        fn visit_bool<E: de::Error>(self, v: bool) -> Result<Vec<T>, E> {
            T::deserialize(v.into_deserializer()).map(|x| vec![x])
        }
        fn visit_unit<E: de::Error>(self) -> Result<Vec<T>, E> {
            Ok(Vec::new())
        }
    }
    d.deserialize_any(V(PhantomData))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domain_suffix_of_a_non_ascii_name_is_no_match_not_a_panic() {
        // Found by fuzzing (fuzz/fuzz_targets/rego.rs): the suffix was
        // sliced out of the name as a str, inside the 'é'.
        let p = DomainPattern::parse("*.ab").expect("pattern");
        assert!(!p.matches("a\u{e9}b"));
        let p = DomainPattern::parse("*.b").expect("pattern");
        assert!(!p.matches("a\u{e9}"));
        assert!(p.matches("\u{e9}.B."));
        assert!(!p.matches("b"));
        let exact = DomainPattern::parse("API.example.com").expect("pattern");
        assert!(exact.matches("api.EXAMPLE.com."));
        assert!(!exact.matches("api.example.c\u{f6}m"));
    }
}
