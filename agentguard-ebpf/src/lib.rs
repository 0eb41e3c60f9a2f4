//! Host-side stub: the real programs are in `main.rs`, built for
//! bpfel-unknown-none by agentguard's build.rs. This lib target exists so the
//! daemon can name the crate as a build-dependency (rebuilds on change).
#![no_std]
