//! `cargo xtask dist`: what a user installs, built here without any
//! registry: a Debian package for dev machines (with the debug info split
//! into a `-dbgsym` package) and an OCI image archive for Kubernetes nodes
//! (`docker load -i`), both under `target/dist/`.
//!
//! The image is a minimal Debian root file system made from Debian's own
//! packages by `mmdebstrap` (cached in `target/dist/cache/`), plus the
//! binary, the example config and the default policy pack, in the layout
//! `deploy/Dockerfile` also builds; `docker import` gives it its entry
//! point and `docker save` writes the archive. The same root file system is
//! what `tests/dist.rs` installs the `.deb` into.

use std::fmt::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context as _, Result};

use crate::setup::{output, Setup};
use crate::{agentguard_bin, build, describe, root, run_cmd, target_dir};

/// The Debian release of the image and of the package's test system.
pub const SUITE: &str = "bookworm";
/// What the base root file system holds besides `minbase` (`apt` and
/// `dpkg` are in it, so the test can `apt install ./agentguard_*.deb`):
/// CA certificates for webhook sinks over HTTPS.
const BASE_INCLUDE: &str = "ca-certificates";
/// Where the binary is in the image (the Dockerfile's and the DaemonSet's
/// path); the package puts it in /usr/bin, Debian's place for it.
const IMAGE_BIN: &str = "usr/local/bin/agentguard";
const MAINTAINER: &str = "agentguard developers <agentguard@example.invalid>";

#[derive(clap::Args)]
pub struct DistArgs {
    /// Package the release binary already built (`cargo xtask test` builds
    /// it first) instead of running `cargo build --release -p agentguard`.
    #[arg(long)]
    pub no_build: bool,
}

/// Paths and sizes of what one run made.
struct Made {
    deb: PathBuf,
    dbgsym: PathBuf,
    image: PathBuf,
    image_ref: String,
}

pub fn dist(args: &DistArgs) -> Result<()> {
    let mut setup = Setup::default();
    setup.all(false)?;
    // The image archive comes from `docker import` + `docker save`.
    setup.docker()?;
    setup.dist_tools()?;
    if !args.no_build {
        build()?;
    }
    // Directories made here are 0755 whatever the caller's umask:
    // dpkg-deb refuses group-writable ones.
    // SAFETY: umask only sets this process's file mode mask.
    unsafe { libc::umask(0o022) };
    let made = make(&target_dir().join("dist"))?;
    eprintln!("xtask: dist done:");
    for p in [&made.deb, &made.dbgsym, &made.image] {
        let size = std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        eprintln!("  {:>8.1} MB  {}", size as f64 / 1e6, p.display());
    }
    eprintln!(
        "  image {} (docker load -i {})",
        made.image_ref,
        made.image.display()
    );
    Ok(())
}

fn make(out: &Path) -> Result<Made> {
    let version = env!("CARGO_PKG_VERSION");
    let bin = agentguard_bin();
    if !bin.exists() {
        bail!(
            "{} is missing: build it first (cargo xtask build)",
            bin.display()
        );
    }
    let stage = out.join("stage");
    let _ = std::fs::remove_dir_all(&stage);
    mkdir(&stage)?;

    // Split the debug info: the shipped binary keeps its symbol table
    // (readable backtraces and profiles) but not DWARF, which is most of
    // its size; the DWARF goes to the -dbgsym package under its build id,
    // where gdb and debuginfod clients look.
    let build_id = build_id(&bin)?;
    let debug = stage.join("agentguard.debug");
    run_cmd(
        Command::new("objcopy")
            .arg("--only-keep-debug")
            .arg("--compress-debug-sections=zlib")
            .arg(&bin)
            .arg(&debug),
    )?;
    let stripped = stage.join("agentguard");
    run_cmd(
        Command::new("objcopy")
            .arg("--strip-debug")
            .arg(format!("--add-gnu-debuglink={}", debug.display()))
            .arg(&bin)
            .arg(&stripped),
    )?;
    let depends = depends(&stripped)?;

    let deb = out.join(format!("agentguard_{version}_amd64.deb"));
    package_deb(&stage.join("deb"), &stripped, version, &depends, &deb)?;
    let dbgsym = out.join(format!("agentguard-dbgsym_{version}_amd64.deb"));
    package_dbgsym(&stage.join("dbgsym"), &debug, &build_id, version, &dbgsym)?;

    let base = base_rootfs(&out.join("cache"))?;
    let image_ref = format!("agentguard:{version}");
    let image = out.join(format!("agentguard-image_{version}_amd64.tar.gz"));
    image_archive(&stage.join("image"), &base, &stripped, &image_ref, &image)?;
    let _ = std::fs::remove_dir_all(&stage);
    Ok(Made {
        deb,
        dbgsym,
        image,
        image_ref,
    })
}

