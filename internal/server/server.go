// Package server wires Parley together: config → store, hub, broker,
// gateway with its handlers (rooms, chat, media), REST API and operations
// endpoints. It is the one place that knows every package.
package server

import (
	"bufio"
	"container/list"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"path/filepath"
	"runtime/debug"
	"sync"
	"time"

	"github.com/parleyhq/parley/internal/access"
	"github.com/parleyhq/parley/internal/api"
	"github.com/parleyhq/parley/internal/auth"
	"github.com/parleyhq/parley/internal/cluster"
	"github.com/parleyhq/parley/internal/config"
	"github.com/parleyhq/parley/internal/gateway"
	"github.com/parleyhq/parley/internal/hub"
	"github.com/parleyhq/parley/internal/media"
	"github.com/parleyhq/parley/internal/metrics"
	"github.com/parleyhq/parley/internal/protocol"
	"github.com/parleyhq/parley/internal/rooms"
	"github.com/parleyhq/parley/internal/safe"
	"github.com/parleyhq/parley/internal/store"
	"github.com/parleyhq/parley/internal/store/postgres"
	"github.com/parleyhq/parley/internal/store/sqlite"
	"github.com/parleyhq/parley/internal/webhook"
	"github.com/parleyhq/parley/web/demo"
)

// Server is a running Parley node.
type Server struct {
	cfg      *config.Config
	log      *slog.Logger
	Store    store.Store
	Hub      *hub.Hub
	Broker   cluster.Broker
	Cluster  *cluster.Node // this node's cluster membership when broker=nats (also Broker), else nil
	Gateway  *gateway.Gateway
	Metrics  *metrics.Metrics
	Signer   *auth.Signer
	Verifier *auth.Verifier
	Rooms    *rooms.Manager
	SFU      *media.SFU
	calls    *callRelay      // runs call operations where the call lives (media.go)
	Access   *access.Policy  // the one access policy (features.go)
	Webhooks *webhook.Sender // nil without webhook-url (serverapi.go)

	mux       *http.ServeMux
	handler   http.Handler // mux behind the REST write limit
	httpSrv   *http.Server
	debugSrv  *http.Server
	closers   []func(context.Context) error // run in reverse order at shutdown
	hbDone    chan struct{}
	sweepStop chan struct{}
	sweepDone chan struct{}
	bgStarted bool
	// sweepEvery is the refresh-token sweep period (an hour); sweepHook,
	// when set, runs at the start of each sweep (tests inject panics).
	sweepEvery time.Duration
	sweepHook  func()
	closeOnce  sync.Once
}

