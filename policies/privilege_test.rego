package agentguard

import rego.v1

agent_exec(path, argv) := {
	"kind": "exec",
	"ret": 0,
	"comm": "bash",
	"exec": {"file": {"path": path}, "argv": argv},
	"identity": {"scope": "container", "agent": {"name": "claude", "source": "label"}},
}

test_sudo_by_agent if {
	ds := decisions with input as agent_exec("/usr/bin/sudo", ["sudo", "id"])
	count(ds) == 1
	some d in ds
	d.rule == "privilege-tool"
	d.message == "bash (claude) ran sudo id"
}

test_ls_by_agent_ignored if {
	ds := decisions with input as agent_exec("/bin/ls", ["ls"])
	count(ds) == 0
}

test_failed_exec_ignored if {
	ev := object.union(agent_exec("/usr/bin/sudo", ["sudo"]), {"ret": -2})
	ds := decisions with input as ev
	count(ds) == 0
}

test_host_sudo_ignored if {
	ev := object.remove(agent_exec("/usr/bin/sudo", ["sudo"]), ["identity"])
	ds := decisions with input as ev
	count(ds) == 0
}
