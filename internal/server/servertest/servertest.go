// Package servertest starts a real Parley server on 127.0.0.1 for
// integration tests (real SQLite file in a temp dir, real HTTP listener)
// and gives real WebSocket clients (gorilla/websocket) and a REST helper.
package servertest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/parleyhq/parley/internal/auth"
	"github.com/parleyhq/parley/internal/config"
	"github.com/parleyhq/parley/internal/protocol"
	"github.com/parleyhq/parley/internal/server"
)

// Secret and APIKey are what test servers are configured with.
const (
	Secret = "servertest-secret-0123456789abcdef"
	APIKey = "servertest-api-key"
)

// Server is a running test server.
type Server struct {
	T      testing.TB
	Srv    *server.Server
	Cfg    *config.Config
	URL    string // http://127.0.0.1:port
	WSURL  string // ws://127.0.0.1:port/ws
	Signer *auth.Signer
	// IgnoreTypes are dropped by every client dialled afterwards (set it
	// before Dial; see Client.Ignore).
	IgnoreTypes []string
}

// Config returns the test defaults: a temp data dir, the test secret and
// API key, quiet logs. env overrides follow config names (PARLEY_*).
func Config(t testing.TB, env map[string]string) *config.Config {
	t.Helper()
	vars := map[string]string{
		"PARLEY_DATA_DIR":    t.TempDir(),
		"PARLEY_AUTH_SECRET": Secret,
		"PARLEY_API_KEY":     APIKey,
		"PARLEY_HTTP_ADDR":   "127.0.0.1:0",
		"PARLEY_LOG_LEVEL":   "error",
	}
	for k, v := range env {
		vars[k] = v
	}
	cfg, err := config.Load(flag.NewFlagSet("test", flag.ContinueOnError), func(k string) string { return vars[k] })
	if err != nil {
		t.Fatalf("test config: %v", err)
	}
	return cfg
}

// Start runs a server with Config(t, env) until the test ends.
func Start(t testing.TB, env map[string]string) *Server {
	t.Helper()
	return StartConfig(t, Config(t, env))
}

// StartConfig runs a server with cfg until the test ends.
func StartConfig(t testing.TB, cfg *config.Config) *Server {
	t.Helper()
	var lvl slog.Level
	_ = lvl.UnmarshalText([]byte(cfg.LogLevel))
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl}))
	srv, err := server.New(context.Background(), cfg, log)
	if err != nil {
		t.Fatalf("server.New: %v", err)
	}
	ln, err := net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		t.Fatal(err)
	}
	srv.Start(ln)
	addr := ln.Addr().String()
	s := &Server{T: t, Srv: srv, Cfg: cfg, URL: "http://" + addr, WSURL: "ws://" + addr + "/ws",
		Signer: auth.NewHS256Signer([]byte(cfg.AuthSecret))}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
	return s
}

// Token mints a token for user with the given room grants (nil = none).
func (s *Server) Token(user string, rooms map[string]auth.Perm) string {
	s.T.Helper()
	tok, _, err := s.Signer.Mint(user, "Name "+user, time.Hour, rooms)
	if err != nil {
		s.T.Fatal(err)
	}
	return tok
}

// AllRooms is a grant of everything on every room.
var AllRooms = map[string]auth.Perm{"*": auth.PermAll}

// Client is a real WebSocket client with a background reader.
type Client struct {
	T      testing.TB
	WS     *websocket.Conn
	ConnID string
	UserID string
	// Hello is the connected frame, as received.
	Hello  protocol.Envelope
	frames chan protocol.Envelope
	closed chan struct{}
	mu     sync.Mutex
	code   int
	reason string
	wmu    sync.Mutex
	ignore map[string]bool // guarded by mu
}

// Ignore drops frames of these types from now on (e.g. presence:update
// noise in tests about something else).
func (c *Client) Ignore(types ...string) *Client {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ignore == nil {
		c.ignore = map[string]bool{}
	}
	for _, t := range types {
		c.ignore[t] = true
	}
	return c
}

// Dial connects with token and waits for the connected frame.
func (s *Server) Dial(token string) *Client {
	s.T.Helper()
	ws, resp, err := websocket.DefaultDialer.Dial(s.WSURL+"?token="+token, nil)
	if err != nil {
		if resp != nil {
			body, _ := io.ReadAll(resp.Body)
			s.T.Fatalf("dial: %v (HTTP %d %s)", err, resp.StatusCode, body)
		}
		s.T.Fatalf("dial: %v", err)
	}
	c := &Client{T: s.T, WS: ws, frames: make(chan protocol.Envelope, 100000), closed: make(chan struct{})}
	c.Ignore(s.IgnoreTypes...)
	go c.read()
	s.T.Cleanup(func() { _ = ws.Close() })
	f := c.Expect(protocol.TypeConnected)
	var d struct {
		ConnectionID string `json:"connection_id"`
		UserID       string `json:"user_id"`
	}
	_ = json.Unmarshal(f.Data, &d)
	c.ConnID, c.UserID, c.Hello = d.ConnectionID, d.UserID, f
	return c
}

