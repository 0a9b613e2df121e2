//go:build linux && e2e

package layer2

import (
	"bytes"
	"errors"
	"net"
	"os"
	"testing"
	"time"

	"github.com/mdlayher/packet"
)

// TestRawConn: the connections Dial returns read and write frames with
// raw system calls; a frame arrives whole with its sender's MAC, one sent
// reaches the addressed host whole, a deadline still ends a read, and a
// read or write after Close says net.ErrClosed, which the responder tells
// from a failing socket.
func TestRawConn(t *testing.T) {
	l := newLab(t)
	var node Conns
	if err := inNetns(l.node, func() error {
		ifi, err := net.InterfaceByName("va")
		if err != nil {
			return err
		}
		node, err = Dial(ifi)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer node.Close()
	if _, ok := node.ARP.(*rawConn); !ok {
		t.Fatalf("Dial's ARP connection is a %T, not a rawConn", node.ARP)
	}
	var client *packet.Conn
	var clientMAC net.HardwareAddr
	if err := inNetns(l.client, func() error {
		ifi, err := net.InterfaceByName("vb")
		if err != nil {
			return err
		}
		clientMAC = ifi.HardwareAddr
		client, err = packet.Listen(ifi, packet.Raw, etherTypeARP, nil)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer client.Close()

	frame := make([]byte, 60)
	copy(frame, []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	copy(frame[6:], clientMAC)
	frame[12], frame[13] = 0x08, 0x06
	copy(frame[14:], []byte("not really ARP, but an ARP EtherType"))
	if _, err := client.WriteTo(frame, &packet.Addr{HardwareAddr: net.HardwareAddr(frame[0:6])}); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, maxFrameLength)
	if err := node.ARP.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	n, from, err := node.ARP.ReadFrom(buf)
	if err != nil {
		t.Fatalf("ReadFrom: %v", err)
	}
	if !bytes.Equal(buf[:n], frame) {
		t.Errorf("read % x, want % x", buf[:n], frame)
	}
	if a, ok := from.(*packet.Addr); !ok || a.HardwareAddr.String() != clientMAC.String() {
		t.Errorf("from = %v, want the client's MAC %s", from, clientMAC)
	}

	// The other way: the node writes to the client's MAC.
	reply := bytes.Clone(frame)
	copy(reply, clientMAC)
	copy(reply[6:], node.ARP.LocalAddr().(*packet.Addr).HardwareAddr)
	copy(reply[14:], []byte("the node's reply, also not ARP"))
	if n, err := node.ARP.WriteTo(reply, &packet.Addr{HardwareAddr: clientMAC}); err != nil || n != len(reply) {
		t.Fatalf("WriteTo = %d, %v; want %d, nil", n, err, len(reply))
	}
	if err := client.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	for {
		n, _, err := client.ReadFrom(buf)
		if err != nil {
			t.Fatalf("the client did not get the node's frame: %v", err)
		}
		if bytes.Equal(buf[:n], reply) {
			break
		}
	}

	// Nothing more comes: the deadline ends the read.
	if err := node.ARP.SetReadDeadline(time.Now().Add(50 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	if _, _, err := node.ARP.ReadFrom(buf); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("ReadFrom past the deadline: %v, want a timeout", err)
	}

	// Closed while a read waits.
	if err := node.ARP.SetReadDeadline(time.Time{}); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, _, err := node.ARP.ReadFrom(buf)
		done <- err
	}()
	time.Sleep(50 * time.Millisecond)
	if err := node.ARP.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, net.ErrClosed) {
			t.Errorf("ReadFrom on a closed connection: %v, want net.ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("ReadFrom still waits 5 s after Close")
	}
	if _, err := node.ARP.WriteTo(reply, &packet.Addr{HardwareAddr: clientMAC}); !errors.Is(err, net.ErrClosed) {
		t.Errorf("WriteTo on a closed connection: %v, want net.ErrClosed", err)
	}
}