/// The GNU build id of `bin` (hex), which names its debug file.
fn build_id(bin: &Path) -> Result<String> {
    let notes = output(Command::new("readelf").arg("-n").arg(bin))?;
    notes
        .lines()
        .find_map(|l| l.trim().strip_prefix("Build ID: "))
        .map(|id| id.trim().to_owned())
        .filter(|id| id.len() > 2 && id.bytes().all(|b| b.is_ascii_hexdigit()))
        .with_context(|| format!("{} has no GNU build id", bin.display()))
}

/// The package's `Depends`: the C library at the newest symbol version the
/// binary uses, and libgcc (unwinding).
fn depends(bin: &Path) -> Result<String> {
    let syms = output(Command::new("objdump").arg("-T").arg(bin))?;
    let newest = newest_glibc(&syms).context("no GLIBC_ symbol versions in the binary")?;
    let needed = output(Command::new("readelf").arg("-d").arg(bin))?;
    let mut deps = format!("libc6 (>= {newest})");
    if needed.contains("[libgcc_s.so.1]") {
        deps.push_str(", libgcc-s1");
    }
    Ok(deps)
}

/// The highest `GLIBC_x.y[.z]` version named in `objdump -T` output.
fn newest_glibc(objdump: &str) -> Option<String> {
    objdump
        .split_whitespace()
        .filter_map(|w| {
            w.trim_matches(|c| c == '(' || c == ')')
                .strip_prefix("GLIBC_")
        })
        .filter_map(|v| {
            let parts: Option<Vec<u32>> = v.split('.').map(|p| p.parse().ok()).collect();
            parts.map(|p| (p, v.to_owned()))
        })
        .max_by(|a, b| a.0.cmp(&b.0))
        .map(|(_, v)| v)
}

/// The `.deb`: binary, unit, config and pack (conffiles), maintainer
/// scripts; built with `dpkg-deb --root-owner-group` so every file is
/// root's, as the daemon requires of its config and policies.
fn package_deb(dir: &Path, bin: &Path, version: &str, depends: &str, deb: &Path) -> Result<()> {
    let repo = root();
    install(bin, &dir.join("usr/bin/agentguard"), 0o755)?;
    install(
        &repo.join("deploy/systemd/agentguard.service"),
        &dir.join("lib/systemd/system/agentguard.service"),
        0o644,
    )?;
    install(
        &repo.join("deploy/config.yaml"),
        &dir.join("etc/agentguard/config.yaml"),
        0o644,
    )?;
    let mut conffiles = vec!["/etc/agentguard/config.yaml".to_owned()];
    copy_tree(
        &repo.join("policies"),
        &dir.join("etc/agentguard/policies"),
        &mut |rel| conffiles.push(format!("/etc/agentguard/policies/{rel}")),
    )?;
    write(
        &dir.join("usr/share/doc/agentguard/copyright"),
        &format!(
            "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\
             Upstream-Name: agentguard\n\n\
             Files: *\nLicense: {}\n See /usr/share/common-licenses/Apache-2.0.\n",
            env!("CARGO_PKG_LICENSE")
        ),
        0o644,
    )?;
    let debian = dir.join("DEBIAN");
    write(
        &debian.join("control"),
        &control(
            "agentguard",
            version,
            depends,
            "admin",
            installed_kib(dir)?,
            "runtime guard for AI coding agents (eBPF)\n \
             Watches what AI coding agents and their containers do (execs, file\n \
             opens and removals, connects) with eBPF probes, checks it against\n \
             policy, and alerts, kills or denies in the kernel. Runs as the\n \
             systemd service agentguard; policies in /etc/agentguard/policies.",
        ),
        0o644,
    )?;
    conffiles.sort();
    write(
        &debian.join("conffiles"),
        &(conffiles.join("\n") + "\n"),
        0o644,
    )?;
    write(&debian.join("postinst"), POSTINST, 0o755)?;
    write(&debian.join("prerm"), PRERM, 0o755)?;
    write(&debian.join("postrm"), POSTRM, 0o755)?;
    dpkg_deb(dir, deb)
}

