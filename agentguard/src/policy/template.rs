//! Message templates: `{comm} ({agent}) connected to {addr}:{port}`.
//!
//! Parsed at load time into literal pieces and fields, so an unknown
//! placeholder is a load error and rendering is one pass without lookups.

use std::fmt::Write as _;

use serde::de;
use serde::{Deserialize, Deserializer};

use crate::event::{Detail, Event};

/// A value taken from the event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Field {
    Kind,
    Syscall,
    Pid,
    Ppid,
    Uid,
    Comm,
    Error,
    Exe,
    Path,
    To,
    Argv,
    Addr,
    Port,
    UnixPath,
    Agent,
    Session,
    Container,
    Image,
    Namespace,
    Pod,
    Parent,
    Target,
}

const FIELDS: &[(&str, Field)] = &[
    ("kind", Field::Kind),
    ("syscall", Field::Syscall),
    ("pid", Field::Pid),
    ("ppid", Field::Ppid),
    ("uid", Field::Uid),
    ("comm", Field::Comm),
    ("error", Field::Error),
    ("exe", Field::Exe),
    ("path", Field::Path),
    ("to", Field::To),
    ("argv", Field::Argv),
    ("addr", Field::Addr),
    ("port", Field::Port),
    ("unix_path", Field::UnixPath),
    ("agent", Field::Agent),
    ("session", Field::Session),
    ("container", Field::Container),
    ("image", Field::Image),
    ("namespace", Field::Namespace),
    ("pod", Field::Pod),
    ("parent", Field::Parent),
    ("target", Field::Target),
];

/// The placeholder names a template may use.
pub fn field_names() -> impl Iterator<Item = &'static str> {
    FIELDS.iter().map(|(n, _)| *n)
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Piece {
    Lit(String),
    Field(Field),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template {
    source: String,
    pieces: Vec<Piece>,
}

impl Template {
    /// `{name}` is a field, `{{` and `}}` are literal braces.
    pub fn parse(s: &str) -> Result<Template, String> {
        let mut pieces = Vec::new();
        let mut lit = String::new();
        let mut chars = s.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            match c {
                '{' if chars.peek().map(|p| p.1) == Some('{') => {
                    chars.next();
                    lit.push('{');
                }
                '}' if chars.peek().map(|p| p.1) == Some('}') => {
                    chars.next();
                    lit.push('}');
                }
                '{' => {
                    let rest = &s[i + 1..];
                    let end = rest
                        .find('}')
                        .ok_or_else(|| format!("unclosed '{{' in message {s:?}"))?;
                    let name = rest[..end].trim();
                    let field = FIELDS
                        .iter()
                        .find(|(n, _)| *n == name)
                        .map(|(_, f)| *f)
                        .ok_or_else(|| {
                            format!(
                                "unknown placeholder {{{name}}} in message; known: {}",
                                field_names().collect::<Vec<_>>().join(", ")
                            )
                        })?;
                    if !lit.is_empty() {
                        pieces.push(Piece::Lit(std::mem::take(&mut lit)));
                    }
                    pieces.push(Piece::Field(field));
                    // Skip the name and the closing brace.
                    for _ in 0..rest[..=end].chars().count() {
                        chars.next();
                    }
                }
                '}' => return Err(format!("stray '}}' in message {s:?} (write '}}}}')")),
                c => lit.push(c),
            }
        }
        if !lit.is_empty() {
            pieces.push(Piece::Lit(lit));
        }
        Ok(Template {
            source: s.to_owned(),
            pieces,
        })
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// Fills the template from `ev`; a field the event lacks renders as "-".
    pub fn render(&self, ev: &Event) -> String {
        let mut out = String::with_capacity(self.source.len() + 32);
        for p in &self.pieces {
            match p {
                Piece::Lit(s) => out.push_str(s),
                Piece::Field(f) => write_field(&mut out, *f, ev),
            }
        }
        out
    }
}

impl<'de> Deserialize<'de> for Template {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Template::parse(&s).map_err(de::Error::custom)
    }
}

