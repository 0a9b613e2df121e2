//go:build integration && race

package membership

// The race detector slows everything down several times, which makes
// sub-second failure detection meaningless; timing tests skip under it.
const raceEnabled = true
