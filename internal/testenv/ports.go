package testenv

import (
	"math/rand/v2"
	"net"
	"strconv"
	"sync"
	"testing"
)

// Ports that a test picks now and a server binds later (a node process, an
// SFU's TCP or UDP mux port) are taken from [portLow, portHigh): below
// Linux's ephemeral range (32768–60999), where every outgoing connection
// of every test process running in parallel takes its local port. A port
// probed in the ephemeral range and bound a moment later was taken by such
// a connection more than once in CI ("bind: address already in use").
const (
	portLow  = 20000
	portHigh = 32000
)

var handedOut struct {
	sync.Mutex
	ports map[int]bool
}

// FreePort returns a port in [20000, 32000) that is free on all addresses
// for network ("tcp" or "udp") right now and that no earlier call in this
// process returned.
func FreePort(t testing.TB, network string) int {
	t.Helper()
	handedOut.Lock()
	defer handedOut.Unlock()
	if handedOut.ports == nil {
		handedOut.ports = map[int]bool{}
	}
	for range 1000 {
		p := portLow + rand.IntN(portHigh-portLow)
		if handedOut.ports[p] {
			continue
		}
		addr := net.JoinHostPort("0.0.0.0", strconv.Itoa(p))
		var err error
		switch network {
		case "tcp":
			var l net.Listener
			if l, err = net.Listen("tcp4", addr); err == nil {
				l.Close()
			}
		case "udp":
			var c net.PacketConn
			if c, err = net.ListenPacket("udp4", addr); err == nil {
				c.Close()
			}
		default:
			t.Fatalf("FreePort: network %q", network)
		}
		if err == nil {
			handedOut.ports[p] = true
			return p
		}
	}
	t.Fatalf("FreePort: no free %s port in [%d, %d)", network, portLow, portHigh)
	return 0
}
