//! Absolute, normalized paths from what the kernel recorded.
//!
//! Where: the kernel walks the directory a relative path is relative to (cwd
//! or dirfd) at syscall entry, because only then is it certain to be the one
//! the syscall used; a /proc/PID/cwd read later races with chdir, exit and fd
//! reuse. The walk only copies dentry names; joining them and removing `.`,
//! `..` and doubled slashes is string work done here, where it is cheap and
//! unit-testable. Normalization is lexical: a `..` after a symlink is resolved
//! as written, which is what a policy matching on the path should see anyway.

use agentguard_common::event::{dir_status, DirChain, DIR_BUF, PATH_LEN};

use crate::event::{PathInfo, Resolution};

/// Bytes up to the first NUL (or the whole slice).
pub fn cstr(bytes: &[u8]) -> &[u8] {
    match bytes.iter().position(|&b| b == 0) {
        Some(n) => &bytes[..n],
        None => bytes,
    }
}

/// Lossy UTF-8 of a NUL-terminated buffer.
pub fn cstring(bytes: &[u8]) -> String {
    String::from_utf8_lossy(cstr(bytes)).into_owned()
}

/// Joins a kernel chain (innermost name first) into "/a/b/c".
/// Returns None for a chain the kernel could not read.
pub fn chain_dir(chain: &DirChain) -> Option<(String, Resolution)> {
    let resolution = match chain.status {
        dir_status::COMPLETE => Resolution::Cwd,
        dir_status::TRUNCATED => Resolution::Truncated,
        _ => return None,
    };
    let used = (chain.len as usize).min(DIR_BUF);
    let names: Vec<&[u8]> = chain.buf[..used]
        .split(|&b| b == 0)
        .take(chain.depth as usize)
        .collect();
    let mut dir = String::with_capacity(used + 4);
    if resolution == Resolution::Truncated {
        dir.push_str("/...");
    }
    for name in names.iter().rev() {
        dir.push('/');
        dir.push_str(&String::from_utf8_lossy(name));
    }
    if dir.is_empty() {
        dir.push('/');
    }
    Some((dir, resolution))
}

/// Lexical normalization of an absolute path: no `.`, no `..`, no `//`, no
/// trailing slash. `..` at the root stays at the root, as in the kernel.
pub fn normalize(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    if parts.is_empty() {
        return "/".to_owned();
    }
    let mut out = String::with_capacity(path.len());
    for p in parts {
        out.push('/');
        out.push_str(p);
    }
    out
}

/// Where the file `path` (absolute, as the process named it) really was:
/// its directory resolved through the process's own root (symlinked
/// directories, `/proc/self/root`), its last component kept (an unlink
/// removes a symlink itself). For removals, which the tracepoint backend
/// sees only as strings; done after the fact, so best effort: None when the
/// process or a directory is gone, or nothing changes.
/// `pids`: the process, then its parent (an `rm` is often gone already;
/// its parent shares its root).
pub fn real_removed_path(pids: &[u32], path: &str) -> Option<String> {
    let (dir, name) = path.rsplit_once('/')?;
    if name.is_empty() {
        return None;
    }
    let real = pids.iter().find_map(|pid| {
        let root = std::path::PathBuf::from(format!("/proc/{pid}/root"));
        // A gone process has no root to resolve in.
        std::fs::read_link(&root).ok()?;
        resolve_in_root(&root, dir)
    })?;
    let out = if real == "/" {
        format!("/{name}")
    } else {
        format!("{real}/{name}")
    };
    (out != path).then_some(out)
}