// New builds a server from a validated config. It opens the store (creating
// the data directory and SQLite file on first start) but does not listen.
func New(ctx context.Context, cfg *config.Config, log *slog.Logger) (*Server, error) {
	if cfg.AuthSecret == "" && cfg.AuthRSAPublicKey == "" && cfg.AuthEdPublicKey == "" {
		return nil, errors.New("invalid config: auth-secret: required (set PARLEY_AUTH_SECRET or --auth-secret; or run with --dev)")
	}
	s := &Server{cfg: cfg, log: log, Hub: hub.New(), hbDone: make(chan struct{}),
		sweepStop: make(chan struct{}), sweepDone: make(chan struct{}), sweepEvery: time.Hour}

	vc := auth.VerifierConfig{Leeway: cfg.AuthLeeway}
	if cfg.AuthSecret != "" {
		vc.HMACSecret = []byte(cfg.AuthSecret)
		s.Signer = auth.NewHS256Signer([]byte(cfg.AuthSecret))
	}
	for _, k := range []struct {
		path string
		dst  *[]byte
		name string
	}{{cfg.AuthRSAPublicKey, &vc.RSAPublicKey, "auth-rsa-public-key"}, {cfg.AuthEdPublicKey, &vc.EdPublicKey, "auth-ed25519-public-key"}} {
		if k.path == "" {
			continue
		}
		b, err := os.ReadFile(k.path)
		if err != nil {
			return nil, fmt.Errorf("invalid config: %s: %w", k.name, err)
		}
		*k.dst = b
	}
	v, err := auth.NewVerifier(vc)
	if err != nil {
		return nil, fmt.Errorf("invalid config: auth keys: %w", err)
	}
	s.Verifier = v

	switch cfg.StoreDriver {
	case "postgres":
		s.Store, err = postgres.Open(ctx, cfg.PostgresURL, postgres.Options{Logger: log})
	default:
		path := filepath.Join(cfg.DataDir, "parley.db")
		s.Store, err = sqlite.Open(ctx, path, sqlite.Options{Logger: log})
	}
	if err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	s.closers = append(s.closers, func(context.Context) error { return s.Store.Close() })

	s.Metrics = metrics.New(map[string]func() float64{
		"parley_connections":     func() float64 { n, _ := s.Hub.Counts(); return float64(n) },
		"parley_users_connected": func() float64 { _, u := s.Hub.Counts(); return float64(u) },
		"parley_rooms_live": func() float64 {
			if s.Rooms == nil {
				return 0
			}
			return float64(s.Rooms.LiveRooms())
		},
		"parley_webhook_queue_length": func() float64 { return float64(s.Webhooks.QueueLen()) },
	})

	switch cfg.Broker {
	case "nats":
		n, err := cluster.Join(ctx, cluster.Options{URL: cfg.NATSURL, ClusterName: cfg.ClusterName, NodeID: cfg.NodeID,
			Heartbeat: cfg.NodeHeartbeat, DeadAfter: cfg.NodeDeadAfter, Hub: s.Hub, Panics: s.Metrics, Metrics: s.Metrics, Log: log})
		if err != nil {
			s.closeAll(ctx)
			return nil, fmt.Errorf("join the cluster over NATS: %w", err)
		}
		s.Cluster, s.Broker = n, n
	default:
		s.Broker = cluster.NewLocal(s.Hub)
	}
	s.closers = append(s.closers, func(context.Context) error { return s.Broker.Close() })

	// Webhooks: closed after the features (closers run in reverse), so
	// that the events of the shutdown itself are sent, for a bounded time.
	s.newWebhooks()
	s.closers = append(s.closers, func(ctx context.Context) error {
		wctx, cancel := context.WithTimeout(ctx, webhookFlushTimeout)
		defer cancel()
		s.Webhooks.Close(wctx)
		return nil
	})

	maxConns := cfg.MaxConnections
	if maxConns == 0 {
		// One token must not be able to exhaust the node's descriptors:
		// an unset cap is derived from RLIMIT_NOFILE.
		var nofile uint64
		maxConns, nofile = gateway.DeriveMaxConnections(cfg.HTTPMaxConns)
		log.Info("derived max-connections", "max_connections", maxConns, "rlimit_nofile", nofile,
			"http_max_connections", cfg.HTTPMaxConns, "reserve", gateway.FDReserve)
		if nofile > 0 && maxConns > 0 && maxConns+cfg.HTTPMaxConns+gateway.FDReserve > int(min(nofile, 1<<40)) {
			log.Warn("the open-file limit is too small for --http-max-connections plus WebSockets; raise it (ulimit -n) or lower --http-max-connections",
				"rlimit_nofile", nofile, "max_connections", maxConns, "http_max_connections", cfg.HTTPMaxConns)
		}
	}
	s.Gateway = gateway.New(gateway.Options{
		HeartbeatInterval: cfg.HeartbeatInterval, HeartbeatTimeout: cfg.HeartbeatTimeout,
		WriteTimeout: cfg.WriteTimeout, MaxMessageBytes: cfg.MaxMessageBytes, QueueMaxBytes: cfg.QueueMaxBytes,
		MsgRate: cfg.MsgRate, MsgBurst: cfg.MsgBurst, MsgBytesRate: cfg.MsgBytesRate, RateLimitStrikes: cfg.RateLimitStrikes,
		ViolationLimit: cfg.ViolationLimit, ViolationWindow: cfg.ViolationWindow, MaxConnections: maxConns,
		MaxConnectionsPerUser: cfg.MaxConnsPerUser, MaxConnectionsPerIP: cfg.MaxConnsPerIP,
		AllowedOrigins: cfg.CORSOriginList(),
		Compression:    cfg.WSCompression, CompressionThreshold: cfg.WSCompressionThreshold,
	}, s.Verifier, s.Hub, s.Metrics, log)

	s.mux = http.NewServeMux()
	s.mux.Handle("GET /ws", s.Gateway)
	s.mux.HandleFunc("GET /healthz", s.healthz)
	s.mux.Handle("GET /metrics", s.Metrics.Handler())
	if cfg.WebDir != "" {
		if st, err := os.Stat(cfg.WebDir); err != nil || !st.IsDir() {
			s.closeAll(ctx)
			return nil, fmt.Errorf("invalid config: web-dir: %q is not a directory", cfg.WebDir)
		}
		s.mux.Handle("GET /", http.FileServer(http.Dir(cfg.WebDir)))
	} else if cfg.Demo {
		// The demo app (web/demo): more specific patterns (/api/..., /ws,
		// /healthz, /metrics) keep precedence; other GET paths are the
		// app's routes or 404, other methods 405.
		s.mux.Handle("GET /", demo.Handler())
	}
	if err := s.wireFeatures(ctx); err != nil {
		s.closeAll(ctx)
		return nil, err
	}
	s.handler = s.recoverHTTP(s.handler)
	return s, nil
}

