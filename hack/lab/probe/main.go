// Command probe measures what a LAN client of the network lab sees. It runs
// inside the lab's client namespace (hack/lab.sh exec client probe ...).
//
//	probe http --url http://198.51.100.100/health [--interval 20ms] [--timeout 100ms]
//	           [--duration 10s] [--until-file F]
//
// makes one request every interval, each on a fresh TCP connection (no
// keep-alive), and prints one JSON line per request in the order they
// complete:
//
//	{"t_ms":12.3,"unix_ms":1732471234567.8,"ok":true,"node":"n1","lat_ms":0.9}
//
// t_ms is when the request started, since the probe started; unix_ms the same
// instant as Unix time in milliseconds (to line up with events outside the
// probe); node is parsed from the "UP nX" body; err is set when ok is false.
// It stops after --duration (0: never), when --until-file exists, or on
// SIGINT/SIGTERM, waits for the requests in flight, and prints a summary to
// stderr.
//
//	probe arp --ip VIP [--iface eth0] [--wait 200ms]
//	probe arp --ip VIP --watch [--interval 20ms] [--duration 10s] [--until-file F]
//
// sends an ARP request (IPv4) or a Neighbor Solicitation to the solicited-node
// multicast group (IPv6) for VIP and prints one JSON line per round with every
// distinct MAC that answered and its reply latency:
//
//	{"round":0,"t_ms":0.1,"unix_ms":...,"macs":["02:00:c6:33:64:0b"],"lat_us":{"02:00:c6:33:64:0b":180},"grat":[]}
//
// macs are answers addressed to this client (ARP replies to our address, NAs
// to our link-local address, Solicited set); grat are the MACs seen
// announcing VIP unasked in that round (gratuitous ARP, unsolicited NA). A
// single round waits --wait; --watch rounds last --interval each. --watch ends
// with a summary line {"summary":true,...}.
//
//	probe garp --ip VIP [--iface eth0] [--mac MAC] [--count 1] [--interval 100ms]
//
// claims VIP for MAC (default: the interface's own) the way a misconfigured
// host or an intruder would: a gratuitous ARP request (IPv4) or an
// unsolicited Neighbor Advertisement with Override set (IPv6), sent --count
// times --interval apart from a raw socket, with MAC as the Ethernet source
// too. One JSON line per frame: {"n":0,"unix_ms":...}. Only for the lab's
// namespaces (hack/lab.sh exec), like everything here.
//
//	probe neigh --ip IP [--iface eth0] [--duration D] [--until-file F]
//
// watches this namespace's neighbour entry for IP (ip monitor) and prints
// one JSON line with the entry at the start and one per change:
// {"unix_ms":...,"mac":"02:00:c6:33:64:0b","state":"REACHABLE"}; mac is
// empty when the entry has no link-layer address.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/mdlayher/arp"
	"github.com/mdlayher/ndp"
	"golang.org/x/net/ipv6"
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	var err error
	switch os.Args[1] {
	case "http":
		err = runHTTP(os.Args[2:])
	case "arp", "ndp":
		err = runARP(os.Args[2:])
	case "garp":
		err = runGARP(os.Args[2:])
	case "neigh":
		err = runNeigh(os.Args[2:])
	default:
		usage()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "probe:", err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: probe http --url URL [--interval 20ms] [--timeout 100ms] [--duration D] [--until-file F]")
	fmt.Fprintln(os.Stderr, "       probe arp --ip IP [--iface eth0] [--wait 200ms] [--watch --interval 20ms --duration D] [--until-file F]")
	fmt.Fprintln(os.Stderr, "       probe garp --ip IP [--iface eth0] [--mac MAC] [--count 1] [--interval 100ms]")
	fmt.Fprintln(os.Stderr, "       probe neigh --ip IP [--iface eth0] [--duration D] [--until-file F]")
	os.Exit(2)
}

// stopContext ends on SIGINT/SIGTERM, after d (when > 0), or once file
// exists (when not empty).
func stopContext(d time.Duration, file string) (context.Context, context.CancelFunc) {
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	if d > 0 {
		var c2 context.CancelFunc
		ctx, c2 = context.WithTimeout(ctx, d)
		prev := cancel
		cancel = func() { c2(); prev() }
	}
	if file != "" {
		go func() {
			t := time.NewTicker(10 * time.Millisecond)
			defer t.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-t.C:
					if _, err := os.Stat(file); err == nil {
						cancel()
						return
					}
				}
			}
		}()
	}
	return ctx, cancel
}

