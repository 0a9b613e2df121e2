//go:build testhooks

package layer2

// Deafen makes the responder on iface drop every frame it reads while it
// keeps running and looks healthy: the failure the speakers' self-checks
// exist to find. Only test builds (-tags testhooks) have it; Recover, or
// any reopening of the interface, ends it.
func (a *Announcer) Deafen(iface string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	r, ok := a.responders[iface]
	if ok {
		r.deaf.Store(true)
	}
	return ok
}
