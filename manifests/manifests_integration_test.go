//go:build integration

package manifests_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes/scheme"

	"github.com/ironlb/ironlb/api"
	"github.com/ironlb/ironlb/hack/testenv"
)

var env *testenv.Env

func TestMain(m *testing.M) { os.Exit(testenv.Main(m, &env)) }

const ns = api.DefaultNamespace

// The manifests, in the order they must be applied.
var (
	namespaceYAML = "namespace.yaml"
	ironlbYAML    = "ironlb.yaml"
	configYAML    = "example-config.yaml"
)

// install applies every manifest for real. kubectl apply is idempotent and
// creates in argument order, so the namespace exists before what goes in it.
func install(t *testing.T) {
	t.Helper()
	env.Kubectl(t, "apply", "-f", namespaceYAML, "-f", ironlbYAML, "-f", configYAML)
}

// TestApply validates the manifests with a server-side dry run (the real
// API server's defaulting, validation and admission, nothing stored), then
// applies them, checks every object exists, and that a second apply
// changes nothing.
func TestApply(t *testing.T) {
	// The namespace first: a dry run does not create it, and the namespaced
	// objects would be refused for want of it.
	out := env.Kubectl(t, "apply", "--dry-run=server", "-f", namespaceYAML)
	t.Logf("dry run:\n%s", out)
	env.Kubectl(t, "apply", "-f", namespaceYAML)
	out = env.Kubectl(t, "apply", "--dry-run=server", "-f", ironlbYAML, "-f", configYAML)
	t.Logf("dry run:\n%s", out)
	if want := len(decodeAll(t, ironlbYAML)) + len(decodeAll(t, configYAML)); strings.Count(out, "(server dry run)") != want {
		t.Errorf("dry run reported %d objects, the files hold %d", strings.Count(out, "(server dry run)"), want)
	}

	install(t)
	for _, f := range []string{namespaceYAML, ironlbYAML, configYAML} {
		objs := decodeAll(t, f)
		got := strings.Fields(env.Kubectl(t, "get", "-f", f, "-o", "name"))
		if len(got) != len(objs) {
			t.Errorf("%s: %d objects in the file, kubectl get found %d: %v", f, len(objs), len(got), got)
		}
	}
	out = env.Kubectl(t, "apply", "-f", namespaceYAML, "-f", ironlbYAML, "-f", configYAML)
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if !strings.HasSuffix(line, " unchanged") {
			t.Errorf("a second apply changed something: %q", line)
		}
	}

	// What the API server stored is what the manifests say.
	ctx := context.Background()
	dep, err := env.Client.AppsV1().Deployments(ns).Get(ctx, "controller", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if c := dep.Spec.Template.Spec.Containers[0]; c.Image != "ironlb/controller:v0.1.0" || *dep.Spec.Replicas != 1 {
		t.Errorf("controller Deployment: image %q, replicas %d", c.Image, *dep.Spec.Replicas)
	}
	ds, err := env.Client.AppsV1().DaemonSets(ns).Get(ctx, "speaker", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if c := ds.Spec.Template.Spec.Containers[0]; c.Image != "ironlb/speaker:v0.1.0" || !ds.Spec.Template.Spec.HostNetwork {
		t.Errorf("speaker DaemonSet: image %q, hostNetwork %v", c.Image, ds.Spec.Template.Spec.HostNetwork)
	}
	cm, err := env.Client.CoreV1().ConfigMaps(ns).Get(ctx, api.DefaultConfigName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := cm.Data[api.ConfigKey]; !ok {
		t.Errorf("ConfigMap %s/%s has no data key %q", ns, cm.Name, api.ConfigKey)
	}
}

// TestPodSecurity creates (dry run) Pods from both workload templates, so
// the PodSecurity admission plugin of the real API server judges them: in
// ironlb-system both are admitted; the controller alone would pass
// "restricted"; the speaker is refused by "baseline", which is why the
// namespace is privileged.
func TestPodSecurity(t *testing.T) {
	install(t)
	var ctrl, spk corev1.PodTemplateSpec
	for _, obj := range decodeAll(t, ironlbYAML) {
		switch o := obj.(type) {
		case *appsv1.Deployment:
			ctrl = o.Spec.Template
		case *appsv1.DaemonSet:
			spk = o.Spec.Template
		}
	}
	if ctrl.Spec.ServiceAccountName != "controller" || spk.Spec.ServiceAccountName != "speaker" {
		t.Fatalf("templates not found in %s (serviceAccountName %q, %q)", ironlbYAML, ctrl.Spec.ServiceAccountName, spk.Spec.ServiceAccountName)
	}
	restricted := levelNamespace(t, "restricted")
	baseline := levelNamespace(t, "baseline")

	for _, tc := range []struct {
		name, ns string
		tmpl     corev1.PodTemplateSpec
		refused  []string // substrings of the refusal; nil means admitted
	}{
		{"controller in ironlb-system", ns, ctrl, nil},
		{"speaker in ironlb-system", ns, spk, nil},
		{"controller at restricted", restricted, ctrl, nil},
		{"speaker at baseline", baseline, spk, []string{`violates PodSecurity "baseline:latest"`, "hostNetwork", "hostPort", "NET_RAW"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pod := &corev1.Pod{ObjectMeta: *tc.tmpl.ObjectMeta.DeepCopy(), Spec: *tc.tmpl.Spec.DeepCopy()}
			pod.GenerateName = tc.tmpl.Spec.ServiceAccountName + "-"
			pod.Namespace = tc.ns
			_, err := env.Client.CoreV1().Pods(tc.ns).Create(context.Background(), pod, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
			if tc.refused == nil {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if !apierrors.IsForbidden(err) {
				t.Fatalf("got %v, want Forbidden by PodSecurity", err)
			}
			for _, s := range tc.refused {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("refusal does not mention %q: %v", s, err)
				}
			}
			t.Logf("refused as expected: %v", err)
		})
	}
}

// levelNamespace makes a namespace enforcing a Pod Security level, with the
// two ServiceAccounts, so that only PodSecurity can refuse a Pod there. The
// label is set at creation: the PodSecurity plugin reads namespaces from an
// informer, which could still hold an unlabelled copy after a later patch.
func levelNamespace(t *testing.T, level string) string {
	t.Helper()
	ctx := context.Background()
	n := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{
		GenerateName: "pod-security-" + level + "-",
		Labels: map[string]string{
			"pod-security.kubernetes.io/enforce":         level,
			"pod-security.kubernetes.io/enforce-version": "latest",
		},
	}}
	n, err := env.Client.CoreV1().Namespaces().Create(ctx, n, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, sa := range []string{"controller", "speaker"} {
		if _, err := env.Client.CoreV1().ServiceAccounts(n.Name).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	return n.Name
}

// decodeAll decodes every document of a manifest file into typed objects.
func decodeAll(t *testing.T, file string) []runtime.Object {
	t.Helper()
	b, err := os.ReadFile(filepath.Clean(file))
	if err != nil {
		t.Fatal(err)
	}
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(b)))
	var out []runtime.Object
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		if len(bytes.TrimSpace(stripComments(doc))) == 0 {
			continue
		}
		obj, _, err := scheme.Codecs.UniversalDeserializer().Decode(doc, nil, nil)
		if err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		out = append(out, obj)
	}
}

func stripComments(doc []byte) []byte {
	var b bytes.Buffer
	for line := range bytes.SplitSeq(doc, []byte("\n")) {
		if t := bytes.TrimSpace(line); len(t) > 0 && t[0] != '#' {
			b.Write(line)
			b.WriteByte('\n')
		}
	}
	return b.Bytes()
}
