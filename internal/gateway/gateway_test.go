package gateway_test

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"
	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/parleyhq/parley/internal/gateway"
	"github.com/parleyhq/parley/internal/hub"
	"github.com/parleyhq/parley/internal/protocol"
)

func errorsAs(err error, target any) bool { return errors.As(err, target) }

func TestConnectedFrame(t *testing.T) {
	e := start(t, defaultOpts())
	ws, _, err := websocket.DefaultDialer.Dial(e.wsURL+"?token="+e.token("u1", time.Hour), nil)
	if err != nil {
		t.Fatal(err)
	}
	c := newClient(t, ws)
	f := c.expect(protocol.TypeConnected)
	var d struct {
		UserID              string `json:"user_id"`
		ConnectionID        string `json:"connection_id"`
		HeartbeatIntervalMs int64  `json:"heartbeat_interval_ms"`
		ServerTime          string `json:"server_time"`
	}
	if err := json.Unmarshal(f.Data, &d); err != nil {
		t.Fatal(err)
	}
	if d.UserID != "u1" || d.HeartbeatIntervalMs != 30000 {
		t.Fatalf("connected = %+v", d)
	}
	if _, err := uuid.Parse(d.ConnectionID); err != nil {
		t.Fatalf("connection_id %q is not a UUID", d.ConnectionID)
	}
	if ts, err := time.Parse(time.RFC3339, d.ServerTime); err != nil || time.Since(ts) > time.Minute {
		t.Fatalf("server_time %q: %v", d.ServerTime, err)
	}
	// A second connection of the same user gets a fresh id.
	c2 := e.dial("u1")
	if c2.connID == d.ConnectionID || c2.connID == "" {
		t.Fatalf("connection ids not fresh: %q %q", c2.connID, d.ConnectionID)
	}
	// Bearer header works too.
	hdr := http.Header{"Authorization": {"Bearer " + e.token("u2", time.Hour)}}
	ws3, _, err := websocket.DefaultDialer.Dial(e.wsURL, hdr)
	if err != nil {
		t.Fatalf("bearer dial: %v", err)
	}
	newClient(t, ws3).expect(protocol.TypeConnected)
	if n, u := e.hub.Counts(); n != 3 || u != 2 {
		t.Fatalf("counts = %d conns %d users, want 3, 2", n, u)
	}
}

func TestBadTokensRefusedBeforeUpgrade(t *testing.T) {
	e := start(t, defaultOpts())
	hs := func(claims jwt.MapClaims, secret string) string {
		s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString([]byte(secret))
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	now := time.Now()
	valid := jwt.MapClaims{"sub": "u1", "exp": now.Add(time.Hour).Unix()}
	none := func() string {
		h := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","typ":"JWT"}`))
		p, _ := json.Marshal(valid)
		return h + "." + base64.RawURLEncoding.EncodeToString(p) + "."
	}()
	_, edKey, _ := ed25519.GenerateKey(rand.Reader)
	edTok, _ := jwt.NewWithClaims(jwt.SigningMethodEdDSA, valid).SignedString(edKey)
	cases := []struct {
		name, token string
		header      string
	}{
		{"missing", "", ""},
		{"malformed", "not.a.jwt", ""},
		{"garbage", "%%%", ""},
		{"wrong secret", hs(valid, "another-secret-0123456789"), ""},
		{"alg none", none, ""},
		{"unconfigured alg EdDSA", edTok, ""},
		{"expired", hs(jwt.MapClaims{"sub": "u1", "exp": now.Add(-time.Minute).Unix()}, testSecret), ""},
		{"not yet valid", hs(jwt.MapClaims{"sub": "u1", "exp": now.Add(time.Hour).Unix(), "nbf": now.Add(time.Hour).Unix()}, testSecret), ""},
		{"missing sub", hs(jwt.MapClaims{"exp": now.Add(time.Hour).Unix()}, testSecret), ""},
		{"missing exp", hs(jwt.MapClaims{"sub": "u1"}, testSecret), ""},
		{"bad bearer scheme", "", "Basic dTE6cHc="},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			u := e.wsURL
			if tc.token != "" {
				u += "?token=" + url.QueryEscape(tc.token)
			}
			hdr := http.Header{}
			if tc.header != "" {
				hdr.Set("Authorization", tc.header)
			}
			ws, resp, err := websocket.DefaultDialer.Dial(u, hdr)
			if err == nil {
				ws.Close()
				t.Fatal("upgrade succeeded")
			}
			if resp == nil || resp.StatusCode != http.StatusUnauthorized {
				t.Fatalf("want HTTP 401, got %v (%v)", resp, err)
			}
			var body map[string]string
			if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
				t.Fatalf("body is not JSON: %v", err)
			}
			if body["error"] != "unauthorized" || body["message"] == "" {
				t.Fatalf("body = %v", body)
			}
		})
	}
	if n, _ := e.hub.Counts(); n != 0 {
		t.Fatalf("%d connections registered after refusals", n)
	}
	if got := testutil.ToFloat64(e.metrics.AuthFailures); got != float64(len(cases)) {
		t.Fatalf("auth failures metric = %v, want %d", got, len(cases))
	}
}

