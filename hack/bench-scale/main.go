// Command bench-scale measures failure detection, false deaths, gossip
// traffic and election cost of N speakers (membership and election, the
// real code) in one process on memberlist's in-memory network; see the
// README's "Scale" section. `make bench-scale` runs it.
package main

import (
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"os/signal"
	"runtime/debug"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/ironlb/ironlb/speaker/election"
	"github.com/ironlb/ironlb/speaker/membership"
)

// options is one invocation's settings.
type options struct {
	nodes       []int
	vips        []int
	kills       int
	steady      time.Duration // steady state at the largest N
	steadySmall time.Duration // at the other N
	lanSteady   time.Duration // with memberlist's LAN timers (comparison)
	localPct    int
	timers      []string
	seed        uint64
	verbose     bool
	dilate      int // 0: autoDilate per size and timer set
	gossip      time.Duration
}

func main() {
	var o options
	nodes := flag.String("nodes", "3,50,100,250", "cluster sizes, comma-separated")
	vips := flag.String("vips", "1000,10000", "address counts, comma-separated")
	timers := flag.String("timers", "ironlb,lan", "timer sets: ironlb (the speaker's) and/or lan (memberlist's DefaultLANConfig, as MetalLB ships)")
	flag.IntVar(&o.kills, "kills", 10, "owner kills per cluster size and timer set")
	flag.DurationVar(&o.steady, "steady", 5*time.Minute, "steady state without kills at the largest size (ironlb timers)")
	flag.DurationVar(&o.steadySmall, "steady-small", 30*time.Second, "steady state at the other sizes (ironlb timers)")
	flag.DurationVar(&o.lanSteady, "lan-steady", 30*time.Second, "steady state with the lan timers, at every size")
	flag.IntVar(&o.localPct, "local-pct", 20, "percent of addresses whose Services are externalTrafficPolicy: Local")
	flag.Uint64Var(&o.seed, "seed", 1, "random seed (worlds and which owner is killed)")
	flag.BoolVar(&o.verbose, "v", false, "print each kill")
	flag.DurationVar(&o.gossip, "gossip-interval", 0, "override the gossip interval of the speaker's timers (an experiment; 0 keeps the speaker's)")
	dilate := flag.String("dilate", "auto", "stretch every timer and wait by this factor and report in the cluster's time (auto: 1 up to 50 members at the speaker's timers, more beyond; see dilate.go)")
	cpuProfile := flag.String("cpuprofile", "", "write a CPU profile of the whole run to this file")
	flag.Parse()
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			fmt.Fprintf(os.Stderr, "bench-scale: -cpuprofile: %v\n", err)
			os.Exit(2)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintf(os.Stderr, "bench-scale: -cpuprofile: %v\n", err)
			os.Exit(2)
		}
		defer pprof.StopCPUProfile()
	}
	var err error
	if o.nodes, err = intList(*nodes); err != nil {
		fmt.Fprintf(os.Stderr, "bench-scale: -nodes %q: %v; give sizes like 3,50,100,250\n", *nodes, err)
		os.Exit(2)
	}
	if o.vips, err = intList(*vips); err != nil {
		fmt.Fprintf(os.Stderr, "bench-scale: -vips %q: %v; give counts like 1000,10000\n", *vips, err)
		os.Exit(2)
	}
	for _, t := range strings.Split(*timers, ",") {
		if t != "ironlb" && t != "lan" {
			fmt.Fprintf(os.Stderr, "bench-scale: -timers %q: unknown set %q; use ironlb, lan or both\n", *timers, t)
			os.Exit(2)
		}
		o.timers = append(o.timers, t)
	}
	if o.dilate, err = parseDilate(*dilate); err != nil {
		fmt.Fprintf(os.Stderr, "bench-scale: -dilate: %v\n", err)
		os.Exit(2)
	}
	if o.kills < 1 || o.localPct < 0 || o.localPct > 100 {
		fmt.Fprintln(os.Stderr, "bench-scale: -kills must be at least 1 and -local-pct within 0-100")
		os.Exit(2)
	}

	// The N members share one heap here, where each speaker has its own:
	// collect less often so that the collector's share of the two cores
	// does not starve memberlist's timers (GOGC in the environment wins).
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(400)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	largest := slices.Max(o.nodes)
	failed := false
	for _, n := range o.nodes {
		for _, t := range o.timers {
			steady := o.steadySmall
			if n == largest {
				steady = o.steady
			}
			if t == "lan" {
				steady = o.lanSteady
			}
			res, err := run(ctx, n, t, steady, o)
			if err != nil {
				fmt.Fprintf(os.Stderr, "bench-scale: nodes=%d timers=%s: %v\n", n, t, err)
				failed = true
				if ctx.Err() != nil {
					os.Exit(1)
				}
				continue
			}
			for _, line := range res.lines() {
				fmt.Println(line)
			}
		}
	}
	if failed {
		os.Exit(1)
	}
}

