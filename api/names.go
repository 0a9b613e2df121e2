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

// The Service status condition the speakers maintain (kubectl shows it in
// `kubectl get svc -o yaml` and `kubectl describe`): who announces the
// Service's addresses, or why nobody does.
const (
	// ConditionAnnounced is the condition type. It is written by the
	// elected owner of the Service's first ingress address, through
	// server-side apply with field manager FieldManagerSpeaker, and only
	// when it changes. The controller writes status.loadBalancer and its
	// own ConditionAllocated with FieldManagerController; neither touches
	// the other's fields.
	ConditionAnnounced = "ironlb.io/Announced"

	// ReasonAnnounced (status True): every ingress address is announced.
	// The message is FormatAnnouncements' output.
	ReasonAnnounced = "Announced"
	// ReasonNoEligibleNode (False): no live speaker may announce an
	// address (node selectors, externalTrafficPolicy Local without a ready
	// endpoint, every node excluded or not Ready).
	ReasonNoEligibleNode = "NoEligibleNode"
	// ReasonAddressConflict (False): another host on the LAN answered the
	// probe for an address, so it is not announced.
	ReasonAddressConflict = "AddressConflict"
	// ReasonDuplicateAnnouncer (False): another MAC keeps claiming an
	// address this node announces and defends.
	ReasonDuplicateAnnouncer = "DuplicateAnnouncer"

	FieldManagerSpeaker    = "ironlb-speaker"
	FieldManagerController = "ironlb-controller"
)

// The Service status condition the controller maintains: why a Service
// does not hold, from the pools, the addresses it asks for. It survives a
// controller restart, which is how a restarted controller knows what it
// already said: it writes an AllocationFailed Event only when the failure
// differs from what the condition says.
const (
	// ConditionAllocated is the condition type. It is present, with
	// status False, only while the controller refuses the Service (or
	// keeps an address for it that no pool covers), and removed in the
	// status write that gives the Service its addresses. The controller
	// writes it with a strategic merge patch keyed by the condition type,
	// under FieldManagerController, so the speakers' ConditionAnnounced
	// in the same list is never touched. Its message is the text of the
	// AllocationFailed Event.
	ConditionAllocated = "ironlb.io/Allocated"

	// ReasonPoolExhausted: every address of the eligible pools is taken.
	ReasonPoolExhausted = "PoolExhausted"
	// ReasonAddressInUse: the requested address is held by a Service it
	// cannot be shared with.
	ReasonAddressInUse = "AddressInUse"
	// ReasonSharingConflict: both Services ask to share the address, but
	// their ports or traffic policies clash.
	ReasonSharingConflict = "SharingConflict"
	// ReasonAddressNotInPool: an address lies outside every pool (or the
	// requested pool); for a restored address, it is kept, and still
	// announced, until the config covers it again.
	ReasonAddressNotInPool = "AddressNotInPool"
	// ReasonAddressReserved: a requested .0 or .255 address in a pool
	// with avoid-buggy-ips.
	ReasonAddressReserved = "AddressReserved"
	// ReasonUnknownPool: the Service names a pool the config does not
	// define.
	ReasonUnknownPool = "UnknownPool"
	// ReasonNoEligiblePool: no pool serves the Service's family and
	// namespace.
	ReasonNoEligiblePool = "NoEligiblePool"
	// ReasonNoConfig: the address-pool ConfigMap is gone, so no new
	// address is given out.
	ReasonNoConfig = "NoConfig"
	// ReasonInvalidRequest: the Service's annotations or spec ask for
	// something that cannot be read or served as written.
	ReasonInvalidRequest = "InvalidRequest"
)

// More Event reasons, from the speaker's wire checks.
const (
	// EventAddressConflict: a probe for a new address was answered by
	// another host; the address is not announced until it is free.
	EventAddressConflict = "AddressConflict"
	// EventNotAnswering: nobody answered a check of an address another
	// node owns.
	EventNotAnswering = "NotAnswering"
	// EventWrongAnnouncer: a check of an address was answered by a MAC that
	// is not the owner's.
	EventWrongAnnouncer = "WrongAnnouncer"
)
