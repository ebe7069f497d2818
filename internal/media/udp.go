package media

import (
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/pion/ice/v4"
	"github.com/pion/logging"
	"github.com/pion/stun/v4"

	"github.com/parleyhq/parley/internal/safe"
)

// ufragWaiters is the ufrag trick shared by the UDP and TCP paths. pion's
// ICE agent (lite included) only accepts binding requests whose USERNAME is
// exactly "localUfrag:remoteUfrag", and mediasoup-client never signals its
// ICE ufrag. So each inspected STUN binding request whose USERNAME starts
// with the ufrag of a transport still waiting for its peer (and that is
// signed with that transport's password) hands the part after the colon
// (the client's ufrag) to that transport, which then starts its agent. The
// packet itself continues to the mux; the client retransmits its checks,
// and the next one is accepted.
type ufragWaiters struct {
	mu      sync.Mutex
	waiting map[string]waiter

	log    *slog.Logger // for contained panics
	panics safe.Counter
}

type waiter struct {
	pwd string // the transport's ICE password: the request must be signed with it
	fn  func(remoteUfrag string)
}

func newUfragWaiters(lf logging.LoggerFactory) *ufragWaiters {
	w := &ufragWaiters{waiting: map[string]waiter{}}
	if f, ok := lf.(*pionLogFactory); ok {
		w.log, w.panics = f.log, f.panics
	}
	return w
}

// expect registers fn for binding requests addressed to localUfrag and
// signed with localPwd (so that nobody but the signalled client can pick
// the remote ufrag); fn runs once, on a mux goroutine, and must not block.
func (s *ufragWaiters) expect(localUfrag, localPwd string, fn func(remoteUfrag string)) {
	s.mu.Lock()
	s.waiting[localUfrag] = waiter{pwd: localPwd, fn: fn}
	s.mu.Unlock()
}

func (s *ufragWaiters) forget(localUfrag string) {
	s.mu.Lock()
	delete(s.waiting, localUfrag)
	s.mu.Unlock()
}

// inspect runs b (one datagram, or one RFC 4571 frame on TCP) through the
// waiters. It runs on the node-wide mux reader goroutines (pion's), so a
// panic in it is contained here: logged, counted as safe.MediaPacket, the
// packet dropped, and the reader keeps going.
func (s *ufragWaiters) inspect(b []byte) {
	defer safe.Recover(s.log, s.panics, safe.MediaPacket, nil)
	if h := sniffHook.Load(); h != nil {
		(*h)(b)
	}
	if !stun.IsMessage(b) {
		return
	}
	s.mu.Lock()
	n := len(s.waiting)
	s.mu.Unlock()
	if n == 0 {
		return
	}
	m, local, remote, ok := parseBindingRequest(b)
	if !ok {
		return
	}
	s.mu.Lock()
	w, ok := s.waiting[local]
	s.mu.Unlock()
	// MESSAGE-INTEGRITY with the transport's password (RFC 8489 14.5).
	if !ok || stun.NewShortTermIntegrity(w.pwd).Check(m) != nil {
		return
	}
	s.mu.Lock()
	delete(s.waiting, local)
	s.mu.Unlock()
	w.fn(remote)
}

// sniffHook, when set (tests only), sees every packet inspect reads; a
// test makes it panic to check that the node-wide reader survives.
var sniffHook atomic.Pointer[func(b []byte)]

// parseBindingRequest decodes b (a copy is taken; b is not modified) as a
// STUN binding request (RFC 8489; ICE usage RFC 8445 section 7.2.2) and
// splits its USERNAME "localUfrag:remoteUfrag" (as seen from the server).
// ok is false for anything else: not STUN, not a binding request, no
// USERNAME, no colon, an empty or over-256-byte remote half.
func parseBindingRequest(b []byte) (m *stun.Message, local, remote string, ok bool) {
	if !stun.IsMessage(b) {
		return nil, "", "", false
	}
	m = &stun.Message{Raw: append([]byte(nil), b...)}
	if m.Decode() != nil || m.Type != stun.BindingRequest {
		return nil, "", "", false
	}
	var u stun.Username
	if u.GetFrom(m) != nil {
		return nil, "", "", false
	}
	local, remote, ok = strings.Cut(string(u), ":")
	if !ok || remote == "" || len(remote) > 256 {
		return nil, "", "", false
	}
	return m, local, remote, true
}

// ufragSniffer wraps the UDP socket under an ice.UDPMuxDefault and runs
// every datagram it reads through its ufragWaiters.
type ufragSniffer struct {
	*net.UDPConn
	*ufragWaiters
}

