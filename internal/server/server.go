// Package server wires Parley together: config → store, hub, broker,
// gateway with its handlers (rooms, chat, media), REST API and operations
// endpoints. It is the one place that knows every package.
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/parleyhq/parley/internal/access"
	"github.com/parleyhq/parley/internal/auth"
	"github.com/parleyhq/parley/internal/cluster"
	"github.com/parleyhq/parley/internal/config"
	"github.com/parleyhq/parley/internal/gateway"
	"github.com/parleyhq/parley/internal/hub"
	"github.com/parleyhq/parley/internal/media"
	"github.com/parleyhq/parley/internal/metrics"
	"github.com/parleyhq/parley/internal/rooms"
	"github.com/parleyhq/parley/internal/store"
	"github.com/parleyhq/parley/internal/store/postgres"
	"github.com/parleyhq/parley/internal/store/sqlite"
)

// Server is a running Parley node.
type Server struct {
	cfg      *config.Config
	log      *slog.Logger
	Store    store.Store
	Hub      *hub.Hub
	Broker   cluster.Broker
	Gateway  *gateway.Gateway
	Metrics  *metrics.Metrics
	Signer   *auth.Signer
	Verifier *auth.Verifier
	Rooms    *rooms.Manager
	SFU      *media.SFU
	Access   *access.Policy // the one access policy (features.go)

	mux       *http.ServeMux
	handler   http.Handler // mux behind the REST write limit
	httpSrv   *http.Server
	debugSrv  *http.Server
	closers   []func(context.Context) error // run in reverse order at shutdown
	hbDone    chan struct{}
	sweepStop chan struct{}
	sweepDone chan struct{}
	bgStarted bool
	closeOnce sync.Once
}

// New builds a server from a validated config. It opens the store (creating
// the data directory and SQLite file on first start) but does not listen.
func New(ctx context.Context, cfg *config.Config, log *slog.Logger) (*Server, error) {
	if cfg.AuthSecret == "" && cfg.AuthRSAPublicKey == "" && cfg.AuthEdPublicKey == "" {
		return nil, errors.New("invalid config: auth-secret: required (set PARLEY_AUTH_SECRET or --auth-secret; or run with --dev)")
	}
	s := &Server{cfg: cfg, log: log, Hub: hub.New(), hbDone: make(chan struct{}),
		sweepStop: make(chan struct{}), sweepDone: make(chan struct{})}

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
		s.Store, err = postgres.Open(ctx, cfg.PostgresURL, postgres.Options{})
	default:
		path := filepath.Join(cfg.DataDir, "parley.db")
		s.Store, err = sqlite.Open(ctx, path, sqlite.Options{})
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
	})

	switch cfg.Broker {
	case "nats":
		b, err := cluster.NewNATS(cfg.NATSURL, cfg.NodeID, s.Hub, log)
		if err != nil {
			s.closeAll(ctx)
			return nil, fmt.Errorf("connect NATS: %w", err)
		}
		s.Broker = b
	default:
		s.Broker = cluster.NewLocal(s.Hub)
	}
	s.closers = append(s.closers, func(context.Context) error { return s.Broker.Close() })

	s.Gateway = gateway.New(gateway.Options{
		HeartbeatInterval: cfg.HeartbeatInterval, HeartbeatTimeout: cfg.HeartbeatTimeout,
		WriteTimeout: cfg.WriteTimeout, MaxMessageBytes: cfg.MaxMessageBytes, QueueMaxBytes: cfg.QueueMaxBytes,
		MsgRate: cfg.MsgRate, MsgBurst: cfg.MsgBurst, RateLimitStrikes: cfg.RateLimitStrikes,
		ViolationLimit: cfg.ViolationLimit, ViolationWindow: cfg.ViolationWindow, MaxConnections: cfg.MaxConnections,
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
	}
	if err := s.wireFeatures(ctx); err != nil {
		s.closeAll(ctx)
		return nil, err
	}
	return s, nil
}

// Handler is the HTTP handler of the whole server (for tests with httptest).
func (s *Server) Handler() http.Handler { return s.handler }

// Start begins serving on ln and starts the background loops.
func (s *Server) Start(ln net.Listener) {
	s.httpSrv = &http.Server{Handler: s.handler, ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelDebug)}
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
		t := time.NewTicker(time.Hour)
		defer t.Stop()
		for {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			if n, err := s.Store.DeleteExpiredRefreshTokens(ctx, time.Now()); err != nil {
				s.log.Warn("sweeping expired refresh tokens", "err", err)
			} else if n > 0 {
				s.log.Info("swept expired refresh tokens", "count", n)
			}
			cancel()
			select {
			case <-t.C:
			case <-s.sweepStop:
				return
			}
		}
	}()
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
	_, _ = w.Write([]byte(`{"status":"ok"}`))
}

// Shutdown drains: /healthz answers 503, new connections are refused, every
// connection gets close 1001, pending storage commits are flushed, the store
// is closed. It returns within ctx's deadline.
func (s *Server) Shutdown(ctx context.Context) error {
	var errs []error
	if err := s.Gateway.Shutdown(ctx); err != nil {
		errs = append(errs, fmt.Errorf("gateway: %w", err))
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
