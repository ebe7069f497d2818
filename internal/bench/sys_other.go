//go:build !linux

package bench

import "os/exec"

func raiseNoFile()               {}
func noFileLimit() uint64        { return 0 }
func setPdeathsig(cmd *exec.Cmd) {}
func selfCPU() float64           { return 0 }
