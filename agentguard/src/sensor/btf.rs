//! A small reader of kernel BTF (/sys/kernel/btf/vmlinux): enough to find
//! struct member offsets and function ids at load time, because rustc emits
//! no CO-RE relocations for the eBPF programs.

use std::collections::HashMap;

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
                "kernel BTF missing (/sys/kernel/btf/vmlinux): CONFIG_DEBUG_INFO_BTF is required ({e})"
            ),
            BtfError::Malformed(m) => write!(f, "malformed BTF: {m}"),
            BtfError::NotFound(m) => write!(f, "not in kernel BTF: {m}"),
            BtfError::Bitfield(m) => write!(f, "{m} is a bitfield, not byte-addressable"),
        }
    }
}

impl std::error::Error for BtfError {}

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
    /// Bit offset (already split from the bitfield size when kind_flag).
    bit_offset: u32,
    bitfield_size: u32,
}

#[derive(Clone, Debug)]
struct Type {
    name_off: u32,
    kind: u32,
    /// size for INT/STRUCT/UNION/ENUM..., referenced type for PTR/TYPEDEF/...
    size_or_type: u32,
    members: Vec<Member>,
}

/// Parsed BTF: types by id and a name index.
pub struct KernelBtf {
    types: Vec<Type>,
    strings: Vec<u8>,
    by_name: HashMap<String, Vec<u32>>,
}

fn rd_u32(b: &[u8], off: usize) -> Result<u32, BtfError> {
    b.get(off..off + 4)
        .and_then(|s| s.try_into().ok())
        .map(u32::from_le_bytes)
        .ok_or_else(|| BtfError::Malformed(format!("read past end at {off}")))
}

impl KernelBtf {
    pub fn from_sys_fs() -> Result<Self, BtfError> {
        let bytes = std::fs::read("/sys/kernel/btf/vmlinux").map_err(BtfError::Io)?;
        Self::parse(&bytes)
    }

    pub fn parse(b: &[u8]) -> Result<Self, BtfError> {
        let magic = b
            .get(0..2)
            .map(|m| u16::from_le_bytes([m[0], m[1]]))
            .ok_or_else(|| BtfError::Malformed("too short".into()))?;
        if magic != 0xeb9f {
            return Err(BtfError::Malformed(format!("bad magic {magic:#x} (big-endian BTF is not supported)")));
        }
        let hdr_len = rd_u32(b, 4)? as usize;
        let type_off = rd_u32(b, 8)? as usize;
        let type_len = rd_u32(b, 12)? as usize;
        let str_off = rd_u32(b, 16)? as usize;
        let str_len = rd_u32(b, 20)? as usize;
        let section = |off: usize, len: usize, what: &str| {
            hdr_len
                .checked_add(off)
                .and_then(|s| s.checked_add(len).map(|e| (s, e)))
                .and_then(|(s, e)| b.get(s..e))
                .ok_or_else(|| BtfError::Malformed(format!("{what} section out of bounds")))
        };
        let tsec = section(type_off, type_len, "type")?;
        let strings = section(str_off, str_len, "string")?.to_vec();

        // Type id 0 is "void".
        let mut types = vec![Type {
            name_off: 0,
            kind: 0,
            size_or_type: 0,
            members: Vec::new(),
        }];
        let mut off = 0usize;
        while off < tsec.len() {
            let name_off = rd_u32(tsec, off)?;
            let info = rd_u32(tsec, off + 4)?;
            let size_or_type = rd_u32(tsec, off + 8)?;
            off += 12;
            let vlen = (info & 0xffff) as usize;
            let kind = (info >> 24) & 0x1f;
            let kind_flag = info >> 31 == 1;
            let mut members = Vec::new();
            match kind {
                KIND_INT | KIND_VAR | KIND_DECL_TAG => off += 4,
                KIND_ARRAY => off += 12,
                KIND_STRUCT | KIND_UNION => {
                    members.reserve(vlen);
                    for _ in 0..vlen {
                        let m_name = rd_u32(tsec, off)?;
                        let m_type = rd_u32(tsec, off + 4)?;
                        let m_off = rd_u32(tsec, off + 8)?;
                        let (bit_offset, bitfield_size) = if kind_flag {
                            (m_off & 0x00ff_ffff, m_off >> 24)
                        } else {
                            (m_off, 0)
                        };
                        members.push(Member {
                            name_off: m_name,
                            type_id: m_type,
                            bit_offset,
                            bitfield_size,
                        });
                        off += 12;
                    }
                }
                KIND_ENUM => off += 8 * vlen,
                KIND_ENUM64 => off += 12 * vlen,
                KIND_FUNC_PROTO => off += 8 * vlen,
                KIND_DATASEC => off += 12 * vlen,
                KIND_PTR | KIND_FWD | KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT
                | KIND_FUNC | KIND_FLOAT | KIND_TYPE_TAG => {}
                other => return Err(BtfError::Malformed(format!("unknown BTF kind {other} at type {}", types.len()))),
            }
            types.push(Type {
                name_off,
                kind,
                size_or_type,
                members,
            });
        }
        let mut btf = KernelBtf {
            types,
            strings,
            by_name: HashMap::new(),
        };
        let mut by_name: HashMap<String, Vec<u32>> = HashMap::new();
        for (id, t) in btf.types.iter().enumerate().skip(1) {
            let name = btf.name(t.name_off);
            if !name.is_empty() {
                by_name.entry(name.to_owned()).or_default().push(id as u32);
            }
        }
        btf.by_name = by_name;
        Ok(btf)
    }

