//! One-time machine set-up. Every step checks first and prints a line only
//! when it actually does something, so a second run is fast and silent.

use std::fs::OpenOptions;
use std::io::{Read as _, Write as _};
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};

use crate::guest::Kernel;
use crate::{cargo, describe, run_cmd};

const LLVM_PREFIX: &str = "/usr/lib/llvm-22";
const LLVM_PACKAGES: &[&str] = &[
    "llvm-22-dev",
    "libclang-22-dev",
    "zlib1g-dev",
    "libzstd-dev",
];
const BPF_LINKER_VERSION: &str = "0.13.0";
/// The agent CLIs the real-agent tests drive (npm, pinned): (package,
/// version, executable name, install directory stem).
pub const AGENT_CLIS: &[AgentCli] = &[
    AgentCli {
        package: "@anthropic-ai/claude-code",
        version: "2.1.332",
        bin: "claude",
        stem: "claude-code",
    },
    // Its npm package holds a wrapper that starts the native binary from
    // the platform's optional dependency.
    AgentCli {
        package: "@openai/codex",
        version: "0.171.0",
        bin: "codex",
        stem: "codex",
    },
];

pub struct AgentCli {
    pub package: &'static str,
    pub version: &'static str,
    pub bin: &'static str,
    pub stem: &'static str,
}

impl AgentCli {
    fn prefix(&self) -> PathBuf {
        Path::new(AGENTS_DIR).join(format!("{}-{}", self.stem, self.version))
    }

    /// The CLI's executable under [`AGENTS_DIR`].
    pub fn path(&self) -> PathBuf {
        self.prefix().join("node_modules/.bin").join(self.bin)
    }
}

/// Where the real agent CLIs and their workspaces live: a fixed place
/// outside any temp directory, wherever the checkout is (the pack flags
/// programs run from /tmp, and a real install or workspace is not there;
/// CI's clone may be).
pub const AGENTS_DIR: &str = "/var/cache/agentguard-tests";

const CARGO_FUZZ_VERSION: &str = "0.13.2";
const DOCKER_SOCK: &str = "/var/run/docker.sock";
const DOCKERD_LOG: &str = "/var/log/agentguard-dockerd.log";
const DOCKERD_WAIT: Duration = Duration::from_secs(60);

/// Set-up state shared by the steps of one xtask invocation.
#[derive(Default)]
pub struct Setup {
    apt_updated: bool,
}

impl Setup {
    /// Everything the build needs, plus the Docker engine if `docker`.
    pub fn all(&mut self, docker: bool) -> Result<()> {
        self.toolchain()?;
        self.bpf_linker()?;
        if docker {
            self.docker()?;
            self.vm()?;
            self.agents()?;
        }
        Ok(())
    }

    /// The real agent CLIs of tests/real_agents.rs, from npm at pinned
    /// versions, cached under [`AGENTS_DIR`].
    pub fn agents(&mut self) -> Result<()> {
        for cli in AGENT_CLIS {
            self.agent(cli)?;
        }
        Ok(())
    }

    fn agent(&mut self, cli: &AgentCli) -> Result<()> {
        let prefix = cli.prefix();
        let bin = cli.path();
        let stamp = prefix.join("version");
        if bin.exists() && std::fs::read_to_string(&stamp).is_ok_and(|v| v.trim() == cli.version) {
            return Ok(());
        }
        if which("npm").is_none() {
            self.apt_install("npm (to fetch the agent CLIs the tests drive)", &["npm"])?;
        }
        eprintln!(
            "xtask: installing {}@{} from npm into {} (for the real-agent tests) ...",
            cli.package,
            cli.version,
            prefix.display()
        );
        std::fs::create_dir_all(&prefix)?;
        let mut cmd = Command::new("npm");
        cmd.args(["install", "--no-audit", "--no-fund", "--prefix"])
            .arg(&prefix)
            .arg(format!("{}@{}", cli.package, cli.version));
        run_cmd(&mut cmd)?;
        if !bin.exists() {
            bail!(
                "npm installed {} but {} is missing",
                cli.package,
                bin.display()
            );
        }
        std::fs::write(&stamp, cli.version)?;
        Ok(())
    }

