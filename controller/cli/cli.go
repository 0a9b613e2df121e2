// Package cli is `kubectl ironlb`, the operator's view of ironlb: which node
// announces an address, how full the pools are, why a Service has no
// address, a config check, and the import of MetalLB v0.13+ objects.
//
// It only reads the API (Services, their Events and conditions, the
// address-pool ConfigMap; MetalLB's objects for import-metallb
// --from-cluster), so the read RBAC of a cluster viewer is enough. Each
// subcommand has a Run function taking Clients, so tests run it against a
// real API server in-process; NewCommand wires them to cobra and to
// kubectl's connection flags (k8s.io/cli-runtime).
package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/yaml"

	"github.com/ironlb/ironlb/api"
	"github.com/ironlb/ironlb/api/service"
	"github.com/ironlb/ironlb/config"
)

// Clients reach the API server.
type Clients struct {
	Kube    kubernetes.Interface
	Dynamic dynamic.Interface
}

// NewClients builds the clients from a REST config.
func NewClients(cfg *rest.Config) (*Clients, error) {
	k, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	d, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	return &Clients{Kube: k, Dynamic: d}, nil
}

// Options are what every subcommand shares.
type Options struct {
	// Namespace of the Services; ignored with AllNamespaces.
	Namespace     string
	AllNamespaces bool
	// Where ironlb's ConfigMap is, and the controller's --lb-class.
	IronlbNamespace string
	ConfigName      string
	LBClass         string
	// Output is "" (a table or text), "json" or "yaml".
	Output string
	Out    io.Writer
	ErrOut io.Writer
	// Now is the clock for ages; time.Now when nil.
	Now func() time.Time
}

func (o *Options) now() time.Time {
	if o.Now != nil {
		return o.Now()
	}
	return time.Now()
}

func (o *Options) svcNamespace() string {
	if o.AllNamespaces {
		return metav1.NamespaceAll
	}
	return o.Namespace
}

// printStructured writes v as JSON or YAML; it reports false for the
// table output.
func (o *Options) printStructured(v any) (bool, error) {
	switch o.Output {
	case "":
		return false, nil
	case "json":
		b, err := json.MarshalIndent(v, "", "  ")
		if err != nil {
			return true, err
		}
		_, err = fmt.Fprintf(o.Out, "%s\n", b)
		return true, err
	case "yaml":
		b, err := yaml.Marshal(v)
		if err != nil {
			return true, err
		}
		_, err = o.Out.Write(b)
		return true, err
	}
	return true, fmt.Errorf("--output %q is not supported; use json or yaml, or leave it out for a table", o.Output)
}

// poolsState is ironlb's ConfigMap as read from the cluster.
type poolsState struct {
	// Config is the parsed config; nil when the ConfigMap is missing,
	// unreadable or invalid (Problem says which).
	Config  *config.Config
	Problem string
	Missing bool
}

func loadConfig(ctx context.Context, c *Clients, o *Options) poolsState {
	cm, err := c.Kube.CoreV1().ConfigMaps(o.IronlbNamespace).Get(ctx, o.ConfigName, metav1.GetOptions{})
	ref := o.IronlbNamespace + "/" + o.ConfigName
	switch {
	case apierrors.IsNotFound(err):
		return poolsState{Missing: true, Problem: fmt.Sprintf("the ConfigMap %s does not exist, so ironlb has no address pools", ref)}
	case err != nil:
		return poolsState{Problem: fmt.Sprintf("cannot read the ConfigMap %s: %v", ref, err)}
	}
	text, ok := cm.Data[api.ConfigKey]
	if !ok {
		return poolsState{Problem: fmt.Sprintf("the ConfigMap %s has no data key %q, so ironlb has no address pools", ref, api.ConfigKey)}
	}
	cfg, err := config.Parse([]byte(text))
	if err != nil {
		return poolsState{Problem: fmt.Sprintf("the ConfigMap %s is invalid, so the controller keeps the last config it accepted: %v", ref, err)}
	}
	return poolsState{Config: cfg}
}