    fn name(&self, off: u32) -> &str {
        let start = off as usize;
        let Some(rest) = self.strings.get(start..) else {
            return "";
        };
        let end = rest.iter().position(|&c| c == 0).unwrap_or(rest.len());
        std::str::from_utf8(&rest[..end]).unwrap_or("")
    }

    fn ty(&self, id: u32) -> Option<&Type> {
        self.types.get(id as usize)
    }

    /// A STRUCT or UNION named `name` (not a forward declaration).
    fn composite(&self, name: &str) -> Option<u32> {
        self.by_name.get(name)?.iter().copied().find(|id| {
            self.ty(*id)
                .is_some_and(|t| t.kind == KIND_STRUCT || t.kind == KIND_UNION)
        })
    }

    pub fn has_struct(&self, name: &str) -> bool {
        self.composite(name).is_some()
    }

    /// BTF type id of a FUNC by name (for fentry/LSM attach_btf_id).
    pub fn func_id(&self, name: &str) -> Option<u32> {
        self.by_name
            .get(name)?
            .iter()
            .copied()
            .find(|id| self.ty(*id).is_some_and(|t| t.kind == KIND_FUNC))
    }

    /// Type id of a TYPEDEF by name.
    pub fn typedef_id(&self, name: &str) -> Option<u32> {
        self.by_name
            .get(name)?
            .iter()
            .copied()
            .find(|id| self.ty(*id).is_some_and(|t| t.kind == KIND_TYPEDEF))
    }

