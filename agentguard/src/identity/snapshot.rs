//! What `agentguard ps` shows: containers the runtime knows and agent
//! processes running now.

use serde::Serialize;

use super::docker::{ContainerInfo, DockerClient};
use super::procfs;

#[derive(Debug, Serialize)]
pub struct AgentProcess {
    pub pid: u32,
    pub name: String,
    pub exe: String,
    pub argv: String,
}

#[derive(Debug, Serialize)]
pub struct Snapshot {
    pub containers: Vec<ContainerInfo>,
    /// Why there are no containers, when Docker was unreachable.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub docker_error: Option<String>,
    pub agents: Vec<AgentProcess>,
}

/// Agent processes: executable or argv[0] named like a known agent. Their
/// descendants are not listed (they belong to the agent).
pub fn agent_processes(agents: &[&str]) -> Vec<AgentProcess> {
    let base = |p: &str| p.rsplit('/').next().unwrap_or(p).to_owned();
    let mut out: Vec<AgentProcess> = procfs::all()
        .into_iter()
        .filter_map(|p| {
            let exe = p
                .exe
                .as_ref()
                .map(|e| e.display().to_string())
                .unwrap_or_default();
            let names = [
                base(&exe),
                p.argv.first().map(|a| base(a)).unwrap_or_default(),
            ];
            let name = names.into_iter().find(|n| agents.contains(&n.as_str()))?;
            Some(AgentProcess {
                pid: p.pid,
                name,
                exe,
                argv: p.argv.join(" "),
            })
        })
        .collect();
    out.sort_by_key(|a| a.pid);
    out
}

pub async fn take(docker_socket: Option<&str>, agents: &[&str]) -> Snapshot {
    let (containers, docker_error) = match DockerClient::connect(docker_socket).await {
        Ok(c) => match c.list().await {
            Ok(list) => (list, None),
            Err(e) => (Vec::new(), Some(format!("{e:#}"))),
        },
        Err(e) => (Vec::new(), Some(format!("{e:#}"))),
    };
    Snapshot {
        containers,
        docker_error,
        agents: agent_processes(agents),
    }
}

impl Snapshot {
    pub fn render(&self) -> String {
        let mut out = String::from(
            "CONTAINER ID  NAME                 IMAGE                          AGENT        POD\n",
        );
        for c in &self.containers {
            let pod = c
                .pod
                .as_ref()
                .map(|p| format!("{}/{}", p.namespace, p.name))
                .unwrap_or_else(|| "-".into());
            out.push_str(&format!(
                "{:<13} {:<20} {:<30} {:<12} {}\n",
                c.id.get(..12).unwrap_or(&c.id),
                c.name,
                c.image,
                c.agent_label().unwrap_or("-"),
                pod
            ));
        }
        if let Some(e) = &self.docker_error {
            out.push_str(&format!("(Docker unavailable: {e})\n"));
        }
        out.push_str("\nAGENT PID  AGENT        COMMAND\n");
        for a in &self.agents {
            out.push_str(&format!("{:<10} {:<12} {}\n", a.pid, a.name, a.argv));
        }
        out
    }
}