// webhookFlushTimeout bounds how long a shutdown keeps sending the webhook
// deliveries that are due (the queue is in memory; the rest is lost).
const webhookFlushTimeout = 3 * time.Second

// Handler is the HTTP handler of the whole server (for tests with httptest).
func (s *Server) Handler() http.Handler { return s.handler }

// Start begins serving on ln and starts the background loops.
func (s *Server) Start(ln net.Listener) {
	c := s.cfg
	// ReadTimeout and WriteTimeout bound each REST request (slow bodies,
	// clients that do not read); net/http sets them as deadlines on the
	// connection and clears them when /ws hijacks it (hijackWriter clears
	// them too, so this does not rest on that detail), so WebSockets are
	// not cut by them (TestWebSocketOutlivesHTTPTimeouts).
	s.httpSrv = &http.Server{Handler: s.handler, ReadHeaderTimeout: c.HTTPReadHeaderTimeout,
		ReadTimeout: c.HTTPReadTimeout, WriteTimeout: c.HTTPWriteTimeout, IdleTimeout: c.HTTPIdleTimeout,
		ConnState: newConnCap(c.HTTPMaxConns).track,
		ErrorLog:  slog.NewLogLogger(s.log.Handler(), slog.LevelDebug)}
	go func() {
		if err := s.httpSrv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("http server stopped", "err", err)
		}
	}()
	s.StartBackground()
	if s.cfg.DebugAddr != "" {
		dm := http.NewServeMux()
		dm.HandleFunc("/debug/pprof/", pprof.Index)
		dm.HandleFunc("/debug/pprof/profile", pprof.Profile)
		dm.HandleFunc("/debug/pprof/trace", pprof.Trace)
		dm.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		dm.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		s.debugSrv = &http.Server{Addr: s.cfg.DebugAddr, Handler: dm, ReadHeaderTimeout: 10 * time.Second}
		go func() {
			if err := s.debugSrv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
				s.log.Error("debug listener stopped", "err", err)
			}
		}()
	}
}

// StartBackground starts the heartbeat loop and the hourly sweep of expired
// refresh tokens (Start calls it; tests that use Handler with httptest call
// it themselves).
func (s *Server) StartBackground() {
	s.bgStarted = true
	go func() {
		defer close(s.hbDone)
		s.Gateway.RunHeartbeat()
	}()
	go func() {
		defer close(s.sweepDone)
		t := time.NewTicker(s.sweepEvery)
		defer t.Stop()
		for {
			s.sweepRefreshTokens()
			select {
			case <-t.C:
			case <-s.sweepStop:
				return
			}
		}
	}()
}

// sweepRefreshTokens deletes expired refresh tokens once. A panic is
// contained (logged, counted as background) so that the loop goes on.
func (s *Server) sweepRefreshTokens() {
	defer safe.Recover(s.log, s.Metrics, safe.Background, nil)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if s.sweepHook != nil {
		s.sweepHook()
	}
	if n, err := s.Store.DeleteExpiredRefreshTokens(ctx, time.Now()); err != nil {
		s.log.Warn("sweeping expired refresh tokens", "err", err)
	} else if n > 0 {
		s.log.Info("swept expired refresh tokens", "count", n)
	}
}