    /// Follows typedef/const/volatile/restrict/type_tag to the real type.
    fn resolve(&self, mut id: u32) -> u32 {
        for _ in 0..32 {
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

    /// Finds `member` in composite `id`, descending into anonymous
    /// struct/union members. Returns (bit offset, member type id).
    fn find_member(&self, id: u32, member: &str, depth: u32) -> Result<Option<(u32, u32)>, BtfError> {
        if depth > 8 {
            return Ok(None);
        }
        let Some(t) = self.ty(id) else { return Ok(None) };
        for m in &t.members {
            let name = self.name(m.name_off);
            if name == member {
                if m.bitfield_size != 0 || m.bit_offset % 8 != 0 {
                    return Err(BtfError::Bitfield(format!("{}.{member}", self.name(t.name_off))));
                }
                return Ok(Some((m.bit_offset, m.type_id)));
            }
            if name.is_empty() {
                let inner = self.resolve(m.type_id);
                if self
                    .ty(inner)
                    .is_some_and(|it| it.kind == KIND_STRUCT || it.kind == KIND_UNION)
                {
                    if let Some((bits, ty)) = self.find_member(inner, member, depth + 1)? {
                        return Ok(Some((m.bit_offset + bits, ty)));
                    }
                }
            }
        }
        Ok(None)
    }

    /// Byte offset of `member` in `struct_name` (a STRUCT or UNION).
    pub fn member_offset(&self, struct_name: &str, member: &str) -> Result<u32, BtfError> {
        self.member_path_offset(struct_name, member)
    }

    /// Offset of a dotted path through embedded members, e.g.
    /// ("file", "f_path.dentry").
    pub fn member_path_offset(&self, struct_name: &str, path: &str) -> Result<u32, BtfError> {
        let mut id = self
            .composite(struct_name)
            .ok_or_else(|| BtfError::NotFound(format!("struct {struct_name}")))?;
        let mut bits = 0u32;
        let mut current = struct_name.to_owned();
        for part in path.split('.') {
            let (b, ty) = self
                .find_member(id, part, 0)?
                .ok_or_else(|| BtfError::NotFound(format!("{current}.{part}")))?;
            bits += b;
            id = self.resolve(ty);
            current = format!("{current}.{part}");
        }
        Ok(bits / 8)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a BTF blob: struct outer { int a; union { long b; int c; }; int bf:3; }.
    fn blob() -> Vec<u8> {
        let strings = b"\0int\0outer\0a\0b\0c\0bf\0long\0".to_vec();
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
        // 1: int
        push(s("int"));
        push(KIND_INT << 24);
        push(4);
        push(32);
        // 2: long
        push(s("long"));
        push(KIND_INT << 24);
        push(8);
        push(64);
        // 3: anonymous union { long b; int c; }
        push(0);
        push((KIND_UNION << 24) | 2);
        push(8);
        push(s("b"));
        push(2);
        push(0);
        push(s("c"));
        push(1);
        push(0);
        // 4: struct outer (kind_flag for the bitfield) { a@0, union@64, bf:3@128 }
        push(s("outer"));
        push((1 << 31) | (KIND_STRUCT << 24) | 3);
        push(24);
        push(s("a"));
        push(1);
        push(0);
        push(0);
        push(3);
        push(64);
        push(s("bf"));
        push(1);
        push((3 << 24) | 128);
        let mut b = Vec::new();
        b.extend_from_slice(&0xeb9fu16.to_le_bytes());
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
    fn anonymous_union_and_bitfield() {
        let btf = KernelBtf::parse(&blob()).expect("parses");
        assert_eq!(btf.member_offset("outer", "a").expect("a"), 0);
        assert_eq!(btf.member_offset("outer", "b").expect("b"), 8);
        assert_eq!(btf.member_offset("outer", "c").expect("c"), 8);
        assert!(matches!(btf.member_offset("outer", "bf"), Err(BtfError::Bitfield(_))));
        assert!(matches!(btf.member_offset("outer", "zz"), Err(BtfError::NotFound(_))));
        assert!(matches!(btf.member_offset("nope", "a"), Err(BtfError::NotFound(_))));
    }

    #[test]
    fn truncated_blob_is_an_error_not_a_panic() {
        let b = blob();
        for cut in [0, 3, 10, 24, 40, b.len() - 1] {
            assert!(KernelBtf::parse(&b[..cut]).is_err(), "cut at {cut}");
        }
    }

    fn kernel() -> Option<KernelBtf> {
        match KernelBtf::from_sys_fs() {
            Ok(b) => Some(b),
            Err(e) => {
                if std::env::var("CI").is_ok_and(|v| v == "true") {
                    panic!("CI=true and the kernel BTF is unreadable: {e}");
                }
                eprintln!("skipping: {e}");
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
            ("dentry", "d_parent"),
            ("dentry", "d_name"),
            ("mount", "mnt"),
            ("mount", "mnt_parent"),
            ("mount", "mnt_mountpoint"),
            ("vfsmount", "mnt_root"),
            ("files_struct", "fdt"),
            ("fdtable", "max_fds"),
            ("fdtable", "fd"),
            ("file", "f_path"),
        ] {
            let off = btf.member_offset(s, m).unwrap_or_else(|e| panic!("{s}.{m}: {e}"));
            eprintln!("{s}.{m} = {off}");
        }
        assert_eq!(btf.member_offset("path", "mnt").expect("path.mnt"), 0);
        assert_eq!(btf.member_offset("path", "dentry").expect("path.dentry"), 8);
        assert_eq!(btf.member_offset("qstr", "name").expect("qstr.name"), 8);
        assert_eq!(
            btf.member_path_offset("file", "f_path.dentry").expect("nested"),
            btf.member_offset("file", "f_path").expect("f_path") + 8
        );
        assert!(btf.func_id("do_unlinkat").is_some() || btf.func_id("vfs_unlink").is_some());
    }
}
