package clustertest

import (
	"os/exec"
	"syscall"
)

// setProcAttr makes the kernel kill a node when the test process dies
// (e.g. go test's timeout), so that no parley process outlives the suite.
func setProcAttr(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
