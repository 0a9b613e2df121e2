//go:build integration

package testenv_test

import (
	"context"
	"net/netip"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/ironlb/ironlb/hack/testenv"
)

var env *testenv.Env

func TestMain(m *testing.M) { os.Exit(testenv.Main(m, &env)) }

func TestNamespacesAreFresh(t *testing.T) {
	a, b := env.Namespace(t), env.Namespace(t)
	if a == b {
		t.Fatalf("Namespace returned %q twice", a)
	}
	if !strings.HasPrefix(a, "testnamespacesarefresh-") {
		t.Errorf("namespace %q is not named after the test", a)
	}
}

func TestControlPlane(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := env.Client
	ns := env.Namespace(t)

	// ConfigMap round trip.
	cm := &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "config"},
		Data:       map[string]string{"config": "address-pools: []\n"},
	}
	if _, err := c.CoreV1().ConfigMaps(ns).Create(ctx, cm, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	gotCM, err := c.CoreV1().ConfigMaps(ns).Get(ctx, "config", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if gotCM.Data["config"] != "address-pools: []\n" {
		t.Errorf("ConfigMap data = %q", gotCM.Data)
	}

	// A Node made Ready by hand: there is no kubelet.
	nodeName := ns + "-node1"
	node, err := c.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: nodeName}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	node.Status.Conditions = []corev1.NodeCondition{{
		Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady",
		LastHeartbeatTime: metav1.Now(), LastTransitionTime: metav1.Now(),
	}}
	node.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "198.51.100.11"}}
	if _, err := c.CoreV1().Nodes().UpdateStatus(ctx, node, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	node, err = c.CoreV1().Nodes().Get(ctx, nodeName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(node.Status.Conditions) != 1 || node.Status.Conditions[0].Type != corev1.NodeReady || node.Status.Conditions[0].Status != corev1.ConditionTrue {
		t.Errorf("node conditions = %+v, want Ready=True", node.Status.Conditions)
	}
	if len(node.Status.Addresses) != 1 || node.Status.Addresses[0].Address != "198.51.100.11" {
		t.Errorf("node addresses = %+v, want InternalIP 198.51.100.11", node.Status.Addresses)
	}

	// A dual-stack LoadBalancer Service gets a ClusterIP per family and a
	// NodePort from the apiserver; its status is ours to write.
	policy := corev1.IPFamilyPolicyRequireDualStack
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "web"},
		Spec: corev1.ServiceSpec{
			Type:           corev1.ServiceTypeLoadBalancer,
			IPFamilyPolicy: &policy,
			Selector:       map[string]string{"app": "web"},
			Ports:          []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080), Protocol: corev1.ProtocolTCP}},
		},
	}
	svc, err = c.CoreV1().Services(ns).Create(ctx, svc, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(svc.Spec.ClusterIPs) != 2 {
		t.Fatalf("ClusterIPs = %v, want one per family", svc.Spec.ClusterIPs)
	}
	v4, v6 := netip.MustParseAddr(svc.Spec.ClusterIPs[0]), netip.MustParseAddr(svc.Spec.ClusterIPs[1])
	if !netip.MustParsePrefix("10.96.0.0/16").Contains(v4) || !netip.MustParsePrefix("fd00:10:96::/112").Contains(v6) {
		t.Errorf("ClusterIPs = %v, want from 10.96.0.0/16 and fd00:10:96::/112", svc.Spec.ClusterIPs)
	}
	if np := svc.Spec.Ports[0].NodePort; np < 30000 || np > 39999 {
		t.Errorf("NodePort = %d, want in 30000-39999", np)
	}

	vip := corev1.LoadBalancerIPModeVIP
	svc.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{
		{IP: "198.51.100.100", IPMode: &vip},
		{IP: "2001:db8:100::100", IPMode: &vip},
	}
	if _, err := c.CoreV1().Services(ns).UpdateStatus(ctx, svc, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	svc, err = c.CoreV1().Services(ns).Get(ctx, "web", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ing := svc.Status.LoadBalancer.Ingress
	if len(ing) != 2 || ing[0].IP != "198.51.100.100" || ing[1].IP != "2001:db8:100::100" ||
		ing[0].IPMode == nil || *ing[0].IPMode != corev1.LoadBalancerIPModeVIP ||
		ing[1].IPMode == nil || *ing[1].IPMode != corev1.LoadBalancerIPModeVIP {
		t.Errorf("status.loadBalancer.ingress = %+v", ing)
	}

	// kubectl sees the same thing a user would.
	out := env.Kubectl(t, "get", "svc", "-n", ns)
	t.Logf("kubectl get svc -n %s:\n%s", ns, out)
	row := regexp.MustCompile(`(?m)^web\s+LoadBalancer\s+(\S+)\s+(\S+)\s+(\S+)\s`).FindStringSubmatch(out)
	if row == nil {
		t.Fatalf("kubectl get svc -n %s:\n%s", ns, out)
	}
	if row[1] != svc.Spec.ClusterIPs[0] || row[2] != "198.51.100.100,2001:db8:100::100" || row[3] != "80:"+strconv.Itoa(int(svc.Spec.Ports[0].NodePort))+"/TCP" {
		t.Errorf("kubectl row = %q, want CLUSTER-IP %s, EXTERNAL-IP 198.51.100.100,2001:db8:100::100\n%s", row[1:], svc.Spec.ClusterIPs[0], out)
	}
	if got := env.Kubectl(t, "get", "node", nodeName, "-o", "jsonpath={.status.addresses[0].address}"); got != "198.51.100.11" {
		t.Errorf("kubectl node InternalIP = %q", got)
	}
}
