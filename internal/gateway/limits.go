package gateway

import (
	"net/http"
	"sync"
	"syscall"

	"github.com/parleyhq/parley/internal/clientip"
)

// FDReserve is the number of file descriptors DeriveMaxConnections leaves
// for everything that is neither a WebSocket nor a pending HTTP
// connection: the store, NATS, media sockets, log files.
const FDReserve = 64

// DeriveMaxConnections is the default --max-connections (when it is left at
// 0): the process's RLIMIT_NOFILE soft limit minus FDReserve minus
// httpMaxConns (HTTP connections not yet upgraded) — the latter counted at
// most as a quarter of the rest — and at least 1. It returns
// 0 (no cap) when the limit cannot be read or is unlimited; nofile is the
// limit read.
func DeriveMaxConnections(httpMaxConns int) (max int, nofile uint64) {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return 0, 0
	}
	return deriveFromNofile(rl.Cur, httpMaxConns), rl.Cur
}

func deriveFromNofile(nofile uint64, httpMaxConns int) int {
	const unlimited = 1 << 40 // RLIM_INFINITY and anything like it
	if nofile == 0 || nofile >= unlimited {
		return 0
	}
	avail := int64(nofile) - FDReserve
	// On a small limit (1024 in some containers) the HTTP pool would take
	// every descriptor; count at most a quarter of what is left for it, so
	// WebSockets keep three quarters (the server warns at start-up when
	// the limit is that small: raise `ulimit -n` or --http-max-connections
	// must come down).
	httpShare := min(int64(max(httpMaxConns, 0)), avail/4)
	return int(max(avail-httpShare, 1))
}

// ipKey is the per-IP key of a request: the IPv4 address, or the /64 of an
// IPv6 address (one host usually holds a whole /64).
func ipKey(r *http.Request) string { return clientip.Key(clientip.FromRequest(r)) }

// ipSlots counts live (and upgrading) WebSocket connections per IP key.
// An entry exists only while its count is positive, so the map holds at
// most as many keys as there are connections, which the node cap bounds.
type ipSlots struct {
	mu sync.Mutex
	m  map[string]int
}

// take reserves one slot for key unless it already holds limit.
func (s *ipSlots) take(key string, limit int) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m[key] >= limit {
		return false
	}
	if s.m == nil {
		s.m = make(map[string]int)
	}
	s.m[key]++
	return true
}

// give returns a slot taken by take.
func (s *ipSlots) give(key string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if n := s.m[key]; n > 1 {
		s.m[key] = n - 1
	} else {
		delete(s.m, key)
	}
}

// count returns the slots held by key and the number of keys tracked.
func (s *ipSlots) count(key string) (n, keys int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.m[key], len(s.m)
}
