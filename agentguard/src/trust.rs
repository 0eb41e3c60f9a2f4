//! Who may change enforcement: the daemon only reads policy, config and
//! secret files that root (or the daemon's own user) owns and that no group
//! or other user can write. A file anyone else can write would let them
//! change what is enforced, silently, at the next hot reload.

use std::os::unix::fs::MetadataExt as _;
use std::path::Path;

/// Why `path` (a file or directory, symlinks followed) may not be trusted,
/// or Ok.
pub fn check(path: &Path) -> Result<(), String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    check_meta(path, meta.uid(), meta.mode(), me)?;
    // Through a symlink, the file's own directory decides too: whoever can
    // write it can put another file in the target's place. A sticky
    // directory (/tmp) lets nobody replace root's file.
    let is_link = std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink());
    if is_link {
        let target = std::fs::canonicalize(path).map_err(|e| format!("{}: {e}", path.display()))?;
        if let Some(dir) = target.parent() {
            let d = std::fs::metadata(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            if d.mode() & 0o1000 == 0 {
                check_meta(dir, d.uid(), d.mode(), me).map_err(|e| {
                    format!(
                        "{} is a symlink to {}, and {e}",
                        path.display(),
                        target.display()
                    )
                })?;
            }
        }
    }
    Ok(())
}

fn check_meta(path: &Path, uid: u32, mode: u32, me: u32) -> Result<(), String> {
    if uid != 0 && uid != me {
        return Err(format!(
            "{} is owned by uid {uid}, not root: whoever owns it could change enforcement (chown root)",
            path.display()
        ));
    }
    if mode & 0o022 != 0 {
        return Err(format!(
            "{} is writable by its group or by others (mode {:o}): anyone who can write it could change enforcement (chmod go-w)",
            path.display(),
            mode & 0o7777
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_and_mode_are_checked() {
        let p = Path::new("/etc/agentguard/policies/x.yaml");
        assert!(check_meta(p, 0, 0o100644, 0).is_ok());
        assert!(check_meta(p, 0, 0o100600, 1000).is_ok());
        // The daemon's own user (a test run) is as good as root.
        assert!(check_meta(p, 1000, 0o100644, 1000).is_ok());
        let e = check_meta(p, 1000, 0o100644, 0).unwrap_err();
        assert!(e.contains("uid 1000"), "{e}");
        let e = check_meta(p, 0, 0o100664, 0).unwrap_err();
        assert!(e.contains("mode 664"), "{e}");
        assert!(check_meta(p, 0, 0o100646, 0).is_err());
        assert!(check_meta(p, 0, 0o040777, 0).is_err());
        assert!(check_meta(p, 0, 0o040755, 0).is_ok());
    }

    #[test]
    fn real_files() {
        let dir = std::env::temp_dir().join(format!("agentguard-trust-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("mkdir");
        let f = dir.join("p.yaml");
        std::fs::write(&f, "x").expect("write");
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        assert!(check(&f).is_ok());
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o666)).expect("chmod");
        assert!(check(&f).is_err());
        assert!(check(&dir.join("missing")).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_symlink_is_judged_by_its_target_and_the_targets_directory() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = std::env::temp_dir().join(format!("agentguard-trust-ln-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (open, sticky) = (dir.join("open"), dir.join("sticky"));
        std::fs::create_dir_all(&open).expect("mkdir");
        std::fs::create_dir_all(&sticky).expect("mkdir");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let mode = |p: &Path, m: u32| {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).expect("chmod")
        };
        mode(&open, 0o777);
        mode(&sticky, 0o1777);
        for d in [&open, &sticky] {
            std::fs::write(d.join("t.yaml"), "x").expect("write");
            mode(&d.join("t.yaml"), 0o644);
        }
        let link = |name: &str, to: &Path| {
            let l = dir.join(name);
            std::os::unix::fs::symlink(to, &l).expect("symlink");
            l
        };
        // A good file in a directory anyone can write: replaceable.
        let e = check(&link("a.yaml", &open.join("t.yaml"))).unwrap_err();
        assert!(
            e.contains("is a symlink to") && e.contains("writable"),
            "{e}"
        );
        // In a sticky directory nobody else can replace it.
        assert!(check(&link("b.yaml", &sticky.join("t.yaml"))).is_ok());
        // A target anyone can write is refused whatever its directory.
        mode(&sticky.join("t.yaml"), 0o666);
        assert!(check(&link("c.yaml", &sticky.join("t.yaml"))).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
