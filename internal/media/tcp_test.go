package media

import (
	"encoding/binary"
	"errors"
	"io"
	"net"
	"testing"
	"time"
)

// TestSniffingConnReadsTheFirstFramedBindingRequest: the first RFC 4571
// frame read through a sniffingConn reaches the waiters however the reads
// are split, and the bytes read are unchanged.
func TestSniffingConnReadsTheFirstFramedBindingRequest(t *testing.T) {
	const pwd = "srvpassword-0123456789"
	frame := func(b []byte) []byte {
		out := make([]byte, 2+len(b))
		binary.BigEndian.PutUint16(out, uint16(len(b)))
		copy(out[2:], b)
		return out
	}
	for _, tc := range []struct {
		name  string
		first []byte
		want  string
	}{
		{"binding-request", frame(bindingRequest(t, "srvufrag:cliufrag", pwd)), "cliufrag"},
		{"wrong-password", frame(bindingRequest(t, "srvufrag:evil", "wrong-password-0123456")), ""},
		{"not-stun", frame([]byte{0x80, 0x60, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9}), ""},
		{"oversized", append([]byte{0xff, 0xff}, make([]byte, 100)...), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newUfragWaiters(nil)
			var got []string
			w.expect("srvufrag", pwd, func(r string) { got = append(got, r) })
			a, b := net.Pipe()
			defer a.Close()
			defer b.Close()
			// A second frame must not be inspected (the mux routes by the first).
			stream := append(append([]byte(nil), tc.first...), frame(bindingRequest(t, "srvufrag:second", pwd))...)
			go func() {
				for i := range stream { // one byte per write
					if _, err := a.Write(stream[i : i+1]); err != nil {
						return
					}
				}
			}()
			sc := &sniffingConn{Conn: b, waiters: w}
			read := make([]byte, len(stream))
			for off := 0; off < len(read); {
				n := min(3, len(read)-off) // odd-sized reads, like header then body
				if _, err := io.ReadFull(sc, read[off:off+n]); err != nil {
					t.Fatal(err)
				}
				off += n
			}
			if string(read) != string(stream) {
				t.Fatal("bytes changed")
			}
			switch {
			case tc.want == "" && len(got) != 0:
				t.Fatalf("fired with %v", got)
			case tc.want != "" && (len(got) != 1 || got[0] != tc.want):
				t.Fatalf("got %v, want %s", got, tc.want)
			}
		})
	}
}

// flakyListener fails its first accepts with a non-closed error.
type flakyListener struct {
	net.Listener
	fails int
}

func (l *flakyListener) Accept() (net.Conn, error) {
	if l.fails > 0 {
		l.fails--
		return nil, errors.New("accept4: too many open files")
	}
	return l.Listener.Accept()
}

func TestSniffingListenerSurvivesAcceptErrorsAndStopsWhenClosed(t *testing.T) {
	ln, err := net.ListenTCP("tcp4", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	l := &sniffingListener{Listener: &flakyListener{Listener: ln, fails: 3}, waiters: newUfragWaiters(nil)}
	go func() {
		if c, err := net.Dial("tcp4", ln.Addr().String()); err == nil {
			defer c.Close()
			time.Sleep(time.Second)
		}
	}()
	c, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	_ = c.Close()
	done := make(chan error, 1)
	go func() { _, err := l.Accept(); done <- err }()
	_ = ln.Close()
	select {
	case err := <-done:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("after Close: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Accept still running after Close")
	}
}
