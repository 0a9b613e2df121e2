//go:build e2e

// Wall-clock timing of real memberlist members: the e2e tier, not the unit one.

package main

import (
	"context"
	"strings"
	"testing"
	"time"
)

// A small cluster end to end: boot, steady state, two owner kills with
// returns, and the figures the printed line is made of.
func TestRunSmallCluster(t *testing.T) {
	o := options{nodes: []int{4}, vips: []int{400}, kills: 2, localPct: 20, seed: 1}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	res, err := run(ctx, 4, "ironlb", 2*time.Second, o)
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	if len(res.per) != 1 {
		t.Fatalf("results for %d address counts, want 1", len(res.per))
	}
	p := res.per[0]
	if len(p.detect) != 2 || p.undetected != 0 {
		t.Fatalf("detected %d kills, %d never agreed on; want 2 and 0", len(p.detect), p.undetected)
	}
	for _, d := range p.detect {
		// A crash is detected after at least one failed probe and the
		// suspicion timeout; anything near zero means the kill was not one.
		if d < 200*time.Millisecond || d > 30*time.Second {
			t.Errorf("detection took %v", d)
		}
	}
	if res.falseDead != 0 || res.falseKills != 0 {
		t.Errorf("false dead verdicts: %d in steady state, %d during kills", res.falseDead, res.falseKills)
	}
	for i, m := range p.moved {
		// One death of four moves about a quarter of the addresses; its
		// return moves the same ones back.
		if m < 10 || m > 45 {
			t.Errorf("kill %d moved %.1f%% of the addresses", i+1, m)
		}
		if p.movedBack[i] != m {
			t.Errorf("kill %d: return moved %.1f%%, death %.1f%%", i+1, p.movedBack[i], m)
		}
	}
	if res.gossipBps <= 0 {
		t.Errorf("gossip_bps = %v; the transport counted nothing", res.gossipBps)
	}
	if p.elect <= 0 || p.electFull <= 0 {
		t.Errorf("election times %v and %v", p.elect, p.electFull)
	}
	if len(res.rejoin) != 2 {
		t.Errorf("%d returns, want 2", len(res.rejoin))
	}
	lines := res.lines()
	if len(lines) != 1 || !strings.HasPrefix(lines[0], "scale nodes=4 vips=400 detect_p50=") {
		t.Errorf("lines = %q", lines)
	}
	for _, key := range []string{" detect_p99=", " false_dead=0 ", " gossip_bps=", " elect_ms=", " moved_pct=", " timers=ironlb "} {
		if !strings.Contains(lines[0], key) {
			t.Errorf("line lacks %q: %s", key, lines[0])
		}
	}
}
