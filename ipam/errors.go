package ipam

import (
	"errors"
	"fmt"
	"net/netip"
)

// Sentinel errors. Every error the allocator returns wraps exactly one of
// them, so callers can pick an Event reason with errors.Is, while the
// message itself already says what to do.
var (
	// ErrExhausted: every address of the eligible pools is taken.
	ErrExhausted = errors.New("address pool exhausted")
	// ErrNotInPool: a requested address lies outside every pool.
	ErrNotInPool = errors.New("address not in any pool")
	// ErrUnknownPool: a Service names a pool that does not exist.
	ErrUnknownPool = errors.New("unknown address pool")
	// ErrNoPool: no pool can serve this family and namespace.
	ErrNoPool = errors.New("no eligible address pool")
	// ErrNamespace: the pool is restricted to other namespaces.
	ErrNamespace = errors.New("namespace not allowed")
	// ErrWrongPool: a requested address is not in the requested pool.
	ErrWrongPool = errors.New("address not in requested pool")
	// ErrReserved: a requested .0/.255 address in an avoid-buggy-ips pool.
	ErrReserved = errors.New("address reserved")
	// ErrInUse: the address is held by a Service it cannot be shared with.
	ErrInUse = errors.New("address in use")
	// ErrSharing: both Services agreed to share, but their ports or
	// traffic policies clash. It is a kind of ErrInUse.
	ErrSharing = errors.New("sharing conflict")
	// ErrInvalid: malformed input (bad key, invalid address, bad pools).
	ErrInvalid = errors.New("invalid input")
)

// Error is an allocator error with a message for users and a sentinel for
// code.
type Error struct {
	Kind error
	Msg  string
}

func (e *Error) Error() string { return e.Msg }
func (e *Error) Unwrap() error { return e.Kind }

func newErr(kind error, format string, args ...any) error {
	return &Error{Kind: kind, Msg: fmt.Sprintf(format, args...)}
}

// InUseError says which Service holds an address and why it cannot be
// shared. It matches ErrInUse, and ErrSharing when both Services asked to
// share.
type InUseError struct {
	Addr   netip.Addr
	Holder string // namespace/name of the Service in the way
	Reason string
	// Sharing is true when both Services carry the same sharing key, so the
	// conflict is in their ports or traffic policies.
	Sharing bool
}

func (e *InUseError) Error() string {
	return fmt.Sprintf("address %s is in use by %s: %s", e.Addr, e.Holder, e.Reason)
}

func (e *InUseError) Is(target error) bool {
	return target == ErrInUse || (e.Sharing && target == ErrSharing)
}
