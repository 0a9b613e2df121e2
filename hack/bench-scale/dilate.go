package main

import (
	"fmt"
	"math"
	"strconv"
	"time"

	"github.com/ironlb/ironlb/speaker/membership"
)

// Time dilation. N members in one process share two cores, where a real
// cluster gives each speaker a node of its own. The failure detector's
// behaviour depends on time only through its timers (probe interval, ack
// timeout, suspicion timeout, gossip and push/pull intervals) and on how
// long members take to process a message relative to those timers; on a
// LAN that is microseconds against a 50 ms ack timeout. With 250 members
// at the speaker's timers the process needs about half of the machine,
// and any stall of it (GC, another process, the harness's own bookkeeping)
// delays every member's acks at once, which a real cluster never does:
// one stall past the 50 ms ack timeout starts a storm of suspicions whose
// broadcasts cost more CPU, and the run measures the simulation, not the
// protocol.
//
// Stretching every timer by a factor k keeps the protocol identical in
// units of its own timers (same probes per suspicion timeout, same gossip
// rounds per probe) while giving each member k times more CPU per round:
// the process's CPU use falls by k, and a stall has to be k times longer
// to look like a dead member. Durations measured in the stretched run are
// divided by k and byte rates multiplied by k, so that every figure the
// harness prints is in the cluster's time, as a real cluster with the
// speaker's timers would see it. What dilation does not preserve is
// per-message CPU and LAN latency relative to the timers (both shrink by
// k), which is the point: they are what a real node has far more of than
// a 250th of two cores.
//
// The check that it measures the same thing: at N = 50, where the
// undilated run is not CPU-bound, a dilated run gives the same detection
// times (README "Scale").

// autoDilate is the factor "auto" picks: none up to 50 members at the
// speaker's timers, which the undilated harness measures with CPU to spare
// (10-15 % of one core), then one that keeps the whole process at 250
// probes a second or fewer: 4 at 100 members, 10 at 250. At 250 members a
// factor of 5 was not enough on a host whose load average other work kept
// at 10-20 (a storm of false suspicions began in the steady state). memberlist's LAN timers probe ten
// times less often and need no dilation up to 250 members.
func autoDilate(n int, t membership.Timers) int {
	probesPerSec := float64(n) * float64(time.Second) / float64(t.ProbeInterval)
	if probesPerSec <= 50*10 {
		return 1
	}
	const budget = 250.0
	return max(1, int(math.Ceil(probesPerSec/budget)))
}

// parseDilate reads -dilate: "auto" or a factor from 1 to 100.
func parseDilate(s string) (int, error) {
	if s == "auto" {
		return 0, nil
	}
	k, err := strconv.Atoi(s)
	if err != nil || k < 1 || k > 100 {
		return 0, fmt.Errorf("%q is neither auto nor a whole factor from 1 to 100", s)
	}
	return k, nil
}

// dilateTimers stretches every duration of t by k. The counts
// (suspicion multiplier, gossip fan-out, retransmits) stay: they are what
// the protocol is made of.
func dilateTimers(t membership.Timers, k int) membership.Timers {
	d := time.Duration(max(1, k))
	t.ProbeInterval *= d
	t.ProbeTimeout *= d
	t.GossipInterval *= d
	t.GossipToTheDeadTime *= d
	t.PushPullInterval *= d
	t.TCPTimeout *= d
	return t
}