func ms(d time.Duration) float64 { return math.Round(float64(d.Microseconds())/10) / 100 }

func unixMS(t time.Time) float64 { return math.Round(float64(t.UnixMicro())/10) / 100 }

// out serialises JSON lines on stdout.
type out struct {
	mu  sync.Mutex
	enc *json.Encoder
}

func newOut() *out { return &out{enc: json.NewEncoder(os.Stdout)} }

func (o *out) line(v any) {
	o.mu.Lock()
	defer o.mu.Unlock()
	_ = o.enc.Encode(v)
}

// ---- http ----

type httpResult struct {
	T      float64 `json:"t_ms"`
	Unix   float64 `json:"unix_ms"`
	OK     bool    `json:"ok"`
	Node   string  `json:"node,omitempty"`
	Lat    float64 `json:"lat_ms"`
	Err    string  `json:"err,omitempty"`
	Status int     `json:"status,omitempty"`
}

func runHTTP(args []string) error {
	fs := flag.NewFlagSet("http", flag.ExitOnError)
	url := fs.String("url", "", "URL to GET (required)")
	interval := fs.Duration("interval", 20*time.Millisecond, "time between request starts")
	timeout := fs.Duration("timeout", 100*time.Millisecond, "per-request timeout (connect + response)")
	duration := fs.Duration("duration", 0, "stop after this long (0: until signalled or --until-file)")
	untilFile := fs.String("until-file", "", "stop once this file exists")
	fs.Parse(args)
	if *url == "" {
		return errors.New("--url is required")
	}
	tr := &http.Transport{
		DisableKeepAlives:   true,
		DialContext:         (&net.Dialer{Timeout: *timeout}).DialContext,
		MaxIdleConnsPerHost: -1,
		Proxy:               nil,
	}
	client := &http.Client{Transport: tr, Timeout: *timeout}
	ctx, cancel := stopContext(*duration, *untilFile)
	defer cancel()
	o := newOut()
	start := time.Now()
	var wg sync.WaitGroup
	var mu sync.Mutex
	var okN, failN int
	nodes := map[string]int{}
	one := func(t0 time.Time) {
		defer wg.Done()
		r := httpResult{T: ms(t0.Sub(start)), Unix: unixMS(t0)}
		req, _ := http.NewRequest(http.MethodGet, *url, nil)
		resp, err := client.Do(req)
		if err == nil {
			var body []byte
			body, err = io.ReadAll(io.LimitReader(resp.Body, 4096))
			resp.Body.Close()
			r.Status = resp.StatusCode
			if err == nil {
				f := strings.Fields(string(body))
				switch {
				case resp.StatusCode != http.StatusOK:
					err = fmt.Errorf("status %d", resp.StatusCode)
				case len(f) >= 2 && f[0] == "UP":
					r.OK, r.Node = true, f[1]
				default:
					err = fmt.Errorf("unexpected body %q", strings.TrimSpace(string(body)))
				}
			}
		}
		r.Lat = ms(time.Since(t0))
		if err != nil {
			r.Err = err.Error()
		}
		mu.Lock()
		if r.OK {
			okN++
			nodes[r.Node]++
		} else {
			failN++
		}
		mu.Unlock()
		o.line(r)
	}
	tick := time.NewTicker(*interval)
	defer tick.Stop()
	for {
		wg.Add(1)
		go one(time.Now())
		select {
		case <-ctx.Done():
		case <-tick.C:
			continue
		}
		break
	}
	wg.Wait()
	fmt.Fprintf(os.Stderr, "probe http: %d ok, %d failed, by node %v\n", okN, failN, nodes)
	return nil
}

// ---- arp / ndp ----

type round struct {
	Round int              `json:"round"`
	T     float64          `json:"t_ms"`
	Unix  float64          `json:"unix_ms"`
	MACs  []string         `json:"macs"`
	Lat   map[string]int64 `json:"lat_us"`
	Grat  []string         `json:"grat"`
}

