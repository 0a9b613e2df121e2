package membership

import (
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
)

func TestMemberlistConfigTimers(t *testing.T) {
	tuned := memberlistConfig(Timers{})
	if tuned.ProbeInterval != probeInterval || tuned.ProbeTimeout != probeTimeout ||
		tuned.SuspicionMult != suspicionMult || tuned.GossipInterval != gossipInterval ||
		tuned.PushPullInterval != pushPullInterval || tuned.TCPTimeout != tcpTimeout {
		t.Errorf("zero Timers did not give the tuned timers: %+v", tuned)
	}

	lan := memberlistConfig(LANTimers())
	def := memberlist.DefaultLANConfig()
	if lan.ProbeInterval != def.ProbeInterval || lan.ProbeTimeout != def.ProbeTimeout ||
		lan.SuspicionMult != def.SuspicionMult || lan.SuspicionMaxTimeoutMult != def.SuspicionMaxTimeoutMult ||
		lan.GossipInterval != def.GossipInterval || lan.PushPullInterval != def.PushPullInterval ||
		lan.TCPTimeout != def.TCPTimeout || lan.AwarenessMaxMultiplier != def.AwarenessMaxMultiplier {
		t.Errorf("LANTimers differ from DefaultLANConfig: got %+v", lan)
	}
	// Settings that are not timers stay the speaker's in either case.
	if !lan.GossipVerifyIncoming || !lan.GossipVerifyOutgoing || lan.EnableCompression {
		t.Errorf("LANTimers changed encryption or compression: %+v", lan)
	}

	one := memberlistConfig(Timers{ProbeInterval: time.Second})
	if one.ProbeInterval != time.Second || one.ProbeTimeout != probeTimeout {
		t.Errorf("a partial Timers must keep the tuned rest: %v, %v", one.ProbeInterval, one.ProbeTimeout)
	}
}
