package cli

import (
	"context"
	"errors"
	"fmt"
	"math/big"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/cli-runtime/pkg/printers"

	"github.com/ironlb/ironlb/api/service"
	"github.com/ironlb/ironlb/controller"
	"github.com/ironlb/ironlb/ipam"
)

// FullPercent is the occupancy from which a pool is flagged.
const FullPercent = 90

// PoolUsage is one family of one pool.
type PoolUsage struct {
	Pool   string `json:"pool"`
	Family string `json:"family"`
	// Size, Used and Free count addresses; Size is a decimal string since
	// an IPv6 pool can hold more than an int64 counts.
	Size       string   `json:"size"`
	Used       int      `json:"used"`
	Free       string   `json:"free"`
	Percent    float64  `json:"percentUsed"`
	Full       bool     `json:"full"`
	AutoAssign bool     `json:"autoAssign"`
	Namespaces []string `json:"namespaces,omitempty"`
	Services   []string `json:"services,omitempty"`
}

// PoolsReport is the pools and the addresses that fit none.
type PoolsReport struct {
	Pools []PoolUsage `json:"pools"`
	// Unplaced are Services' addresses the pools do not allow (outside
	// every pool, or a namespace or address the pool refuses), as
	// "namespace/name address: reason".
	Unplaced []string `json:"unplaced,omitempty"`
}

// Pools prints every pool and family of ironlb's ConfigMap with its size,
// use and Services. Use is rebuilt from the Services' status the way the
// controller restores it on start, so it matches what the controller
// counts (ironlb_pool_addresses_in_use) while the statuses are current.
func Pools(ctx context.Context, c *Clients, o Options) error {
	ps := loadConfig(ctx, c, &o)
	if ps.Config == nil {
		return errors.New(ps.Problem)
	}
	svcs, err := services(ctx, c, metav1.NamespaceAll, o.LBClass)
	if err != nil {
		return err
	}
	rep, err := poolsReport(ps, svcs2assignments(svcs))
	if err != nil {
		return err
	}
	if done, err := o.printStructured(rep); done {
		return err
	}
	w := printers.GetNewTabWriter(o.Out)
	fmt.Fprintln(w, "POOL\tFAMILY\tSIZE\tUSED\tFREE\tUSE%\tAUTO-ASSIGN\tNAMESPACES\tSERVICES")
	for _, p := range rep.Pools {
		pct := fmt.Sprintf("%.0f%%", p.Percent)
		if p.Full {
			pct += " (>=90%!)"
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%d\t%s\t%s\t%v\t%s\t%s\n", p.Pool, p.Family, p.Size, p.Used, p.Free, pct,
			p.AutoAssign, or(strings.Join(p.Namespaces, ","), "<all>"), listShort(p.Services, 3))
	}
	if err := w.Flush(); err != nil {
		return err
	}
	for _, u := range rep.Unplaced {
		fmt.Fprintf(o.ErrOut, "not in any pool: %s\n", u)
	}
	return nil
}

func svcs2assignments(svcs []corev1.Service) []ipam.Assignment {
	out := make([]ipam.Assignment, 0, len(svcs))
	for i := range svcs {
		s := &svcs[i]
		key := s.Namespace + "/" + s.Name
		as := ipam.Assignment{Service: ipam.Service{Key: key}, Addrs: service.IngressIPs(s)}
		// The sharing data decides whether two Services may hold one
		// address; a Service whose request cannot be read is counted
		// without it, as the controller would restore it.
		if req, err := controller.NewRequest(s); err == nil {
			as.Service = req.Service
		}
		if len(as.Addrs) > 0 {
			out = append(out, as)
		}
	}
	return out
}

func poolsReport(ps poolsState, snapshot []ipam.Assignment) (*PoolsReport, error) {
	a := ipam.New()
	if _, err := a.SetPools(ps.Config.IPAM()); err != nil {
		return nil, err
	}
	rep := &PoolsReport{}
	for _, err := range a.Restore(snapshot) {
		var re *ipam.RestoreError
		if errors.As(err, &re) {
			rep.Unplaced = append(rep.Unplaced, fmt.Sprintf("%s %s: %v", re.Key, re.Addr, re.Err))
		} else {
			rep.Unplaced = append(rep.Unplaced, err.Error())
		}
	}
	holders := map[string][]string{} // pool/family -> Services
	for _, as := range snapshot {
		for _, ip := range a.Addrs(as.Service.Key) {
			if p, ok := a.PoolOf(ip); ok {
				k := p + "/" + ipam.FamilyOf(ip).String()
				holders[k] = append(holders[k], as.Service.Key)
			}
		}
	}
	// Report pools in the config's order, as the user wrote them.
	stats := map[string]ipam.Stats{}
	for _, s := range a.Stats() {
		stats[s.Pool+"/"+s.Family.String()] = s
	}
	for _, p := range ps.Config.Pools {
		for _, f := range p.Families() {
			k := p.Name + "/" + f.String()
			s, ok := stats[k]
			if !ok {
				continue
			}
			free := new(big.Int).Sub(s.Total, big.NewInt(int64(s.Used)))
			pct := 0.0
			if s.Total.Sign() > 0 {
				pct, _ = new(big.Rat).SetFrac(big.NewInt(int64(100*s.Used)), s.Total).Float64()
			}
			rep.Pools = append(rep.Pools, PoolUsage{
				Pool: p.Name, Family: f.String(), Size: s.Total.String(), Used: s.Used, Free: free.String(),
				Percent: pct, Full: pct >= FullPercent, AutoAssign: p.AutoAssign,
				Namespaces: p.Namespaces, Services: holders[k],
			})
		}
	}
	return rep, nil
}

// listShort joins up to n items and counts the rest, to keep table rows
// short; -o json lists them all.
func listShort(items []string, n int) string {
	switch {
	case len(items) == 0:
		return "<none>"
	case len(items) <= n:
		return strings.Join(items, ",")
	}
	return fmt.Sprintf("%s + %d more", strings.Join(items[:n], ","), len(items)-n)
}