/// Resolves `dir` component by component under `root` (a process's root as
/// `/proc/PID/root`), re-rooting absolute symlink targets there, as the
/// kernel would for that process.
fn resolve_in_root(root: &std::path::Path, dir: &str) -> Option<String> {
    let mut out: Vec<String> = Vec::new();
    let mut todo: std::collections::VecDeque<String> = dir
        .split('/')
        .filter(|c| !c.is_empty())
        .map(str::to_owned)
        .collect();
    let mut hops = 0;
    while let Some(c) = todo.pop_front() {
        match c.as_str() {
            "." => continue,
            ".." => {
                out.pop();
                continue;
            }
            _ => {}
        }
        // `/proc/<self|pid>/root` is a magic link to a root: for the
        // process itself, its own.
        let selfish = |t: &str| t == "self" || t == "thread-self" || t.parse::<u32>().is_ok();
        if out.is_empty()
            && c == "proc"
            && todo.front().is_some_and(|t| selfish(t))
            && todo.get(1).is_some_and(|t| t == "root")
        {
            todo.pop_front();
            todo.pop_front();
            continue;
        }
        let mut candidate = root.to_path_buf();
        for p in &out {
            candidate.push(p);
        }
        candidate.push(&c);
        match std::fs::symlink_metadata(&candidate) {
            Ok(m) if m.file_type().is_symlink() => {
                hops += 1;
                if hops > 40 {
                    return None;
                }
                let target = std::fs::read_link(&candidate).ok()?;
                let target = target.to_str()?;
                if target.starts_with('/') {
                    out.clear();
                }
                for (i, t) in target.split('/').filter(|t| !t.is_empty()).enumerate() {
                    todo.insert(i, t.to_owned());
                }
            }
            Ok(_) => out.push(c),
            Err(_) => return None,
        }
    }
    Some(format!("/{}", out.join("/")))
}

