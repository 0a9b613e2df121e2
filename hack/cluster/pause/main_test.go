package main

import (
	"errors"
	"os/exec"
	"syscall"
	"testing"
	"time"
)

// TestReap: a child that exited is collected by reap, so that no zombie is
// left behind, and reap returns at once when no child has exited.
func TestReap(t *testing.T) {
	if n := reap(); n != 0 {
		t.Fatalf("reap() = %d with no children, want 0", n)
	}
	cmd := exec.Command("/bin/sh", "-c", "exit 3")
	if err := cmd.Start(); err != nil {
		t.Skip("cannot start /bin/sh:", err)
	}
	pid := cmd.Process.Pid
	// The child is a zombie once it has exited; poll until reap collects it.
	deadline := time.Now().Add(5 * time.Second)
	for reap() == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("reap never collected child %d", pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if _, err := syscall.Wait4(pid, nil, syscall.WNOHANG, nil); !errors.Is(err, syscall.ECHILD) {
		t.Errorf("after reap, wait4(%d) = %v, want ECHILD", pid, err)
	}
}
