// Package gateway is the WebSocket endpoint: token check before the upgrade,
// the read loop (size limits, rate limits, violation counting, dispatch by
// message-type prefix), a bounded outbound queue drained by one writer per
// connection, and the heartbeat.
//
// Where a message type is handled: Gateway.Route registers a Handler for a
// prefix ("room", "typing", "presence", "media"); the server package wires
// them (internal/server/server.go).
package gateway

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/url"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gobwas/ws"
	"github.com/google/uuid"

	"github.com/parleyhq/parley/internal/auth"
	"github.com/parleyhq/parley/internal/hub"
	"github.com/parleyhq/parley/internal/metrics"
	"github.com/parleyhq/parley/internal/protocol"
	"github.com/parleyhq/parley/internal/safe"
	"github.com/parleyhq/parley/internal/wsdeflate"
)

// Session is a connection as handlers see it.
type Session interface {
	hub.Conn
	Name() string
	Claims() *auth.Claims
	// Reply encodes and sends one message to this connection: the answer
	// to its own request. It is admitted whenever the bytes queued before
	// it are under Options.QueueMaxBytes, whatever its own size (a join
	// reply is never refused for its size); Send (hub.Conn) keeps the
	// strict rule for everything else. A refusal closes with 4008.
	Reply(typ, id string, data any)
	// ReplyError sends an error frame carrying the request id (the Reply
	// admission rule).
	ReplyError(id string, err *protocol.Error)
	// Done is closed when the connection has ended.
	Done() <-chan struct{}
}

