//! Builds the eBPF object (agentguard-ebpf) with aya-build and leaves it in
//! OUT_DIR for `include_bytes_aligned!`.
use anyhow::Context as _;

fn main() -> anyhow::Result<()> {
    let out_dir = std::env::var("OUT_DIR").context("OUT_DIR not set")?;
    let object = std::path::Path::new(&out_dir).join("agentguard");
    // AYA_BUILD_SKIP=1 lets pure-userspace work (docs, policy tooling) build
    // without nightly and bpf-linker; the daemon then refuses to load probes.
    let skip = std::env::var("AYA_BUILD_SKIP")
        .map(|v| v == "1" || v.eq_ignore_ascii_case("true"))
        .unwrap_or(false);
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("manifest dir has no parent")?
        .join("agentguard-ebpf");
    let root = root.to_str().context("non-UTF-8 path")?.to_owned();
    println!("cargo:rerun-if-changed={root}/src");
    println!("cargo:rerun-if-changed=../agentguard-common/src");
    let package = aya_build::Package {
        name: "agentguard-ebpf",
        root_dir: &root,
        ..Default::default()
    };
    aya_build::build_ebpf([package], aya_build::Toolchain::default())?;
    if skip && !object.exists() {
        std::fs::write(&object, b"").context("writing placeholder object")?;
    }
    Ok(())
}
