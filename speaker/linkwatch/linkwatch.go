// Package linkwatch tells the speaker when this node's links change, and
// turns the carrier of the links that reach the other speakers into the
// isolation decisions that keep two nodes from answering for one address
// after a cable pull.
//
// It listens to the kernel's rtnetlink notifications (RTNLGRP_LINK and the
// IPv4/IPv6 address groups) instead of polling: an idle node costs nothing,
// and a lost carrier is seen as soon as the kernel reports it. Each burst of
// notifications leads to one fresh snapshot of the links, so a lost or
// coalesced notification never leaves a stale view behind; a slow resync
// (Config.Resync) backs up even a subscription that silently stalled.
package linkwatch

import (
	"context"
	"fmt"
	"net"
	"slices"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"
)

// Link is one interface as the kernel reports it.
type Link struct {
	Index   int
	Name    string
	MAC     net.HardwareAddr
	Up      bool // administratively up (IFF_UP)
	Carrier bool // up and with carrier (IFF_LOWER_UP): frames can leave
}

// Config says what to do on changes. Changed and the isolation calls run
// on Run's goroutine, one at a time.
type Config struct {
	// Changed gets every snapshot of the links: once at the start, then
	// after each burst of link or address notifications and each resync.
	// It returns the names of the links through which this node reaches
	// the other speakers; isolation follows their carrier. Nil watches
	// every link.
	Changed func(links []Link) (watched []string)

	// Isolate is called once when every watched link has lost carrier.
	Isolate func()
	// Reconnect is called when a watched link has carrier again after
	// Isolate. While it fails it is retried every RetryDelay.
	Reconnect func() error

	// Resync is how often a snapshot is taken without a notification
	// (default 30 s): a backstop, not the way changes are seen.
	Resync time.Duration
	// RetryDelay paces failed Reconnects and resubscriptions (default
	// 200 ms).
	RetryDelay time.Duration
	// Namespace, when set, is the network namespace to watch (tests);
	// default the calling thread's.
	Namespace *netns.NsHandle
}

// Run watches until ctx ends. It returns an error only if it cannot
// subscribe or list the links at the start; later failures are logged and
// retried.
func Run(ctx context.Context, cfg Config) error {
	if cfg.Resync <= 0 {
		cfg.Resync = 30 * time.Second
	}
	if cfg.RetryDelay <= 0 {
		cfg.RetryDelay = 200 * time.Millisecond
	}
	src := &netlinkSource{ns: cfg.Namespace}
	if err := src.open(); err != nil {
		return err
	}
	defer src.close()
	sub, err := src.subscribe()
	if err != nil {
		return err
	}
	if _, err := src.links(); err != nil {
		sub.stop()
		return err
	}
	w := &watcher{cfg: cfg, src: src, logger: klog.FromContext(ctx)}
	return w.run(ctx, sub)
}

// source is where the watcher gets notifications and snapshots; tests
// replace it.
type source interface {
	subscribe() (*subscription, error)
	links() ([]Link, error)
}

// subscription delivers a value for each kernel notification and is closed
// when the subscription breaks.
type subscription struct {
	events <-chan struct{}
	stop   func()
}

type watcher struct {
	cfg    Config
	src    source
	logger klog.Logger

	isolated bool
}

func (w *watcher) run(ctx context.Context, sub *subscription) error {
	defer func() {
		if sub != nil {
			sub.stop()
		}
	}()
	resync := time.NewTicker(w.cfg.Resync)
	defer resync.Stop()
	// retry is armed only while a Reconnect or a resubscription is owed.
	retry := time.NewTimer(0)
	if !retry.Stop() {
		<-retry.C
	}
	defer retry.Stop()
	armed := false
	arm := func() {
		if !armed {
			retry.Reset(w.cfg.RetryDelay)
			armed = true
		}
	}

	evaluate := func() {
		if w.step() {
			arm()
		}
	}
	evaluate()
	for {
		var events <-chan struct{}
		if sub != nil {
			events = sub.events
		}
		select {
		case <-ctx.Done():
			return nil
		case _, ok := <-events:
			if !ok {
				w.logger.Info("Link notifications stopped; subscribing again")
				sub.stop()
				sub = nil
				arm()
				continue
			}
			drain(events)
			evaluate()
		case <-resync.C:
			evaluate()
		case <-retry.C:
			armed = false
			if sub == nil {
				s, err := w.src.subscribe()
				if err != nil {
					w.logger.Error(err, "Cannot subscribe to link notifications; retrying")
					arm()
					continue
				}
				sub = s
			}
			evaluate()
		}
	}
}

// drain takes the notifications already queued: one snapshot covers them.
func drain(ch <-chan struct{}) {
	for {
		select {
		case _, ok := <-ch:
			if !ok {
				return
			}
		default:
			return
		}
	}
}