// Handler handles the client messages of one type prefix. A returned
// *protocol.Error becomes an error frame carrying env.ID; other errors become
// "internal". Handlers run on the connection's read goroutine, one message at
// a time per connection, and must not block on other clients. A panic in a
// handler is contained: it closes only that connection with 1011 and is
// counted in parley_panics_total{where="ws_reader"}.
type Handler interface {
	Handle(ctx context.Context, s Session, env protocol.Envelope) error
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(ctx context.Context, s Session, env protocol.Envelope) error

// Handle calls f.
func (f HandlerFunc) Handle(ctx context.Context, s Session, env protocol.Envelope) error {
	return f(ctx, s, env)
}

// Lifecycle is told when connections start and end (after the connection is
// registered in the hub and its connected frame queued, and after it was
// removed). A panic in Connected closes that connection with 1011; a panic
// in either is counted in parley_panics_total{where="connect_hook"} and
// the other lifecycles still run. Disconnected is called even for a
// connection whose Connected hooks panicked.
type Lifecycle interface {
	Connected(s Session, firstForUser bool)
	Disconnected(s Session, lastForUser bool)
}

// Options are the gateway's limits (from config.Config).
type Options struct {
	HeartbeatInterval time.Duration
	HeartbeatTimeout  time.Duration
	WriteTimeout      time.Duration
	MaxMessageBytes   int
	QueueMaxBytes     int
	MsgRate           float64
	MsgBurst          int
	// MsgBytesRate limits the bytes of client messages (inflated when
	// compressed) per second per connection, with a burst of 4 seconds'
	// worth and at least MaxMessageBytes; 0: no byte limit. Over it a
	// message is refused like one over MsgRate (rate_limited, strikes).
	MsgBytesRate     int
	RateLimitStrikes int
	ViolationLimit   int
	ViolationWindow  time.Duration
	// MaxConnections caps the node's WebSocket connections (0 = no cap;
	// the server derives a default from RLIMIT_NOFILE, see
	// DeriveMaxConnections). Over it the upgrade gets 503.
	MaxConnections int
	// MaxConnectionsPerUser caps one user's connections on this node
	// (0 = no cap). Over it the upgrade gets 429 rate_limited.
	MaxConnectionsPerUser int
	// MaxConnectionsPerIP caps the connections from one IPv4 address or
	// IPv6 /64 (0 = no cap). Over it the upgrade gets 429 rate_limited.
	MaxConnectionsPerIP int
	// AllowedOrigins, when not empty, are the browser origins
	// (scheme://host[:port], or "*") that may open a WebSocket
	// (PROTOCOL.md v1.1 §7, the CORS list): a request whose Origin header
	// is neither listed nor the server's own origin gets 403 before the
	// upgrade. A request without Origin (not a browser) is not affected.
	AllowedOrigins []string
	// Compression accepts permessage-deflate (RFC 7692) when a client
	// offers it, always with server_no_context_takeover and
	// client_no_context_takeover (see internal/wsdeflate).
	Compression bool
	// CompressionThreshold: frames shorter than this many bytes are
	// written uncompressed even on a connection that negotiated
	// compression. Only frames shared by many connections are ever
	// compressed (once, for all of them).
	CompressionThreshold int
	// CloseWait is how long, once the server has sent its close frame,
	// it waits for the peer's close frame or for the peer to hang up
	// before dropping the TCP connection (RFC 6455 §7.1.1); 0: 2 s.
	CloseWait time.Duration
}

// closeWait is Options.CloseWait with its default.
func (o *Options) closeWait() time.Duration {
	if o.CloseWait > 0 {
		return o.CloseWait
	}
	return 2 * time.Second
}

// Gateway serves GET /ws.
type Gateway struct {
	opts     Options
	verifier *auth.Verifier
	hub      *hub.Hub
	metrics  *metrics.Metrics
	log      *slog.Logger

	routes     map[string]Handler
	lifecycles []Lifecycle

	ipSlots ipSlots // per-IP connection counts (MaxConnectionsPerIP)

	draining atomic.Bool
	// wg counts the upgrades in progress and the connections being
	// served, for Shutdown to wait on. admitMu orders every Add against
	// Shutdown's draining flag: an Add after Shutdown began waiting
	// would be lost to it (sync.WaitGroup: an Add from zero must happen
	// before Wait).
	admitMu  sync.Mutex
	wg       sync.WaitGroup
	hookJobs chan func() // a few long-lived goroutines run connect hooks
	stop     chan struct{}
	stopOnce sync.Once

	writerTestHook  func(*Conn) // tests only: called by the writer before each batch
	upgradeTestHook func()      // tests only: called before each upgrade
}

// New creates a gateway. Call Route and OnLifecycle before serving, then Run
// the heartbeat loop.
func New(opts Options, v *auth.Verifier, h *hub.Hub, m *metrics.Metrics, log *slog.Logger) *Gateway {
	g := &Gateway{opts: opts, verifier: v, hub: h, metrics: m, log: log,
		routes: map[string]Handler{}, stop: make(chan struct{}), hookJobs: make(chan func())}
	// Connect hooks touch the store and need deep stacks; running them on
	// a few reused goroutines avoids growing a fresh stack per connect.
	for range 2 * runtime.GOMAXPROCS(0) {
		go func() {
			for {
				select {
				case fn := <-g.hookJobs:
					g.runJob(fn)
				case <-g.stop:
					return
				}
			}
		}()
	}
	return g
}

// runHook runs fn on a hook worker, or on a new goroutine when all are busy.
// A panic in fn kills neither the worker nor the node (runJob); fn should
// recover itself to clean up what it served (serve closes the connection
// with 1011).
func (g *Gateway) runHook(fn func()) {
	select {
	case g.hookJobs <- fn:
	default:
		go g.runJob(fn)
	}
}

// runJob runs one hook job, containing a panic that fn did not recover.
func (g *Gateway) runJob(fn func()) {
	defer safe.Recover(g.log, g.metrics, safe.ConnectHook, nil)
	fn()
}

// Route sends messages whose type starts with prefix + ":" to h.
func (g *Gateway) Route(prefix string, h Handler) { g.routes[prefix] = h }

// OnLifecycle registers l; Disconnected hooks run in reverse order.
func (g *Gateway) OnLifecycle(l Lifecycle) { g.lifecycles = append(g.lifecycles, l) }

// Draining reports whether shutdown has begun.
func (g *Gateway) Draining() bool { return g.draining.Load() }

// writeHTTPError writes a REST-style JSON error.
func writeHTTPError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": code, "message": msg})
}

