package gateway

import "net/http"

// Test-only access for the external test package.

// FramingCase is one RFC 6455 rule for the socket-level table test.
type FramingCase struct {
	Name, Rule string
	Frames     [][]byte
	Want       int
}

// FramingCases returns the cases FuzzFrameReader is seeded with.
func FramingCases() []FramingCase {
	out := make([]FramingCase, len(framingCases))
	for i, c := range framingCases {
		out[i] = FramingCase{c.name, c.rule, c.frames, c.want}
	}
	return out
}

// MaskedFrame builds a masked client frame (first byte FIN|RSV|opcode).
func MaskedFrame(first byte, payload string) []byte { return mf(first, payload) }

// SetWriterTestHook installs fn to run in every writer before each batch,
// with the connection's id; call it before the first connection.
func SetWriterTestHook(g *Gateway, fn func(connID string)) {
	g.writerTestHook = func(c *Conn) { fn(c.id) }
}

// IPKey is the per-IP key of a remote address (IPv4, or IPv6 /64).
func IPKey(remoteAddr string) string {
	return ipKey(&http.Request{RemoteAddr: remoteAddr})
}

// DeriveFromNofile is DeriveMaxConnections for a given RLIMIT_NOFILE.
func DeriveFromNofile(nofile uint64, httpMaxConns int) int {
	return deriveFromNofile(nofile, httpMaxConns)
}

// IPSlots returns the connections counted for an IP key and the number of
// keys tracked.
func IPSlots(g *Gateway, key string) (n, keys int) { return g.ipSlots.count(key) }

// WriterDone is closed when c's writer has ended (its socket written for
// the last time or abandoned).
func WriterDone(c any) <-chan struct{} { return c.(*Conn).writerDone }

// Queued is the bytes queued on c and not yet taken by its writer.
func Queued(c any) int {
	cc := c.(*Conn)
	cc.mu.Lock()
	defer cc.mu.Unlock()
	return cc.queued
}

// SetUpgradeTestHook installs fn to run before every upgrade (after the
// request was authenticated and admitted); call it before serving.
func SetUpgradeTestHook(g *Gateway, fn func()) { g.upgradeTestHook = fn }