func newUfragSniffer(c *net.UDPConn, lf logging.LoggerFactory) *ufragSniffer {
	return &ufragSniffer{UDPConn: c, ufragWaiters: newUfragWaiters(lf)}
}

// ReadFromAddrPort implements ice.AddrPortReaderWriter (the mux's fast path).
func (s *ufragSniffer) ReadFromAddrPort(b []byte) (int, netip.AddrPort, error) {
	n, addr, err := s.UDPConn.ReadFromUDPAddrPort(b)
	if err == nil {
		s.inspect(b[:n])
	}
	return n, addr, err
}

// WriteToAddrPort implements ice.AddrPortReaderWriter.
func (s *ufragSniffer) WriteToAddrPort(b []byte, addr netip.AddrPort) (int, error) {
	return s.UDPConn.WriteToUDPAddrPort(b, addr)
}

// ReadFrom implements net.PacketConn.
func (s *ufragSniffer) ReadFrom(b []byte) (int, net.Addr, error) {
	n, addr, err := s.UDPConn.ReadFrom(b)
	if err == nil {
		s.inspect(b[:n])
	}
	return n, addr, err
}

// udpEndpoint is one UDP socket with its ICE mux and sniffer. With
// Config.UDPMuxPort there is one, shared by every transport; otherwise each
// transport owns one.
type udpEndpoint struct {
	sniffer *ufragSniffer
	mux     *ice.UDPMuxDefault
	port    int
	shared  bool
}

func (e *udpEndpoint) close() error {
	return e.mux.Close() // closes the socket too
}

func openEndpoint(ip string, port int, lf logging.LoggerFactory) (*udpEndpoint, error) {
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.ParseIP(ip), Port: port})
	if err != nil {
		return nil, err
	}
	_ = c.SetReadBuffer(1 << 20)
	_ = c.SetWriteBuffer(1 << 20)
	sn := newUfragSniffer(c, lf)
	mux := ice.NewUDPMuxDefault(ice.UDPMuxParams{
		Logger:  lf.NewLogger("udpmux"),
		UDPConn: sn,
	})
	return &udpEndpoint{sniffer: sn, mux: mux, port: c.LocalAddr().(*net.UDPAddr).Port}, nil
}

// portAllocator hands out ports of [min,max] round-robin for per-transport
// sockets (0,0: ephemeral).
type portAllocator struct {
	mu       sync.Mutex
	min, max uint16
	next     uint32
}

var errNoPort = errors.New("no free UDP port in the RTC port range")

func (p *portAllocator) open(ip string, lf logging.LoggerFactory) (*udpEndpoint, error) {
	if p.min == 0 {
		return openEndpoint(ip, 0, lf)
	}
	span := uint32(p.max-p.min) + 1
	for i := uint32(0); i < span; i++ {
		p.mu.Lock()
		port := int(p.min) + int(p.next%span)
		p.next++
		p.mu.Unlock()
		e, err := openEndpoint(ip, port, lf)
		if err == nil {
			return e, nil
		}
	}
	return nil, errNoPort
}

// localIPs lists the IPv4 addresses to announce as host candidates:
// announcedIP when set, else the listen IP when it is not 0.0.0.0, else
// every non-loopback, non-link-local IPv4 of ifaces (net.InterfaceAddrs
// when nil); plus 127.0.0.1 with includeLoopback. Empty when none is found.
func localIPs(listenIP, announcedIP string, includeLoopback bool, ifaces ...func() ([]net.Addr, error)) []string {
	var out []string
	seen := map[string]bool{}
	add := func(s string) {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	lip := net.ParseIP(listenIP)
	switch {
	case announcedIP != "":
		add(announcedIP)
	case !lip.IsUnspecified():
		add(lip.String())
	default:
		list := net.InterfaceAddrs
		if len(ifaces) > 0 && ifaces[0] != nil {
			list = ifaces[0]
		}
		addrs, _ := list()
		for _, a := range addrs {
			ipn, ok := a.(*net.IPNet)
			if !ok || ipn.IP.To4() == nil || ipn.IP.IsLoopback() || ipn.IP.IsLinkLocalUnicast() {
				continue
			}
			add(ipn.IP.String())
		}
	}
	if includeLoopback && (lip.IsUnspecified() || lip.IsLoopback()) {
		add("127.0.0.1")
	}
	return out
}

const alnum = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"

func randString(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(fmt.Sprintf("crypto/rand: %v", err))
	}
	for i := range b {
		b[i] = alnum[int(b[i])%len(alnum)]
	}
	return string(b)
}