func intList(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		v, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || v < 1 {
			return nil, fmt.Errorf("%q is not a positive number", f)
		}
		out = append(out, v)
	}
	return out, nil
}

func timerSet(name string, o options) membership.Timers {
	if name == "lan" {
		return membership.LANTimers()
	}
	t := membership.TunedTimers()
	if o.gossip > 0 {
		t.GossipInterval = o.gossip
	}
	return t
}

// perVIPs is what one run measured for one address count.
type perVIPs struct {
	vips       int
	detect     []time.Duration // per kill: until the last survivor agrees
	undetected int             // kills some survivor never agreed on
	moved      []float64       // percent of addresses moved per death
	movedBack  []float64       // and per return
	elect      time.Duration   // the Elector after one change
	electFull  time.Duration   // a full Elect
}

// result is one cluster size with one timer set.
type result struct {
	nodes  int
	timers string
	dilate int // every duration below is in the cluster's time: wall / dilate
	boot   time.Duration
	calm   time.Duration // after boot, until no suspicion for 5 s
	// Process stalls (a 10 ms ticker late by more than 50 / 100 ms), in
	// steady state and during the kills, and the worst lateness.
	stall50, stall100, kStall50, kStall100 int64
	stallWorst, kStallWorst                time.Duration
	steady                                 time.Duration
	falseDead                              int     // during steady state
	falseKills                             int     // during the kills, members other than the killed one dropped
	gossipBps                              float64 // steady state, bytes sent per second per member
	killBps                                float64 // during the kill phase
	steadyCPU                              usage
	steadyMax                              float64 // worst second of the process during steady state
	killCPU                                usage
	killMax                                float64
	rejoin                                 []time.Duration
	k                                      counters // steady state
	kk                                     counters // kill phase
	per                                    []perVIPs
}

func (r result) lines() []string {
	var out []string
	for _, p := range r.per {
		movedPct, backPct := mean(p.moved), mean(p.movedBack)
		out = append(out, fmt.Sprintf(
			"scale nodes=%d vips=%d detect_p50=%d detect_p99=%d false_dead=%d gossip_bps=%.0f elect_ms=%.1f moved_pct=%.2f"+
				" timers=%s detect_max=%d kills=%d undetected=%d moved_back_pct=%.2f elect_full_ms=%.0f"+
				" steady_s=%.0f suspicions=%d refuted=%d false_dead_kills=%d kill_gossip_bps=%.0f rejoin_p50=%d"+
				" cpu_steady=%.0f%% cpu_steady_max=%.0f%% host_steady=%.0f%% cpu_kills=%.0f%% cpu_kills_max=%.0f%% host_kills=%.0f%% dropped=%d"+
				" stalls_steady=%d/%d stall_steady_max=%d stalls_kills=%d/%d stall_kills_max=%d boot_s=%.0f dilate=%d",
			r.nodes, p.vips, ms(percentile(p.detect, 50)), ms(percentile(p.detect, 99)), r.falseDead, r.gossipBps,
			float64(p.elect.Microseconds())/1000, movedPct,
			r.timers, ms(percentile(p.detect, 100)), len(p.detect), p.undetected, backPct, float64(p.electFull.Microseconds())/1000,
			r.steady.Seconds(), r.k.suspicions, r.k.refuted, r.falseKills, r.killBps, ms(percentile(r.rejoin, 50)),
			r.steadyCPU.selfPct, r.steadyMax, r.steadyCPU.hostPct, r.killCPU.selfPct, r.killMax, r.killCPU.hostPct, r.k.dropped+r.kk.dropped,
			r.stall50, r.stall100, ms(r.stallWorst), r.kStall50, r.kStall100, ms(r.kStallWorst), (r.boot+r.calm).Seconds(), r.dilate))
	}
	return out
}

