// Package testenv holds the one policy for tests that need tools outside
// Go (Node, Debian's Chromium, web/media's and web/client's npm packages):
// skip with a clear
// message where they are missing, but fail instead when
// PARLEY_REQUIRE_BROWSER=1 (CI sets it, so CI never skips them).
package testenv

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
)

// RepoRoot is the repository root (the directory of go.mod).
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// WebMedia is web/media, with the mediasoup-client bundle and the browser
// test page.
func WebMedia() string { return filepath.Join(RepoRoot(), "web", "media") }

// WebClient is web/client, the @parley/client SDK package.
func WebClient() string { return filepath.Join(RepoRoot(), "web", "client") }

// Chromium is the browser the tests drive: $CHROMIUM or /usr/bin/chromium.
func Chromium() string {
	if c := os.Getenv("CHROMIUM"); c != "" {
		return c
	}
	return "/usr/bin/chromium"
}

// skipOrFail stops the test because what it needs is missing.
func skipOrFail(t testing.TB, what, missing string) {
	t.Helper()
	if os.Getenv("PARLEY_REQUIRE_BROWSER") == "1" {
		t.Fatalf("%s required but %s", what, missing)
	}
	t.Skipf("%s skipped: %s", what, missing)
}

// Node requires node on PATH.
func Node(t testing.TB, what string) {
	t.Helper()
	if _, err := exec.LookPath("node"); err != nil {
		skipOrFail(t, what, "node is not installed")
	}
}

// NPMPackage requires node and web/media/node_modules/<pkg>.
func NPMPackage(t testing.TB, what, pkg string) {
	t.Helper()
	Node(t, what)
	if _, err := os.Stat(filepath.Join(WebMedia(), "node_modules", pkg)); err != nil {
		skipOrFail(t, what, "web/media/node_modules is missing (run web/media/build.sh)")
	}
}

// Browser requires node, Chromium and playwright-core, and builds the test
// page bundle (web/media/dist) when it is missing.
func Browser(t testing.TB, what string) {
	t.Helper()
	Node(t, what)
	if _, err := os.Stat(Chromium()); err != nil {
		skipOrFail(t, what, Chromium()+" is missing (apt-get install chromium)")
	}
	NPMPackage(t, what, "playwright-core")
	if _, err := os.Stat(filepath.Join(WebMedia(), "dist", "page.js")); err != nil {
		if out, err := exec.Command(filepath.Join(WebMedia(), "build.sh")).CombinedOutput(); err != nil {
			t.Fatalf("web/media/build.sh: %v\n%s", err, out)
		}
	}
}

// ClientPackage requires node and web/client/node_modules (npm ci), and
// builds web/client/dist with `npm run build` when it is missing or older
// than a file of web/client/src.
func ClientPackage(t testing.TB, what string) {
	t.Helper()
	Node(t, what)
	dir := WebClient()
	for _, pkg := range []string{"typescript", "ws"} {
		if _, err := os.Stat(filepath.Join(dir, "node_modules", pkg)); err != nil {
			skipOrFail(t, what, "web/client/node_modules is missing (run npm ci in web/client)")
		}
	}
	if !clientBuilt(dir) {
		cmd := exec.Command("npm", "run", "build")
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("web/client: npm run build: %v\n%s", err, out)
		}
	}
}

// clientBuilt reports whether dist/index.js exists and is newer than every
// file in src/.
func clientBuilt(dir string) bool {
	built, err := os.Stat(filepath.Join(dir, "dist", "index.js"))
	if err != nil {
		return false
	}
	srcs, _ := filepath.Glob(filepath.Join(dir, "src", "*"))
	srcs = append(srcs, filepath.Join(dir, "tsconfig.json"), filepath.Join(dir, "package.json"))
	for _, f := range srcs {
		if fi, err := os.Stat(f); err == nil && fi.ModTime().After(built.ModTime()) {
			return false
		}
	}
	// A source deleted since the build leaves a stale output behind: rebuild.
	outs, _ := filepath.Glob(filepath.Join(dir, "dist", "*.js"))
	for _, o := range outs {
		name := filepath.Base(o)
		if _, err := os.Stat(filepath.Join(dir, "src", name[:len(name)-len(".js")]+".ts")); err != nil {
			return false
		}
	}
	return true
}
