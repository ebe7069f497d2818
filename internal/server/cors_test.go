package server_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/gorilla/websocket"

	"github.com/parleyhq/parley/internal/server/servertest"
)

// corsRequest sends method to path with an Origin (and, for a preflight,
// the method it asks about) and returns the response.
func corsRequest(t *testing.T, s *servertest.Server, method, path, origin, askMethod string) *http.Response {
	t.Helper()
	req, err := http.NewRequest(method, s.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Origin", origin)
	req.Header.Set("Authorization", "Bearer "+servertest.APIKey)
	if askMethod != "" {
		req.Header.Set("Access-Control-Request-Method", askMethod)
		req.Header.Set("Access-Control-Request-Headers", "authorization,content-type")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp
}

// A page on a listed origin may call the REST API (preflight answered,
// Access-Control-Allow-Origin on the answer); any other origin gets no
// CORS headers, and without cors-origins nothing changes.
func TestCORS(t *testing.T) {
	const app, other = "https://app.example.com", "https://evil.example.net"
	s := servertest.Start(t, map[string]string{"PARLEY_CORS_ORIGINS": app + ", http://localhost:5173"})

	pre := corsRequest(t, s, http.MethodOptions, "/api/rooms/r/storage", app, http.MethodPatch)
	if pre.StatusCode/100 != 2 || pre.Header.Get("Access-Control-Allow-Origin") != app {
		t.Fatalf("preflight from %s: %d %v", app, pre.StatusCode, pre.Header)
	}
	if got := strings.ToLower(pre.Header.Get("Access-Control-Allow-Headers")); !strings.Contains(got, "authorization") {
		t.Fatalf("preflight allows headers %q, want Authorization", got)
	}
	get := corsRequest(t, s, http.MethodGet, "/api/rooms/r/storage", app, "")
	if get.StatusCode != http.StatusOK || get.Header.Get("Access-Control-Allow-Origin") != app {
		t.Fatalf("GET from %s: %d, Access-Control-Allow-Origin %q", app, get.StatusCode, get.Header.Get("Access-Control-Allow-Origin"))
	}
	for _, method := range []string{http.MethodOptions, http.MethodGet} {
		ask := ""
		if method == http.MethodOptions {
			ask = http.MethodPatch
		}
		r := corsRequest(t, s, method, "/api/rooms/r/storage", other, ask)
		if v := r.Header.Get("Access-Control-Allow-Origin"); v != "" {
			t.Fatalf("%s from an unlisted origin: Access-Control-Allow-Origin %q", method, v)
		}
	}

	plain := servertest.Start(t, nil)
	r := corsRequest(t, plain, http.MethodGet, "/api/rooms/r/storage", app, "")
	if v := r.Header.Get("Access-Control-Allow-Origin"); v != "" || r.StatusCode != http.StatusOK {
		t.Fatalf("without cors-origins: %d, Access-Control-Allow-Origin %q", r.StatusCode, v)
	}
}

// A chat post names the writer's connection (X-Connection-Id): a listed
// origin's preflight for it is answered (review finding: it was refused).
func TestCORSAllowsConnectionIDHeader(t *testing.T) {
	const app = "https://app.example.com"
	s := servertest.Start(t, map[string]string{"PARLEY_CORS_ORIGINS": app})
	req, err := http.NewRequest(http.MethodOptions, s.URL+"/api/rooms/r/messages", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Origin", app)
	req.Header.Set("Access-Control-Request-Method", http.MethodPost)
	req.Header.Set("Access-Control-Request-Headers", "authorization,content-type,x-connection-id")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got := strings.ToLower(resp.Header.Get("Access-Control-Allow-Headers")); resp.StatusCode/100 != 2 || !strings.Contains(got, "x-connection-id") {
		t.Fatalf("preflight with X-Connection-Id: %d, allowed headers %q", resp.StatusCode, got)
	}
}

// /ws takes the CORS list as its Origin list (PROTOCOL.md v1.1 §7): a
// listed origin, no Origin (not a browser) and the server's own origin
// connect; any other browser origin gets 403 before the upgrade. Without
// the list every origin connects.
func TestWebSocketOriginChecked(t *testing.T) {
	const app = "https://app.example.com"
	s := servertest.Start(t, map[string]string{"PARLEY_CORS_ORIGINS": app})
	tok := s.Token("origin-user", nil)
	own := "http://" + strings.TrimPrefix(s.URL, "http://")
	for _, c := range []struct {
		origin string
		want   int
	}{
		{app, http.StatusSwitchingProtocols},
		{"", http.StatusSwitchingProtocols},
		{own, http.StatusSwitchingProtocols},
		{"https://evil.example.net", http.StatusForbidden},
		{"null", http.StatusForbidden},
	} {
		if got := wsStatus(t, s.WSURL, tok, c.origin); got != c.want {
			t.Errorf("origin %q: %d, want %d", c.origin, got, c.want)
		}
	}
	plain := servertest.Start(t, nil)
	if got := wsStatus(t, plain.WSURL, plain.Token("origin-user", nil), "https://evil.example.net"); got != http.StatusSwitchingProtocols {
		t.Errorf("without cors-origins: %d, want 101", got)
	}
}

// wsStatus dials url with token and origin and returns the HTTP status of
// the handshake.
func wsStatus(t *testing.T, url, token, origin string) int {
	t.Helper()
	h := http.Header{}
	if origin != "" {
		h.Set("Origin", origin)
	}
	c, resp, err := websocket.DefaultDialer.Dial(url+"?token="+token, h)
	if c != nil {
		c.Close()
	}
	if resp == nil {
		t.Fatalf("dial %s: %v", url, err)
	}
	return resp.StatusCode
}
