//go:build !linux

package clustertest

import "os/exec"

func setProcAttr(*exec.Cmd) {}
