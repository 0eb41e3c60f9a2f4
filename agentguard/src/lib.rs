//! agentguard: runtime policy enforcement and detection for AI-agent workloads.
//!
//! The data's path, one module per stage:
//! `sensor` (load, attach, read) -> identity -> policy -> enforcement -> outputs.
//! `event` holds the typed event that flows between the stages.

pub mod event;
pub mod identity;
pub mod outputs;
pub mod sensor;