/// The `-dbgsym` package: the DWARF of the binary at
/// `/usr/lib/debug/.build-id/xx/rest.debug`.
fn package_dbgsym(
    dir: &Path,
    debug: &Path,
    build_id: &str,
    version: &str,
    deb: &Path,
) -> Result<()> {
    let (head, rest) = build_id.split_at(2);
    install(
        debug,
        &dir.join(format!("usr/lib/debug/.build-id/{head}/{rest}.debug")),
        0o644,
    )?;
    write(
        &dir.join("DEBIAN/control"),
        &control(
            "agentguard-dbgsym",
            version,
            &format!("agentguard (= {version})"),
            "debug",
            installed_kib(dir)?,
            "debug symbols for agentguard\n \
             The DWARF debug info of /usr/bin/agentguard, found by gdb through its\n \
             build id.",
        ),
        0o644,
    )?;
    dpkg_deb(dir, deb)
}

fn control(
    package: &str,
    version: &str,
    depends: &str,
    section: &str,
    kib: u64,
    description: &str,
) -> String {
    let mut c = String::new();
    // Writing to a String cannot fail.
    let _ = write!(
        c,
        "Package: {package}\nVersion: {version}\nArchitecture: amd64\n\
         Maintainer: {MAINTAINER}\nDepends: {depends}\nSection: {section}\n\
         Priority: optional\nInstalled-Size: {kib}\nDescription: {description}\n"
    );
    c
}

fn dpkg_deb(dir: &Path, deb: &Path) -> Result<()> {
    let _ = std::fs::remove_file(deb);
    run_cmd(
        Command::new("dpkg-deb")
            .args(["--root-owner-group", "-Zxz", "--build"])
            .arg(dir)
            .arg(deb)
            .stdout(Stdio::null()),
    )
}

/// Size of the files under `dir` in KiB, for `Installed-Size`.
fn installed_kib(dir: &Path) -> Result<u64> {
    fn walk(p: &Path, sum: &mut u64) -> Result<()> {
        for e in std::fs::read_dir(p).with_context(|| format!("reading {}", p.display()))? {
            let e = e?;
            let m = e.metadata()?;
            if m.is_dir() {
                walk(&e.path(), sum)?;
            } else {
                *sum += m.len();
            }
        }
        Ok(())
    }
    let mut sum = 0;
    if dir.exists() {
        walk(dir, &mut sum)?;
    }
    Ok(sum.div_ceil(1024))
}

/// A minimal Debian root file system as a tarball, made once by mmdebstrap
/// from Debian's packages and kept in `cache`.
pub fn base_rootfs(cache: &Path) -> Result<PathBuf> {
    let tar = cache.join(format!("debian-{SUITE}-minbase.tar"));
    if tar.exists() {
        return Ok(tar);
    }
    mkdir(cache)?;
    let partial = cache.join(format!("debian-{SUITE}-minbase.tar.partial"));
    eprintln!(
        "xtask: making a minimal Debian {SUITE} root file system with mmdebstrap (once; \
         cached at {}) ...",
        tar.display()
    );
    let mut cmd = Command::new("mmdebstrap");
    cmd.args(["--variant=minbase", "--format=tar"])
        .arg(format!("--include={BASE_INCLUDE}"))
        .arg("--aptopt=Acquire::Languages \"none\"")
        // Documentation and translations are not needed to run a daemon.
        .args([
            "--dpkgopt=path-exclude=/usr/share/doc/*",
            "--dpkgopt=path-include=/usr/share/doc/*/copyright",
            "--dpkgopt=path-exclude=/usr/share/man/*",
            "--dpkgopt=path-exclude=/usr/share/locale/*",
            "--dpkgopt=path-exclude=/usr/share/info/*",
        ])
        .arg("--customize-hook=rm -rf \"$1\"/var/lib/apt/lists/* \"$1\"/var/cache/apt/*")
        .arg(SUITE)
        .arg(&partial)
        .stdout(std::io::stderr());
    eprintln!("xtask: {}", describe(&cmd));
    run_cmd(&mut cmd)?;
    std::fs::rename(&partial, &tar)
        .with_context(|| format!("renaming {} to {}", partial.display(), tar.display()))?;
    Ok(tar)
}

