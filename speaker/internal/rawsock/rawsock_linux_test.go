package rawsock

import (
	"errors"
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"
	"unsafe"
)

func udp(t *testing.T) (*net.UDPConn, syscall.RawConn) {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	return c, rc
}

// TestRoundTrip: a datagram sent with Sendto is read whole by Recvfrom
// with its source, after Recvfrom waited in the poller for it; deadlines
// and Close end a wait.
func TestRoundTrip(t *testing.T) {
	a, arc := udp(t)
	b, brc := udp(t)
	to := b.LocalAddr().(*net.UDPAddr).AddrPort()
	sa := syscall.RawSockaddrInet4{Family: syscall.AF_INET, Addr: to.Addr().As4()}
	p := (*[2]byte)(unsafe.Pointer(&sa.Port))
	p[0], p[1] = byte(to.Port()>>8), byte(to.Port())

	got := make(chan error, 1)
	buf := make([]byte, 64)
	var from syscall.RawSockaddrAny
	var n int
	go func() {
		var err error
		n, err = Recvfrom(brc, buf, &from)
		got <- err
	}()
	time.Sleep(20 * time.Millisecond) // the reader waits in the poller
	if err := Sendto(arc, []byte("hello"), unsafe.Pointer(&sa), syscall.SizeofSockaddrInet4); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-got:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Recvfrom did not return within 5 s of the send")
	}
	if string(buf[:n]) != "hello" {
		t.Errorf("read %q, want hello", buf[:n])
	}
	s4 := (*syscall.RawSockaddrInet4)(unsafe.Pointer(&from))
	fp := (*[2]byte)(unsafe.Pointer(&s4.Port))
	src := netip.AddrPortFrom(netip.AddrFrom4(s4.Addr), uint16(fp[0])<<8|uint16(fp[1]))
	if want := a.LocalAddr().(*net.UDPAddr).AddrPort(); src != want {
		t.Errorf("source %v, want %v", src, want)
	}

	if err := b.SetReadDeadline(time.Now().Add(20 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	if _, err := Recvfrom(brc, buf, &from); !errors.Is(err, syscall.EAGAIN) && !isTimeout(err) {
		t.Errorf("Recvfrom past the deadline: %v, want a timeout", err)
	}
	if err := b.SetReadDeadline(time.Time{}); err != nil {
		t.Fatal(err)
	}
	go func() {
		_, err := Recvfrom(brc, buf, &from)
		got <- err
	}()
	time.Sleep(20 * time.Millisecond)
	_ = b.Close()
	select {
	case err := <-got:
		if err == nil {
			t.Error("Recvfrom on a closed socket succeeded")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Recvfrom still waits 5 s after Close")
	}
	// A datagram larger than UDP allows: the kernel's error, at once.
	if err := Sendto(arc, make([]byte, 70000), unsafe.Pointer(&sa), syscall.SizeofSockaddrInet4); !errors.Is(err, syscall.EMSGSIZE) {
		t.Errorf("Sendto of 70,000 bytes: %v, want EMSGSIZE", err)
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
