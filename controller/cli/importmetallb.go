package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/cli-runtime/pkg/printers"

	"github.com/ironlb/ironlb/api/service"
	"github.com/ironlb/ironlb/config"
	"github.com/ironlb/ironlb/config/metallb"
	"github.com/ironlb/ironlb/ipam"
)

// ImportOptions say where MetalLB's objects come from.
type ImportOptions struct {
	// Files are YAML manifests; "-" is In.
	Files []string
	In    io.Reader
	// FromCluster reads the objects from MetalLBNamespace.
	FromCluster      bool
	MetalLBNamespace string
	// DryRun lists, instead of printing the ConfigMap, every Service that
	// would keep its address under the converted config and every one
	// that would not.
	DryRun bool
}

// MetalLB's resources read by --from-cluster. The BGP ones are read only
// to say that they are not converted.
var (
	poolsGVR = schema.GroupVersionResource{Group: metallb.Group, Version: "v1beta1", Resource: "ipaddresspools"}
	l2GVR    = schema.GroupVersionResource{Group: metallb.Group, Version: "v1beta1", Resource: "l2advertisements"}
	bgpGVRs  = []schema.GroupVersionResource{
		{Group: metallb.Group, Version: "v1beta1", Resource: "bgpadvertisements"},
		{Group: metallb.Group, Version: "v1beta2", Resource: "bgppeers"},
	}
)

// Verdict is what the converted config does to one address of a Service.
type Verdict struct {
	Namespace string `json:"namespace"`
	Service   string `json:"service"`
	Address   string `json:"address,omitempty"`
	Pool      string `json:"pool,omitempty"`
	Keeps     bool   `json:"keeps"`
	Reason    string `json:"reason,omitempty"`
	Note      string `json:"note,omitempty"`
}

// ImportMetallb converts MetalLB v0.13+ objects to an ironlb ConfigMap and
// prints it, with what could not be converted on ErrOut; with DryRun it
// prints the verdict for every Service instead. c may be nil when only
// files are read and DryRun is off.
func ImportMetallb(ctx context.Context, c *Clients, o Options, imp ImportOptions) error {
	if len(imp.Files) == 0 && !imp.FromCluster {
		return errors.New("give MetalLB manifests (FILE... or - for stdin) or --from-cluster")
	}
	var objs []metallb.Object
	for _, f := range imp.Files {
		var b []byte
		var err error
		if f == "-" {
			b, err = readAll(imp.In)
		} else {
			b, err = os.ReadFile(f)
		}
		if err != nil {
			return fmt.Errorf("reading %s: %w", f, err)
		}
		got, err := metallb.Parse(b)
		if err != nil {
			return fmt.Errorf("%s: %w", f, err)
		}
		objs = append(objs, got...)
	}
	if imp.FromCluster {
		got, err := readCluster(ctx, c, imp.MetalLBNamespace)
		if err != nil {
			return err
		}
		objs = append(objs, got...)
	}
	r, err := metallb.Convert(objs)
	if r != nil {
		for _, u := range r.Unmapped {
			fmt.Fprintf(o.ErrOut, "not converted: %s\n", u)
		}
	}
	if err != nil {
		return err
	}
	if imp.DryRun {
		return o.dryRun(ctx, c, r)
	}
	if done, err := o.printStructured(r); done {
		return err
	}
	cm, err := r.ConfigMap(o.IronlbNamespace, o.ConfigName)
	if err != nil {
		return err
	}
	_, err = o.Out.Write(cm)
	return err
}

func readAll(r io.Reader) ([]byte, error) {
	if r == nil {
		return nil, errors.New("no standard input")
	}
	return io.ReadAll(r)
}

