package cli

import (
	"context"
	"errors"
	"fmt"

	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"

	"github.com/ironlb/ironlb/api"
	"github.com/ironlb/ironlb/config"
)

// Main runs kubectl-ironlb with args (without the program name) and
// returns the exit status.
func Main(ctx context.Context, args []string, streams genericiooptions.IOStreams) int {
	cmd := NewCommand(streams)
	cmd.SetArgs(args)
	err := cmd.ExecuteContext(ctx)
	if err == nil {
		return 0
	}
	var ee *ExitError
	if errors.As(err, &ee) {
		if ee.Msg != "" {
			fmt.Fprintf(streams.ErrOut, "error: %s\n", ee.Msg)
		}
		return ee.Code
	}
	fmt.Fprintf(streams.ErrOut, "error: %v\n", err)
	return 1
}

// NewCommand builds the kubectl-ironlb command tree. The connection flags
// are kubectl's own (--kubeconfig, --context, -n, ...), and $KUBECONFIG and
// the in-cluster config work as they do for kubectl.
func NewCommand(streams genericiooptions.IOStreams) *cobra.Command {
	flags := genericclioptions.NewConfigFlags(true)
	o := Options{Out: streams.Out, ErrOut: streams.ErrOut}
	root := &cobra.Command{
		Use:   "kubectl-ironlb",
		Short: "Inspect ironlb: who announces which address, how full the pools are, why a Service waits",
		Long: `kubectl ironlb reads the cluster (Services, their Events and conditions, the
address-pool ConfigMap) and needs only a viewer's RBAC. Install it by putting
the kubectl-ironlb binary on your PATH; kubectl then runs it as "kubectl ironlb".`,
		SilenceErrors: true,
		SilenceUsage:  true,
	}
	root.SetOut(streams.Out)
	root.SetErr(streams.ErrOut)
	pf := root.PersistentFlags()
	flags.AddFlags(pf)
	pf.StringVar(&o.IronlbNamespace, "ironlb-namespace", api.DefaultNamespace, "namespace of ironlb's address-pool ConfigMap (the controller's --namespace)")
	pf.StringVar(&o.ConfigName, "config-name", api.DefaultConfigName, "name of ironlb's address-pool ConfigMap (the controller's --config-name)")
	pf.StringVar(&o.LBClass, "lb-class", "", "the controller's --lb-class: which Services ironlb handles (empty: those without a loadBalancerClass)")
	pf.StringVarP(&o.Output, "output", "o", "", "output format: json or yaml (default: a table or text)")

	// connect resolves the namespace and builds the clients on first use,
	// so check-config works without a kubeconfig.
	connect := func() (*Clients, error) {
		ns, _, err := flags.ToRawKubeConfigLoader().Namespace()
		if err != nil {
			return nil, err
		}
		o.Namespace = ns
		cfg, err := flags.ToRESTConfig()
		if err != nil {
			return nil, err
		}
		cfg.UserAgent = "kubectl-ironlb"
		return NewClients(cfg)
	}

	status := &cobra.Command{
		Use:   "status [SERVICE]",
		Short: "Each LoadBalancer Service: its addresses, pool, announcing node, interface and MAC, and the last move",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := connect()
			if err != nil {
				return err
			}
			name := ""
			if len(args) == 1 {
				name = args[0]
			}
			return Status(cmd.Context(), c, o, name)
		},
	}
	status.Flags().BoolVarP(&o.AllNamespaces, "all-namespaces", "A", false, "list Services in every namespace")

	pools := &cobra.Command{
		Use:   "pools",
		Short: "Per pool and family: size, used, free, which Services, auto-assign, namespaces; flags pools at least 90% used",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := connect()
			if err != nil {
				return err
			}
			return Pools(cmd.Context(), c, o)
		},
	}

	why := &cobra.Command{
		Use:   "why SERVICE",
		Short: "Why a Service has no address or is not announced, in one paragraph",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := connect()
			if err != nil {
				return err
			}
			return Why(cmd.Context(), c, o, args[0])
		},
	}

	check := &cobra.Command{
		Use:   "check-config FILE",
		Short: "Validate an address-pool ConfigMap or config file (- for stdin) as the controller would (controller --check-config)",
		Args:  cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			if code := config.Check(args[0], streams.In, streams.Out, streams.ErrOut); code != 0 {
				return &ExitError{Code: code}
			}
			return nil
		},
	}

	imp := ImportOptions{In: streams.In}
	importCmd := &cobra.Command{
		Use:   "import-metallb [FILE...|--from-cluster]",
		Short: "Convert MetalLB v0.13+ IPAddressPools and L2Advertisements into an ironlb ConfigMap",
		Long: `Convert MetalLB v0.13+ IPAddressPool and L2Advertisement objects, from YAML files
(- for stdin) or read from the cluster with --from-cluster, into the ironlb
ConfigMap, printed on stdout. What cannot be converted is listed on stderr
with the reason. With --dry-run it lists instead every LoadBalancer Service
that would keep its address under the converted config and every one that
would not (exit status 1 if any would not).`,
		RunE: func(cmd *cobra.Command, args []string) error {
			imp.Files = args
			var c *Clients
			if imp.FromCluster || imp.DryRun {
				var err error
				if c, err = connect(); err != nil {
					return err
				}
			}
			return ImportMetallb(cmd.Context(), c, o, imp)
		},
	}
	importCmd.Flags().BoolVar(&imp.FromCluster, "from-cluster", false, "read MetalLB's objects from the cluster (metallb.io/v1beta1 ipaddresspools, l2advertisements)")
	importCmd.Flags().StringVar(&imp.MetalLBNamespace, "metallb-namespace", "metallb-system", "namespace of MetalLB's objects, with --from-cluster")
	importCmd.Flags().BoolVar(&imp.DryRun, "dry-run", false, "list the Services that would keep their addresses under the converted config, and those that would not")

	root.AddCommand(status, pools, why, check, importCmd)
	return root
}
