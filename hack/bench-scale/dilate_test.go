package main

import (
	"testing"

	"github.com/ironlb/ironlb/speaker/membership"
)

func TestAutoDilate(t *testing.T) {
	tuned, lan := membership.TunedTimers(), membership.LANTimers()
	for _, tt := range []struct {
		n      int
		timers membership.Timers
		want   int
	}{
		{3, tuned, 1}, {50, tuned, 1}, {51, tuned, 3}, {100, tuned, 4}, {250, tuned, 10},
		{250, lan, 1}, {1000, lan, 4},
	} {
		if got := autoDilate(tt.n, tt.timers); got != tt.want {
			t.Errorf("autoDilate(%d, probe every %v) = %d, want %d", tt.n, tt.timers.ProbeInterval, got, tt.want)
		}
	}
}

func TestParseDilate(t *testing.T) {
	for in, want := range map[string]int{"auto": 0, "1": 1, "10": 10, "100": 100} {
		if got, err := parseDilate(in); err != nil || got != want {
			t.Errorf("parseDilate(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "0", "-2", "1.5", "101", "fast"} {
		if _, err := parseDilate(bad); err == nil {
			t.Errorf("parseDilate(%q): want an error", bad)
		}
	}
}

func TestDilateTimers(t *testing.T) {
	in := membership.TunedTimers()
	out := dilateTimers(in, 10)
	if out.ProbeInterval != 10*in.ProbeInterval || out.ProbeTimeout != 10*in.ProbeTimeout ||
		out.GossipInterval != 10*in.GossipInterval || out.PushPullInterval != 10*in.PushPullInterval ||
		out.TCPTimeout != 10*in.TCPTimeout || out.GossipToTheDeadTime != 10*in.GossipToTheDeadTime {
		t.Errorf("durations not stretched tenfold: %+v from %+v", out, in)
	}
	// The protocol's counts are what is being measured: untouched.
	if out.SuspicionMult != in.SuspicionMult || out.GossipNodes != in.GossipNodes ||
		out.RetransmitMult != in.RetransmitMult || out.IndirectChecks != in.IndirectChecks ||
		out.SuspicionMaxTimeoutMult != in.SuspicionMaxTimeoutMult || out.AwarenessMaxMultiplier != in.AwarenessMaxMultiplier {
		t.Errorf("counts changed: %+v from %+v", out, in)
	}
	if got := dilateTimers(in, 1); got != in {
		t.Errorf("factor 1 changed the timers: %+v", got)
	}
}