func readCluster(ctx context.Context, c *Clients, ns string) ([]metallb.Object, error) {
	var out []metallb.Object
	read := func(gvr schema.GroupVersionResource, required bool) error {
		list, err := c.Dynamic.Resource(gvr).Namespace(ns).List(ctx, metav1.ListOptions{})
		if apierrors.IsNotFound(err) && !required {
			return nil
		}
		if apierrors.IsNotFound(err) {
			return fmt.Errorf("the cluster does not serve %s.%s/%s: MetalLB v0.13+ is not installed (its CRDs define it)", gvr.Resource, gvr.Group, gvr.Version)
		}
		if err != nil {
			return fmt.Errorf("listing %s.%s in namespace %s: %w", gvr.Resource, gvr.Group, ns, err)
		}
		for _, item := range list.Items {
			js, err := json.Marshal(item.Object)
			if err != nil {
				return err
			}
			objs, err := metallb.Decode(js)
			if err != nil {
				return err
			}
			out = append(out, objs...)
		}
		return nil
	}
	if err := read(poolsGVR, true); err != nil {
		return nil, err
	}
	if err := read(l2GVR, true); err != nil {
		return nil, err
	}
	for _, g := range bgpGVRs {
		if err := read(g, false); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// MetalLB v0.14 renamed its Service annotations to metallb.io/; ironlb
// honours only the older metallb.universe.tf/ spelling besides its own.
var renamedAnnotations = []string{"metallb.io/address-pool", "metallb.io/loadBalancerIPs", "metallb.io/allow-shared-ip"}

func (o *Options) dryRun(ctx context.Context, c *Clients, r *metallb.Result) error {
	if c == nil {
		return errors.New("--dry-run needs a cluster to read Services from")
	}
	text, err := r.Text()
	if err != nil {
		return err
	}
	svcs, err := services(ctx, c, metav1.NamespaceAll, o.LBClass)
	if err != nil {
		return err
	}
	vs, lost, err := verdicts(text, svcs)
	if err != nil {
		return err
	}
	if done, err := o.printStructured(vs); !done {
		w := printers.GetNewTabWriter(o.Out)
		fmt.Fprintln(w, "NAMESPACE\tNAME\tADDRESS\tPOOL\tVERDICT\tNOTE")
		for _, v := range vs {
			verdict := "keeps"
			if !v.Keeps {
				verdict = "LOSES: " + v.Reason
			}
			if v.Address == "" {
				verdict = "no address today"
			}
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", v.Namespace, v.Service, or(v.Address, "<pending>"), dash(v.Pool), verdict, dash(v.Note))
		}
		if err := w.Flush(); err != nil {
			return err
		}
	} else if err != nil {
		return err
	}
	if lost > 0 {
		return &ExitError{Code: 1, Msg: fmt.Sprintf("%d address(es) would be lost: the ironlb controller refuses such a config and keeps its last one; add the missing ranges or namespaces and convert again", lost)}
	}
	return nil
}

// verdicts decides, for every Service address, whether the config text
// lets it stay, by restoring the Services' addresses into an allocator
// with the config's pools, as the controller does on start.
func verdicts(text []byte, svcs []corev1.Service) ([]Verdict, int, error) {
	ps, err := parsedPools(text)
	if err != nil {
		return nil, 0, err
	}
	a := ipam.New()
	if _, err := a.SetPools(ps.Config.IPAM()); err != nil {
		return nil, 0, err
	}
	failed := map[string]string{}
	for _, err := range a.Restore(svcs2assignments(svcs)) {
		var re *ipam.RestoreError
		if errors.As(err, &re) {
			failed[re.Key+" "+re.Addr.String()] = re.Err.Error()
		}
	}
	var out []Verdict
	lost := 0
	for i := range svcs {
		s := &svcs[i]
		var notes []string
		for _, k := range renamedAnnotations {
			if _, ok := s.Annotations[k]; ok {
				notes = append(notes, fmt.Sprintf("annotation %s is not read by ironlb; use ironlb.io/%s", k, strings.TrimPrefix(k, "metallb.io/")))
			}
		}
		base := Verdict{Namespace: s.Namespace, Service: s.Name, Note: strings.Join(notes, "; ")}
		ips := service.IngressIPs(s)
		if len(ips) == 0 {
			out = append(out, base)
			continue
		}
		for _, ip := range ips {
			v := base
			v.Address = ip.String()
			v.Pool, _ = a.PoolOf(ip)
			if why, bad := failed[s.Namespace+"/"+s.Name+" "+ip.String()]; bad {
				v.Reason = why
				lost++
			} else {
				v.Keeps = true
			}
			out = append(out, v)
		}
	}
	return out, lost, nil
}

func parsedPools(text []byte) (poolsState, error) {
	cfg, err := config.Parse(text)
	if err != nil {
		return poolsState{}, err
	}
	return poolsState{Config: cfg}, nil
}
