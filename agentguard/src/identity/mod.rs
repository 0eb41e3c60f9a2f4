//! Identity: which container, pod and agent an event came from.
//!
//! Container ids from cgroup paths, container metadata from the runtimes
//! (`docker`, `containerd`) kept current by `watch`, process facts and
//! ancestry from /proc, and the `resolver` that tags every event; `stage`
//! is the pipeline step that applies it with a bounded wait for metadata.
//! The types they all share (`Identity`, `ContainerInfo`, ...) live in the
//! leaf `model`.

pub mod cgroup;
pub mod containerd;
pub mod containerd_watch;
pub mod dns;
pub mod docker;
pub mod model;
pub mod procfs;
pub mod resolver;
pub mod snapshot;
pub mod stage;
pub mod watch;