func ms(d time.Duration) int64 { return d.Milliseconds() }

func mean(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := 0.0
	for _, x := range xs {
		s += x
	}
	return s / float64(len(xs))
}

func sub(a, b counters) counters {
	return counters{a.suspicions - b.suspicions, a.declared - b.declared, a.refuted - b.refuted, a.dropped - b.dropped}
}

// run boots n members with the named timers, holds a steady state, then
// kills a random owner o.kills times (bringing it back after each).
func run(ctx context.Context, n int, timers string, steady time.Duration, o options) (result, error) {
	k := o.dilate
	if k == 0 {
		k = autoDilate(n, timerSet(timers, o))
	}
	// K stretches a wait in the cluster's time to wall time; cluster()
	// turns a measured wall duration back.
	K := time.Duration(k)
	cluster := func(d time.Duration) time.Duration { return d / K }
	res := result{nodes: n, timers: timers, steady: steady, dilate: k}
	worlds := make([]world, len(o.vips))
	for i, v := range o.vips {
		worlds[i] = makeWorld(n, v, o.localPct, o.seed)
	}
	all := newBitset(n)
	for i := range n {
		all.set(i)
	}

	c := newCluster(n, timerSet(timers, o), k)
	defer c.shutdown()
	bootMark := markCPU()
	c.progress = func(joined int) {
		logf(o, "  %d joined, %d suspicions so far, cpu %.0f%% host %.0f%%", joined, c.counters().suspicions, since(bootMark).selfPct, since(bootMark).hostPct)
	}
	t0 := time.Now()
	// A cluster that cannot boot within minutes is not going to: fail
	// this size instead of waiting out every member's Rejoin timeout.
	bctx, cancel := context.WithTimeout(ctx, 5*time.Minute*K)
	err := c.boot(bctx)
	cancel()
	if err != nil {
		k := c.counters()
		return res, fmt.Errorf("boot: %w (%d suspicions and %d deaths declared while booting)", err, k.suspicions, k.declared)
	}
	res.boot = cluster(time.Since(t0))
	// Let the joins' gossip die down before measuring.
	if err := c.waitCalm(ctx, all, 5*time.Second*K, 3*time.Minute*K); err != nil {
		return res, fmt.Errorf("after boot: %w", err)
	}
	res.calm = cluster(time.Since(t0)) - res.boot
	logf(o, "nodes=%d timers=%s dilate=%d booted in %v, calm %v later, in the cluster's time (%d suspicions while booting)", n, timers, k,
		res.boot.Round(time.Millisecond), res.calm.Round(time.Millisecond), c.counters().suspicions)

	smp := startSampler()
	defer close(smp.stop)
	st := startStalls()
	defer close(st.stop)

	// Steady state: nobody dies, so every dropped member is a false
	// verdict.
	k0, b0, m0, s0 := c.counters(), c.sentBytes(), markCPU(), time.Now()
	smp.drain()
	st.take()
	if err := sleep(ctx, steady*K); err != nil {
		return res, err
	}
	s1 := time.Now()
	res.steadyCPU, res.steadyMax = since(m0), maxSelf(smp.drain())
	res.k = sub(c.counters(), k0)
	res.stall50, res.stall100, res.stallWorst = st.take()
	res.gossipBps = float64(c.sentBytes()-b0) / cluster(s1.Sub(s0)).Seconds() / float64(n)
	none := newBitset(n)
	for _, nd := range c.nodes {
		res.falseDead += falseDeaths(nd.viewsCopy(), s0, s1, none, n)
	}
	logf(o, "nodes=%d timers=%s steady %v: false_dead=%d suspicions=%d gossip_bps=%.0f cpu=%.0f%%",
		n, timers, steady, res.falseDead, res.k.suspicions, res.gossipBps, res.steadyCPU.selfPct)

	// Kills.
	r := rand.New(rand.NewPCG(o.seed, uint64(n)))
	full := make([]map[netip.Addr]string, len(worlds))
	for i, w := range worlds {
		full[i] = w.owners(all)
		res.per = append(res.per, perVIPs{vips: o.vips[i]})
	}
	k1, b1, m1, kt0 := c.counters(), c.sentBytes(), markCPU(), time.Now()
	for kill := range o.kills {
		// A random owner: a node that owns something in the largest world.
		last := full[len(full)-1]
		var owners []int
		for i := range n {
			for _, o := range last {
				if o == nodeName(i) {
					owners = append(owners, i)
					break
				}
			}
		}
		if len(owners) == 0 {
			return res, fmt.Errorf("no node owns an address")
		}
		d := owners[r.IntN(len(owners))]
		survivors := all.clone()
		survivors.clear(d)
		dead := newBitset(n)
		dead.set(d)

		at := c.kill(d)
		if err := c.waitViews(ctx, survivors, survivors, 3*time.Minute*K); err != nil {
			return res, fmt.Errorf("kill %d of %s: %w", kill+1, nodeName(d), err)
		}
		// Stragglers' last callbacks land within a few milliseconds.
		if err := sleep(ctx, 100*time.Millisecond*K); err != nil {
			return res, err
		}
		for i, w := range worlds {
			after := w.owners(survivors)
			var affected []election.Address
			for _, a := range w.addrs {
				if full[i][a.IP] == nodeName(d) {
					affected = append(affected, a)
				}
			}
			good := w.agreement(affected, after)
			var worst time.Duration
			never := false
			for j, nd := range c.nodes {
				if j == d {
					continue
				}
				s, ok := settledAt(nd.viewsCopy(), at, good)
				if !ok {
					never = true
					continue
				}
				worst = max(worst, cluster(s.Sub(at)))
			}
			p := &res.per[i]
			if never {
				p.undetected++
			} else {
				p.detect = append(p.detect, worst)
			}
			p.moved = append(p.moved, 100*float64(moved(full[i], after, w.addrs))/float64(len(w.addrs)))
			p.movedBack = append(p.movedBack, 100*float64(moved(after, full[i], w.addrs))/float64(len(w.addrs)))
		}

		// The node returns: a fresh incarnation at the same address that
		// merges with the others, as a restarted speaker does.
		rt := time.Now()
		if err := c.start(ctx, d, c.peersFor(d, survivors)); err != nil {
			return res, fmt.Errorf("return of %s: %w", nodeName(d), err)
		}
		if err := c.waitViews(ctx, all, all, 3*time.Minute*K); err != nil {
			return res, fmt.Errorf("return of %s: %w", nodeName(d), err)
		}
		res.rejoin = append(res.rejoin, cluster(time.Since(rt)))
		back := time.Now()
		for j, nd := range c.nodes {
			if j != d {
				res.falseKills += falseDeaths(nd.viewsCopy(), at, back, dead, n)
			}
		}
		logf(o, "nodes=%d timers=%s kill %d: %s detect=%v (v=%d) back in %v", n, timers, kill+1, nodeName(d),
			lastOr(res.per[len(res.per)-1].detect), o.vips[len(o.vips)-1], res.rejoin[len(res.rejoin)-1].Round(time.Millisecond))
		// Let the return's gossip settle before the next kill.
		if err := sleep(ctx, time.Second*K); err != nil {
			return res, err
		}
	}
	res.killCPU, res.killMax = since(m1), maxSelf(smp.drain())
	res.kk = sub(c.counters(), k1)
	res.kStall50, res.kStall100, res.kStallWorst = st.take()
	res.killBps = float64(c.sentBytes()-b1) / cluster(time.Since(kt0)).Seconds() / float64(n)
	c.shutdown()

	// Election cost, measured with the cluster stopped so that it is the
	// election's own time.
	for i, w := range worlds {
		res.per[i].elect, res.per[i].electFull = electCost(w, 9)
	}
	return res, nil
}

func lastOr(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return -1
	}
	return ds[len(ds)-1].Round(time.Millisecond)
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

func logf(o options, format string, args ...any) {
	if o.verbose {
		fmt.Fprintf(os.Stderr, time.Now().Format("15:04:05 ")+format+"\n", args...)
	}
}
