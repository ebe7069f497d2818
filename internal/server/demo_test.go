package server_test

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/parleyhq/parley/internal/server/servertest"
)

// The demo app answers at / and its routes; /api, /ws, /healthz and
// /metrics keep their own handlers; unknown paths are 404; writes to the
// app's paths are 405. PARLEY_DEMO=false turns it off, and web-dir, when
// set, takes / instead.
func TestDemoMounted(t *testing.T) {
	s := servertest.Start(t, nil)
	for path, want := range map[string]int{"/": 200, "/rooms/abc": 200, "/login": 200, "/nope": 404, "/api/nope": 404,
		"/healthz": 200, "/metrics": 200, "/api/me": 401, "/ws": 401, "/api/rooms": 401} {
		code, body := s.Do("GET", path, "", nil)
		if code != want {
			t.Errorf("GET %s: %d, want %d", path, code, want)
		}
		isApp := strings.Contains(string(body), `<main id="view">`)
		if isApp != (want == 200 && path != "/healthz" && path != "/metrics") {
			t.Errorf("GET %s: demo page served = %v", path, isApp)
		}
	}
	if code, _ := s.Do("POST", "/rooms/abc", "", nil); code != http.StatusMethodNotAllowed {
		t.Errorf("POST /rooms/abc: %d", code)
	}
	res, err := http.Get(s.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if !strings.Contains(res.Header.Get("Content-Security-Policy"), "connect-src 'self' ws://"+strings.TrimPrefix(s.URL, "http://")) {
		t.Errorf("CSP: %q", res.Header.Get("Content-Security-Policy"))
	}

	off := servertest.Start(t, map[string]string{"PARLEY_DEMO": "false"})
	if code, _ := off.Do("GET", "/", "", nil); code != 404 {
		t.Errorf("PARLEY_DEMO=false: GET / = %d", code)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "index.html"), []byte("mine"), 0o644); err != nil {
		t.Fatal(err)
	}
	web := servertest.Start(t, map[string]string{"PARLEY_WEB_DIR": dir})
	if code, body := web.Do("GET", "/", "", nil); code != 200 || string(body) != "mine" {
		t.Errorf("web-dir: GET / = %d %q", code, body)
	}
}
