package server_test

import (
	"net/http"
	"strings"
	"testing"

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