/// The OCI image archive: the base root file system plus the binary, the
/// config and the pack, with the Dockerfile's entry point and command.
fn image_archive(dir: &Path, base: &Path, bin: &Path, image_ref: &str, out: &Path) -> Result<()> {
    let repo = root();
    install(bin, &dir.join(IMAGE_BIN), 0o755)?;
    install(
        &repo.join("deploy/config.yaml"),
        &dir.join("etc/agentguard/config.yaml"),
        0o644,
    )?;
    copy_tree(
        &repo.join("policies"),
        &dir.join("etc/agentguard/policies"),
        &mut |_| {},
    )?;
    let rootfs = dir.with_extension("tar");
    std::fs::copy(base, &rootfs)
        .with_context(|| format!("copying {} to {}", base.display(), rootfs.display()))?;
    // Appended entries win over the base's at import; owned by root, as
    // the daemon requires of its config and policies.
    run_cmd(
        Command::new("tar")
            .args(["--append", "--owner=0", "--group=0", "--numeric-owner"])
            .arg("-f")
            .arg(&rootfs)
            .arg("-C")
            .arg(dir)
            .args(["./usr/local/bin/agentguard", "./etc/agentguard"]),
    )?;
    // The Dockerfile's ENTRYPOINT, CMD and EXPOSE, so both images behave
    // the same.
    let changes = [
        "ENTRYPOINT [\"/usr/local/bin/agentguard\"]",
        "CMD [\"run\", \"--config\", \"/etc/agentguard/config.yaml\", \"--alerts-stdout\", \
         \"--metrics-addr\", \"0.0.0.0:9477\"]",
        "EXPOSE 9477",
        "USER 0",
    ];
    let mut import = Command::new("docker");
    import.arg("import");
    for c in changes {
        import.arg("--change").arg(c);
    }
    import
        .args(["--message", "agentguard (cargo xtask dist)"])
        .arg(&rootfs)
        .arg(image_ref)
        .stdout(Stdio::null());
    eprintln!("xtask: {}", describe(&import));
    run_cmd(&mut import)?;
    let _ = std::fs::remove_file(out);
    let saved = dir.with_extension("oci.tar");
    let mut save = Command::new("docker");
    save.arg("save").arg("-o").arg(&saved).arg(image_ref);
    eprintln!("xtask: {}", describe(&save));
    run_cmd(&mut save)?;
    // docker load and `ctr images import` take it gzipped: a third of the size.
    let gz = std::fs::File::create(out).with_context(|| format!("creating {}", out.display()))?;
    run_cmd(
        Command::new("gzip")
            .args(["-6", "-c"])
            .arg(&saved)
            .stdout(gz),
    )?;
    let _ = std::fs::remove_file(&saved);
    let _ = std::fs::remove_file(&rootfs);
    Ok(())
}

fn mkdir(p: &Path) -> Result<()> {
    std::fs::create_dir_all(p).with_context(|| format!("creating {}", p.display()))
}

fn install(from: &Path, to: &Path, mode: u32) -> Result<()> {
    if let Some(parent) = to.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    std::fs::copy(from, to)
        .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {}", to.display()))
}

fn write(to: &Path, text: &str, mode: u32) -> Result<()> {
    if let Some(parent) = to.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    std::fs::write(to, text).with_context(|| format!("writing {}", to.display()))?;
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {}", to.display()))
}