// recoverHTTP contains a panic in any HTTP handler (REST, operations, and
// /ws before the upgrade): it is logged once with its stack, counted in
// parley_panics_total{where="http"}, and answered 500 internal unless the
// handler had already written headers (then the response is aborted), or
// had hijacked the connection (then that connection is closed); the node
// keeps serving. http.ErrAbortHandler is re-raised: net/http uses it to
// abort a response on purpose.
func (s *Server) recoverHTTP(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hw := &hijackWriter{ResponseWriter: w}
		defer func() {
			v := recover()
			if v == nil {
				return
			}
			if v == http.ErrAbortHandler {
				panic(v)
			}
			safe.Report(s.log, s.Metrics, safe.HTTP, v, debug.Stack())
			switch {
			case hw.conn != nil:
				_ = hw.conn.Close() // hijacked: end only this connection
			case !hw.wrote:
				api.Error(hw, protocol.Errorf(protocol.CodeInternal, "internal server error"))
			default:
				// Headers are out: abort so that the client sees a broken
				// response, not a truncated one that looks complete.
				// net/http closes the connection and logs nothing more.
				panic(http.ErrAbortHandler)
			}
		}()
		next.ServeHTTP(hw, r)
	})
}

// hijackWriter records whether headers were written or the connection
// hijacked, and on Hijack clears the deadlines net/http set for the
// request (ReadTimeout, WriteTimeout): a WebSocket manages its own.
// Unwrap keeps http.ResponseController working (Flush, deadlines).
type hijackWriter struct {
	http.ResponseWriter
	wrote bool
	conn  net.Conn // set once hijacked
}

