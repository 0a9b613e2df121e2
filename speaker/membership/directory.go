package membership

import (
	"net"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/hashicorp/memberlist"
)

// metaVersion leads the metadata a member publishes; a reader skips
// metadata of another version rather than misread it, so the format can
// change without breaking a rolling upgrade.
const metaVersion = 1

// macLen is the length of an Ethernet MAC address.
const macLen = 6

// Directory maps the MAC addresses members publish (Config.MACs) to member
// names, so that a speaker hearing another MAC announce one of its
// addresses can tell another speaker (and which node) from a foreign host.
//
// Entries are kept after a member leaves or dies: a speaker that the others
// declared dead but that still announces is exactly the split brain the
// speaker wants to name. One Directory may be shared by the successive
// Groups of one speaker (a new Group after a link cut), which is why it is
// passed in through Config rather than owned by a Group.
//
// All methods are safe for concurrent use.
type Directory struct {
	mu    sync.Mutex
	owner map[[macLen]byte]string
	macs  map[string][][macLen]byte // by member, to drop a member's stale MACs
}

// NewDirectory returns an empty Directory.
func NewDirectory() *Directory {
	return &Directory{owner: map[[macLen]byte]string{}, macs: map[string][][macLen]byte{}}
}

// NodeOf returns the member that published mac, or "" when none did.
func (d *Directory) NodeOf(mac net.HardwareAddr) string {
	if d == nil || len(mac) != macLen {
		return ""
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.owner[[macLen]byte(mac)]
}

// MACsOf returns the MACs member published and still holds (none that
// another member published since), or nil.
func (d *Directory) MACsOf(member string) []net.HardwareAddr {
	if d == nil {
		return nil
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []net.HardwareAddr
	for _, m := range d.macs[member] {
		if d.owner[m] == member {
			out = append(out, slices.Clone(m[:]))
		}
	}
	return out
}

// learn records what member published in meta, replacing what it
// published before. Metadata that cannot be read is ignored: it comes from
// a member holding the cluster key, but possibly running another version.
func (d *Directory) learn(member string, meta []byte) {
	if d == nil {
		return
	}
	macs, ok := decodeMeta(meta)
	if !ok {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, m := range d.macs[member] {
		if d.owner[m] == member {
			delete(d.owner, m)
		}
	}
	d.macs[member] = macs
	for _, m := range macs {
		d.owner[m] = member
	}
}

// encodeMeta packs macs into at most limit bytes: the version, then six
// bytes per MAC. MACs that do not fit are left out (memberlist caps
// metadata at 512 bytes: 85 MACs), as are any that are not six bytes long.
func encodeMeta(macs []net.HardwareAddr, limit int) []byte {
	if limit < 1 {
		return nil
	}
	b := []byte{metaVersion}
	for _, m := range macs {
		if len(m) != macLen || len(b)+macLen > limit {
			continue
		}
		b = append(b, m...)
	}
	return b
}

// decodeMeta is encodeMeta's inverse; ok is false for metadata of another
// version or length.
func decodeMeta(b []byte) (macs [][macLen]byte, ok bool) {
	if len(b) < 1 || b[0] != metaVersion || (len(b)-1)%macLen != 0 {
		return nil, false
	}
	for rest := b[1:]; len(rest) > 0; rest = rest[macLen:] {
		macs = append(macs, [macLen]byte(rest))
	}
	return macs, true
}

// delegate publishes this member's metadata and hands the messages other
// members send it (Group.Send) to Config.OnMessage. memberlist requires
// the whole Delegate interface; the rest is unused. memberlist calls
// NodeMeta from its own goroutines, and SetMACs replaces the list, hence
// the atomic pointer.
type delegate struct {
	macs      atomic.Pointer[[]net.HardwareAddr]
	onMessage func([]byte)
}

var _ memberlist.Delegate = (*delegate)(nil)

func newDelegate(macs []net.HardwareAddr) *delegate {
	d := &delegate{}
	c := cloneMACs(macs)
	d.macs.Store(&c)
	return d
}

func (d *delegate) NodeMeta(limit int) []byte { return encodeMeta(*d.macs.Load(), limit) }

// NotifyMsg runs on memberlist's packet handler: onMessage must not
// block. memberlist reuses msg's buffer after the call, hence the copy.
func (d *delegate) NotifyMsg(msg []byte) {
	if d.onMessage != nil && len(msg) > 0 {
		d.onMessage(slices.Clone(msg))
	}
}
func (*delegate) GetBroadcasts(overhead, limit int) [][]byte { return nil }
func (*delegate) LocalState(join bool) []byte                { return nil }
func (*delegate) MergeRemoteState(buf []byte, join bool)     {}

// cloneMACs copies macs: memberlist calls NodeMeta at any time, and the
// caller may reuse its slices.
func cloneMACs(macs []net.HardwareAddr) []net.HardwareAddr {
	out := make([]net.HardwareAddr, len(macs))
	for i, m := range macs {
		out[i] = slices.Clone(m)
	}
	return out
}
