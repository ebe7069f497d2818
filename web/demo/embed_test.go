package demo

import (
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
)

func get(t *testing.T, h http.Handler, method, path string, hdr ...string) *http.Response {
	t.Helper()
	r := httptest.NewRequest(method, path, nil)
	r.Host = "demo.example:7880"
	for i := 0; i+1 < len(hdr); i += 2 {
		r.Header.Set(hdr[i], hdr[i+1])
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w.Result()
}

// The built app: index.html for / and the app's routes (no-cache), the
// hashed assets it names (cached for a year, right types), 404 elsewhere,
// 405 for writes, and the security headers on every answer.
func TestHandler(t *testing.T) {
	h := Handler()
	res := get(t, h, "GET", "/")
	body, _ := io.ReadAll(res.Body)
	if res.StatusCode != 200 || res.Header.Get("Content-Type") != "text/html; charset=utf-8" || res.Header.Get("Cache-Control") != "no-cache" {
		t.Fatalf("/: %d %v", res.StatusCode, res.Header)
	}
	assets := regexp.MustCompile(`(?:src|href)="/(assets/app-[A-Z0-9]{8}\.(?:js|css))"`).FindAllStringSubmatch(string(body), -1)
	if len(assets) != 2 {
		t.Fatalf("index.html names %d hashed assets, want 2 (js, css)", len(assets))
	}
	for _, a := range assets {
		res := get(t, h, "GET", "/"+a[1])
		want := map[bool]string{true: "text/javascript; charset=utf-8", false: "text/css; charset=utf-8"}[strings.HasSuffix(a[1], ".js")]
		if res.StatusCode != 200 || res.Header.Get("Content-Type") != want || res.Header.Get("Cache-Control") != "public, max-age=31536000, immutable" {
			t.Errorf("%s: %d %v", a[1], res.StatusCode, res.Header)
		}
	}
	for _, p := range []string{"/login", "/signup", "/rooms", "/rooms/team-a.b:c_1", "/index.html"} {
		res := get(t, h, "GET", p)
		b, _ := io.ReadAll(res.Body)
		if res.StatusCode != 200 || string(b) != string(body) || res.Header.Get("Cache-Control") != "no-cache" {
			t.Errorf("%s: %d, not index.html", p, res.StatusCode)
		}
	}
	for _, p := range []string{"/nope", "/rooms/a/b", "/rooms/bad%20id", "/assets/", "/assets/missing-ABCDEFGH.js", "/api/unknown", "/../embed.go", "/dist/index.html"} {
		if res := get(t, h, "GET", p); res.StatusCode != 404 {
			t.Errorf("%s: %d, want 404", p, res.StatusCode)
		}
	}
	if res := get(t, h, "POST", "/"); res.StatusCode != 405 || res.Header.Get("Allow") != "GET, HEAD" {
		t.Errorf("POST /: %d %v", res.StatusCode, res.Header)
	}
	res = get(t, h, "HEAD", "/rooms/x")
	if b, _ := io.ReadAll(res.Body); res.StatusCode != 200 || len(b) != 0 {
		t.Errorf("HEAD: %d, %d bytes", res.StatusCode, len(b))
	}
	if res := get(t, h, "GET", "/favicon.svg"); res.Header.Get("Content-Type") != "image/svg+xml" {
		t.Errorf("favicon: %v", res.Header)
	}
	// Revalidation: the ETag answers 304.
	etag := get(t, h, "GET", "/").Header.Get("ETag")
	if res := get(t, h, "GET", "/", "If-None-Match", etag); etag == "" || res.StatusCode != 304 {
		t.Errorf("If-None-Match %q: %d", etag, res.StatusCode)
	}
	for _, p := range []string{"/", "/nope"} {
		res := get(t, h, "GET", p)
		csp := res.Header.Get("Content-Security-Policy")
		for _, want := range []string{"default-src 'none'", "script-src 'self';", "style-src 'self';", "connect-src 'self' ws://demo.example:7880 wss://demo.example:7880;",
			"media-src 'self' blob: mediastream:", "frame-ancestors 'none'", "object-src 'none'"} {
			if !strings.Contains(csp, want) {
				t.Errorf("%s: CSP %q lacks %q", p, csp, want)
			}
		}
		if strings.Contains(csp, "unsafe") || res.Header.Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("%s: CSP %q, nosniff %q", p, csp, res.Header.Get("X-Content-Type-Options"))
		}
	}
	// A Host that is not a host name is not echoed into the policy.
	if got := csp("evil\r\nX: y"); strings.Contains(got, "evil") {
		t.Errorf("csp echoed a bad host: %q", got)
	}
}

// index.html carries no inline script or style (the CSP would block it).
func TestIndexHasNoInlineCode(t *testing.T) {
	b, err := dist.ReadFile("dist/index.html")
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	if regexp.MustCompile(`<script(?:\s[^>]*)?>[^<]`).MatchString(s) || strings.Contains(s, "<style") || strings.Contains(s, " style=") || regexp.MustCompile(`\son[a-z]+=`).MatchString(s) {
		t.Fatal("dist/index.html has inline script, style or event handlers")
	}
}