func TestPingPongBothLevels(t *testing.T) {
	e := start(t, defaultOpts())
	got := make(chan string, 1)
	c := e.dialWith(e.token("u1", time.Hour), func(ws *websocket.Conn) {
		ws.SetPongHandler(func(s string) error { got <- s; return nil })
	})
	c.send(`{"type":"ping","id":"p1"}`)
	if f := c.expect(protocol.TypePong); f.ID != "p1" {
		t.Fatalf("pong id %q", f.ID)
	}
	c.send(`{"type":"ping"}`)
	if f := c.expect(protocol.TypePong); f.ID != "" {
		t.Fatalf("pong without request id carries id %q", f.ID)
	}
	// Protocol-level: our Ping frame gets a Pong frame with the same payload.
	if err := c.ws.WriteControl(websocket.PingMessage, []byte("hello"), time.Now().Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	select {
	case s := <-got:
		if s != "hello" {
			t.Fatalf("pong payload %q", s)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no pong frame")
	}
}

func TestHeartbeat(t *testing.T) {
	opts := defaultOpts()
	opts.HeartbeatInterval = 40 * time.Millisecond
	opts.HeartbeatTimeout = 300 * time.Millisecond
	e := start(t, opts)

	// A client that answers pings (gorilla's default) stays connected.
	pings := make(chan struct{}, 100)
	alive := e.dialWith(e.token("alive", time.Hour), func(ws *websocket.Conn) {
		ws.SetPingHandler(func(s string) error {
			select {
			case pings <- struct{}{}:
			default:
			}
			return ws.WriteControl(websocket.PongMessage, []byte(s), time.Now().Add(time.Second))
		})
	})

	// A silent client: ignores pings and sends nothing.
	silent := e.dialWith(e.token("silent", time.Hour), func(ws *websocket.Conn) {
		ws.SetPingHandler(func(string) error { return nil })
	})

	silent.expectClose(protocol.CloseHeartbeatMissed, 5*time.Second)
	// The alive one has been pinged several times and still works after
	// outliving the timeout.
	for i := 0; i < 3; i++ {
		select {
		case <-pings:
		case <-time.After(5 * time.Second):
			t.Fatal("server sent no ping")
		}
	}
	alive.send(`{"type":"ping","id":"x"}`)
	alive.expect(protocol.TypePong)
	waitFor(t, 5*time.Second, "silent conn removed", func() bool { n, _ := e.hub.Counts(); return n == 1 })
	if testutil.ToFloat64(e.metrics.HeartbeatTimeouts) != 1 {
		t.Fatal("heartbeat timeout not counted")
	}
}

func TestOversizeFrameCloses4009(t *testing.T) {
	opts := defaultOpts()
	opts.MaxMessageBytes = 1024
	e := start(t, opts)
	c := e.dial("u1")
	// Exactly at the limit is fine.
	atLimit := `{"type":"test:echo","data":{"p":"` + strings.Repeat("a", 1024-36) + `"}}`
	if len(atLimit) != 1024 {
		t.Fatalf("len %d", len(atLimit))
	}
	c.send(atLimit)
	c.expect("test:echoed")
	c.send(`{"type":"test:echo","data":{"p":"` + strings.Repeat("a", 2000) + `"}}`)
	c.expectClose(protocol.CloseMessageTooBig, 5*time.Second)
}

func TestMalformedMessagesKeepConnection(t *testing.T) {
	e := start(t, defaultOpts())
	c := e.dial("u1")
	cases := []struct{ frame, id string }{
		{`{bad json`, ""},
		{`[1,2,3]`, ""},
		{`{"type":"nope:thing","id":"a1"}`, "a1"},
		{`{"type":"unknowntype","id":"a2"}`, "a2"},
		{`{"type":5,"id":"a3"}`, "a3"},
		{`{"id":"a4"}`, "a4"},
		{`{"type":"test:echo","id":"a5","data":[1]}`, "a5"},
		{`{"type":"test:echo","id":"a6","data":"str"}`, "a6"},
		{`{"type":"test:echo","id":"a7"} trailing`, "a7"},
	}
	for _, tc := range cases {
		c.send(tc.frame)
		c.expectError(protocol.CodeBadRequest, tc.id)
	}
	// Non-violation errors pass through with the id.
	c.send(`{"type":"test:forbidden","id":"f1"}`)
	c.expectError(protocol.CodeForbidden, "f1")
	// Binary frames are refused the same way.
	if err := c.ws.WriteMessage(websocket.BinaryMessage, []byte{1, 2, 3}); err != nil {
		t.Fatal(err)
	}
	c.expectError(protocol.CodeBadRequest, "")
	c.send(`{"type":"test:echo","id":"ok","data":{"x":1}}`)
	if f := c.expect("test:echoed"); f.ID != "ok" || string(f.Data) != `{"x":1}` {
		t.Fatalf("echo = %+v", f)
	}
}

func TestRepeatedViolationsClose4400(t *testing.T) {
	opts := defaultOpts()
	opts.ViolationLimit = 5
	e := start(t, opts)
	c := e.dial("u1")
	for i := 0; i < 5; i++ {
		c.send(fmt.Sprintf(`{"type":"bogus","id":"v%d"}`, i))
	}
	for i := 0; i < 5; i++ {
		c.expectError(protocol.CodeBadRequest, fmt.Sprintf("v%d", i))
	}
	c.expectClose(protocol.CloseProtocolAbuse, 5*time.Second)
}

func TestRateLimit(t *testing.T) {
	opts := defaultOpts()
	opts.MsgRate = 5
	opts.MsgBurst = 5
	opts.RateLimitStrikes = 10
	e := start(t, opts)
	c := e.dial("u1")
	for i := 0; i < 40; i++ {
		if c.ws.WriteMessage(websocket.TextMessage, []byte(fmt.Sprintf(`{"type":"ping","id":"r%d"}`, i))) != nil {
			break // closed by the server: expected once strikes run out
		}
	}
	pongs, limited := 0, 0
	for {
		// next drains what arrived before the close, then reports false.
		f, ok := c.next(5 * time.Second)
		if !ok {
			break
		}
		switch f.Type {
		case protocol.TypePong:
			pongs++
		case protocol.TypeError:
			var pe protocol.Error
			_ = json.Unmarshal(f.Data, &pe)
			if pe.Code != protocol.CodeRateLimited || f.ID == "" {
				t.Fatalf("unexpected error %s id %q", f.Data, f.ID)
			}
			limited++
		}
	}
	if c.closeCode() != protocol.CloseRateLimited {
		t.Fatalf("close code %d, want 4029 (pongs %d, rate_limited %d)", c.closeCode(), pongs, limited)
	}
	if pongs < 5 || limited < 1 || limited > 10 {
		t.Fatalf("pongs %d, rate_limited %d", pongs, limited)
	}
}

func TestTokenExpiryCloses4001(t *testing.T) {
	e := start(t, defaultOpts())
	// JWT exp has one-second resolution: a 2 s token expires within 1-2 s.
	c := e.dialToken(e.token("u1", 2*time.Second))
	c.send(`{"type":"ping","id":"1"}`)
	c.expect(protocol.TypePong)
	c.expectClose(protocol.CloseTokenExpired, 5*time.Second)
}

func TestUserAndConnectionTargeting(t *testing.T) {
	e := start(t, defaultOpts())
	a1, a2, a3 := e.dial("alice"), e.dial("alice"), e.dial("alice")
	b := e.dial("bob")

	frame := protocol.Encode("test:user", "", map[string]int{"n": 1})
	if n := e.hub.SendToUser("alice", frame, ""); n != 3 {
		t.Fatalf("SendToUser delivered to %d", n)
	}
	for _, c := range []*client{a1, a2, a3} {
		c.expect("test:user")
	}
	if !e.hub.SendToConn(a2.connID, protocol.Encode("test:conn", "", nil)) {
		t.Fatal("SendToConn failed")
	}
	a2.expect("test:conn")
	// Everyone else got nothing: the next frame each sees is a marker.
	e.hub.SendToUsers([]string{"alice", "bob", "alice"}, protocol.Encode("test:users", "", nil), a1.connID)
	for _, c := range []*client{a2, a3, b} {
		c.expect("test:users")
	}
	e.hub.SendAll(protocol.Encode("test:all", "", nil), "")
	for _, c := range []*client{a1, a2, a3, b} {
		c.expect("test:all") // a1 never saw test:conn nor test:users; b never saw test:user
	}
}

func TestSlowConsumerCutOffOthersUnaffected(t *testing.T) {
	opts := defaultOpts()
	opts.QueueMaxBytes = 64 << 10
	opts.WriteTimeout = 500 * time.Millisecond
	e := start(t, opts)

	// The slow client: a raw socket with a tiny receive buffer that never
	// reads after the handshake.
	slow := rawDial(t, e, e.token("slow", time.Hour))
	waitFor(t, 5*time.Second, "slow registered", func() bool { n, _ := e.hub.Counts(); return n == 1 })

	const others = 100
	clients := make([]*client, others)
	for i := range clients {
		clients[i] = e.dial(fmt.Sprintf("fast%d", i))
	}
	slowID := ""
	e.hub.Each(func(c hub.Conn) {
		if c.UserID() == "slow" {
			slowID = c.ID()
		}
	})
	// Each round: a heavy burst to the slow client (which never reads) and
	// one fan-out to everyone. The fast clients must see every round's
	// fan-out within the deadline, and the sender never blocks.
	junk := protocol.Encode("test:junk", "", map[string]string{"p": strings.Repeat("j", 30<<10)})
	rounds := 0
	for ; rounds < 2000; rounds++ {
		e.hub.SendToConn(slowID, junk)
		e.hub.SendToConn(slowID, junk)
		e.hub.SendAll(protocol.Encode("test:fan", "", map[string]int{"i": rounds}), "")
		if _, ok := e.hub.Conn(slowID); !ok {
			rounds++
			break
		}
		if rounds%20 == 0 {
			for _, c := range clients {
				for want := rounds - 19; want <= rounds; want++ {
					if want < 0 {
						continue
					}
					c.expectFan(want)
				}
			}
		}
	}
	waitFor(t, 10*time.Second, "slow consumer removed", func() bool { n, _ := e.hub.Counts(); return n == others })
	if got := testutil.ToFloat64(e.metrics.QueueOverflows); got != 1 {
		t.Fatalf("overflows = %v", got)
	}
	// Everyone else still receives, in order, with nothing lost.
	e.hub.SendAll(protocol.Encode("test:fan", "", map[string]int{"i": rounds}), "")
	for _, c := range clients {
		for want := (rounds-1)/20*20 + 1; want <= rounds; want++ {
			c.expectFan(want)
		}
	}
	_ = slow
}

// A client that stops reading is released slowConsumerGrace after its
// queue overflows, not after the rest of the write timeout its blocked
// write had (30 s here): the overflow shortens the writer's deadline. The
// queue (8 MiB) is larger than what the socket buffers take, so the writer
// is blocked in write(2) when the queue overflows (on a busy machine the
// writer may look blocked early: then it is not, and the test passes
// without telling; it never fails for that).
func TestSlowConsumerReleasedAfterGrace(t *testing.T) {
	opts := defaultOpts()
	opts.QueueMaxBytes = 8 << 20
	opts.WriteTimeout = 30 * time.Second
	e := start(t, opts)
	slow := rawDial(t, e, e.token("slow", time.Hour))
	defer slow.Close()
	waitFor(t, 5*time.Second, "slow registered", func() bool { n, _ := e.hub.Counts(); return n == 1 })
	var sc hub.Conn
	e.hub.Each(func(c hub.Conn) { sc = c })
	junk := protocol.Encode("test:junk", "", map[string]string{"p": strings.Repeat("j", 30<<10)})
	// Fill the socket: one frame at a time while the writer keeps taking
	// them; once it stops taking them (blocked in write(2): the client
	// reads nothing), overflow the queue.
	for sent := 0; sent < 64<<20; sent += len(junk) {
		sc.Send(junk)
		deadline := time.Now().Add(200 * time.Millisecond)
		for gateway.Queued(sc) > 0 && time.Now().Before(deadline) {
			runtime.Gosched()
		}
		if gateway.Queued(sc) > 0 {
			break
		}
	}
	for sc.Send(junk) {
	}
	if got := testutil.ToFloat64(e.metrics.QueueOverflows); got != 1 {
		t.Fatalf("overflows = %v", got)
	}
	select {
	case <-gateway.WriterDone(sc):
	case <-time.After(10 * time.Second):
		t.Fatal("the slow consumer's writer still blocked 10 s after its queue overflowed (write timeout 30 s)")
	}
}

// expectFan waits for the fan-out message number i.
func (c *client) expectFan(i int) {
	c.t.Helper()
	f := c.expect("test:fan")
	var d struct{ I int }
	_ = json.Unmarshal(f.Data, &d)
	if d.I != i {
		c.t.Fatalf("fan-out %d, want %d", d.I, i)
	}
}

// rawDial performs a WebSocket handshake on a raw TCP socket with a small
// receive buffer and returns it unread.
func rawDial(t *testing.T, e *env, token string) net.Conn {
	t.Helper()
	addr := strings.TrimPrefix(e.srv.URL, "http://")
	d := net.Dialer{Control: nil}
	nc, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	_ = nc.(*net.TCPConn).SetReadBuffer(4096)
	t.Cleanup(func() { nc.Close() })
	req := "GET /ws?token=" + token + " HTTP/1.1\r\nHost: " + addr + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
	if _, err := io.WriteString(nc, req); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(nc)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("raw handshake: %v %v", resp, err)
	}
	return nc
}

func TestGracefulShutdownSends1001(t *testing.T) {
	e := start(t, defaultOpts())
	var cs []*client
	for i := 0; i < 5; i++ {
		cs = append(cs, e.dial(fmt.Sprintf("u%d", i)))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := e.gw.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	for _, c := range cs {
		c.expectClose(protocol.CloseGoingAway, 5*time.Second)
	}
	if !e.gw.Draining() {
		t.Fatal("not draining")
	}
	_, resp, err := websocket.DefaultDialer.Dial(e.wsURL+"?token="+e.token("late", time.Hour), nil)
	if err == nil || resp == nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("new connection during drain: %v %v", resp, err)
	}
}

// A frame that does not fit the outbound queue closes the connection with
// 4008; the client sees the close code when its socket had room for it.
func TestQueueOverflowSends4008(t *testing.T) {
	opts := defaultOpts()
	opts.QueueMaxBytes = 64 << 10
	e := start(t, opts)
	c := e.dial("u1")
	other := e.dial("u2")
	if e.hub.SendToConn(c.connID, protocol.Encode("test:big", "", map[string]string{"p": strings.Repeat("x", 70<<10)})) {
		t.Fatal("oversized frame accepted")
	}
	c.expectClose(protocol.CloseSlowConsumer, 5*time.Second)
	other.send(`{"type":"ping","id":"still"}`)
	other.expect(protocol.TypePong)
}
