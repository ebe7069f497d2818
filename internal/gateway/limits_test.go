package gateway_test

import (
	"encoding/json"
	"io"
	"net/http"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/parleyhq/parley/internal/gateway"
)

// tryDial dials once and returns the client, or the HTTP status and the
// decoded JSON error body of a refused upgrade.
func (e *env) tryDial(user string) (c *client, status int, body map[string]string) {
	e.t.Helper()
	ws, resp, err := websocket.DefaultDialer.Dial(e.wsURL+"?token="+e.token(user, time.Hour), nil)
	if err == nil {
		c = newClient(e.t, ws)
		c.expect("connected")
		return c, http.StatusSwitchingProtocols, nil
	}
	if resp == nil {
		e.t.Fatalf("dial: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	_ = json.Unmarshal(b, &body)
	return nil, resp.StatusCode, body
}

func (e *env) mustRefuse(user string, status int, code string) {
	e.t.Helper()
	c, got, body := e.tryDial(user)
	if c != nil {
		e.t.Fatalf("dial for %s was admitted, want HTTP %d", user, status)
	}
	if got != status || body["error"] != code || body["message"] == "" {
		e.t.Fatalf("dial for %s: HTTP %d %v, want %d {error:%s}", user, got, body, status, code)
	}
}

func (e *env) mustAdmit(user string) *client {
	e.t.Helper()
	c, got, body := e.tryDial(user)
	if c == nil {
		e.t.Fatalf("dial for %s refused: HTTP %d %v", user, got, body)
	}
	return c
}

// closeAndWait closes c from the client side and waits until its user's
// slot has been given back.
func (e *env) closeAndWait(c *client, user string, wantUser int) {
	e.t.Helper()
	_ = c.ws.Close()
	waitFor(e.t, 5*time.Second, "slot released", func() bool {
		_, n := e.hub.Reserved(user)
		return n == wantUser
	})
}

// At the per-user cap the next upgrade is refused with 429 rate_limited
// before upgrading; other users are unaffected; a closed connection gives
// its slot back.
func TestMaxConnectionsPerUser(t *testing.T) {
	opts := defaultOpts()
	opts.MaxConnectionsPerUser = 3
	e := start(t, opts)
	var cs []*client
	for range 3 {
		cs = append(cs, e.mustAdmit("u1"))
	}
	e.mustRefuse("u1", http.StatusTooManyRequests, "rate_limited")
	e.mustRefuse("u1", http.StatusTooManyRequests, "rate_limited")
	e.mustAdmit("u2")
	if n, _ := e.hub.Counts(); n != 4 {
		t.Fatalf("hub holds %d connections, want 4", n)
	}
	e.closeAndWait(cs[0], "u1", 2)
	e.mustAdmit("u1")
	e.mustRefuse("u1", http.StatusTooManyRequests, "rate_limited")
}

// Concurrent upgrades for one user cannot overshoot the cap: the slot is
// reserved atomically before the upgrade.
func TestMaxConnectionsPerUserConcurrent(t *testing.T) {
	opts := defaultOpts()
	opts.MaxConnectionsPerUser = 5
	e := start(t, opts)
	tok := e.token("u1", time.Hour)
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		admitted int
		refused  int
	)
	for range 40 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ws, resp, err := websocket.DefaultDialer.Dial(e.wsURL+"?token="+tok, nil)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				admitted++
				t.Cleanup(func() { _ = ws.Close() })
			case resp != nil && resp.StatusCode == http.StatusTooManyRequests:
				refused++
			default:
				t.Errorf("dial: %v", err)
			}
		}()
	}
	wg.Wait()
	if admitted != 5 || refused != 35 {
		t.Fatalf("admitted %d refused %d, want 5 and 35", admitted, refused)
	}
	waitFor(t, 5*time.Second, "5 connections registered", func() bool {
		n, _ := e.hub.Counts()
		return n == 5
	})
}