type summary struct {
	Summary     bool     `json:"summary"`
	Rounds      int      `json:"rounds"`
	NoAnswer    int      `json:"rounds_no_answer"`
	Multi       int      `json:"rounds_multi"`
	MACs        []string `json:"distinct_macs"`
	LatP50us    int64    `json:"lat_p50_us"`
	LatP99us    int64    `json:"lat_p99_us"`
	LatMaxus    int64    `json:"lat_max_us"`
	GratMACs    []string `json:"grat_macs"`
	Transitions int      `json:"transitions"`
}

// prober sends one question and reports the answers read until a deadline.
type prober interface {
	ask() (time.Time, error)
	// collect reads until deadline, calling seen for every answer or
	// announcement about the target.
	collect(deadline time.Time, seen func(mac string, at time.Time, grat bool)) error
	Close() error
}

func runARP(args []string) error {
	fs := flag.NewFlagSet("arp", flag.ExitOnError)
	ipS := fs.String("ip", "", "address to ask for (IPv4: ARP, IPv6: NDP) (required)")
	iface := fs.String("iface", "eth0", "interface")
	wait := fs.Duration("wait", 200*time.Millisecond, "how long to collect answers (single round)")
	watch := fs.Bool("watch", false, "repeat every --interval for --duration")
	interval := fs.Duration("interval", 20*time.Millisecond, "round length with --watch")
	duration := fs.Duration("duration", 10*time.Second, "how long to watch (0: until signalled or --until-file)")
	untilFile := fs.String("until-file", "", "stop watching once this file exists")
	fs.Parse(args)
	ip, err := netip.ParseAddr(*ipS)
	if err != nil {
		return fmt.Errorf("--ip: %w", err)
	}
	ifi, err := net.InterfaceByName(*iface)
	if err != nil {
		return err
	}
	var p prober
	if ip.Is4() {
		p, err = newARPProber(ifi, ip)
	} else {
		p, err = newNDPProber(ifi, ip)
	}
	if err != nil {
		return err
	}
	defer p.Close()
	o := newOut()
	if !*watch {
		r, err := doRound(p, 0, time.Now(), *wait)
		if err != nil {
			return err
		}
		o.line(r)
		return nil
	}
	ctx, cancel := stopContext(*duration, *untilFile)
	defer cancel()
	start := time.Now()
	sum := summary{Summary: true}
	var lats []int64
	all, grats := map[string]bool{}, map[string]bool{}
	var prev string
	for i := 0; ctx.Err() == nil; i++ {
		r, err := doRound(p, i, start, *interval)
		if err != nil {
			return err
		}
		o.line(r)
		sum.Rounds++
		switch len(r.MACs) {
		case 0:
			sum.NoAnswer++
		case 1:
			if prev != "" && r.MACs[0] != prev {
				sum.Transitions++
			}
			prev = r.MACs[0]
		default:
			sum.Multi++
		}
		for _, m := range r.MACs {
			all[m] = true
			lats = append(lats, r.Lat[m])
		}
		for _, m := range r.Grat {
			grats[m] = true
		}
	}
	sum.MACs = append([]string{}, slices.Sorted(mapKeys(all))...)
	sum.GratMACs = append([]string{}, slices.Sorted(mapKeys(grats))...)
	if len(lats) > 0 {
		slices.Sort(lats)
		sum.LatP50us = lats[len(lats)*50/100]
		sum.LatP99us = lats[min(len(lats)-1, len(lats)*99/100)]
		sum.LatMaxus = lats[len(lats)-1]
	}
	o.line(sum)
	return nil
}

