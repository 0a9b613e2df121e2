package membership

import (
	"slices"
	"testing"

	"github.com/go-logr/logr"
	"github.com/google/go-cmp/cmp"
)

// entry is one call a logr sink received.
type entry struct {
	Name  string
	Error bool
	Level int
	Msg   string
}

// captureSink records calls with all levels enabled.
type captureSink struct {
	name    string
	entries *[]entry
}

func (s captureSink) Init(logr.RuntimeInfo) {}
func (s captureSink) Enabled(int) bool      { return true }
func (s captureSink) Info(level int, msg string, _ ...any) {
	*s.entries = append(*s.entries, entry{Name: s.name, Level: level, Msg: msg})
}
func (s captureSink) Error(_ error, msg string, _ ...any) {
	*s.entries = append(*s.entries, entry{Name: s.name, Error: true, Msg: msg})
}
func (s captureSink) WithValues(...any) logr.LogSink { return s }
func (s captureSink) WithName(n string) logr.LogSink {
	s.name = n
	return s
}

func TestLogLevels(t *testing.T) {
	tests := []struct {
		name string
		line string
		want entry
	}{
		{
			name: "debug",
			line: "[DEBUG] memberlist: Failed UDP ping: b (timeout reached)",
			want: entry{Level: 4, Msg: "Failed UDP ping: b (timeout reached)"},
		},
		{
			name: "info",
			line: "[INFO] memberlist: Suspect b has failed, no acks received",
			want: entry{Level: 1, Msg: "Suspect b has failed, no acks received"},
		},
		{
			name: "warn",
			line: "[WARN] memberlist: Refuting a suspect message (from: a)",
			want: entry{Level: 0, Msg: "Refuting a suspect message (from: a)"},
		},
		{
			name: "err",
			line: "[ERR] memberlist: Decrypt packet failed: No installed keys could decrypt the message from=127.0.0.1:4000",
			want: entry{Error: true, Msg: "Decrypt packet failed: No installed keys could decrypt the message from=127.0.0.1:4000"},
		},
		{
			name: "error spelled out",
			line: "[ERROR] memberlist: Failed to send ping: x",
			want: entry{Error: true, Msg: "Failed to send ping: x"},
		},
		{
			name: "err without component",
			line: "[ERR] Failed to shutdown transport: x",
			want: entry{Error: true, Msg: "Failed to shutdown transport: x"},
		},
		{
			name: "untagged is shown",
			line: "something unexpected",
			want: entry{Level: 0, Msg: "something unexpected"},
		},
		{
			name: "unknown tag is shown whole",
			line: "[NOTICE] memberlist: hello",
			want: entry{Level: 0, Msg: "[NOTICE] memberlist: hello"},
		},
		{
			name: "unclosed bracket",
			line: "[DEBUG memberlist: x",
			want: entry{Level: 0, Msg: "[DEBUG memberlist: x"},
		},
		{
			name: "message keeps inner brackets and colons",
			line: "[WARN] memberlist: Got ping for unexpected node [x]: memberlist: y",
			want: entry{Level: 0, Msg: "Got ping for unexpected node [x]: memberlist: y"},
		},
		{
			name: "empty",
			line: "",
			want: entry{Level: 0, Msg: ""},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []entry
			std := NewStdLogger(logr.New(captureSink{entries: &got}))
			// memberlist logs through Printf, which appends the newline.
			std.Printf("%s", tt.line)
			want := tt.want
			want.Name = "memberlist"
			if diff := cmp.Diff([]entry{want}, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

// TestLogLevelsRespectVerbosity: a DEBUG line is dropped by a logger that
// only shows V(1), while an ERR line always passes.
func TestLogLevelsRespectVerbosity(t *testing.T) {
	var got []entry
	sink := verbositySink{captureSink: captureSink{entries: &got}, max: 1}
	std := NewStdLogger(logr.New(sink))
	std.Print("[DEBUG] memberlist: noise")
	std.Print("[INFO] memberlist: Marking b as failed")
	std.Print("[ERR] memberlist: broken")
	want := []entry{
		{Name: "memberlist", Level: 1, Msg: "Marking b as failed"},
		{Name: "memberlist", Error: true, Msg: "broken"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

type verbositySink struct {
	captureSink
	max int
}

func (s verbositySink) Enabled(level int) bool { return level <= s.max }
func (s verbositySink) WithName(n string) logr.LogSink {
	s.captureSink.name = n
	return s
}

func FuzzParseLine(f *testing.F) {
	for _, s := range []string{"[DEBUG] memberlist: x", "[", "]", "[]", "[ERR]", "memberlist: "} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, p []byte) {
		// Must not panic, whatever memberlist writes.
		_, _ = parseLine(p)
		_, _ = (&logWriter{log: logr.Discard()}).Write(p)
	})
}

func TestSuspicionOf(t *testing.T) {
	for _, tt := range []struct {
		msg  string
		want string
	}{
		// memberlist v0.7.0's wording (state.go).
		{"Suspect n1 has failed, no acks received", "n1"},
		{"Suspect node-042 has failed, no acks received", "node-042"},
		// Death verdicts stay queued (suspicionOf says why).
		{"Marking n3 as failed, suspect timeout reached (0 peer confirmations)", ""},
		{"Suspect  has failed, no acks received", ""},
		{"Refuting a suspect message (from: n2)", ""},
		{"Failed UDP ping: n1 (timeout reached)", ""},
		{"Suspect n1 has failed", ""},
	} {
		got, ok := suspicionOf(tt.msg)
		if got != tt.want || ok != (tt.want != "") {
			t.Errorf("suspicionOf(%q) = %q, %v; want %q", tt.msg, got, ok, tt.want)
		}
	}
	// Through the writer memberlist logs with.
	var heard []string
	w := &logWriter{log: logr.Discard(), suspected: func(m string) { heard = append(heard, m) }}
	for _, line := range []string{
		"[INFO] memberlist: Suspect n1 has failed, no acks received\n",
		"[DEBUG] memberlist: Suspect n2 has failed, no acks received\n",
		"[INFO] memberlist: Marking n3 as failed, suspect timeout reached (1 peer confirmations)\n",
	} {
		if _, err := w.Write([]byte(line)); err != nil {
			t.Fatal(err)
		}
	}
	if !slices.Equal(heard, []string{"n1"}) {
		t.Errorf("suspicions heard = %q, want [n1]", heard)
	}
	refutations := 0
	w = &logWriter{log: logr.Discard(), refuted: func() { refutations++ }}
	for _, line := range []string{
		"[WARN] memberlist: Refuting a suspect message (from: n2)\n",
		"[WARN] memberlist: Refuting a dead message (from: n1)\n",
		"[INFO] memberlist: Suspect n1 has failed, no acks received\n",
	} {
		if _, err := w.Write([]byte(line)); err != nil {
			t.Fatal(err)
		}
	}
	if refutations != 2 {
		t.Errorf("refutations heard = %d, want 2", refutations)
	}
}
