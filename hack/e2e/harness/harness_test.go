package harness

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestARPRoundSeen: the order of a round's MACs is what tells a move back
// from a handover under way. The replies answer one question: the MAC seen
// last goes first among them, the others by reply time; announcements
// follow.
func TestARPRoundSeen(t *testing.T) {
	const old, next, third = "02:00:c6:33:64:0d", "02:00:c6:33:64:0b", "02:00:c6:33:64:0c"
	for _, tc := range []struct {
		name string
		r    ARPRound
		prev string
		want []string
	}{
		{"one reply", ARPRound{MACs: []string{old}, Lat: map[string]int64{old: 500}}, old, []string{old}},
		{
			"both answer one question during the drain, the new owner faster",
			ARPRound{MACs: []string{next, old}, Lat: map[string]int64{next: 300, old: 900}, Grat: []string{next}},
			old, []string{old, next, next},
		},
		{
			"the old owner answers after the new owner's announcement was heard",
			ARPRound{MACs: []string{next, old}, Lat: map[string]int64{next: 300, old: 900}},
			next, []string{next, old},
		},
		{
			"neither was seen before: by reply time",
			ARPRound{MACs: []string{next, old, third}, Lat: map[string]int64{next: 700, old: 200, third: 400}},
			"", []string{old, third, next},
		},
		{"announcements only", ARPRound{Grat: []string{next}}, old, []string{next}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, tc.r.Seen(tc.prev)); diff != "" {
				t.Errorf("Seen(%s) (-want +got):\n%s", tc.prev, diff)
			}
		})
	}
}
