package api

// Defaults for where the controller and speaker find their objects.
const (
	DefaultNamespace  = "ironlb-system"
	DefaultConfigName = "config"
	// MemberlistSecret holds the memberlist encryption key under
	// MemberlistSecretKey; the controller creates it when absent.
	MemberlistSecret    = "memberlist"
	MemberlistSecretKey = "secretkey"
)

// Annotations on a Service. Each has a MetalLB spelling that is honoured
// too, so Services migrated from MetalLB keep their requests.
const (
	// AnnotationLoadBalancerIPs requests addresses: comma-separated, at
	// most one per IP family.
	AnnotationLoadBalancerIPs = "ironlb.io/loadBalancerIPs"
	// AnnotationAddressPool names the pool to allocate from.
	AnnotationAddressPool = "ironlb.io/address-pool"
	// AnnotationAllowSharedIP is the sharing key: Services with the same key
	// and disjoint ports may share an address.
	AnnotationAllowSharedIP = "ironlb.io/allow-shared-ip"

	MetalLBAnnotationLoadBalancerIPs = "metallb.universe.tf/loadBalancerIPs"
	MetalLBAnnotationAddressPool     = "metallb.universe.tf/address-pool"
	MetalLBAnnotationAllowSharedIP   = "metallb.universe.tf/allow-shared-ip"
)

// LabelExcludeFromLB marks nodes that must never announce an address.
const LabelExcludeFromLB = "node.kubernetes.io/exclude-from-external-load-balancers"

// Event reasons.
const (
	EventIPAllocated      = "IPAllocated"
	EventAllocationFailed = "AllocationFailed"
	EventNodeAssigned     = "nodeAssigned"
	EventConfigLoaded     = "ConfigLoaded"
	EventConfigRejected   = "ConfigRejected"
	// EventDuplicateAnnouncer: another MAC announces an address this
	// node's speaker serves (a foreign host, or a second speaker).
	EventDuplicateAnnouncer = "DuplicateAnnouncer"
)
