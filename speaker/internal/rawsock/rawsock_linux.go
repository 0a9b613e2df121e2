// Package rawsock reads and writes datagram sockets with non-blocking
// recvfrom and sendto made as raw system calls, waiting for readiness in
// Go's network poller as the net and os packages do.
//
// Why: every ordinary system call a goroutine makes wakes the Go runtime's
// monitor thread (sysmon) if it sleeps, so that it could take the
// processor back should the call block. An idle speaker makes dozens of
// such calls a second (memberlist's pings and acks, the ARP and NDP
// frames it hears), and on the lab's virtual machines those wakeups and
// the context switches they cost were the largest share of its idle CPU
// (perf: sysmon's nanosleep and futex calls were 15 % of the samples, and
// more sat in the scheduler's switch path). A call with MSG_DONTWAIT never
// blocks, so there is nothing for sysmon to take back, and the raw form
// does not wake it.
package rawsock

import (
	"syscall"
	"unsafe"
)

// Recvfrom reads one datagram into buf (not empty) and its source address
// into from, waiting in the poller while there is none.
func Recvfrom(rc syscall.RawConn, buf []byte, from *syscall.RawSockaddrAny) (int, error) {
	var (
		n    int
		serr error
	)
	err := rc.Read(func(fd uintptr) bool {
		for {
			l := uint32(syscall.SizeofSockaddrAny)
			got, _, e := syscall.RawSyscall6(syscall.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&buf[0])), uintptr(len(buf)),
				syscall.MSG_DONTWAIT, uintptr(unsafe.Pointer(from)), uintptr(unsafe.Pointer(&l)))
			switch e {
			case 0:
				n = int(got)
				return true
			case syscall.EINTR:
				continue
			case syscall.EAGAIN:
				return false // wait in the poller
			default:
				serr = e
				return true
			}
		}
	})
	if err == nil {
		err = serr
	}
	return n, err
}

// Sendto sends b as one datagram to the socket address at to, salen bytes
// long, waiting in the poller while the send buffer is full.
func Sendto(rc syscall.RawConn, b []byte, to unsafe.Pointer, salen uintptr) error {
	var p unsafe.Pointer
	if len(b) > 0 {
		p = unsafe.Pointer(&b[0])
	}
	var serr error
	err := rc.Write(func(fd uintptr) bool {
		for {
			_, _, e := syscall.RawSyscall6(syscall.SYS_SENDTO, fd, uintptr(p), uintptr(len(b)),
				syscall.MSG_DONTWAIT|syscall.MSG_NOSIGNAL, uintptr(to), salen)
			switch e {
			case 0:
				return true
			case syscall.EINTR:
				continue
			case syscall.EAGAIN:
				return false // the send buffer is full: wait in the poller
			default:
				serr = e
				return true
			}
		}
	})
	if err == nil {
		err = serr
	}
	return err
}