    /// qemu, a static busybox and every guest kernel, for the tests that
    /// boot a guest (`cargo xtask guest`) with a pure cgroup v2 hierarchy
    /// (this host is hybrid) and BPF-LSM enabled.
    fn vm(&mut self) -> Result<()> {
        for kernel in Kernel::ALL {
            self.guest(kernel)?;
        }
        Ok(())
    }

    /// What `cargo xtask guest --kernel KERNEL` needs: qemu, a static
    /// busybox and the kernel, cached at `target/vm/<version>/vmlinuz`.
    /// Returns the kernel's path.
    pub fn guest(&mut self, kernel: Kernel) -> Result<PathBuf> {
        if which("qemu-system-x86_64").is_none() {
            self.apt_install("qemu (for the guest kernels)", &["qemu-system-x86"])?;
        }
        if busybox().is_none() {
            self.apt_install(
                "a static busybox (for test images and guests)",
                &["busybox-static"],
            )?;
        }
        let vmlinuz = kernel.vmlinuz();
        if !vmlinuz.exists() {
            self.fetch_kernel(kernel)?;
        }
        Ok(vmlinuz)
    }

    /// Downloads the newest Debian cloud kernel of `kernel`'s series
    /// (`apt-get download` of the package its meta-package depends on) and
    /// keeps its image, config and package name in `kernel.dir()`.
    fn fetch_kernel(&mut self, kernel: Kernel) -> Result<()> {
        require_root("downloading a guest kernel")?;
        let meta = kernel.meta_package();
        let pkg = match kernel_package(meta) {
            Some(p) => Some(p),
            // A fresh machine may not have fetched package lists yet.
            None => {
                self.apt_update()?;
                kernel_package(meta)
            }
        };
        let pkg = pkg.with_context(|| {
            format!(
                "apt knows no {meta} kernel package (needed for the {} guest)",
                kernel.name()
            )
        })?;
        if !pkg.starts_with(&format!("linux-image-{}.", kernel.name())) {
            bail!("{meta} points to {pkg}, not a {} kernel", kernel.name());
        }
        let dir = kernel.dir();
        let work = dir.join("download");
        let _ = std::fs::remove_dir_all(&work);
        std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
        eprintln!(
            "xtask: downloading the {} guest kernel {pkg} (apt-get download, into {}) ...",
            kernel.name(),
            dir.display()
        );
        run_cmd(apt().current_dir(&work).args(["download", &pkg]))?;
        let deb =
            find_entry(&work, |n| n.ends_with(".deb"))?.context("apt-get download left no .deb")?;
        let tree = work.join("tree");
        run_cmd(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&tree))?;
        let boot = tree.join("boot");
        let vmlinuz = find_entry(&boot, |n| n.starts_with("vmlinuz-"))?
            .context("the kernel package holds no boot/vmlinuz-*")?;
        // The kernel's build config, to look up what is built in.
        if let Some(config) = find_entry(&boot, |n| n.starts_with("config-"))? {
            std::fs::copy(&config, dir.join("config"))?;
        }
        std::fs::write(dir.join("vmlinuz.package"), format!("{pkg}\n"))?;
        // Copy under a temporary name first: a half-written kernel must not
        // look cached.
        let partial = dir.join("vmlinuz.partial");
        std::fs::copy(&vmlinuz, &partial)?;
        std::fs::rename(&partial, kernel.vmlinuz())?;
        let _ = std::fs::remove_dir_all(&work);
        Ok(())
    }

    /// Nightly with rust-src: the eBPF crate builds core itself (-Z build-std).
    fn toolchain(&mut self) -> Result<()> {
        let toolchains = output(Command::new("rustup").args(["toolchain", "list"]))?;
        let has_nightly = toolchains
            .lines()
            .any(|l| l.trim_start().starts_with("nightly"));
        if !has_nightly {
            eprintln!("xtask: installing the nightly Rust toolchain ...");
            run_cmd(Command::new("rustup").args([
                "toolchain",
                "install",
                "nightly",
                "--profile",
                "minimal",
            ]))?;
        }
        let components = output(Command::new("rustup").args([
            "component",
            "list",
            "--toolchain",
            "nightly",
            "--installed",
        ]))?;
        if !components.lines().any(|l| l.trim().starts_with("rust-src")) {
            eprintln!("xtask: adding rust-src to the nightly toolchain ...");
            run_cmd(Command::new("rustup").args([
                "component",
                "add",
                "rust-src",
                "--toolchain",
                "nightly",
            ]))?;
        }
        Ok(())
    }

    /// bpf-linker built against the system's LLVM 22.
    fn bpf_linker(&mut self) -> Result<()> {
        if which("bpf-linker").is_some() {
            return Ok(());
        }
        if !Path::new(LLVM_PREFIX).join("bin/llvm-config").exists() {
            self.apt_install("LLVM 22 (for bpf-linker)", LLVM_PACKAGES)?;
        }
        eprintln!(
            "xtask: installing bpf-linker {BPF_LINKER_VERSION} (cargo install, about a minute) ..."
        );
        let mut cmd = cargo();
        cmd.args([
            "install",
            "bpf-linker",
            "--version",
            &format!("={BPF_LINKER_VERSION}"),
            "--locked",
            "--no-default-features",
            "--features",
            "llvm-22",
        ])
        // Without LLVM_PREFIX its build script cannot find -lLLVM.
        .env("LLVM_PREFIX", LLVM_PREFIX)
        .env("LLVM_SYS_221_PREFIX", LLVM_PREFIX);
        run_cmd(&mut cmd)
    }

    /// What `cargo xtask fuzz` needs: the nightly toolchain (the fuzz
    /// targets build with its sanitizer flags) and cargo-fuzz.
    pub fn fuzz(&mut self) -> Result<()> {
        self.toolchain()?;
        if which("cargo-fuzz").is_some() {
            return Ok(());
        }
        eprintln!(
            "xtask: installing cargo-fuzz {CARGO_FUZZ_VERSION} (cargo install, about a minute) ..."
        );
        let mut cmd = cargo();
        cmd.args([
            "install",
            "cargo-fuzz",
            "--version",
            &format!("={CARGO_FUZZ_VERSION}"),
            "--locked",
        ]);
        run_cmd(&mut cmd)
    }

    /// The Docker engine, installed and answering on its socket, with what
    /// the container tests need beside it (a static busybox, Chromium).
    pub fn docker(&mut self) -> Result<()> {
        if which("dockerd").is_none() || which("docker").is_none() {
            self.apt_install("the Docker engine", &["docker.io"])?;
        }
        // Test images are made with `docker import` from a static busybox:
        // no registry is reachable here.
        if busybox().is_none() {
            self.apt_install(
                "a static busybox (for the test container image)",
                &["busybox-static"],
            )?;
        }
        // tests/ui.rs reads the live page with Debian's headless Chromium.
        if which("chromium").is_none() {
            self.apt_install(
                "Chromium (headless, for the live page's test)",
                &["chromium"],
            )?;
        }
        if docker_answers() {
            return Ok(());
        }
        require_root("starting dockerd")?;
        let dockerd = which("dockerd").context("dockerd not found after installing docker.io")?;
        eprintln!("xtask: starting dockerd (log: {DOCKERD_LOG}) ...");
        let mut child = spawn_detached(Command::new(dockerd), Path::new(DOCKERD_LOG))?;
        let deadline = Instant::now() + DOCKERD_WAIT;
        while !docker_answers() {
            if let Some(status) = child.try_wait()? {
                bail!("dockerd exited ({status}) before answering; see {DOCKERD_LOG}");
            }
            if Instant::now() > deadline {
                bail!(
                    "dockerd did not answer on {DOCKER_SOCK} within {}s; see {DOCKERD_LOG}",
                    DOCKERD_WAIT.as_secs()
                );
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        // dockerd outlives us. Reap it if it stops while we still run (a
        // test restarts it): an unreaped zombie looks like a dockerd that
        // never stopped.
        std::thread::spawn(move || child.wait());
        Ok(())
    }

    /// What `cargo xtask dist` packs with: mmdebstrap (the image's and the
    /// package test's Debian root file system), binutils (splitting the
    /// debug info), dpkg-deb.
    pub fn dist_tools(&mut self) -> Result<()> {
        let mut missing = vec![];
        for (tool, package) in [
            ("mmdebstrap", "mmdebstrap"),
            ("objcopy", "binutils"),
            ("dpkg-deb", "dpkg"),
        ] {
            if which(tool).is_none() && !missing.contains(&package) {
                missing.push(package);
            }
        }
        if missing.is_empty() {
            return Ok(());
        }
        self.apt_install("the packaging tools of `xtask dist`", &missing)
    }

    /// auditd and auditctl (only `bench overhead` needs them).
    pub fn auditd(&mut self) -> Result<()> {
        if which("auditctl").is_some() && which("auditd").is_some() {
            return Ok(());
        }
        self.apt_install("auditd", &["auditd"])
    }

    /// bpftrace (the floor configurations of `bench overhead`); its path.
    pub fn bpftrace(&mut self) -> Result<PathBuf> {
        if let Some(path) = which("bpftrace") {
            return Ok(path);
        }
        self.apt_install(
            "bpftrace (for the bench's floor configurations)",
            &["bpftrace"],
        )?;
        which("bpftrace").context("bpftrace not found after installing it")
    }

    /// A Docker image `image` holding only a static busybox at /bin/busybox,
    /// made with `docker import` (no registry is reachable here). Needs the
    /// engine answering ([`Setup::docker`]).
    pub fn busybox_image(&mut self, image: &str) -> Result<()> {
        let have = Command::new("docker")
            .args(["image", "inspect", image])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .context("could not run `docker image inspect`")?;
        if have.success() {
            return Ok(());
        }
        let busybox = busybox().context("no busybox found (package busybox-static)")?;
        eprintln!(
            "xtask: building the image {image} (docker import of {}) ...",
            busybox.display()
        );
        let work = std::env::temp_dir().join(format!("xtask-image-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&work);
        let root = work.join("root");
        let tar = work.join("root.tar");
        let result = (|| -> Result<()> {
            let bin = root.join("bin");
            std::fs::create_dir_all(&bin).with_context(|| format!("creating {}", bin.display()))?;
            std::fs::copy(&busybox, bin.join("busybox"))
                .with_context(|| format!("copying {}", busybox.display()))?;
            run_cmd(
                Command::new("tar")
                    .arg("-C")
                    .arg(&root)
                    .arg("-cf")
                    .arg(&tar)
                    .arg("."),
            )?;
            run_cmd(
                Command::new("docker")
                    .arg("import")
                    .arg(&tar)
                    .arg(image)
                    .stdout(Stdio::null()),
            )
        })();
        // Best effort: a leftover in the temp dir is harmless.
        let _ = std::fs::remove_dir_all(&work);
        result
    }

    /// `apt-get update`, at most once per xtask run.
    fn apt_update(&mut self) -> Result<()> {
        if !self.apt_updated {
            require_root("apt-get update")?;
            eprintln!("xtask: apt-get update ...");
            run_cmd(apt().arg("update"))?;
            self.apt_updated = true;
        }
        Ok(())
    }

    fn apt_install(&mut self, what: &str, packages: &[&str]) -> Result<()> {
        require_root(&format!(
            "installing {what} (apt-get install -y {})",
            packages.join(" ")
        ))?;
        self.apt_update()?;
        eprintln!(
            "xtask: installing {what}: apt-get install -y {} ...",
            packages.join(" ")
        );
        run_cmd(apt().args(["install", "-y"]).args(packages))
    }
}

/// The versioned kernel package the meta-package `meta` points to, if apt
/// knows it.
fn kernel_package(meta: &str) -> Option<String> {
    let deps = output(Command::new("apt-cache").args(["depends", meta])).ok()?;
    deps.lines().find_map(|l| {
        l.trim()
            .strip_prefix("Depends: ")
            .filter(|p| p.starts_with("linux-image-") && !p.contains('<'))
            .map(str::to_owned)
    })
}

/// The host's busybox (Debian's busybox-static installs /bin/busybox).
pub fn busybox() -> Option<PathBuf> {
    ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
}

/// The first entry of `dir` whose file name satisfies `want`.
fn find_entry(dir: &Path, want: impl Fn(&str) -> bool) -> Result<Option<PathBuf>> {
    let entries = std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?;
    Ok(entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.file_name().is_some_and(|n| want(&n.to_string_lossy()))))
}

fn apt() -> Command {
    let mut cmd = Command::new("apt-get");
    cmd.env("DEBIAN_FRONTEND", "noninteractive");
    // Wait for another apt (a set-up running beside us) instead of failing.
    cmd.args(["-o", "DPkg::Lock::Timeout=600"]);
    // Progress, like ours, goes to stderr: stdout stays for what the
    // command itself reports (bench results).
    cmd.stdout(std::io::stderr());
    cmd
}

fn require_root(what: &str) -> Result<()> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        bail!("{what} needs root; run as root or do it yourself first");
    }
    Ok(())
}

