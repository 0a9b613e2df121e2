//go:build integration

package ipam

import "testing"

// The long runs of the randomized property tests. The unit tier runs a few
// trials of each, under the race detector; these run many more of the
// same sequences (the first trials are the unit tier's), without it.

func TestNeverTwiceLong(t *testing.T) { neverTwice(t, 200) }

func TestRestoreOrderIndependentLong(t *testing.T) { restoreOrderIndependent(t, 100) }