/// Copies the files of `from` into `to` (mode 0644, directories 0755),
/// calling `each` with every file's path relative to `from`.
fn copy_tree(from: &Path, to: &Path, each: &mut dyn FnMut(&str)) -> Result<()> {
    fn walk(base: &Path, from: &Path, to: &Path, each: &mut dyn FnMut(&str)) -> Result<()> {
        mkdir(to)?;
        let mut entries: Vec<_> = std::fs::read_dir(from)
            .with_context(|| format!("reading {}", from.display()))?
            .collect::<std::io::Result<_>>()?;
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let path = e.path();
            let target = to.join(e.file_name());
            if e.file_type()?.is_dir() {
                walk(base, &path, &target, each)?;
            } else {
                std::fs::copy(&path, &target)
                    .with_context(|| format!("copying {}", path.display()))?;
                std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o644))?;
                let rel = path.strip_prefix(base).unwrap_or(&path);
                each(&rel.to_string_lossy());
            }
        }
        Ok(())
    }
    walk(from, from, to, each)
}

/// Enables the unit on first install (also without a running systemd, as
/// in an image build: the same link `systemctl enable` makes) and starts
/// it where systemd runs; an upgrade keeps the admin's choice and restarts
/// a running daemon. A daemon that fails to start does not fail the
/// install: the admin fixes the config and starts it.
const POSTINST: &str = r#"#!/bin/sh
set -e
unit=agentguard.service
if [ "$1" = configure ]; then
    if [ -z "$2" ]; then
        mkdir -p /etc/systemd/system/multi-user.target.wants
        ln -sf /lib/systemd/system/$unit /etc/systemd/system/multi-user.target.wants/$unit
    fi
    if [ -d /run/systemd/system ]; then
        systemctl daemon-reload || true
        if [ -z "$2" ]; then
            echo "agentguard: starting $unit (policies in /etc/agentguard/policies)"
            systemctl start $unit || echo "agentguard: $unit did not start; see: journalctl -u agentguard" >&2
        else
            systemctl try-restart $unit || echo "agentguard: $unit did not restart; see: journalctl -u agentguard" >&2
        fi
    else
        echo "agentguard: systemd is not running here; $unit is enabled for the next boot"
    fi
fi
exit 0
"#;

/// On removal: stop the daemon, then lift what it left pinned in the
/// kernel (`run --cleanup`): with the guard gone nothing would manage its
/// denies. An upgrade keeps them (the new daemon adopts them).
const PRERM: &str = r#"#!/bin/sh
set -e
if [ "$1" = remove ]; then
    if [ -d /run/systemd/system ]; then
        systemctl stop agentguard.service || true
    fi
    /usr/bin/agentguard run --cleanup || echo "agentguard: run --cleanup failed; pinned state is in /sys/fs/bpf/agentguard" >&2
fi
exit 0
"#;

/// On purge: the enablement link goes too; alerts under /var/log/agentguard
/// stay (they are evidence).
const POSTRM: &str = r#"#!/bin/sh
set -e
if [ "$1" = purge ]; then
    rm -f /etc/systemd/system/multi-user.target.wants/agentguard.service
    rm -rf /run/agentguard
fi
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload || true
fi
exit 0
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newest_glibc_compares_versions_as_numbers() {
        let t = "0000 DF *UND* 0 (GLIBC_2.2.5) memcpy\n0000 DF *UND* 0 (GLIBC_2.34) dlsym\n\
                 0000 DF *UND* 0 (GLIBC_2.9) pipe2\n0000 DF *UND* 0 GLIBC_2.28 fcntl64";
        assert_eq!(newest_glibc(t).as_deref(), Some("2.34"));
        assert_eq!(newest_glibc("no versions here"), None);
    }

    #[test]
    fn control_has_the_fields_dpkg_needs() {
        let c = control(
            "agentguard",
            "0.1.0",
            "libc6 (>= 2.34)",
            "admin",
            42,
            "x\n y",
        );
        for f in [
            "Package: agentguard\n",
            "Version: 0.1.0\n",
            "Architecture: amd64\n",
            "Depends: libc6 (>= 2.34)\n",
            "Installed-Size: 42\n",
            "Description: x\n y\n",
        ] {
            assert!(c.contains(f), "{f:?} missing in {c}");
        }
    }
}