/// Where `cargo install` puts binaries.
pub fn cargo_bin_dir() -> PathBuf {
    if let Some(home) = std::env::var_os("CARGO_HOME").filter(|h| !h.is_empty()) {
        return PathBuf::from(home).join("bin");
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    PathBuf::from(home).join(".cargo/bin")
}

/// An executable named `name` on PATH, in ~/.cargo/bin or in the sbin
/// directories (a non-login root shell may lack them).
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([cargo_bin_dir()])
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| {
            p.metadata()
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
}

/// stdout of `cmd`, which must succeed.
pub fn output(cmd: &mut Command) -> Result<String> {
    let what = describe(cmd);
    let out = cmd
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("could not run `{what}`"))?;
    if !out.status.success() {
        return Err(crate::Failed::new(what, out.status).into());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Starts a daemon in its own session (no terminal signals reach it, it
/// survives our exit) with stdout and stderr appended to `log`.
pub fn spawn_detached(mut cmd: Command, log: &Path) -> Result<Child> {
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("opening {}", log.display()))?;
    cmd.stdin(Stdio::null())
        .stdout(file.try_clone()?)
        .stderr(file);
    // SAFETY: setsid is async-signal-safe and touches no memory of ours.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let what = describe(&cmd);
    cmd.spawn()
        .with_context(|| format!("could not start `{what}`"))
}

/// Whether the Docker API answers a ping (the socket file alone may be stale).
fn docker_answers() -> bool {
    let ping = || -> std::io::Result<bool> {
        let mut sock = UnixStream::connect(DOCKER_SOCK)?;
        sock.set_read_timeout(Some(Duration::from_secs(2)))?;
        sock.set_write_timeout(Some(Duration::from_secs(2)))?;
        sock.write_all(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")?;
        let mut buf = [0u8; 64];
        let n = sock.read(&mut buf)?;
        let head = String::from_utf8_lossy(&buf[..n]);
        Ok(head.starts_with("HTTP/1.") && head.contains(" 200 "))
    };
    ping().unwrap_or(false)
}