// DialUser connects as user with the given grants.
func (s *Server) DialUser(user string, rooms map[string]auth.Perm) *Client {
	s.T.Helper()
	return s.Dial(s.Token(user, rooms))
}

func (c *Client) read() {
	defer close(c.closed)
	for {
		_, b, err := c.WS.ReadMessage()
		if err != nil {
			var ce *websocket.CloseError
			if errors.As(err, &ce) {
				c.mu.Lock()
				c.code, c.reason = ce.Code, ce.Text
				c.mu.Unlock()
			}
			return
		}
		var env protocol.Envelope
		if err := json.Unmarshal(b, &env); err != nil {
			c.T.Errorf("server sent invalid JSON %q: %v", b, err)
			return
		}
		c.mu.Lock()
		skip := c.ignore[env.Type]
		c.mu.Unlock()
		if !skip {
			c.frames <- env
		}
	}
}

// Send writes a message: a string is sent as is, anything else as JSON.
func (c *Client) Send(v any) {
	c.T.Helper()
	var b []byte
	if s, ok := v.(string); ok {
		b = []byte(s)
	} else {
		b, _ = json.Marshal(v)
	}
	c.wmu.Lock()
	err := c.WS.WriteMessage(websocket.TextMessage, b)
	c.wmu.Unlock()
	if err != nil {
		c.T.Fatalf("write: %v", err)
	}
}

// Request sends {type, id, data}.
func (c *Client) Request(typ, id string, data any) {
	c.T.Helper()
	m := map[string]any{"type": typ}
	if id != "" {
		m["id"] = id
	}
	if data != nil {
		m["data"] = data
	}
	c.Send(m)
}

// Next returns the next frame within d.
func (c *Client) Next(d time.Duration) (protocol.Envelope, bool) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case f := <-c.frames:
		return f, true
	case <-t.C:
		return protocol.Envelope{}, false
	case <-c.closed:
		select {
		case f := <-c.frames:
			return f, true
		default:
			return protocol.Envelope{}, false
		}
	}
}

// Expect waits up to 5 s for the next frame and requires its type.
func (c *Client) Expect(typ string) protocol.Envelope {
	c.T.Helper()
	f, ok := c.Next(5 * time.Second)
	if !ok {
		c.T.Fatalf("%s: expected %s, got nothing (close code %d)", c.UserID, typ, c.CloseCode())
	}
	if f.Type != typ {
		c.T.Fatalf("%s: expected %s, got %s id=%q %s", c.UserID, typ, f.Type, f.ID, f.Data)
	}
	return f
}

// ExpectInto is Expect plus decoding data into v.
func (c *Client) ExpectInto(typ string, v any) protocol.Envelope {
	c.T.Helper()
	f := c.Expect(typ)
	if v != nil {
		if err := json.Unmarshal(f.Data, v); err != nil {
			c.T.Fatalf("decode %s: %v", typ, err)
		}
	}
	return f
}

// ExpectError waits for an error frame with code and id.
func (c *Client) ExpectError(code, id string) protocol.Error {
	c.T.Helper()
	f := c.Expect(protocol.TypeError)
	var e protocol.Error
	_ = json.Unmarshal(f.Data, &e)
	if e.Code != code || f.ID != id {
		c.T.Fatalf("%s: expected error %s id %q, got %s id %q (%s)", c.UserID, code, id, e.Code, f.ID, e.Message)
	}
	return e
}

// ExpectNothing checks that no frame arrives: it sends an app-level ping and
// requires the pong to be the next frame (no sleeps).
func (c *Client) ExpectNothing() {
	c.T.Helper()
	id := "quiet-" + time.Now().Format("150405.000000000")
	c.Request(protocol.TypePing, id, nil)
	f := c.Expect(protocol.TypePong)
	if f.ID != id {
		c.T.Fatalf("pong id %q, want %q", f.ID, id)
	}
}

// CloseCode is the close code received from the server (0 if none).
func (c *Client) CloseCode() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.code
}

// CloseReason is the reason of the server's close frame ("" if none).
func (c *Client) CloseReason() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.reason
}

// Closed is closed when the connection has ended.
func (c *Client) Closed() <-chan struct{} { return c.closed }

// Do performs a REST request with an optional bearer credential and JSON
// body, returning the status and the body.
func (s *Server) Do(method, path, bearer string, body any, headers ...string) (int, []byte) {
	s.T.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case []byte:
		rd = bytes.NewReader(b)
	default:
		raw, _ := json.Marshal(b)
		rd = bytes.NewReader(raw)
	}
	req, err := http.NewRequest(method, s.URL+path, rd)
	if err != nil {
		s.T.Fatal(err)
	}
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		s.T.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, out
}

// WaitFor polls cond until it holds or the deadline passes.
func WaitFor(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
