package gateway_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/parleyhq/parley/internal/auth"
	"github.com/parleyhq/parley/internal/gateway"
	"github.com/parleyhq/parley/internal/hub"
	"github.com/parleyhq/parley/internal/metrics"
	"github.com/parleyhq/parley/internal/protocol"
)

const testSecret = "test-secret-0123456789abcdef"

type env struct {
	t       *testing.T
	srv     *httptest.Server
	gw      *gateway.Gateway
	hub     *hub.Hub
	metrics *metrics.Metrics
	signer  *auth.Signer
	wsURL   string
}

func defaultOpts() gateway.Options {
	return gateway.Options{
		HeartbeatInterval: 30 * time.Second, HeartbeatTimeout: 120 * time.Second,
		WriteTimeout: 2 * time.Second, MaxMessageBytes: 64 << 10, QueueMaxBytes: 1 << 20,
		MsgRate: 1000, MsgBurst: 1000, RateLimitStrikes: 50, ViolationLimit: 20, ViolationWindow: 10 * time.Second,
	}
}

func quietLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// start runs a gateway on 127.0.0.1 with an echo handler on the "test" prefix.
func start(t *testing.T, opts gateway.Options) *env {
	t.Helper()
	return startWith(t, opts, 0, nil)
}

// startWith is start with a token leeway, and setup to add routes and
// lifecycles before the gateway serves.
func startWith(t *testing.T, opts gateway.Options, leeway time.Duration, setup func(*gateway.Gateway)) *env {
	t.Helper()
	v, err := auth.NewVerifier(auth.VerifierConfig{HMACSecret: []byte(testSecret), Leeway: leeway})
	if err != nil {
		t.Fatal(err)
	}
	h := hub.New()
	m := metrics.New(nil)
	gw := gateway.New(opts, v, h, m, quietLogger())
	gw.Route("test", gateway.HandlerFunc(func(ctx context.Context, s gateway.Session, e protocol.Envelope) error {
		switch e.Type {
		case "test:echo":
			s.Reply("test:echoed", e.ID, e.Data)
			return nil
		case "test:forbidden":
			return protocol.Errorf(protocol.CodeForbidden, "no")
		}
		return protocol.Errorf(protocol.CodeBadRequest, "unknown test message")
	}))
	if setup != nil {
		setup(gw)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /ws", gw)
	srv := httptest.NewServer(mux)
	go gw.RunHeartbeat()
	e := &env{t: t, srv: srv, gw: gw, hub: h, metrics: m, signer: auth.NewHS256Signer([]byte(testSecret)),
		wsURL: "ws" + strings.TrimPrefix(srv.URL, "http") + "/ws"}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = gw.Shutdown(ctx)
		srv.Close()
	})
	return e
}

func (e *env) token(user string, ttl time.Duration) string {
	e.t.Helper()
	tok, _, err := e.signer.Mint(user, "Name "+user, ttl, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	return tok
}

// client is a real WebSocket client (gorilla) with a background reader.
type client struct {
	t      *testing.T
	ws     *websocket.Conn
	frames chan protocol.Envelope
	closed chan struct{}
	mu     sync.Mutex
	code   int // close code received
	connID string
}

func (e *env) dial(user string) *client {
	e.t.Helper()
	return e.dialToken(e.token(user, time.Hour))
}

func (e *env) dialToken(tok string) *client {
	e.t.Helper()
	return e.dialWith(tok, nil)
}

// dialWith dials and lets setup install handlers before the reader starts.
func (e *env) dialWith(tok string, setup func(*websocket.Conn)) *client {
	e.t.Helper()
	ws, resp, err := websocket.DefaultDialer.Dial(e.wsURL+"?token="+tok, nil)
	if err != nil {
		if resp != nil {
			e.t.Fatalf("dial: %v (HTTP %d)", err, resp.StatusCode)
		}
		e.t.Fatalf("dial: %v", err)
	}
	if setup != nil {
		setup(ws)
	}
	return e.connected(ws)
}

// connected starts reading a freshly dialled connection, takes its
// connected frame (the connection id) and waits until the hub has it.
func (e *env) connected(ws *websocket.Conn) *client {
	e.t.Helper()
	c := newClient(e.t, ws)
	connected := c.expect(protocol.TypeConnected)
	var d struct {
		ConnectionID string `json:"connection_id"`
	}
	_ = json.Unmarshal(connected.Data, &d)
	c.connID = d.ConnectionID
	e.waitRegistered(c.connID)
	return c
}

// waitRegistered waits until the hub has connection id: connected is
// queued before the connection is added to the hub (so that it is the
// first frame), so a client can read it before a SendAll would reach it.
func (e *env) waitRegistered(id string) {
	e.t.Helper()
	waitFor(e.t, 5*time.Second, "connection "+id+" in the hub", func() bool { _, ok := e.hub.Conn(id); return ok })
}

func newClient(t *testing.T, ws *websocket.Conn) *client {
	c := &client{t: t, ws: ws, frames: make(chan protocol.Envelope, 10000), closed: make(chan struct{})}
	go func() {
		defer close(c.closed)
		for {
			_, b, err := ws.ReadMessage()
			if err != nil {
				var ce *websocket.CloseError
				if errorsAs(err, &ce) {
					c.mu.Lock()
					c.code = ce.Code
					c.mu.Unlock()
				}
				return
			}
			var env protocol.Envelope
			if err := json.Unmarshal(b, &env); err != nil {
				t.Errorf("server sent invalid JSON %q: %v", b, err)
				return
			}
			c.frames <- env
		}
	}()
	t.Cleanup(func() { _ = ws.Close() })
	return c
}

func (c *client) send(v any) {
	c.t.Helper()
	var b []byte
	switch x := v.(type) {
	case string:
		b = []byte(x)
	default:
		b, _ = json.Marshal(v)
	}
	if err := c.ws.WriteMessage(websocket.TextMessage, b); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

// next returns the next frame, failing after the deadline.
func (c *client) next(d time.Duration) (protocol.Envelope, bool) {
	select {
	case f := <-c.frames:
		return f, true
	case <-time.After(d):
		return protocol.Envelope{}, false
	case <-c.closed:
		select {
		case f := <-c.frames:
			return f, true
		default:
		}
		return protocol.Envelope{}, false
	}
}

// expect waits for a frame of type typ, failing on any other frame.
func (c *client) expect(typ string) protocol.Envelope {
	c.t.Helper()
	f, ok := c.next(5 * time.Second)
	if !ok {
		c.t.Fatalf("expected %s, got nothing (close code %d)", typ, c.closeCode())
	}
	if f.Type != typ {
		c.t.Fatalf("expected %s, got %s %s", typ, f.Type, f.Data)
	}
	return f
}

// expectError waits for an error frame with code and id.
func (c *client) expectError(code, id string) {
	c.t.Helper()
	f := c.expect(protocol.TypeError)
	var e protocol.Error
	_ = json.Unmarshal(f.Data, &e)
	if e.Code != code || f.ID != id {
		c.t.Fatalf("expected error %s id %q, got %s id %q (%s)", code, id, e.Code, f.ID, e.Message)
	}
}

// expectClose waits for the server to close with code.
func (c *client) expectClose(code int, within time.Duration) {
	c.t.Helper()
	deadline := time.After(within)
	for {
		select {
		case <-c.closed:
			if got := c.closeCode(); got != code {
				c.t.Fatalf("close code %d, want %d", got, code)
			}
			return
		case <-c.frames: // skip what was queued before the close
		case <-deadline:
			c.t.Fatalf("connection not closed with %d within %s", code, within)
		}
	}
}

func (c *client) closeCode() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.code
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