// Over the node cap the upgrade gets 503, whoever asks; a closed
// connection makes room again.
func TestMaxConnectionsNode(t *testing.T) {
	opts := defaultOpts()
	opts.MaxConnections = 2
	opts.MaxConnectionsPerUser = 10
	e := start(t, opts)
	a := e.mustAdmit("u1")
	e.mustAdmit("u2")
	e.mustRefuse("u3", http.StatusServiceUnavailable, "unavailable")
	e.mustRefuse("u1", http.StatusServiceUnavailable, "unavailable")
	e.closeAndWait(a, "u1", 0)
	e.mustAdmit("u3")
}

// Over the per-IP cap (all test clients share 127.0.0.1) the upgrade gets
// 429 whatever the user; the count goes down on close and the map forgets
// an address with no connection.
func TestMaxConnectionsPerIP(t *testing.T) {
	opts := defaultOpts()
	opts.MaxConnectionsPerIP = 3
	e := start(t, opts)
	var cs []*client
	for _, u := range []string{"a", "b", "c"} {
		cs = append(cs, e.mustAdmit(u))
	}
	e.mustRefuse("d", http.StatusTooManyRequests, "rate_limited")
	if n, keys := gateway.IPSlots(e.gw, "127.0.0.1"); n != 3 || keys != 1 {
		t.Fatalf("ip slots %d keys %d, want 3 and 1", n, keys)
	}
	// The refused dial took no user slot.
	if _, n := e.hub.Reserved("d"); n != 0 {
		t.Fatalf("refused user holds %d slots", n)
	}
	e.closeAndWait(cs[0], "a", 0)
	waitFor(t, 5*time.Second, "ip slot released", func() bool {
		n, _ := gateway.IPSlots(e.gw, "127.0.0.1")
		return n == 2
	})
	e.mustAdmit("d")
	e.mustRefuse("e", http.StatusTooManyRequests, "rate_limited") // b, c, d
}

func TestIPKey(t *testing.T) {
	for in, want := range map[string]string{
		"127.0.0.1:5000":             "127.0.0.1",
		"[::ffff:10.0.0.1]:1":        "10.0.0.1",
		"[2001:db8:1:2:3:4:5:6]:443": "2001:db8:1:2::/64",
		"[2001:db8:1:2:ffff::1]:443": "2001:db8:1:2::/64",
		"[2001:db8:1:3::1]:443":      "2001:db8:1:3::/64",
		"[fe80::1%eth0]:1":           "fe80::/64",
		"not an address":             "not an address",
	} {
		if got := gateway.IPKey(in); got != want {
			t.Errorf("IPKey(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestDeriveMaxConnections(t *testing.T) {
	cases := []struct {
		nofile uint64
		http   int
		want   int
	}{
		{1024, 1024, 960 - 240},        // small limit: HTTP counted as a quarter of 960
		{65536, 1024, 64448},           // 65536 - 1024 - 64
		{4096, 0, 4032},                // unlimited HTTP pool
		{1 << 63, 1024, 0},             // RLIM_INFINITY: no cap
		{0, 1024, 0},                   // unreadable
		{4160, 1024, 4160 - 64 - 1024}, // HTTP pool exactly a quarter of the rest
		{4156, 1024, 4092 - 1023},      // just under: the quarter (1023) counts
		{65, 1024, 1},                  // one descriptor left: at least one
		{64, 1024, 1},                  // nothing left: still at least one
	}
	for _, c := range cases {
		if got := gateway.DeriveFromNofile(c.nofile, c.http); got != c.want {
			t.Errorf("derive(%d, %d) = %d, want %d", c.nofile, c.http, got, c.want)
		}
	}
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		t.Skip(err)
	}
	got, nofile := gateway.DeriveMaxConnections(1024)
	if nofile != rl.Cur || got != gateway.DeriveFromNofile(rl.Cur, 1024) {
		t.Fatalf("DeriveMaxConnections = %d (nofile %d), rlimit %d", got, nofile, rl.Cur)
	}
}
