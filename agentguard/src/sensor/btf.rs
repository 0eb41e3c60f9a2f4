//! A small reader of kernel BTF (/sys/kernel/btf/vmlinux): enough to find
//! struct member offsets and function ids at load time, because rustc emits
//! no CO-RE relocations for the eBPF programs.
//!
//! Format: a header, a type section (one `btf_type` record per id, starting
//! at id 1, each followed by kind-specific trailing data) and a string
//! section. Every read is bounds-checked: the bytes come from the kernel but
//! a malformed blob must give an error, never a panic.
//!
//! Size: about 480 lines of code; the rest is its tests.

use std::collections::HashMap;

const SYSFS_PATH: &str = "/sys/kernel/btf/vmlinux";

#[derive(Debug)]
pub enum BtfError {
    Io(std::io::Error),
    Malformed(String),
    NotFound(String),
    Bitfield(String),
}

impl std::fmt::Display for BtfError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BtfError::Io(e) => write!(
                f,
                "kernel BTF missing ({SYSFS_PATH}): CONFIG_DEBUG_INFO_BTF is required ({e})"
            ),
            BtfError::Malformed(m) => write!(f, "malformed BTF: {m}"),
            BtfError::NotFound(m) => write!(f, "not in kernel BTF: {m}"),
            BtfError::Bitfield(m) => {
                write!(f, "{m} is a bitfield or not byte aligned: no byte offset")
            }
        }
    }
}

impl std::error::Error for BtfError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BtfError::Io(e) => Some(e),
            _ => None,
        }
    }
}

const MAGIC: u16 = 0xeb9f;
/// magic(2) version(1) flags(1) hdr_len type_off type_len str_off str_len.
const MIN_HEADER: usize = 24;
/// name_off, info, size/type.
const TYPE_RECORD: usize = 12;

const KIND_INT: u32 = 1;
const KIND_PTR: u32 = 2;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_FWD: u32 = 7;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC: u32 = 12;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_FLOAT: u32 = 16;
const KIND_DECL_TAG: u32 = 17;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;

#[derive(Clone, Debug)]
struct Member {
    name_off: u32,
    type_id: u32,
    /// Bit offset from the start of the enclosing struct/union.
    bit_offset: u32,
    /// Non-zero for a bitfield declared in a kind_flag struct.
    bitfield_size: u32,
}

#[derive(Clone, Debug)]
struct Type {
    name_off: u32,
    kind: u32,
    /// Size for INT/STRUCT/UNION/ENUM/..., referenced type for PTR/TYPEDEF/...
    size_or_type: u32,
    /// INT only: the encoding word (bit offset and bit count of the value),
    /// which is how bitfields are described in structs without kind_flag.
    int_data: u32,
    members: Vec<Member>,
}

/// Parsed BTF: types by id, the string section and a name index.
pub struct KernelBtf {
    types: Vec<Type>,
    strings: Vec<u8>,
    /// Name -> type ids (several types may share a name: a FWD and its
    /// STRUCT, a FUNC and a STRUCT, ...).
    by_name: HashMap<String, Vec<u32>>,
}

fn rd_u32(b: &[u8], off: usize) -> Result<u32, BtfError> {
    off.checked_add(4)
        .and_then(|end| b.get(off..end))
        .and_then(|s| <[u8; 4]>::try_from(s).ok())
        .map(u32::from_le_bytes)
        .ok_or_else(|| BtfError::Malformed(format!("read past the end at byte {off}")))
}

fn kind_name(kind: u32) -> &'static str {
    match kind {
        KIND_INT => "INT",
        KIND_PTR => "PTR",
        KIND_ARRAY => "ARRAY",
        KIND_STRUCT => "STRUCT",
        KIND_UNION => "UNION",
        KIND_ENUM => "ENUM",
        KIND_FWD => "FWD",
        KIND_TYPEDEF => "TYPEDEF",
        KIND_VOLATILE => "VOLATILE",
        KIND_CONST => "CONST",
        KIND_RESTRICT => "RESTRICT",
        KIND_FUNC => "FUNC",
        KIND_FUNC_PROTO => "FUNC_PROTO",
        KIND_VAR => "VAR",
        KIND_DATASEC => "DATASEC",
        KIND_FLOAT => "FLOAT",
        KIND_DECL_TAG => "DECL_TAG",
        KIND_TYPE_TAG => "TYPE_TAG",
        KIND_ENUM64 => "ENUM64",
        _ => "?",
    }
}

