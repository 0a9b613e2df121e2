// Package recorder writes the Events of both binaries through client-go's
// events library (k8s.io/client-go/tools/events, API group
// events.k8s.io/v1). The library sends them from its own goroutines, so a
// reconcile never waits for an Event, and aggregates repeats: an Event
// like one already sent (same type, reason, action, reporter, object
// version and related object) within six minutes becomes a series with a
// count, patched instead of created again. core/v1 readers (kubectl get
// events, kubectl describe) see these Events too, with the note as
// message, the series count under series.count and the reporter under
// reportingComponent and reportingInstance.
package recorder

import (
	"context"
	"fmt"

	eventsv1 "k8s.io/api/events/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/events"
)

// noteLimit is the API server's limit on an Event's note, in bytes.
const noteLimit = 1024

// Recorder records Events about objects. Its methods may be called from
// any goroutine, before or after Start; Events recorded before Start or
// after its context ends are dropped.
type Recorder struct {
	b   events.EventBroadcaster
	rec events.EventRecorder
}

// New returns a Recorder reporting as controller (a qualified name such
// as ironlb.io/speaker) and instance (the node or replica), which it
// writes into every Event: the library would use the host name, which
// all speakers of a network lab (and of one test process) share.
func New(client kubernetes.Interface, controller, instance string) *Recorder {
	b := events.NewBroadcaster(&sink{EventSinkImpl: events.EventSinkImpl{Interface: client.EventsV1()}, instance: instance})
	return &Recorder{b: b, rec: b.NewRecorder(scheme.Scheme, controller)}
}

// From returns a Recorder that hands its Events to rec, such as client-go's
// events.FakeRecorder in a unit test; Start does nothing.
func From(rec events.EventRecorder) *Recorder { return &Recorder{rec: rec} }

// Start sends Events to the API server until ctx ends, then shuts the
// broadcaster down.
func (r *Recorder) Start(ctx context.Context) error {
	if r.b == nil {
		return nil
	}
	if err := r.b.StartRecordingToSinkWithContext(ctx); err != nil {
		return err
	}
	context.AfterFunc(ctx, r.b.Shutdown)
	return nil
}

// Event records an Event about obj with a ready message; its action is its
// reason.
func (r *Recorder) Event(obj runtime.Object, eventtype, reason, note string) {
	r.Related(obj, nil, eventtype, reason, reason, "%s", note)
}

// Eventf records an Event about obj; its action is its reason.
func (r *Recorder) Eventf(obj runtime.Object, eventtype, reason, format string, args ...any) {
	r.Related(obj, nil, eventtype, reason, reason, format, args...)
}

// Related records an Event about obj that involves related (another
// object, such as the Node of another speaker), with an action. Events
// that differ in related or action are never folded into one series.
func (r *Recorder) Related(obj, related runtime.Object, eventtype, reason, action, format string, args ...any) {
	r.rec.Eventf(obj, related, eventtype, reason, action, "%s", truncate(format, args...))
}

func truncate(format string, args ...any) string {
	msg := format
	if len(args) > 0 {
		msg = fmt.Sprintf(format, args...)
	}
	if len(msg) > noteLimit {
		msg = msg[:noteLimit-3] + "..."
	}
	return msg
}

// sink writes the reporting instance the Recorder was given.
type sink struct {
	events.EventSinkImpl
	instance string
}

func (s *sink) Create(ctx context.Context, ev *eventsv1.Event) (*eventsv1.Event, error) {
	if s.instance != "" {
		ev.ReportingInstance = s.instance
	}
	return s.EventSinkImpl.Create(ctx, ev)
}
