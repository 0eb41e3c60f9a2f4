# kinds: exec
#
# An agent reaches for root or for the host: sudo, su, nsenter, mount,
# kernel modules. Written in Rego as the example of a Rego policy: `input`
# is the event as `agentguard events` prints it.
package agentguard

import rego.v1

tools := {
	"sudo", "su", "doas", "pkexec", "nsenter", "chroot", "unshare",
	"mount", "insmod", "modprobe", "setcap",
}

base(path) := name if {
	parts := split(path, "/")
	name := parts[count(parts) - 1]
}

decisions contains d if {
	input.identity.agent.name
	input.ret == 0
	name := base(input.exec.file.path)
	name in tools
	d := {
		"rule": "privilege-tool",
		"action": "alert",
		"severity": "high",
		"message": sprintf("%s (%s) ran %s", [input.comm, input.identity.agent.name, concat(" ", input.exec.argv)]),
	}
}