// TokenFromRequest takes the token from ?token= or Authorization: Bearer.
func TokenFromRequest(r *http.Request) string {
	if h := r.Header.Get("Authorization"); h != "" {
		if len(h) > 7 && strings.EqualFold(h[:7], "bearer ") {
			return strings.TrimSpace(h[7:])
		}
		return ""
	}
	return r.URL.Query().Get("token")
}

// ServeHTTP authenticates and upgrades.
func (g *Gateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		writeHTTPError(w, http.StatusMethodNotAllowed, protocol.CodeBadRequest, "use GET")
		return
	}
	if !g.admit() {
		writeHTTPError(w, http.StatusServiceUnavailable, "unavailable", "server is shutting down")
		return
	}
	admitted := true
	defer func() {
		if admitted {
			g.wg.Done()
		}
	}()
	if !g.originAllowed(r) {
		writeHTTPError(w, http.StatusForbidden, protocol.CodeForbidden, "origin not allowed (--cors-origins)")
		return
	}
	tok := TokenFromRequest(r)
	if tok == "" {
		g.metrics.AuthFailures.Inc()
		writeHTTPError(w, http.StatusUnauthorized, protocol.CodeUnauthorized, "missing token")
		return
	}
	claims, err := g.verifier.Verify(tok)
	if err != nil {
		g.metrics.AuthFailures.Inc()
		writeHTTPError(w, http.StatusUnauthorized, protocol.CodeUnauthorized, err.Error())
		return
	}
	// Admission: a slot on the node, for the user and for the IP is
	// reserved before the upgrade (atomically, so concurrent upgrades
	// cannot overshoot) and given back when the connection has ended.
	switch g.hub.Reserve(claims.UserID, g.opts.MaxConnections, g.opts.MaxConnectionsPerUser) {
	case hub.NodeFull:
		writeHTTPError(w, http.StatusServiceUnavailable, "unavailable", "connection limit reached")
		return
	case hub.UserFull:
		writeHTTPError(w, http.StatusTooManyRequests, protocol.CodeRateLimited, "too many connections for this user")
		return
	}
	ip := ""
	if g.opts.MaxConnectionsPerIP > 0 {
		ip = ipKey(r)
		if !g.ipSlots.take(ip, g.opts.MaxConnectionsPerIP) {
			g.hub.Release(claims.UserID)
			writeHTTPError(w, http.StatusTooManyRequests, protocol.CodeRateLimited, "too many connections from this address")
			return
		}
	}
	release := func() {
		g.hub.Release(claims.UserID)
		if ip != "" {
			g.ipSlots.give(ip)
		}
	}
	var up ws.HTTPUpgrader
	var neg *wsdeflate.Negotiator
	if g.opts.Compression {
		neg = wsdeflate.NewNegotiator()
		up.Negotiate = neg.Negotiate
		// An extensions header the upgrader's scanner cannot parse would
		// fail the upgrade: decline it instead (docs/protocol.md), as a
		// server without the extension does.
		for _, v := range r.Header.Values("Sec-WebSocket-Extensions") {
			if !wsdeflate.ValidHeader(v) {
				r.Header.Del("Sec-WebSocket-Extensions")
				break
			}
		}
	}
	if g.upgradeTestHook != nil {
		g.upgradeTestHook()
	}
	nc, rw, _, err := up.Upgrade(r, w)
	if err != nil {
		release()
		// UpgradeHTTP has answered the bad handshake itself.
		g.log.Debug("upgrade failed", "err", err, "remote", r.RemoteAddr)
		return
	}
	g.metrics.ConnectionsTotal.Inc()
	c := newConn(g, nc, rw.Reader, claims, neg != nil && neg.Accepted())
	// Serve on a fresh goroutine and let net/http's connection goroutine
	// return: it would otherwise pin its read/write buffers (about 8 KiB)
	// and a grown stack for the life of the WebSocket.
	admitted = false // serve's goroutine owns the admission now
	go func() {
		defer g.wg.Done()
		defer release() // after serve has removed c from the hub
		c.serve()
	}()
}