impl KernelBtf {
    /// Reads and parses the running kernel's BTF.
    pub fn from_sys_fs() -> Result<Self, BtfError> {
        let bytes = std::fs::read(SYSFS_PATH).map_err(BtfError::Io)?;
        Self::parse(&bytes)
    }

    /// Parses a little-endian BTF blob (vmlinux BTF is in host order and
    /// agentguard only runs on little-endian x86-64).
    pub fn parse(b: &[u8]) -> Result<Self, BtfError> {
        let magic = b
            .get(0..2)
            .map(|m| u16::from_le_bytes([m[0], m[1]]))
            .ok_or_else(|| BtfError::Malformed("shorter than the magic".into()))?;
        if magic != MAGIC {
            return Err(BtfError::Malformed(format!(
                "bad magic {magic:#06x}, want {MAGIC:#06x} (big-endian BTF is not supported)"
            )));
        }
        let version = b.get(2).copied().unwrap_or(0);
        if version != 1 {
            return Err(BtfError::Malformed(format!(
                "unsupported BTF version {version}"
            )));
        }
        let hdr_len = rd_u32(b, 4)? as usize;
        if hdr_len < MIN_HEADER || hdr_len > b.len() {
            return Err(BtfError::Malformed(format!(
                "header length {hdr_len} (blob is {} bytes)",
                b.len()
            )));
        }
        let type_off = rd_u32(b, 8)? as usize;
        let type_len = rd_u32(b, 12)? as usize;
        let str_off = rd_u32(b, 16)? as usize;
        let str_len = rd_u32(b, 20)? as usize;
        // Section offsets count from the end of the header.
        let section = |off: usize, len: usize, what: &str| {
            hdr_len
                .checked_add(off)
                .and_then(|s| s.checked_add(len).map(|e| (s, e)))
                .and_then(|(s, e)| b.get(s..e))
                .ok_or_else(|| {
                    BtfError::Malformed(format!(
                        "{what} section ({off}+{len}) outside the {}-byte blob",
                        b.len()
                    ))
                })
        };
        let tsec = section(type_off, type_len, "type")?;
        let strings = section(str_off, str_len, "string")?.to_vec();
        if strings.first() != Some(&0) {
            // Offset 0 must be the empty name used by anonymous types.
            return Err(BtfError::Malformed(
                "string section does not start with NUL".into(),
            ));
        }

        // Type id 0 is "void".
        let mut types = vec![Type {
            name_off: 0,
            kind: 0,
            size_or_type: 0,
            int_data: 0,
            members: Vec::new(),
        }];
        let mut off = 0usize;
        while off < tsec.len() {
            let id = types.len();
            let name_off = rd_u32(tsec, off)?;
            let info = rd_u32(tsec, off + 4)?;
            let size_or_type = rd_u32(tsec, off + 8)?;
            off += TYPE_RECORD;
            let vlen = (info & 0xffff) as usize;
            let kind = (info >> 24) & 0x1f;
            let kind_flag = info >> 31 == 1;
            // Bytes of kind-specific data after the record; all known
            // kinds are listed so that unknown ones fail loudly instead of
            // shifting every following type.
            let extra = match kind {
                KIND_INT | KIND_VAR | KIND_DECL_TAG => 4,
                KIND_ARRAY => 12,
                KIND_STRUCT | KIND_UNION => 12 * vlen,
                KIND_ENUM => 8 * vlen,
                KIND_ENUM64 => 12 * vlen,
                KIND_FUNC_PROTO => 8 * vlen,
                KIND_DATASEC => 12 * vlen,
                KIND_PTR | KIND_FWD | KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT
                | KIND_FUNC | KIND_FLOAT | KIND_TYPE_TAG => 0,
                other => {
                    return Err(BtfError::Malformed(format!(
                        "unknown BTF kind {other} at type id {id}"
                    )))
                }
            };
            let data = off
                .checked_add(extra)
                .and_then(|end| tsec.get(off..end))
                .ok_or_else(|| {
                    BtfError::Malformed(format!(
                        "type id {id} ({}) runs past the end of the type section",
                        kind_name(kind)
                    ))
                })?;
            off += extra;

            let mut int_data = 0;
            let mut members = Vec::new();
            match kind {
                KIND_INT => int_data = rd_u32(data, 0)?,
                KIND_STRUCT | KIND_UNION => {
                    members.reserve_exact(vlen);
                    for i in 0..vlen {
                        let m_off = rd_u32(data, i * 12 + 8)?;
                        // With kind_flag the offset word packs the bitfield
                        // size in its top byte.
                        let (bit_offset, bitfield_size) = if kind_flag {
                            (m_off & 0x00ff_ffff, m_off >> 24)
                        } else {
                            (m_off, 0)
                        };
                        members.push(Member {
                            name_off: rd_u32(data, i * 12)?,
                            type_id: rd_u32(data, i * 12 + 4)?,
                            bit_offset,
                            bitfield_size,
                        });
                    }
                }
                _ => {}
            }
            types.push(Type {
                name_off,
                kind,
                size_or_type,
                int_data,
                members,
            });
        }

        let mut by_name: HashMap<String, Vec<u32>> = HashMap::with_capacity(types.len());
        for (id, t) in types.iter().enumerate().skip(1) {
            let name = str_at(&strings, t.name_off).ok_or_else(|| {
                BtfError::Malformed(format!(
                    "type id {id}: name offset {} outside the strings",
                    t.name_off
                ))
            })?;
            if !name.is_empty() {
                let id = u32::try_from(id)
                    .map_err(|_| BtfError::Malformed("more than 2^32 types".into()))?;
                by_name.entry(name.to_owned()).or_default().push(id);
            }
        }
        Ok(KernelBtf {
            types,
            strings,
            by_name,
        })
    }

