package server_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/parleyhq/parley/internal/server"
	"github.com/parleyhq/parley/internal/server/servertest"
)

// clientFrom is an HTTP client whose connections leave from the loopback
// address ip (127.0.0.0/8 is all local on Linux), so a test can be two
// different client IPs without trusting forwarding headers.
func clientFrom(ip string) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 5 * time.Second}
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DialContext: d.DialContext}}
}

func postFrom(t *testing.T, c *http.Client, url, body string) (int, []byte) {
	t.Helper()
	resp, err := c.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

func errorCode(b []byte) string {
	var e struct{ Error string }
	_ = json.Unmarshal(b, &e)
	return e.Error
}

// A panic in an HTTP handler answers 500 internal, is counted in
// parley_panics_total{where="http"}, and the node keeps serving; a panic
// after the handler wrote its headers leaves the response alone.
func TestHTTPHandlerPanicIsContained(t *testing.T) {
	s := servertest.Start(t, nil)
	mux := s.Srv.MuxForTest()
	mux.HandleFunc("GET /test/panic", func(http.ResponseWriter, *http.Request) { panic("injected") })
	mux.HandleFunc("GET /test/panic-after-write", func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusAccepted)
		_, _ = w.Write([]byte("partial"))
		_ = http.NewResponseController(w).Flush()
		panic("injected after write")
	})
	mux.HandleFunc("GET /test/panic-after-hijack", func(w http.ResponseWriter, _ *http.Request) {
		if _, _, err := http.NewResponseController(w).Hijack(); err != nil {
			t.Error(err)
		}
		panic("injected after hijack")
	})
	nc, br := dialRaw(t, s)
	_, _ = io.WriteString(nc, "GET /test/panic-after-hijack HTTP/1.1\r\nHost: x\r\n\r\n")
	if !closedByServer(nc, br, 5*time.Second) {
		t.Fatal("hijacked connection left open after its handler panicked")
	}
	code, body := s.Do("GET", "/test/panic", "", nil)
	if code != 500 || errorCode(body) != "internal" || !strings.Contains(string(body), `"message"`) {
		t.Fatalf("panicking handler: %d %s", code, body)
	}
	// Headers already sent: the response is aborted, never passed off as
	// complete.
	fresh := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}} // no reuse, so no retry
	resp, err := fresh.Get(s.URL + "/test/panic-after-write")
	if err == nil {
		b, rerr := io.ReadAll(resp.Body)
		resp.Body.Close()
		if rerr == nil || resp.StatusCode != http.StatusAccepted || strings.Contains(string(b), "internal") {
			t.Fatalf("after write: %d %q, read error %v; want an aborted 202", resp.StatusCode, b, rerr)
		}
	}
	if code, _ := s.Do("GET", "/healthz", "", nil); code != 200 {
		t.Fatalf("healthz after panics: %d", code)
	}
	c := s.DialUser("alice", servertest.AllRooms)
	c.ExpectNothing()
	_, metrics := s.Do("GET", "/metrics", "", nil)
	if !strings.Contains(string(metrics), `parley_panics_total{where="http"} 3`) {
		t.Fatalf("panic not counted:\n%s", grepLines(string(metrics), "parley_panics_total"))
	}
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// The refresh-token sweep recovers from a panic and keeps running.
func TestRefreshSweepSurvivesPanic(t *testing.T) {
	cfg := servertest.Config(t, nil)
	srv, err := server.New(context.Background(), cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	var runs atomic.Int32
	srv.SetSweepForTest(5*time.Millisecond, func() {
		if runs.Add(1) == 1 {
			panic("injected sweep panic")
		}
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv.Start(ln)
	defer func() { _ = srv.Shutdown(context.Background()) }()
	servertest.WaitFor(t, 5*time.Second, "three sweeps", func() bool { return runs.Load() >= 3 })
	rec := httpGet(t, "http://"+ln.Addr().String()+"/metrics")
	if !strings.Contains(rec, `parley_panics_total{where="background"} 1`) {
		t.Fatalf("sweep panic not counted:\n%s", grepLines(rec, "parley_panics_total"))
	}
}

func httpGet(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// Registration is rate-limited per client IP: at the burst it works, past
// it 429, and another IP is not affected.
func TestRegisterRateLimitedPerIP(t *testing.T) {
	s := servertest.Start(t, map[string]string{"PARLEY_REGISTER_BURST": "2", "PARLEY_REGISTER_RATE": "0.001"})
	a, b := clientFrom("127.0.0.1"), clientFrom("127.0.0.2")
	for i, u := range []string{"user1", "user2"} {
		if code, body := postFrom(t, a, s.URL+"/api/auth/register", `{"username":"`+u+`","password":"password-123"}`); code != 201 {
			t.Fatalf("registration %d: %d %s", i+1, code, body)
		}
	}
	code, body := postFrom(t, a, s.URL+"/api/auth/register", `{"username":"user3","password":"password-123"}`)
	if code != 429 || errorCode(body) != "rate_limited" {
		t.Fatalf("past the burst: %d %s", code, body)
	}
	if code, body := postFrom(t, b, s.URL+"/api/auth/register", `{"username":"user4","password":"password-123"}`); code != 201 {
		t.Fatalf("another IP: %d %s", code, body)
	}
}

// Wrong logins from one IP do not lock the victim out from another.
func TestLoginLockoutFromOtherIPImpossible(t *testing.T) {
	s := servertest.Start(t, map[string]string{"PARLEY_LOGIN_BURST": "3", "PARLEY_LOGIN_RATE": "0.001"})
	victim, attacker := clientFrom("127.0.0.1"), clientFrom("127.0.0.2")
	if code, body := postFrom(t, victim, s.URL+"/api/auth/register", `{"username":"victim","password":"right-password"}`); code != 201 {
		t.Fatalf("register: %d %s", code, body)
	}
	for i := 0; i < 3; i++ {
		if code, body := postFrom(t, attacker, s.URL+"/api/auth/login", `{"username":"victim","password":"wrong-password"}`); code != 401 {
			t.Fatalf("wrong login %d: %d %s", i+1, code, body)
		}
	}
	if code, body := postFrom(t, attacker, s.URL+"/api/auth/login", `{"username":"victim","password":"wrong-password"}`); code != 429 {
		t.Fatalf("attacker past the burst: %d %s", code, body)
	}
	if code, body := postFrom(t, victim, s.URL+"/api/auth/login", `{"username":"victim","password":"right-password"}`); code != 200 {
		t.Fatalf("victim from another IP: %d %s", code, body)
	}
}

// rawRequest sends one keep-alive GET on a raw connection and reads the
// response.
func rawRequest(t *testing.T, nc net.Conn, br *bufio.Reader, path string) int {
	t.Helper()
	if _, err := io.WriteString(nc, "GET "+path+" HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	_ = nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// closedByServer reports whether the server closed nc within d (EOF or
// reset), false when the read merely timed out.
func closedByServer(nc net.Conn, br *bufio.Reader, d time.Duration) bool {
	_ = nc.SetReadDeadline(time.Now().Add(d))
	_, err := br.ReadByte()
	var ne net.Error
	return err != nil && !(errors.As(err, &ne) && ne.Timeout())
}

func dialRaw(t *testing.T, s *servertest.Server) (net.Conn, *bufio.Reader) {
	t.Helper()
	nc, err := net.Dial("tcp", strings.TrimPrefix(s.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	return nc, bufio.NewReader(nc)
}

// An idle keep-alive connection is closed after http-idle-timeout.
func TestIdleKeepAliveClosed(t *testing.T) {
	s := servertest.Start(t, map[string]string{"PARLEY_HTTP_IDLE_TIMEOUT": "200ms"})
	nc, br := dialRaw(t, s)
	if code := rawRequest(t, nc, br, "/healthz"); code != 200 {
		t.Fatalf("healthz %d", code)
	}
	t0 := time.Now()
	if !closedByServer(nc, br, 5*time.Second) {
		t.Fatal("idle connection still open after 5s (idle timeout 200ms)")
	}
	if d := time.Since(t0); d < 150*time.Millisecond {
		t.Fatalf("closed after %s, before the idle timeout", d)
	}
}

// A body that never finishes arriving is cut after http-read-timeout.
func TestSlowBodyCut(t *testing.T) {
	s := servertest.Start(t, map[string]string{"PARLEY_HTTP_READ_TIMEOUT": "300ms"})
	nc, br := dialRaw(t, s)
	_, _ = io.WriteString(nc, "POST /api/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"username\":")
	_ = nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err := http.ReadResponse(br, nil)
	if err == nil {
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode < 400 {
			t.Fatalf("slow body answered %d", resp.StatusCode)
		}
	} else {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatal("server still waiting for the body after 5s (read timeout 300ms)")
		}
	}
	if !closedByServer(nc, br, 5*time.Second) {
		t.Fatal("connection with a slow body not closed")
	}
}

// A client that never finishes its headers is cut after
// http-read-header-timeout.
func TestSlowHeadersCut(t *testing.T) {
	s := servertest.Start(t, map[string]string{"PARLEY_HTTP_READ_HEADER_TIMEOUT": "200ms"})
	nc, br := dialRaw(t, s)
	_, _ = io.WriteString(nc, "GET /healthz HTTP/1.1\r\nHost: x\r\n")
	t0 := time.Now()
	if !closedByServer(nc, br, 5*time.Second) {
		t.Fatal("connection with unfinished headers still open after 5s (header timeout 200ms)")
	}
	if d := time.Since(t0); d < 150*time.Millisecond {
		t.Fatalf("closed after %s, before the header timeout", d)
	}
}

// A WebSocket lives well past the HTTP read, write and idle timeouts: they
// apply to REST requests only.
func TestWebSocketOutlivesHTTPTimeouts(t *testing.T) {
	s := servertest.Start(t, map[string]string{"PARLEY_HTTP_READ_TIMEOUT": "200ms",
		"PARLEY_HTTP_WRITE_TIMEOUT": "200ms", "PARLEY_HTTP_IDLE_TIMEOUT": "200ms", "PARLEY_PASSWORD_HASH_WAIT": "100ms"})
	c := s.DialUser("alice", servertest.AllRooms)
	t0 := time.Now()
	for time.Since(t0) < time.Second {
		c.ExpectNothing() // a ping/pong round trip on the live connection
		select {
		case <-c.Closed():
			t.Fatalf("WebSocket closed after %s (code %d)", time.Since(t0), c.CloseCode())
		case <-time.After(100 * time.Millisecond): // let time pass beyond the timeouts
		}
	}
}

// The reported scenario at small scale: with a cap of 20, 40 idle
// keep-alive connections do not starve the node: the oldest idle ones are
// closed, and /healthz and a WebSocket upgrade still work.
func TestIdleConnectionsOverCap(t *testing.T) {
	const max, n = 20, 40
	s := servertest.Start(t, map[string]string{"PARLEY_HTTP_MAX_CONNECTIONS": "20"})
	type rc struct {
		nc net.Conn
		br *bufio.Reader
	}
	conns := make([]rc, n)
	open := func(from, to int) {
		for i := from; i < to; i++ {
			nc, br := dialRaw(t, s)
			conns[i] = rc{nc, br}
			if code := rawRequest(t, nc, br, "/healthz"); code != 200 {
				t.Fatalf("conn %d: healthz %d", i, code)
			}
		}
	}
	// At the cap: all 20 idle connections are kept.
	open(0, max)
	var wg sync.WaitGroup
	var closedAtCap atomic.Int32
	for _, c := range conns[:max] {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if closedByServer(c.nc, c.br, 300*time.Millisecond) {
				closedAtCap.Add(1)
			}
		}()
	}
	wg.Wait()
	if n := closedAtCap.Load(); n != 0 {
		t.Fatalf("%d connections closed at the cap", n)
	}
	// Past it.
	open(max, n)
	if code, body := postFrom(t, clientFrom("127.0.0.1"), s.URL+"/healthz", ""); code != 405 && code != 200 {
		t.Fatalf("new connection over the cap: %d %s", code, body)
	}
	if code, _ := s.Do("GET", "/healthz", "", nil); code != 200 {
		t.Fatalf("healthz over the cap: %d", code)
	}
	c := s.DialUser("alice", servertest.AllRooms)
	c.ExpectNothing()
	var closed atomic.Int32
	for _, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if closedByServer(c.nc, c.br, time.Second) {
				closed.Add(1)
			}
		}()
	}
	wg.Wait()
	if got := closed.Load(); got < n-max {
		t.Fatalf("%d of %d idle connections closed; want at least %d (cap %d)", got, n, n-max, max)
	}
	// The WebSocket is not counted against the cap and was not cut.
	c.ExpectNothing()
}

// loginFrom posts a login from client c and returns the status code.
func loginFrom(t *testing.T, c *http.Client, url, user, password string) int {
	t.Helper()
	code, _ := postFrom(t, c, url+"/api/auth/login", `{"username":"`+user+`","password":"`+password+`"}`)
	return code
}

// attackers are n clients leaving from 127.0.3.1.. (127.0.0.0/8 is all
// local on Linux).
func attackers(t *testing.T, n int) []*http.Client {
	out := make([]*http.Client, n)
	for i := range out {
		out[i] = clientFrom(fmt.Sprintf("127.0.3.%d", i+1))
		t.Cleanup(out[i].CloseIdleConnections)
	}
	return out
}

func registerVictim(t *testing.T, s *servertest.Server) {
	t.Helper()
	c := clientFrom("127.0.0.1")
	defer c.CloseIdleConnections()
	if code, body := postFrom(t, c, s.URL+"/api/auth/register", `{"username":"victim","password":"right-password"}`); code != 201 {
		t.Fatalf("register: %d %s", code, body)
	}
}

// The reported sustained attack at small scale: ten addresses keep sending
// wrong passwords for the victim, keeping the per-username bucket empty;
// the victim's right password from their usual address succeeds every
// time, and after its first failure every attacker address is refused.
func TestLoginNoLockoutBySustainedAttack(t *testing.T) {
	s := servertest.Start(t, map[string]string{"PARLEY_LOGIN_USER_BURST": "3", "PARLEY_LOGIN_USER_RATE": "0.001"})
	registerVictim(t, s)
	att := attackers(t, 10)
	victim := clientFrom("127.0.0.1")
	defer victim.CloseIdleConnections()
	for round := 0; round < 4; round++ {
		for i, c := range att {
			code := loginFrom(t, c, s.URL, "victim", "wrong-password")
			if want := map[bool]int{true: 401, false: 429}[round == 0]; code != want {
				t.Fatalf("round %d, attacker %d: %d, want %d", round, i+1, code, want)
			}
		}
		if code := loginFrom(t, victim, s.URL, "victim", "right-password"); code != 200 {
			t.Fatalf("round %d: victim from their address got %d", round, code)
		}
	}
}

// The reported one-shot, scaled down (each wrong password costs a real
// argon2id check): 30 addresses each send one wrong password, more than
// the per-username burst of 20 (120 against the default 100 in the
// report), then the right password from a fresh address succeeds. A
// second guess from any of the 30 is refused: one ungated guess per
// address.
func TestLoginNoLockoutByManyAddresses(t *testing.T) {
	s := servertest.Start(t, map[string]string{"PARLEY_LOGIN_USER_BURST": "20", "PARLEY_LOGIN_USER_RATE": "0.001",
		"PARLEY_PASSWORD_HASH_WAIT": "20s"}) // < http-write-timeout (30s); slow shared CPUs
	registerVictim(t, s)
	att := attackers(t, 30)
	var wg sync.WaitGroup
	codes := make([]int, len(att))
	sem := make(chan struct{}, 4)
	for i, c := range att {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			resp, err := c.Post(s.URL+"/api/auth/login", "application/json",
				strings.NewReader(`{"username":"victim","password":"wrong-password"}`))
			if err != nil {
				t.Error(err)
				return
			}
			resp.Body.Close()
			codes[i] = resp.StatusCode
		}()
	}
	wg.Wait()
	for i, code := range codes {
		if code != 401 {
			t.Fatalf("attacker %d's single guess: %d, want 401", i+1, code)
		}
	}
	fresh := clientFrom("127.0.4.1")
	defer fresh.CloseIdleConnections()
	if code := loginFrom(t, fresh, s.URL, "victim", "right-password"); code != 200 {
		t.Fatalf("victim from a fresh address: %d", code)
	}
	for _, i := range []int{0, 14, 29} {
		if code := loginFrom(t, att[i], s.URL, "victim", "wrong-password"); code != 429 {
			t.Fatalf("attacker %d's second guess: %d, want 429", i+1, code)
		}
	}
}

// One address's guesses stay bounded: on one username by the pair bucket
// (login-burst), over many usernames by the IP bucket (login-ip-burst),
// whatever the per-username buckets hold.
func TestLoginGuessesPerAddressBounded(t *testing.T) {
	s := servertest.Start(t, map[string]string{"PARLEY_LOGIN_BURST": "3", "PARLEY_LOGIN_RATE": "0.001",
		"PARLEY_LOGIN_IP_BURST": "5", "PARLEY_LOGIN_IP_RATE": "0.001", "PARLEY_LOGIN_USER_BURST": "1000"})
	registerVictim(t, s)
	a := attackers(t, 1)[0]
	for i := 0; i < 3; i++ {
		if code := loginFrom(t, a, s.URL, "victim", "wrong-password"); code != 401 {
			t.Fatalf("guess %d: %d", i+1, code)
		}
	}
	if code := loginFrom(t, a, s.URL, "victim", "right-password"); code != 429 {
		t.Fatalf("4th guess on one username (login-burst 3): %d, want 429", code)
	}
	for i, u := range []string{"other1", "other2"} {
		if code := loginFrom(t, a, s.URL, u, "wrong-password"); code != 401 {
			t.Fatalf("IP's guess %d: %d", i+4, code)
		}
	}
	if code := loginFrom(t, a, s.URL, "other3", "wrong-password"); code != 429 {
		t.Fatalf("6th guess from one address (login-ip-burst 5): %d, want 429", code)
	}
}

// A victim who mistyped once from their address makes that pair unclean:
// while others keep the per-username bucket empty, their right password is
// refused (429) until the bucket has a token again (or the failure window,
// api.LoginFailureWindow, has passed); then it succeeds, which clears the
// record.
func TestLoginMistypedVictimLimitedByUsernameBucket(t *testing.T) {
	s := servertest.Start(t, map[string]string{"PARLEY_LOGIN_USER_BURST": "2", "PARLEY_LOGIN_USER_RATE": "0.25"})
	registerVictim(t, s)
	for _, c := range attackers(t, 2) {
		if code := loginFrom(t, c, s.URL, "victim", "wrong-password"); code != 401 {
			t.Fatalf("attacker: %d", code)
		}
	}
	victim := clientFrom("127.0.0.1")
	defer victim.CloseIdleConnections()
	if code := loginFrom(t, victim, s.URL, "victim", "mistyped-password"); code != 401 {
		t.Fatalf("typo from a clean address: %d, want 401", code)
	}
	// Bucket: 2 - 3 failures = -1 token; 8 seconds from the first failure
	// to one token at 0.25/s (room for three slow argon2id checks).
	if code := loginFrom(t, victim, s.URL, "victim", "right-password"); code != 429 {
		t.Fatalf("right password right after the typo, username bucket empty: %d, want 429", code)
	}
	servertest.WaitFor(t, 30*time.Second, "the username bucket to refill", func() bool {
		code := loginFrom(t, victim, s.URL, "victim", "right-password")
		if code != 200 && code != 429 {
			t.Fatalf("victim: %d", code)
		}
		return code == 200
	})
	// The success cleared the record: the pair is clean again, whatever the
	// attackers do to the username bucket.
	for _, c := range attackers(t, 4) {
		loginFrom(t, c, s.URL, "victim", "wrong-password")
	}
	if code := loginFrom(t, victim, s.URL, "victim", "right-password"); code != 200 {
		t.Fatalf("victim after their success: %d", code)
	}
}
