//go:build integration && !race

package membership

const raceEnabled = false
