package membership

import (
	"bytes"
	"log"
	"strings"

	"github.com/go-logr/logr"
)

// Verbosity levels memberlist's lines are logged at. WARN stays at V(0)
// because memberlist uses it for things an operator should see (a peer
// reachable over TCP but not UDP, refuting a suspicion about ourselves);
// INFO is routine membership churn ("Suspect x has failed", "Marking x as
// failed") and DEBUG is per-probe chatter that would drown everything else.
const (
	warnLevel  = 0
	infoLevel  = 1
	debugLevel = 4
)

// NewStdLogger returns a *log.Logger that forwards memberlist's log lines to
// logger, named "memberlist", at the level each line's tag asks for. It is
// what New gives memberlist; it is exported for callers that build their own
// memberlist Transport (memberlist.NetTransportConfig.Logger) and want its
// lines routed the same way.
func NewStdLogger(logger logr.Logger) *log.Logger {
	return log.New(&logWriter{log: logger.WithName("memberlist")}, "", 0)
}

// logWriter parses the "[LEVEL] memberlist: message" lines memberlist
// writes. log.Logger calls Write once per Printf, so one Write is one line.
type logWriter struct {
	log logr.Logger
	// suspected, when set, hears the name of a member this one has just
	// suspected (see Group.pushSuspicion).
	suspected func(member string)
	// refuted, when set, hears that this member refuted a suspicion or a
	// death verdict about itself (see Group.pushRefutation).
	refuted func()
}

func (w *logWriter) Write(p []byte) (int, error) {
	level, msg := parseLine(p)
	if w.suspected != nil && level == "INFO" {
		if name, ok := suspicionOf(msg); ok {
			w.suspected(name)
		}
	}
	if w.refuted != nil && strings.HasPrefix(msg, "Refuting a ") {
		// "Refuting a suspect message (from: X)", "Refuting a dead
		// message (from: X)": this member was accused and has queued its
		// answer.
		w.refuted()
	}
	switch level {
	case "ERR", "ERROR":
		// memberlist hands us text, not an error value.
		w.log.Error(nil, msg)
	case "WARN":
		w.log.V(warnLevel).Info(msg)
	case "INFO":
		w.log.V(infoLevel).Info(msg)
	case "DEBUG", "TRACE":
		w.log.V(debugLevel).Info(msg)
	default:
		// An untagged or unknown line is unexpected; show it whole rather
		// than hide it.
		w.log.V(warnLevel).Info(string(bytes.TrimSpace(p)))
	}
	// A log.Logger that sees an error would only print it to stderr, so
	// always claim success.
	return len(p), nil
}

// parseLine splits "[LEVEL] memberlist: message\n" into "LEVEL" and
// "message". The "memberlist: " component prefix is dropped because the
// logger is already named after it. A line without a tag yields an empty
// level and the whole (trimmed) line.
func parseLine(p []byte) (level, msg string) {
	line := bytes.TrimSpace(p)
	if len(line) > 0 && line[0] == '[' {
		if end := bytes.IndexByte(line, ']'); end > 0 {
			level = string(line[1:end])
			line = bytes.TrimSpace(line[end+1:])
		}
	}
	line = bytes.TrimPrefix(line, []byte("memberlist: "))
	return level, string(line)
}

// suspicionOf recognises memberlist's line for this member's own
// suspicion after a failed probe: "Suspect NAME has failed, no acks
// received". memberlist has no callback for it; its log line is the only
// signal, and if a future version words it differently, suspicions simply
// travel at the gossip tick's pace again.
//
// Only suspicions: a death verdict must stay queued until it can be
// delivered. A member cut off the LAN declares the others dead; pushed at
// once, those broadcasts would be spent on a wire that drops them, the
// others would never learn of them and never refute them, and after the
// cut this member would keep them dead (their incarnation does not grow
// without a refutation). Suspicions are what the others need quickly
// anyway: each survivor declares the dead member itself, sooner once
// another member confirms its suspicion.
func suspicionOf(msg string) (string, bool) {
	if rest, ok := strings.CutPrefix(msg, "Suspect "); ok {
		if name, ok := strings.CutSuffix(rest, " has failed, no acks received"); ok && name != "" {
			return name, true
		}
	}
	return "", false
}