func (w *hijackWriter) WriteHeader(code int) {
	if code >= 200 || code == http.StatusSwitchingProtocols {
		w.wrote = true
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *hijackWriter) Write(b []byte) (int, error) {
	w.wrote = true
	return w.ResponseWriter.Write(b)
}

func (w *hijackWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (w *hijackWriter) Flush() {
	w.wrote = true
	_ = http.NewResponseController(w.ResponseWriter).Flush()
}

func (w *hijackWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	nc, rw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err != nil {
		return nc, rw, err
	}
	w.conn = nc
	_ = nc.SetDeadline(time.Time{})
	return nc, rw, nil
}

// connCap caps the HTTP connections that are not WebSockets (config
// http-max-connections). It is hand-written because the usual tools do not
// fit: a listener limit (golang.org/x/net/netutil.LimitListener) blocks
// Accept, so idle keep-alive connections piling up would refuse /healthz and
// /ws upgrades (the failure it must prevent), and it cannot tell a
// connection that later becomes a WebSocket from one that does not.
//
// Design: http.Server's ConnState hook tracks every connection until it is
// hijacked (the WebSocket upgrade: from then on the gateway and its own
// max-connections own it) or closed. Whenever more than max are tracked, it
// closes idle keep-alive connections first (oldest first; a client simply
// reconnects), then the oldest connections that have not sent a request
// yet. Connections in the middle of a request are never closed here: the
// read and write timeouts bound them. So new connections are always accepted
// and served, and the descriptors held by non-WebSocket connections stay
// near max plus those with a request in flight.
type connCap struct {
	max    int
	mu     sync.Mutex
	idle   *list.List // of net.Conn, oldest first
	fresh  *list.List // accepted, no request yet, oldest first
	where  map[net.Conn]*list.Element
	active int
	states map[net.Conn]http.ConnState
}

func newConnCap(max int) *connCap {
	return &connCap{max: max, idle: list.New(), fresh: list.New(), where: map[net.Conn]*list.Element{},
		states: map[net.Conn]http.ConnState{}}
}

func (c *connCap) track(nc net.Conn, st http.ConnState) {
	if c.max <= 0 {
		return
	}
	var evict []net.Conn
	c.mu.Lock()
	prev, known := c.states[nc]
	if e := c.where[nc]; e != nil {
		c.idle.Remove(e)
		c.fresh.Remove(e)
		delete(c.where, nc)
	}
	if known && prev == http.StateActive {
		c.active--
	}
	switch st {
	case http.StateNew:
		c.where[nc] = c.fresh.PushBack(nc)
		c.states[nc] = st
	case http.StateActive:
		if known {
			c.active++
			c.states[nc] = st
		}
	case http.StateIdle:
		if known {
			c.where[nc] = c.idle.PushBack(nc)
			c.states[nc] = st
		}
	default: // hijacked or closed: no longer ours
		delete(c.states, nc)
	}
	for c.idle.Len()+c.fresh.Len()+c.active > c.max {
		l := c.idle
		if l.Len() == 0 {
			l = c.fresh
		}
		if l.Len() == 0 {
			break
		}
		victim := l.Remove(l.Front()).(net.Conn)
		delete(c.where, victim)
		delete(c.states, victim) // evicted: its later transitions are ignored
		evict = append(evict, victim)
	}
	c.mu.Unlock()
	for _, v := range evict {
		_ = v.Close()
	}
}

// accountLimits builds the register/login limits from the config (the
// account routes are wired in chat.go).
func (s *Server) accountLimits() api.AccountLimits {
	c := s.cfg
	return api.AccountLimits{
		Login:    api.NewLoginLimiter(c.LoginRate, c.LoginBurst).PerIP(c.LoginIPRate, c.LoginIPBurst).PerUsername(c.LoginUserRate, c.LoginUserBurst),
		Register: api.NewKeyLimiter(c.RegisterRate, c.RegisterBurst),
		Hashes:   api.NewHashGate(c.PasswordHashConcurrency, c.PasswordHashWait),
	}
}

func (s *Server) healthz(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	if s.Gateway.Draining() {
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = w.Write([]byte(`{"status":"draining"}`))
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	if err := s.Store.Ping(ctx); err != nil {
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = w.Write([]byte(`{"status":"store unavailable"}`))
		return
	}
	if s.Cluster != nil {
		if err := s.Cluster.Healthy(); err != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte(`{"status":"nats unavailable"}`))
			return
		}
	}
	_, _ = w.Write([]byte(`{"status":"ok"}`))
}

// Stopping is closed when the server must stop on its own: in a cluster,
// when another process took over this node's id (cluster.Node.Displaced).
// nil (never closed) on a single node. The caller shuts the server down as
// for SIGTERM and exits with an error.
func (s *Server) Stopping() <-chan struct{} {
	if s.Cluster == nil {
		return nil
	}
	return s.Cluster.Displaced()
}

// Shutdown drains: /healthz answers 503, new connections are refused, every
// connection gets close 1001, pending storage commits are flushed, the store
// is closed. In a cluster the rooms this node owns are then handed over
// (each after its pending commits) and the node announces its drain, so
// that the others take over at once (docs/cluster.md). It returns within
// ctx's deadline.
func (s *Server) Shutdown(ctx context.Context) error {
	var errs []error
	if err := s.Gateway.Shutdown(ctx); err != nil {
		errs = append(errs, fmt.Errorf("gateway: %w", err))
	}
	if s.Cluster != nil {
		s.calls.EndAll(ctx) // calls this node runs end; participants elsewhere rejoin on a live node
		s.Rooms.Handover(ctx)
		if err := s.Cluster.Drain(ctx); err != nil {
			errs = append(errs, fmt.Errorf("cluster drain: %w", err))
		}
	}
	if s.httpSrv != nil {
		if err := s.httpSrv.Shutdown(ctx); err != nil {
			errs = append(errs, fmt.Errorf("http: %w", err))
		}
	}
	if s.debugSrv != nil {
		_ = s.debugSrv.Close()
	}
	if s.bgStarted {
		close(s.sweepStop)
		<-s.sweepDone
	}
	errs = append(errs, s.closeAll(ctx))
	return errors.Join(errs...)
}

func (s *Server) closeAll(ctx context.Context) error {
	var errs []error
	s.closeOnce.Do(func() {
		for i := len(s.closers) - 1; i >= 0; i-- {
			if err := s.closers[i](ctx); err != nil {
				errs = append(errs, err)
			}
		}
	})
	return errors.Join(errs...)
}
