package membership

import (
	"errors"
	"strings"
	"testing"
)

// testKey returns a valid key; different seeds give different keys.
func testKey(seed byte) []byte {
	k := make([]byte, KeySize)
	for i := range k {
		k[i] = seed + byte(i)
	}
	return k
}

func TestNewRejectsBadConfig(t *testing.T) {
	tests := []struct {
		name    string
		cfg     Config
		wantKey bool // errors.Is(err, ErrKey)
		wantMsg string
	}{
		{name: "no name", cfg: Config{Key: testKey(1)}, wantMsg: "node name is required"},
		{name: "no key", cfg: Config{Name: "a"}, wantKey: true, wantMsg: "got 0 bytes"},
		{name: "empty key", cfg: Config{Name: "a", Key: []byte{}}, wantKey: true, wantMsg: "got 0 bytes"},
		{name: "AES-128 key", cfg: Config{Name: "a", Key: make([]byte, 16)}, wantKey: true, wantMsg: "got 16 bytes"},
		{name: "31 bytes", cfg: Config{Name: "a", Key: make([]byte, 31)}, wantKey: true, wantMsg: "must be 32 bytes"},
		{name: "33 bytes", cfg: Config{Name: "a", Key: make([]byte, 33)}, wantKey: true, wantMsg: "got 33 bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g, err := New(tt.cfg)
			if err == nil {
				_ = g.Shutdown()
				t.Fatal("New succeeded")
			}
			if got := errors.Is(err, ErrKey); got != tt.wantKey {
				t.Errorf("errors.Is(%v, ErrKey) = %v, want %v", err, got, tt.wantKey)
			}
			if !strings.Contains(err.Error(), tt.wantMsg) {
				t.Errorf("error %q does not mention %q", err, tt.wantMsg)
			}
		})
	}
}
