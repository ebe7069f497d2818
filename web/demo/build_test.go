package demo

import (
	"bytes"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"testing"
)

// build.mjs gives the same dist/ whatever else is installed: with a second
// copy of mediasoup-client in web/client/node_modules (what `npm ci` in
// web/client leaves, CI's order), the bundle and its content-hashed name
// are those of a tree without it. The test builds a copy of the demo and
// the SDK source in a temporary tree both ways and compares the outputs.
func TestBuildIgnoresOtherNodeModules(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the demo twice")
	}
	_, file, _, _ := runtime.Caller(0)
	here := filepath.Dir(file)
	need := func(what string) {
		msg := what + " is missing (run go generate ./web/demo)"
		if os.Getenv("PARLEY_REQUIRE_BROWSER") == "1" {
			t.Fatalf("demo build test: %s", msg)
		}
		t.Skipf("demo build test skipped: %s", msg)
	}
	if _, err := exec.LookPath("node"); err != nil {
		need("node")
	}
	for _, p := range []string{"esbuild", "mediasoup-client"} {
		if _, err := os.Stat(filepath.Join(here, "node_modules", p)); err != nil {
			need("web/demo/node_modules/" + p)
		}
	}

	root := t.TempDir()
	demo, client := filepath.Join(root, "web", "demo"), filepath.Join(root, "web", "client")
	for _, f := range []string{"app.ts", "build.mjs", "index.html", "style.css", "favicon.svg", "package.json"} {
		copyFile(t, filepath.Join(here, f), filepath.Join(demo, f))
	}
	copyTree(t, filepath.Join(here, "..", "client", "src"), filepath.Join(client, "src"))
	if err := os.Symlink(filepath.Join(here, "node_modules"), filepath.Join(demo, "node_modules")); err != nil {
		t.Fatal(err)
	}
	build := func() map[string][]byte {
		t.Helper()
		cmd := exec.Command("node", "build.mjs")
		cmd.Dir = demo
		cmd.Env = append(os.Environ(), "PARLEY_DEMO_SDK=")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("node build.mjs: %v\n%s", err, out)
		}
		files := map[string][]byte{}
		dist := filepath.Join(demo, "dist")
		if err := filepath.WalkDir(dist, func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			b, err := os.ReadFile(p)
			rel, _ := filepath.Rel(dist, p)
			files[filepath.ToSlash(rel)] = b
			return err
		}); err != nil {
			t.Fatal(err)
		}
		return files
	}
	alone := build()
	// A real copy (not a symlink: esbuild follows those to the same path),
	// as npm ci in web/client installs it.
	copyTree(t, filepath.Join(here, "node_modules", "mediasoup-client"), filepath.Join(client, "node_modules", "mediasoup-client"))
	beside := build()
	if len(alone) != len(beside) {
		t.Fatalf("dist/ differs with web/client/node_modules present: %v vs %v", keys(alone), keys(beside))
	}
	for name, b := range alone {
		if !bytes.Equal(b, beside[name]) {
			t.Fatalf("dist/ differs with web/client/node_modules present: %v vs %v (first difference: %s)", keys(alone), keys(beside), name)
		}
	}
}

func keys(m map[string][]byte) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err == nil {
		err = os.MkdirAll(filepath.Dir(to), 0o755)
	}
	if err == nil {
		err = os.WriteFile(to, b, 0o644)
	}
	if err != nil {
		t.Fatal(err)
	}
}

func copyTree(t *testing.T, from, to string) {
	t.Helper()
	err := filepath.WalkDir(from, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(from, p)
		copyFile(t, p, filepath.Join(to, rel))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
