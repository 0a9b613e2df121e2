package main

import (
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

// cpuMark is a point in time with this process's CPU time and the host's
// busy and total jiffies, to tell, for a phase, how much CPU the harness
// used and how busy the machine was (other users included).
type cpuMark struct {
	at         time.Time
	self       time.Duration
	busy, all  uint64
	haveHostOK bool
}

func markCPU() cpuMark {
	m := cpuMark{at: time.Now()}
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) == nil {
		m.self = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	m.busy, m.all, m.haveHostOK = hostJiffies()
	return m
}

// hostJiffies reads the first line of /proc/stat: user nice system idle
// iowait irq softirq steal ...
func hostJiffies() (busy, all uint64, ok bool) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0, false
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 5 || f[0] != "cpu" {
		return 0, 0, false
	}
	for i, s := range f[1:] {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return 0, 0, false
		}
		all += v
		if i != 3 && i != 4 { // idle, iowait
			busy += v
		}
	}
	return busy, all, true
}

// usage is a phase's CPU: this process in percent of one core, and the
// whole host in percent of one core (so 200 is both cores of a 2-core
// machine busy).
type usage struct {
	selfPct, hostPct float64
}

func since(a cpuMark) usage {
	b := markCPU()
	wall := b.at.Sub(a.at).Seconds()
	u := usage{}
	if wall > 0 {
		u.selfPct = 100 * (b.self - a.self).Seconds() / wall
	}
	if a.haveHostOK && b.haveHostOK && b.all > a.all {
		u.hostPct = 100 * float64(runtime.NumCPU()) * float64(b.busy-a.busy) / float64(b.all-a.all)
	}
	return u
}

// sampler records the process's CPU per second, so a phase can report its
// worst second as well as its mean: a mean of 60 % can hide seconds at
// 200 %, when memberlist's goroutines wait for a core.
type sampler struct {
	samples chan usage
	stop    chan struct{}
}

func startSampler() *sampler {
	s := &sampler{samples: make(chan usage, 100000), stop: make(chan struct{})}
	go func() {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		m := markCPU()
		for {
			select {
			case <-s.stop:
				return
			case <-t.C:
				select {
				case s.samples <- since(m):
				default:
				}
				m = markCPU()
			}
		}
	}()
	return s
}

// drain returns the samples since the last drain.
func (s *sampler) drain() []usage {
	var out []usage
	for {
		select {
		case u := <-s.samples:
			out = append(out, u)
		default:
			return out
		}
	}
}

func maxSelf(us []usage) float64 {
	m := 0.0
	for _, u := range us {
		m = max(m, u.selfPct)
	}
	return m
}

// stalls measures how late a 10 ms ticker fires in this process. Every
// member shares the process, so a stall (the host's other load taking both
// cores, a collector pause) delays every member's probes at once, which no
// real cluster does: each speaker has its own node.
type stalls struct {
	over50, over100 atomic.Int64
	worst           atomic.Int64 // nanoseconds
	stop            chan struct{}
}

func startStalls() *stalls {
	s := &stalls{stop: make(chan struct{})}
	go func() {
		const tick = 10 * time.Millisecond
		t := time.NewTicker(tick)
		defer t.Stop()
		last := time.Now()
		for {
			select {
			case <-s.stop:
				return
			case now := <-t.C:
				late := now.Sub(last) - tick
				last = now
				if late > 50*time.Millisecond {
					s.over50.Add(1)
				}
				if late > 100*time.Millisecond {
					s.over100.Add(1)
				}
				if int64(late) > s.worst.Load() {
					s.worst.Store(int64(late))
				}
			}
		}
	}()
	return s
}

// take returns and resets the counts.
func (s *stalls) take() (over50, over100 int64, worst time.Duration) {
	return s.over50.Swap(0), s.over100.Swap(0), time.Duration(s.worst.Swap(0))
}