// step takes a snapshot, hands it to Changed and applies the isolation
// rule. It reports whether it should run again soon (a failed snapshot or
// Reconnect).
func (w *watcher) step() (again bool) {
	links, err := w.src.links()
	if err != nil {
		w.logger.Error(err, "Cannot list links; retrying")
		return true
	}
	var watched []string
	if w.cfg.Changed != nil {
		watched = w.cfg.Changed(links)
	}
	return w.isolation(Carrier(links, watched))
}

// isolation is the rule: announce nothing while every watched link has
// lost carrier, and once one is back, only after Reconnect succeeded.
func (w *watcher) isolation(carrier bool) (again bool) {
	switch {
	case !w.isolated && !carrier:
		w.isolated = true
		w.logger.Info("Every link to the other speakers is down; announcing nothing until one returns")
		if w.cfg.Isolate != nil {
			w.cfg.Isolate()
		}
	case w.isolated && carrier:
		w.logger.Info("Link is back; rejoining before announcing again")
		if w.cfg.Reconnect != nil {
			if err := w.cfg.Reconnect(); err != nil {
				w.logger.Error(err, "Cannot rejoin; staying isolated and retrying")
				return true
			}
		}
		w.isolated = false
	}
	return false
}

// Carrier reports whether any link named in watched (every link, when
// watched is nil) has carrier. A watched name that is missing counts as
// no carrier: a deleted interface carries nothing.
func Carrier(links []Link, watched []string) bool {
	return slices.ContainsFunc(links, func(l Link) bool {
		return l.Carrier && (watched == nil || slices.Contains(watched, l.Name))
	})
}

// netlinkSource is the kernel.
type netlinkSource struct {
	ns *netns.NsHandle
	h  *netlink.Handle
}

func (s *netlinkSource) open() error {
	var err error
	if s.ns != nil {
		s.h, err = netlink.NewHandleAt(*s.ns, unix.NETLINK_ROUTE)
	} else {
		s.h, err = netlink.NewHandle(unix.NETLINK_ROUTE)
	}
	if err != nil {
		return fmt.Errorf("linkwatch: opening rtnetlink: %w", err)
	}
	return nil
}

func (s *netlinkSource) close() { s.h.Close() }

func (s *netlinkSource) links() ([]Link, error) {
	// ErrDumpInterrupted (the links changed during the dump) is an error
	// too: the caller retries shortly, and a notification follows anyway.
	ls, err := s.h.LinkList()
	if err != nil {
		return nil, fmt.Errorf("linkwatch: listing links: %w", err)
	}
	out := make([]Link, 0, len(ls))
	for _, l := range ls {
		a := l.Attrs()
		up := a.RawFlags&unix.IFF_UP != 0
		out = append(out, Link{
			Index: a.Index, Name: a.Name, MAC: a.HardwareAddr,
			Up: up, Carrier: up && a.RawFlags&unix.IFF_LOWER_UP != 0,
		})
	}
	return out, nil
}

// subscribe joins the link and address notification groups. The two
// library channels feed one event channel; stop ends both subscriptions
// and drains what they still deliver, so their goroutines exit.
func (s *netlinkSource) subscribe() (*subscription, error) {
	done := make(chan struct{})
	linkCh := make(chan netlink.LinkUpdate, 64)
	addrCh := make(chan netlink.AddrUpdate, 64)
	// The library reports a broken socket both through the callback and
	// by closing the channel; the closed channel is what the watcher acts
	// on.
	ignore := func(error) {}
	ns := s.ns
	if ns == nil {
		none := netns.None()
		ns = &none
	}
	if err := netlink.LinkSubscribeWithOptions(linkCh, done, netlink.LinkSubscribeOptions{
		Namespace: ns, ErrorCallback: ignore, ReceiveBufferSize: 1 << 20,
	}); err != nil {
		close(done)
		return nil, fmt.Errorf("linkwatch: subscribing to link notifications: %w", err)
	}
	if err := netlink.AddrSubscribeWithOptions(addrCh, done, netlink.AddrSubscribeOptions{
		Namespace: ns, ErrorCallback: ignore, ReceiveBufferSize: 1 << 20,
	}); err != nil {
		close(done)
		go drainLinks(linkCh)
		return nil, fmt.Errorf("linkwatch: subscribing to address notifications: %w", err)
	}
	// One goroutine turns both into the watcher's channel: a value stands
	// for any number of notifications, and the channel closes when either
	// subscription breaks (or on stop).
	events := make(chan struct{}, 1)
	go func() {
		defer close(events)
		for {
			select {
			case _, ok := <-linkCh:
				if !ok {
					return
				}
			case _, ok := <-addrCh:
				if !ok {
					return
				}
			case <-done:
				return
			}
			select {
			case events <- struct{}{}:
			default:
			}
		}
	}()
	var stopped bool
	return &subscription{events: events, stop: func() {
		if stopped {
			return
		}
		stopped = true
		close(done)
		go drainLinks(linkCh)
		go drainAddrs(addrCh)
	}}, nil
}

func drainLinks(ch <-chan netlink.LinkUpdate) {
	for range ch {
	}
}

func drainAddrs(ch <-chan netlink.AddrUpdate) {
	for range ch {
	}
}