    /// Name at a string offset ("" when out of range: only used for
    /// messages and member names, whose offsets the index did not check).
    fn name(&self, off: u32) -> &str {
        str_at(&self.strings, off).unwrap_or("")
    }

    fn ty(&self, id: u32) -> Option<&Type> {
        self.types.get(id as usize)
    }

    /// Ids named `name` of one of `kinds`, in id order.
    fn named(&self, name: &str, kinds: &'static [u32]) -> impl Iterator<Item = u32> + '_ {
        self.by_name
            .get(name)
            .into_iter()
            .flatten()
            .copied()
            .filter(move |id| self.ty(*id).is_some_and(|t| kinds.contains(&t.kind)))
    }

    /// A STRUCT or UNION named `name`; FWD declarations are never picked,
    /// and a definition with members wins over an empty one.
    fn composite(&self, name: &str) -> Option<u32> {
        let mut found = None;
        for id in self.named(name, &[KIND_STRUCT, KIND_UNION]) {
            if self.ty(id).is_some_and(|t| !t.members.is_empty()) {
                return Some(id);
            }
            found.get_or_insert(id);
        }
        found
    }

    pub fn has_struct(&self, name: &str) -> bool {
        self.composite(name).is_some()
    }

    /// BTF type id of a FUNC by name (for fentry/LSM attach_btf_id).
    pub fn func_id(&self, name: &str) -> Option<u32> {
        self.named(name, &[KIND_FUNC]).next()
    }

    /// Type id of a TYPEDEF by name (tp_btf programs attach to the
    /// `btf_trace_<event>` typedef).
    pub fn typedef_id(&self, name: &str) -> Option<u32> {
        self.named(name, &[KIND_TYPEDEF]).next()
    }

    /// Follows typedef/const/volatile/restrict/type_tag to the real type.
    /// Bounded: a cycle in malformed data must not hang the loader.
    fn resolve(&self, mut id: u32) -> u32 {
        for _ in 0..64 {
            match self.ty(id) {
                Some(t)
                    if matches!(
                        t.kind,
                        KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG
                    ) =>
                {
                    id = t.size_or_type
                }
                _ => break,
            }
        }
        id
    }

    fn is_composite(&self, id: u32) -> bool {
        self.ty(id)
            .is_some_and(|t| t.kind == KIND_STRUCT || t.kind == KIND_UNION)
    }

    /// True when `m` can't be addressed in whole bytes: a kind_flag
    /// bitfield, an unaligned offset, or (old encoding) an INT narrower
    /// than its storage.
    fn is_bitfield(&self, m: &Member) -> bool {
        if m.bitfield_size != 0 || !m.bit_offset.is_multiple_of(8) {
            return true;
        }
        match self.ty(self.resolve(m.type_id)) {
            Some(t) if t.kind == KIND_INT => {
                let bits = t.int_data & 0xff;
                let bit_off = (t.int_data >> 16) & 0xff;
                bit_off != 0 || u64::from(bits) != u64::from(t.size_or_type) * 8
            }
            _ => false,
        }
    }

    /// Finds `member` in composite `id`, descending into anonymous
    /// struct/union members. Returns (bit offset, member type id).
    fn find_member(
        &self,
        id: u32,
        owner: &str,
        member: &str,
        depth: u32,
    ) -> Result<Option<(u32, u32)>, BtfError> {
        // Kernel nesting is a few levels; the bound only stops loops in
        // malformed data.
        if depth > 16 {
            return Ok(None);
        }
        let Some(t) = self.ty(id) else {
            return Ok(None);
        };
        for m in &t.members {
            let name = self.name(m.name_off);
            if name == member {
                if self.is_bitfield(m) {
                    return Err(BtfError::Bitfield(format!("{owner}.{member}")));
                }
                return Ok(Some((m.bit_offset, m.type_id)));
            }
            if name.is_empty() {
                let inner = self.resolve(m.type_id);
                if self.is_composite(inner) {
                    if let Some((bits, ty)) = self.find_member(inner, owner, member, depth + 1)? {
                        let total = m.bit_offset.checked_add(bits).ok_or_else(|| {
                            BtfError::Malformed(format!("offset of {owner}.{member} overflows"))
                        })?;
                        return Ok(Some((total, ty)));
                    }
                }
            }
        }
        Ok(None)
    }

    /// Byte offset of `member` in `struct_name` (a STRUCT or UNION).
    /// Descends into anonymous struct/union members, so a field inside an
    /// unnamed union is found; the offset is the sum along the way. Error
    /// if the member is a bitfield or not byte aligned.
    pub fn member_offset(&self, struct_name: &str, member: &str) -> Result<u32, BtfError> {
        let id = self
            .composite(struct_name)
            .ok_or_else(|| BtfError::NotFound(format!("struct {struct_name}")))?;
        let (bits, _) = self
            .find_member(id, struct_name, member, 0)?
            .ok_or_else(|| BtfError::NotFound(format!("member {struct_name}.{member}")))?;
        Ok(bits / 8)
    }

    /// Offset of a dotted path through embedded (non-pointer) members, e.g.
    /// ("file", "f_path.dentry") or ("dentry", "d_name.name"). Typedefs and
    /// qualifiers are looked through when stepping into a member's type.
    pub fn member_path_offset(&self, struct_name: &str, path: &str) -> Result<u32, BtfError> {
        let mut id = self
            .composite(struct_name)
            .ok_or_else(|| BtfError::NotFound(format!("struct {struct_name}")))?;
        let mut bits = 0u32;
        let mut walked = struct_name.to_owned();
        for (i, part) in path.split('.').enumerate() {
            if i > 0 && !self.is_composite(id) {
                // Following a pointer would need a read at run time, not an
                // offset: refuse instead of returning a wrong number.
                let what = self.ty(id).map_or("?", |t| kind_name(t.kind));
                return Err(BtfError::NotFound(format!(
                    "{walked} is a {what}, not an embedded struct/union, so {walked}.{part} has no offset"
                )));
            }
            let (b, ty) = self
                .find_member(id, &walked, part, 0)?
                .ok_or_else(|| BtfError::NotFound(format!("member {walked}.{part}")))?;
            bits = bits.checked_add(b).ok_or_else(|| {
                BtfError::Malformed(format!("offset of {struct_name}.{path} overflows"))
            })?;
            id = self.resolve(ty);
            walked.push('.');
            walked.push_str(part);
        }
        Ok(bits / 8)
    }
}

/// The NUL-terminated string at `off`; None when out of range or not UTF-8.
fn str_at(strings: &[u8], off: u32) -> Option<&str> {
    let rest = strings.get(off as usize..)?;
    let end = rest.iter().position(|&c| c == 0)?;
    std::str::from_utf8(rest.get(..end)?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a BTF blob:
    /// struct outer { int a; union { long b; int c; }; int bf:3; typedef_t t; }
    /// with struct inner { int x; int y; } behind `typedef struct inner typedef_t`,
    /// struct old { int whole; int nibble; } where nibble's INT type is 4 bits
    /// (the pre-kind_flag bitfield encoding), a FWD `outer` first (must lose to
    /// the STRUCT), and a FUNC `do_thing`.
    fn blob() -> Vec<u8> {
        let strings = b"\0int\0outer\0a\0b\0c\0bf\0long\0inner\0x\0y\0typedef_t\0t\0do_thing\0old\0whole\0nibble\0int4\0".to_vec();
        let s = |n: &str| -> u32 {
            let needle = format!("\0{n}\0");
            strings
                .windows(needle.len())
                .position(|w| w == needle.as_bytes())
                .map(|p| p as u32 + 1)
                .expect("string")
        };
        let mut t = Vec::new();
        let mut push = |v: u32| t.extend_from_slice(&v.to_le_bytes());
        // 1: FWD outer (a forward declaration shares the name)
        push(s("outer"));
        push(KIND_FWD << 24);
        push(0);
        // 2: int
        push(s("int"));
        push(KIND_INT << 24);
        push(4);
        push(32);
        // 3: long
        push(s("long"));
        push(KIND_INT << 24);
        push(8);
        push(64);
        // 4: anonymous union { long b; int c; }
        push(0);
        push((KIND_UNION << 24) | 2);
        push(8);
        push(s("b"));
        push(3);
        push(0);
        push(s("c"));
        push(2);
        push(0);
        // 5: struct inner { int x@0; int y@32; }
        push(s("inner"));
        push((KIND_STRUCT << 24) | 2);
        push(8);
        push(s("x"));
        push(2);
        push(0);
        push(s("y"));
        push(2);
        push(32);
        // 6: typedef struct inner typedef_t
        push(s("typedef_t"));
        push(KIND_TYPEDEF << 24);
        push(5);
        // 7: const typedef_t
        push(0);
        push(KIND_CONST << 24);
        push(6);
        // 8: struct outer (kind_flag for the bitfield) { a@0, union@64, bf:3@128, t@192 }
        push(s("outer"));
        push((1 << 31) | (KIND_STRUCT << 24) | 4);
        push(32);
        push(s("a"));
        push(2);
        push(0);
        push(0);
        push(4);
        push(64);
        push(s("bf"));
        push(2);
        push((3 << 24) | 128);
        push(s("t"));
        push(7);
        push(192);
        // 9: FUNC_PROTO void(int) with one param, so trailing data is skipped
        push(0);
        push((KIND_FUNC_PROTO << 24) | 1);
        push(0);
        push(0);
        push(2);
        // 10: FUNC do_thing
        push(s("do_thing"));
        push(KIND_FUNC << 24);
        push(9);
        // 11: ENUM with two values, 12: ENUM64 with one (more trailing data)
        push(0);
        push((KIND_ENUM << 24) | 2);
        push(4);
        push(0);
        push(1);
        push(0);
        push(2);
        push(0);
        push((KIND_ENUM64 << 24) | 1);
        push(8);
        push(0);
        push(1);
        push(0);
        // 13: int4, an INT of 4 bits (old-style bitfield type)
        push(s("int4"));
        push(KIND_INT << 24);
        push(4);
        push(4);
        // 14: struct old { int whole@0; int4 nibble@32; } (no kind_flag)
        push(s("old"));
        push((KIND_STRUCT << 24) | 2);
        push(8);
        push(s("whole"));
        push(2);
        push(0);
        push(s("nibble"));
        push(13);
        push(32);
        let mut b = Vec::new();
        b.extend_from_slice(&MAGIC.to_le_bytes());
        b.push(1);
        b.push(0);
        b.extend_from_slice(&24u32.to_le_bytes());
        b.extend_from_slice(&0u32.to_le_bytes());
        b.extend_from_slice(&(t.len() as u32).to_le_bytes());
        b.extend_from_slice(&(t.len() as u32).to_le_bytes());
        b.extend_from_slice(&(strings.len() as u32).to_le_bytes());
        b.extend_from_slice(&t);
        b.extend_from_slice(&strings);
        b
    }

    #[test]
    fn anonymous_union_typedef_and_bitfields() {
        let btf = KernelBtf::parse(&blob()).expect("parses");
        assert!(btf.has_struct("outer"));
        assert!(!btf.has_struct("do_thing"));
        assert_eq!(btf.member_offset("outer", "a").expect("a"), 0);
        assert_eq!(btf.member_offset("outer", "b").expect("b"), 8);
        assert_eq!(btf.member_offset("outer", "c").expect("c"), 8);
        assert_eq!(btf.member_offset("outer", "t").expect("t"), 24);
        assert_eq!(btf.member_path_offset("outer", "t.y").expect("t.y"), 28);
        assert_eq!(btf.member_path_offset("outer", "c").expect("c"), 8);
        let err = btf.member_offset("outer", "bf").expect_err("bitfield");
        assert!(matches!(err, BtfError::Bitfield(_)), "{err}");
        assert!(err.to_string().contains("outer.bf"), "{err}");
        assert!(matches!(
            btf.member_offset("old", "nibble"),
            Err(BtfError::Bitfield(_))
        ));
        assert_eq!(btf.member_offset("old", "whole").expect("whole"), 0);
        let err = btf
            .member_path_offset("outer", "a.x")
            .expect_err("int has no members");
        assert!(err.to_string().contains("outer.a"), "{err}");
        let err = btf.member_offset("outer", "zz").expect_err("missing");
        assert!(matches!(err, BtfError::NotFound(_)));
        assert!(err.to_string().contains("outer.zz"), "{err}");
        assert!(matches!(
            btf.member_offset("nope", "a"),
            Err(BtfError::NotFound(_))
        ));
        assert_eq!(btf.func_id("do_thing"), Some(10));
        assert_eq!(btf.func_id("outer"), None);
        assert_eq!(btf.typedef_id("typedef_t"), Some(6));
    }

    #[test]
    fn truncated_or_corrupt_blob_is_an_error_not_a_panic() {
        let b = blob();
        for cut in 0..b.len() {
            assert!(KernelBtf::parse(&b[..cut]).is_err(), "cut at {cut}");
        }
        let mut bad = b.clone();
        bad[0] = 0;
        assert!(matches!(
            KernelBtf::parse(&bad),
            Err(BtfError::Malformed(_))
        ));
        // Unknown kind 31 in the first record.
        let mut bad = b.clone();
        bad[24 + 7] = 31;
        assert!(matches!(
            KernelBtf::parse(&bad),
            Err(BtfError::Malformed(_))
        ));
        // Name offset far outside the strings.
        let mut bad = b.clone();
        bad[24..28].copy_from_slice(&0xffff_fff0u32.to_le_bytes());
        assert!(matches!(
            KernelBtf::parse(&bad),
            Err(BtfError::Malformed(_))
        ));
        // Section lengths that overflow.
        let mut bad = b;
        bad[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            KernelBtf::parse(&bad),
            Err(BtfError::Malformed(_))
        ));
    }

    /// The real kernel's BTF. Skips (loudly) only outside CI.
    fn kernel() -> Option<KernelBtf> {
        match KernelBtf::from_sys_fs() {
            Ok(b) => Some(b),
            Err(e) => {
                if std::env::var("CI").is_ok_and(|v| v == "true") {
                    panic!("CI=true and the kernel BTF is unusable: {e}");
                }
                eprintln!("SKIPPED real-kernel BTF test: {e}");
                None
            }
        }
    }

    #[test]
    fn real_kernel_offsets_resolve() {
        let Some(btf) = kernel() else { return };
        for (s, m) in [
            ("task_struct", "real_parent"),
            ("task_struct", "tgid"),
            ("task_struct", "exit_code"),
            ("task_struct", "fs"),
            ("task_struct", "files"),
            ("fs_struct", "root"),
            ("fs_struct", "pwd"),
            ("path", "mnt"),
            ("path", "dentry"),
            ("dentry", "d_parent"),
            ("dentry", "d_name"),
            ("qstr", "name"),
            ("mount", "mnt"),
            ("mount", "mnt_parent"),
            ("mount", "mnt_mountpoint"),
            ("vfsmount", "mnt_root"),
            ("files_struct", "fdt"),
            ("fdtable", "max_fds"),
            ("fdtable", "fd"),
            ("file", "f_path"),
        ] {
            let off = btf
                .member_offset(s, m)
                .unwrap_or_else(|e| panic!("{s}.{m}: {e}"));
            let via_path = btf
                .member_path_offset(s, m)
                .unwrap_or_else(|e| panic!("{s}.{m}: {e}"));
            assert_eq!(off, via_path, "{s}.{m}");
            eprintln!("{s}.{m} = {off}");
        }
        assert_eq!(btf.member_offset("path", "mnt").expect("path.mnt"), 0);
        assert_eq!(btf.member_offset("path", "dentry").expect("path.dentry"), 8);
        assert_eq!(btf.member_offset("qstr", "name").expect("qstr.name"), 8);
        // tgid follows pid; real_parent is a pointer, so 8-aligned.
        assert_eq!(
            btf.member_offset("task_struct", "tgid").expect("tgid"),
            btf.member_offset("task_struct", "pid").expect("pid") + 4
        );
        assert!(btf
            .member_offset("task_struct", "real_parent")
            .expect("rp")
            .is_multiple_of(8));
        assert_eq!(
            btf.member_path_offset("file", "f_path.dentry")
                .expect("nested"),
            btf.member_offset("file", "f_path").expect("f_path") + 8
        );
        assert_eq!(
            btf.member_path_offset("dentry", "d_name.name")
                .expect("nested"),
            btf.member_offset("dentry", "d_name").expect("d_name") + 8
        );
        // A pointer member can't be stepped through.
        assert!(btf.member_path_offset("task_struct", "fs.root").is_err());
        assert!(btf.func_id("do_unlinkat").is_some());
        assert!(btf.func_id("bpf_lsm_file_open").is_some());
        assert!(btf.typedef_id("btf_trace_sched_process_fork").is_some());
        assert!(btf.has_struct("task_struct"));
        assert!(!btf.has_struct("agentguard_no_such_struct"));
    }

    #[test]
    fn real_kernel_parse_time() {
        let Ok(bytes) = std::fs::read(SYSFS_PATH) else {
            assert!(
                !std::env::var("CI").is_ok_and(|v| v == "true"),
                "CI=true and {SYSFS_PATH} is unreadable"
            );
            eprintln!("SKIPPED: {SYSFS_PATH} unreadable");
            return;
        };
        let start = std::time::Instant::now();
        let btf = KernelBtf::parse(&bytes).expect("vmlinux BTF parses");
        // Only printed: debug builds are several times slower than release.
        eprintln!("parsed {} types in {:?}", btf.types.len(), start.elapsed());
        assert!(btf.types.len() > 10_000);
    }
}