// services lists the LoadBalancer Services ironlb handles, sorted by
// namespace and name.
func services(ctx context.Context, c *Clients, ns, class string) ([]corev1.Service, error) {
	list, err := c.Kube.CoreV1().Services(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("listing Services: %w", err)
	}
	var out []corev1.Service
	for _, s := range list.Items {
		if service.Ours(&s, class) {
			out = append(out, s)
		}
	}
	slices.SortFunc(out, func(a, b corev1.Service) int {
		return strings.Compare(a.Namespace+"/"+a.Name, b.Namespace+"/"+b.Name)
	})
	return out, nil
}

// serviceEvents lists the Events about Services in ns, grouped by
// "namespace/name" and sorted oldest first. Events of an earlier Service
// of the same name (another UID) are left out by forService.
func serviceEvents(ctx context.Context, c *Clients, ns string) (map[string][]corev1.Event, error) {
	list, err := c.Kube.CoreV1().Events(ns).List(ctx, metav1.ListOptions{
		FieldSelector: fields.OneTermEqualSelector("involvedObject.kind", "Service").String(),
	})
	if err != nil {
		return nil, fmt.Errorf("listing Events: %w", err)
	}
	out := map[string][]corev1.Event{}
	for _, e := range list.Items {
		k := e.InvolvedObject.Namespace + "/" + e.InvolvedObject.Name
		out[k] = append(out[k], e)
	}
	for _, es := range out {
		slices.SortStableFunc(es, func(a, b corev1.Event) int { return eventTime(&a).Compare(eventTime(&b)) })
	}
	return out, nil
}

// forService keeps the Events of this very Service.
func forService(es []corev1.Event, svc *corev1.Service) []corev1.Event {
	var out []corev1.Event
	for _, e := range es {
		if e.InvolvedObject.UID == "" || e.InvolvedObject.UID == svc.UID {
			out = append(out, e)
		}
	}
	return out
}

// eventTime is when an Event last happened, whichever API wrote it:
// core/v1 recorders set lastTimestamp, the events.k8s.io library sets
// eventTime and, for repeats, series.lastObservedTime.
func eventTime(e *corev1.Event) time.Time {
	switch {
	case e.Series != nil && !e.Series.LastObservedTime.IsZero():
		return e.Series.LastObservedTime.Time
	case !e.LastTimestamp.IsZero():
		return e.LastTimestamp.Time
	case !e.EventTime.IsZero():
		return e.EventTime.Time
	case !e.FirstTimestamp.IsZero():
		return e.FirstTimestamp.Time
	}
	return e.CreationTimestamp.Time
}

// fromSpeaker reports whether an ironlb speaker wrote e (as a core/v1
// recorder, with source.component, or through events.k8s.io, with
// reportingComponent).
func fromSpeaker(e *corev1.Event) bool {
	return e.Source.Component == api.FieldManagerSpeaker || e.ReportingController == api.FieldManagerSpeaker ||
		strings.HasPrefix(e.ReportingController, "ironlb.io/speaker")
}

var nodeAssignedRE = regexp.MustCompile(`from node "([^"]+)"`)

// assignedNode reads the node from a nodeAssigned Event's message:
// `announcing from node "X" with protocol "layer2"`.
func assignedNode(e *corev1.Event) (string, bool) {
	if e.Reason != api.EventNodeAssigned || !fromSpeaker(e) {
		return "", false
	}
	m := nodeAssignedRE.FindStringSubmatch(e.Message)
	if m == nil {
		return "", false
	}
	return m[1], true
}

// newest returns the newest Event with one of the reasons, or nil.
func newest(es []corev1.Event, reasons ...string) *corev1.Event {
	for i := len(es) - 1; i >= 0; i-- {
		if slices.Contains(reasons, es[i].Reason) {
			return &es[i]
		}
	}
	return nil
}

// serviceCondition returns the Service's condition of type typ, such as
// ironlb.io/Announced.
func serviceCondition(svc *corev1.Service, typ string) *metav1.Condition {
	for i := range svc.Status.Conditions {
		if svc.Status.Conditions[i].Type == typ {
			return &svc.Status.Conditions[i]
		}
	}
	return nil
}

// ExitError ends the command with a status code other than 1, or with 1
// after output that already says what went wrong.
type ExitError struct {
	Code int
	Msg  string
}

func (e *ExitError) Error() string { return e.Msg }
