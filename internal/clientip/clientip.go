// Package clientip names a client by its network address for per-address
// limits (REST register/login buckets, WebSocket connection caps). One
// place, so that every limit keys a client the same way.
package clientip

import (
	"net"
	"net/http"
	"net/netip"
)

// FromRequest is the TCP peer's address of r without the port
// (forwarding headers are not trusted); r.RemoteAddr itself when it has no
// port.
func FromRequest(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// Key is the limit key of an address: the address itself for IPv4
// (IPv4-mapped IPv6 included), its /64 for IPv6 (one host usually holds a
// whole /64, so per-address buckets would be free to multiply), and the
// input unchanged when it is not an IP address.
func Key(ip string) string {
	a, err := netip.ParseAddr(ip)
	if err != nil {
		return ip
	}
	a = a.Unmap()
	if a.Is4() {
		return a.String()
	}
	p, _ := a.Prefix(64)
	return p.String()
}