func mapKeys(m map[string]bool) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// doRound asks once and collects for d.
func doRound(p prober, i int, start time.Time, d time.Duration) (round, error) {
	r := round{Round: i, Lat: map[string]int64{}, MACs: []string{}, Grat: []string{}}
	sent, err := p.ask()
	if err != nil {
		return r, err
	}
	r.T, r.Unix = ms(sent.Sub(start)), unixMS(sent)
	grat := map[string]bool{}
	err = p.collect(sent.Add(d), func(mac string, at time.Time, g bool) {
		if g {
			grat[mac] = true
			return
		}
		if _, ok := r.Lat[mac]; !ok {
			r.Lat[mac] = at.Sub(sent).Microseconds()
			r.MACs = append(r.MACs, mac)
		}
	})
	sort.Strings(r.MACs)
	r.Grat = append([]string{}, slices.Sorted(mapKeys(grat))...)
	// Sleep out the rest of the round so rounds start every d.
	if rest := time.Until(sent.Add(d)); rest > 0 {
		time.Sleep(rest)
	}
	return r, err
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

type arpProber struct {
	c      *arp.Client
	target netip.Addr
	self   netip.Addr
}

func newARPProber(ifi *net.Interface, target netip.Addr) (*arpProber, error) {
	c, err := arp.Dial(ifi)
	if err != nil {
		return nil, fmt.Errorf("ARP socket on %s: %w", ifi.Name, err)
	}
	var self netip.Addr
	addrs, _ := ifi.Addrs()
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(n.IP); ok && ip.Unmap().Is4() {
				self = ip.Unmap()
				break
			}
		}
	}
	return &arpProber{c: c, target: target, self: self}, nil
}

func (p *arpProber) Close() error { return p.c.Close() }

func (p *arpProber) ask() (time.Time, error) {
	t := time.Now()
	return t, p.c.Request(p.target)
}

func (p *arpProber) collect(deadline time.Time, seen func(string, time.Time, bool)) error {
	if err := p.c.SetReadDeadline(deadline); err != nil {
		return err
	}
	for {
		pkt, _, err := p.c.Read()
		at := time.Now()
		if err != nil {
			if isTimeout(err) {
				return nil
			}
			if time.Now().After(deadline) {
				return nil
			}
			continue // malformed frame or not ARP
		}
		if pkt.SenderIP != p.target {
			continue
		}
		mac := pkt.SenderHardwareAddr.String()
		switch {
		case pkt.Operation == arp.OperationReply && pkt.TargetIP == p.self:
			seen(mac, at, false)
		case pkt.TargetIP == pkt.SenderIP:
			seen(mac, at, true)
		}
	}
}

type ndpProber struct {
	c      *ndp.Conn
	target netip.Addr
	snm    netip.Addr
	mac    net.HardwareAddr
}

func newNDPProber(ifi *net.Interface, target netip.Addr) (*ndpProber, error) {
	c, _, err := ndp.Listen(ifi, ndp.LinkLocal)
	if err != nil {
		return nil, fmt.Errorf("NDP socket on %s: %w", ifi.Name, err)
	}
	var f ipv6.ICMPFilter
	f.SetAll(true)
	f.Accept(ipv6.ICMPTypeNeighborAdvertisement)
	if err := c.SetICMPFilter(&f); err != nil {
		c.Close()
		return nil, err
	}
	snm, err := ndp.SolicitedNodeMulticast(target)
	if err != nil {
		c.Close()
		return nil, err
	}
	return &ndpProber{c: c, target: target, snm: snm, mac: ifi.HardwareAddr}, nil
}

func (p *ndpProber) Close() error { return p.c.Close() }

func (p *ndpProber) ask() (time.Time, error) {
	ns := &ndp.NeighborSolicitation{
		TargetAddress: p.target,
		Options:       []ndp.Option{&ndp.LinkLayerAddress{Direction: ndp.Source, Addr: p.mac}},
	}
	t := time.Now()
	return t, p.c.WriteTo(ns, nil, p.snm)
}

func (p *ndpProber) collect(deadline time.Time, seen func(string, time.Time, bool)) error {
	if err := p.c.SetReadDeadline(deadline); err != nil {
		return err
	}
	for {
		msg, _, _, err := p.c.ReadFrom()
		at := time.Now()
		if err != nil {
			if isTimeout(err) || time.Now().After(deadline) {
				return nil
			}
			continue
		}
		na, ok := msg.(*ndp.NeighborAdvertisement)
		if !ok || na.TargetAddress != p.target {
			continue
		}
		mac := "?"
		for _, o := range na.Options {
			if l, ok := o.(*ndp.LinkLayerAddress); ok && l.Direction == ndp.Target {
				mac = l.Addr.String()
			}
		}
		seen(mac, at, !na.Solicited)
	}
}