fn write_field(out: &mut String, f: Field, ev: &Event) {
    let id = ev.identity.as_ref();
    let info = id
        .and_then(|i| i.container.as_ref())
        .and_then(|c| c.info.as_ref());
    let net = match &ev.detail {
        Detail::Net(n) => Some(n),
        _ => None,
    };
    let opt: Option<&str> = match f {
        Field::Kind => Some(ev.kind.as_str()),
        Field::Syscall => Some(&ev.syscall),
        Field::Comm => Some(&ev.comm),
        Field::Error => ev.error.as_deref(),
        Field::Pid => {
            let _ = write!(out, "{}", ev.pid);
            return;
        }
        Field::Ppid => {
            let _ = write!(out, "{}", ev.ppid);
            return;
        }
        Field::Uid => {
            let _ = write!(out, "{}", ev.uid);
            return;
        }
        Field::Port => {
            match net.and_then(|n| n.port) {
                Some(p) => {
                    let _ = write!(out, "{p}");
                }
                None => out.push('-'),
            }
            return;
        }
        Field::Target => {
            match (ev.path(), net) {
                (Some(p), _) => out.push_str(p),
                (None, Some(n)) => match (&n.addr, n.port, &n.unix_path) {
                    (Some(a), Some(p), _) if a.contains(':') => {
                        let _ = write!(out, "[{a}]:{p}");
                    }
                    (Some(a), Some(p), _) => {
                        let _ = write!(out, "{a}:{p}");
                    }
                    (Some(a), None, _) => out.push_str(a),
                    (None, _, Some(u)) => out.push_str(u),
                    (None, _, None) => out.push('-'),
                },
                (None, None) => out.push('-'),
            }
            return;
        }
        Field::Exe => super::rules::exe_of(ev),
        Field::Path => ev.path(),
        Field::To => match &ev.detail {
            Detail::Rename(r) => Some(&r.to.path),
            _ => None,
        },
        Field::Argv => {
            match &ev.detail {
                Detail::Exec(x) => {
                    for (i, a) in x.argv.iter().enumerate() {
                        if i > 0 {
                            out.push(' ');
                        }
                        out.push_str(a);
                    }
                }
                _ => out.push('-'),
            }
            return;
        }
        Field::Addr => net.and_then(|n| n.addr.as_deref().or(n.unix_path.as_deref())),
        Field::UnixPath => net.and_then(|n| n.unix_path.as_deref()),
        Field::Agent => id.and_then(|i| i.agent.as_ref()).map(|a| a.name.as_str()),
        Field::Session => id
            .and_then(|i| i.agent.as_ref())
            .and_then(|a| a.session.as_deref()),
        Field::Container => match (info, id.and_then(|i| i.container.as_ref())) {
            (Some(info), _) if !info.name.is_empty() => Some(info.name.as_str()),
            (_, Some(c)) => Some(c.id.get(..12).unwrap_or(&c.id)),
            _ => None,
        },
        Field::Image => info.map(|i| i.image.as_str()),
        Field::Namespace => info
            .and_then(|i| i.pod.as_ref())
            .map(|p| p.namespace.as_str()),
        Field::Pod => info.and_then(|i| i.pod.as_ref()).map(|p| p.name.as_str()),
        Field::Parent => id.and_then(|i| i.ancestry.get(1)).map(|a| a.exe.as_ref()),
    };
    out.push_str(opt.filter(|s| !s.is_empty()).unwrap_or("-"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_fields_and_escapes() {
        let t = Template::parse("{comm} ({agent}) -> {addr}:{port} {{x}}").unwrap();
        assert_eq!(t.pieces.len(), 8);
        assert_eq!(t.pieces[7], Piece::Lit(" {x}".into()));
        assert!(Template::parse("{nope}")
            .unwrap_err()
            .contains("unknown placeholder"));
        assert!(Template::parse("{comm").unwrap_err().contains("unclosed"));
        assert!(Template::parse("a } b").unwrap_err().contains("stray"));
        let u = Template::parse("héllo {pid}é").unwrap();
        assert_eq!(u.pieces.len(), 3);
    }
}
