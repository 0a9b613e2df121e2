//go:build e2e

package e2e

import (
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestSelfCheck: the owner's responder goes deaf inside a running speaker
// (a test build's SIGUSR1 hook: it keeps running and looks healthy, so
// neither readiness nor the link watcher can notice). The other speakers'
// checks find the address unanswered, raise NotAnswering on the Service,
// and have the owner reopen its responder: the address is answered again,
// by the owner, within 15 s, with no restart.
func TestSelfCheck(t *testing.T) {
	ns := namespace(t, "e2e-selfcheck")
	service(t, ns, "web", singleStack)
	ip := ingress(t, ns, "web", 1)[0]
	o := owner(t, ip, 10*time.Second)

	// The owner runs a test build of the speaker.
	hooks := filepath.Join(t.TempDir(), "speaker-hooks")
	runCmd(t, "", nil, "go", "build", "-tags", "testhooks", "-o", hooks, "./speaker/cmd/speaker")
	env := []string{"LAB_SPEAKER_BIN=" + hooks}
	runCmd(t, "", env, "bash", "hack/lab.sh", "speaker", "restart", o)
	t.Cleanup(func() {
		tryCmd("", []string{"LAB_SPEAKER_BIN=" + speakerBin}, "bash", "hack/lab.sh", "speaker", "restart", o)
	})
	deadline := time.Now().Add(20 * time.Second)
	for {
		if r := arpOnce(t, ip); slices.Equal(r.MACs, []string{nodeMAC[o]}) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not answer for %s again after restarting its speaker", o, ip)
		}
		time.Sleep(200 * time.Millisecond)
	}
	curlUntil(t, url(ip, 80), "UP "+o, 5*time.Second)
	offsets := logOffsets(t)

	t0 := time.Now()
	runCmd(t, "", env, "bash", "hack/lab.sh", "speaker", "hook", o)
	// Deaf: the owner no longer answers (checked until it does again).
	var silent, back time.Time
	var event string
	deadline = t0.Add(15 * time.Second)
	for time.Now().Before(deadline) && (back.IsZero() || event == "") {
		r := arpOnce(t, ip)
		switch {
		case len(r.MACs) == 0 && silent.IsZero():
			silent = time.Now()
		case slices.Equal(r.MACs, []string{nodeMAC[o]}) && !silent.IsZero() && back.IsZero():
			back = time.Now()
		case len(r.MACs) > 0 && !slices.Equal(r.MACs, []string{nodeMAC[o]}):
			t.Errorf("%s answered by %v while %s is deaf, want nobody or %s", ip, r.MACs, o, nodeMAC[o])
		}
		if event == "" {
			evs, _ := tryCmd("", nil, "bash", "hack/kubectl", "--request-timeout=5s", "-n", ns, "get", "events",
				"--field-selector", "reason=NotAnswering,type=Warning", "-o", `jsonpath={range .items[*]}{.message}{"\n"}{end}`)
			for _, m := range strings.Split(evs, "\n") {
				if strings.Contains(m, ip) && strings.Contains(m, `"`+o+`"`) {
					event = m
					t.Logf("NotAnswering Event %.0f ms after the responder went deaf: %s", msSince(t0, time.Now()), m)
				}
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	if silent.IsZero() {
		t.Fatalf("%s kept answering for %s after the hook: the test build's hook did not work", o, ip)
	}
	if event == "" {
		t.Errorf("no NotAnswering Event naming %s and %s within 15 s", ip, o)
	}
	if back.IsZero() {
		t.Fatalf("%s did not answer for %s again within 15 s of going deaf; its log:\n%s", o, ip,
			strings.Join(logLines(t, o, offsets[o], "Reopening", "re-announcing", "Test hook"), "\n"))
	}
	t.Logf("deaf responder on %s: silent from +%.0f ms, answered again at +%.0f ms", o, msSince(t0, silent), msSince(t0, back))
	if lines := logLines(t, o, offsets[o], "reopening the responders"); len(lines) == 0 {
		t.Errorf("%s's log does not say another speaker asked it to reopen its responders", o)
	}
	curlUntil(t, url(ip, 80), "UP "+o, 5*time.Second)
}
