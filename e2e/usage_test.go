//go:build bench || faults || stack

package e2e

import (
	"fmt"
	"os"
	"strings"
	"time"
)

// usage is a process's CPU time and peak resident memory so far.
type usage struct {
	CPU    time.Duration
	PeakKB int // VmHWM
}

// pidUsage reads a running process's usage from /proc.
func pidUsage(pid int) usage {
	var u usage
	if raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil {
		f := strings.Fields(string(raw[strings.LastIndexByte(string(raw), ')')+2:]))
		var utime, stime int64
		fmt.Sscan(f[11], &utime)
		fmt.Sscan(f[12], &stime)
		u.CPU = time.Duration(utime+stime) * time.Second / 100 // USER_HZ
	}
	if raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid)); err == nil {
		for _, line := range strings.Split(string(raw), "\n") {
			fmt.Sscanf(line, "VmHWM: %d kB", &u.PeakKB)
		}
	}
	return u
}