// Shutdown stops accepting connections, closes every live one with 1001 and
// waits for them to end or ctx to expire.
func (g *Gateway) Shutdown(ctx context.Context) error {
	g.admitMu.Lock()
	g.draining.Store(true)
	g.admitMu.Unlock()
	g.stopOnce.Do(func() { close(g.stop) })
	g.hub.Each(func(hc hub.Conn) {
		if c, ok := hc.(*Conn); ok {
			c.Close(protocol.CloseGoingAway, "server shutting down")
		}
	})
	done := make(chan struct{})
	go func() { g.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		// Cut what is left.
		g.hub.Each(func(hc hub.Conn) {
			if c, ok := hc.(*Conn); ok {
				c.abort()
			}
		})
		return ctx.Err()
	}
}

// admit counts an upgrade in progress (g.wg) unless Shutdown has begun.
func (g *Gateway) admit() bool {
	g.admitMu.Lock()
	defer g.admitMu.Unlock()
	if g.draining.Load() {
		return false
	}
	g.wg.Add(1)
	return true
}

// RunHeartbeat pings every connection each interval and closes those silent
// for longer than the timeout. It returns when Shutdown is called.
func (g *Gateway) RunHeartbeat() {
	// Check at a finer step than the interval so timeouts are enforced
	// within a fraction of the interval.
	step := g.opts.HeartbeatInterval
	if g.opts.HeartbeatTimeout/4 < step {
		step = g.opts.HeartbeatTimeout / 4
	}
	if step <= 0 {
		step = time.Second
	}
	t := time.NewTicker(step)
	defer t.Stop()
	for {
		select {
		case <-g.stop:
			return
		case now := <-t.C:
			g.heartbeatTick(now)
		}
	}
}

// heartbeatTick pings and times out connections once. A panic is contained
// (the loop goes on at the next tick).
func (g *Gateway) heartbeatTick(now time.Time) {
	defer safe.Recover(g.log, g.metrics, safe.Background, nil)
	nowNs := now.UnixNano()
	g.hub.Each(func(hc hub.Conn) {
		c, ok := hc.(*Conn)
		if !ok || c.isClosing() {
			return
		}
		if nowNs-c.lastRead.Load() > int64(g.opts.HeartbeatTimeout) {
			g.metrics.HeartbeatTimeouts.Inc()
			g.log.Info("heartbeat timeout", "conn", c.id, "user", c.userID)
			c.Close(protocol.CloseHeartbeatMissed, "heartbeat timeout")
			return
		}
		if nowNs-c.lastPing.Load() >= int64(g.opts.HeartbeatInterval) {
			c.lastPing.Store(nowNs)
			c.requestPing()
		}
	})
}

func newConnID() string { return uuid.NewString() }

// originAllowed applies Options.AllowedOrigins to a WebSocket request
// (RFC 6454 origins, compared case-insensitively): no Origin header, a
// listed origin, "*", or the server's own origin (Origin's host equal to
// the Host header: a page the server itself serves, like the demo).
func (g *Gateway) originAllowed(r *http.Request) bool {
	if len(g.opts.AllowedOrigins) == 0 {
		return true
	}
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true
	}
	for _, o := range g.opts.AllowedOrigins {
		if o == "*" || strings.EqualFold(o, origin) {
			return true
		}
	}
	u, err := url.Parse(origin)
	return err == nil && u.Host != "" && strings.EqualFold(u.Host, r.Host)
}
