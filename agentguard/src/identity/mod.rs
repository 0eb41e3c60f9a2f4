//! Identity: which container, pod and agent an event came from.
//!
//! So far: container ids from cgroup paths. The Docker/containerd metadata,
//! agent detection and process ancestry come with the identity issue.

pub mod cgroup;
pub mod procfs;
