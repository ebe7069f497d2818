// Package demo serves the Parley demo app (sign up, rooms with live
// cursors, a shared to-do list, chat and calls) from files built into the
// binary. The app's source is beside this file (index.html, app.ts,
// style.css); build.mjs bundles it with the SDK (web/client/src) and
// mediasoup-client into dist/, which is committed so that `go build` needs
// no npm. Rebuild it with `go generate ./web/demo`.
package demo

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"io/fs"
	"net/http"
	"path"
	"regexp"
	"strings"
	"time"
)

//go:generate sh build.sh

//go:embed dist
var dist embed.FS

// file is one built file, read once.
type file struct {
	body        []byte
	contentType string
	etag        string
	immutable   bool // content-hashed name: cached for a year
}

// contentTypes are the types of what the build writes; anything else is
// served as application/octet-stream (nosniff keeps it inert).
var contentTypes = map[string]string{
	".html":  "text/html; charset=utf-8",
	".js":    "text/javascript; charset=utf-8",
	".css":   "text/css; charset=utf-8",
	".svg":   "image/svg+xml",
	".png":   "image/png",
	".ico":   "image/x-icon",
	".json":  "application/json",
	".map":   "application/json",
	".txt":   "text/plain; charset=utf-8",
	".woff2": "font/woff2",
}

// hashed matches the names esbuild gives content-hashed assets
// (assets/app-ABCD1234.js).
var hashed = regexp.MustCompile(`^assets/.+-[A-Z0-9]{8}\.[a-z0-9]+$`)

// appRoute matches the paths the app routes itself (history API): they
// all answer index.html. Any other path that is not a built file is 404.
var appRoute = regexp.MustCompile(`^/(?:|login|signup|rooms|rooms/[A-Za-z0-9._:-]{1,128})$`)

// hostRe is what a Host header may hold to be named in connect-src.
var hostRe = regexp.MustCompile(`^[A-Za-z0-9.\-]+(?::[0-9]{1,5})?$|^\[[0-9A-Fa-f:.]+\](?::[0-9]{1,5})?$`)

// Handler serves the app: index.html for "/" and the app's routes
// (no-cache, revalidated by ETag), the built assets (cached for a year:
// their names change with their content), 404 for anything else, and 405
// for methods other than GET and HEAD. Every answer carries a strict
// Content-Security-Policy (scripts and styles from this origin only, no
// inline code; WebSockets to this host; blob: and mediastream: media for
// calls), nosniff, no referrer and no framing.
func Handler() http.Handler {
	files := map[string]*file{}
	err := fs.WalkDir(dist, "dist", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := dist.ReadFile(p)
		if err != nil {
			return err
		}
		name := strings.TrimPrefix(p, "dist/")
		ct, ok := contentTypes[path.Ext(name)]
		if !ok {
			ct = "application/octet-stream"
		}
		sum := sha256.Sum256(b)
		files[name] = &file{body: b, contentType: ct, etag: `"` + hex.EncodeToString(sum[:8]) + `"`,
			immutable: hashed.MatchString(name)}
		return nil
	})
	if err != nil {
		panic("web/demo: reading the embedded dist: " + err.Error())
	}
	index := files["index.html"]
	if index == nil {
		panic("web/demo: dist/index.html is missing; run go generate ./web/demo")
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", csp(r.Host))
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Permissions-Policy", "camera=(self), microphone=(self), display-capture=(self)")
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			h.Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		f := files[strings.TrimPrefix(r.URL.Path, "/")]
		switch {
		case appRoute.MatchString(r.URL.Path) || r.URL.Path == "/index.html":
			f = index
		case f == nil:
			http.NotFound(w, r)
			return
		}
		h.Set("Content-Type", f.contentType)
		h.Set("ETag", f.etag)
		if f.immutable {
			h.Set("Cache-Control", "public, max-age=31536000, immutable")
		} else {
			h.Set("Cache-Control", "no-cache")
		}
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(f.body))
	})
}

// csp is the Content-Security-Policy for a page served to host: nothing
// but this origin, plus WebSockets to the same host (CSP 'self' covers
// ws: only in recent browsers) and blob:/mediastream: for call videos.
func csp(host string) string {
	connect := "'self'"
	if hostRe.MatchString(host) {
		connect += " ws://" + host + " wss://" + host
	}
	return "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; " +
		"media-src 'self' blob: mediastream:; connect-src " + connect + "; font-src 'self'; " +
		"manifest-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'; object-src 'none'"
}