/// Resolves the raw path the process passed against the recorded directory.
pub fn resolve(raw: &[u8; PATH_LEN], dir: &DirChain, via_dirfd: bool, truncated: bool) -> PathInfo {
    let raw = cstring(raw);
    if raw.starts_with('/') {
        let path = normalize(&raw);
        return PathInfo {
            raw: (path != raw).then_some(raw),
            path,
            resolution: Resolution::Absolute,
            truncated,
        };
    }
    match chain_dir(dir) {
        Some((base, mut resolution)) => {
            if resolution == Resolution::Cwd && via_dirfd {
                resolution = Resolution::Dirfd;
            }
            let joined = if raw.is_empty() {
                base
            } else {
                format!("{base}/{raw}")
            };
            // "/..." marks missing outer components: keep it out of
            // normalization so a leading ".." can't eat it.
            let path = match joined.strip_prefix("/...") {
                Some(rest) if resolution == Resolution::Truncated => {
                    format!("/...{}", normalize(rest))
                }
                _ => normalize(&joined),
            };
            PathInfo {
                path,
                raw: Some(raw),
                resolution,
                truncated,
            }
        }
        None => PathInfo {
            path: raw,
            raw: None,
            resolution: Resolution::Unresolved,
            truncated,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use agentguard_common::event::DIR_BUF;

    fn chain(names_inner_first: &[&str], status: u16) -> DirChain {
        let mut c = DirChain {
            status,
            depth: 0,
            len: 0,
            buf: [0; DIR_BUF],
        };
        let mut off = 0;
        for n in names_inner_first {
            c.buf[off..off + n.len()].copy_from_slice(n.as_bytes());
            off += n.len() + 1;
            c.depth += 1;
        }
        c.len = off as u32;
        c
    }

    fn raw(s: &str) -> [u8; PATH_LEN] {
        let mut b = [0u8; PATH_LEN];
        b[..s.len()].copy_from_slice(s.as_bytes());
        b
    }

    #[test]
    fn normalize_cases() {
        assert_eq!(normalize("/"), "/");
        assert_eq!(normalize("/a//b/./c/"), "/a/b/c");
        assert_eq!(normalize("/a/b/../c"), "/a/c");
        assert_eq!(normalize("/../../etc/passwd"), "/etc/passwd");
        assert_eq!(normalize("/a/.."), "/");
        assert_eq!(normalize("/a/...b"), "/a/...b");
    }

    #[test]
    fn absolute_path_is_kept_and_normalized() {
        let none = chain(&[], dir_status::NONE);
        let p = resolve(&raw("/etc//passwd"), &none, false, false);
        assert_eq!(p.path, "/etc/passwd");
        assert_eq!(p.raw.as_deref(), Some("/etc//passwd"));
        assert_eq!(p.resolution, Resolution::Absolute);
        let p = resolve(&raw("/etc/passwd"), &none, false, false);
        assert_eq!(p.raw, None);
    }

    #[test]
    fn relative_path_joins_chain_in_reverse() {
        let c = chain(&["work", "home", "root"], dir_status::COMPLETE);
        let p = resolve(&raw("../x/./f.txt"), &c, false, false);
        assert_eq!(p.path, "/root/home/x/f.txt");
        assert_eq!(p.resolution, Resolution::Cwd);
        assert_eq!(p.raw.as_deref(), Some("../x/./f.txt"));
        let p = resolve(&raw("f"), &c, true, false);
        assert_eq!(p.resolution, Resolution::Dirfd);
        assert_eq!(p.path, "/root/home/work/f");
    }

    #[test]
    fn cwd_at_root_and_empty_path() {
        let c = chain(&[], dir_status::COMPLETE);
        assert_eq!(resolve(&raw("tmp/a"), &c, false, false).path, "/tmp/a");
        let d = chain(&["bin", "usr"], dir_status::COMPLETE);
        // AT_EMPTY_PATH: the path is the directory fd itself.
        assert_eq!(resolve(&raw(""), &d, true, false).path, "/usr/bin");
    }

    #[test]
    fn truncated_chain_is_marked() {
        let c = chain(&["c", "b"], dir_status::TRUNCATED);
        let p = resolve(&raw("../../../f"), &c, false, false);
        assert_eq!(p.resolution, Resolution::Truncated);
        assert_eq!(p.path, "/.../f");
        assert_eq!(resolve(&raw("f"), &c, false, false).path, "/.../b/c/f");
    }

    #[test]
    fn failed_chain_leaves_relative_path() {
        let c = chain(&[], dir_status::FAILED);
        let p = resolve(&raw("a/b"), &c, true, false);
        assert_eq!(p.path, "a/b");
        assert_eq!(p.resolution, Resolution::Unresolved);
    }

    #[test]
    fn chain_ignores_names_beyond_depth_and_len() {
        let mut c = chain(&["b", "a"], dir_status::COMPLETE);
        // Stale bytes after `len` (scratch reuse in the kernel) are ignored.
        let len = c.len as usize;
        c.buf[len..len + 5].copy_from_slice(b"stale");
        assert_eq!(chain_dir(&c).map(|(d, _)| d).as_deref(), Some("/a/b"));
        // A corrupt len larger than the buffer is clamped, not trusted.
        c.len = u32::MAX;
        assert!(chain_dir(&c).is_some());
    }

    #[test]
    fn directories_resolve_inside_the_process_root() {
        let root = std::env::temp_dir().join(format!("ag-paths-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("data/sub")).expect("mkdir");
        // Absolute targets are re-rooted at the process's root.
        std::os::unix::fs::symlink("/data", root.join("volink")).expect("symlink");
        std::os::unix::fs::symlink("data/sub", root.join("rel")).expect("symlink");
        let r = |p: &str| resolve_in_root(&root, p);
        assert_eq!(r("/volink").as_deref(), Some("/data"));
        assert_eq!(r("/volink/sub").as_deref(), Some("/data/sub"));
        assert_eq!(r("/rel").as_deref(), Some("/data/sub"));
        assert_eq!(r("/proc/self/root/data").as_deref(), Some("/data"));
        assert_eq!(r("/proc/1/root/volink").as_deref(), Some("/data"));
        assert_eq!(r("/data/../volink").as_deref(), Some("/data"));
        assert_eq!(r("/missing/x"), None);
        let _ = std::fs::remove_dir_all(&root);
    }
}
