package server_test

import (
	"crypto/rand"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/parleyhq/parley/internal/testenv"
)

// TestJSClient runs web/client's Node tests (the @parley/client SDK,
// web/client/test/*.test.mjs) against the real server. The tests need a
// server they can stop and start again (an 8 s outage), so this builds the
// parley binary and hands it to them in PARLEY_BINARY with a secret and an
// API key; the Node helpers spawn `parley serve` processes of their own
// (free port, temporary data dir) and kill them at the end.
func TestJSClient(t *testing.T) {
	testenv.ClientPackage(t, "JS client test")
	root := testenv.RepoRoot()
	bin := filepath.Join(t.TempDir(), "parley")
	build := exec.Command("go", "build", "-o", bin, "./cmd/parley")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/parley: %v\n%s", err, out)
	}
	files, err := filepath.Glob(filepath.Join(testenv.WebClient(), "test", "*.test.mjs"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no web/client/test/*.test.mjs (%v)", err)
	}
	args := append([]string{"--test", "--test-timeout=180000"}, files...)
	cmd := exec.Command("node", args...)
	cmd.Dir = testenv.WebClient()
	cmd.Env = append(os.Environ(),
		"PARLEY_BINARY="+bin,
		"PARLEY_AUTH_SECRET="+randomHex(t),
		"PARLEY_API_KEY="+randomHex(t),
	)
	out, err := cmd.CombinedOutput()
	if err != nil || testing.Verbose() {
		t.Logf("%s", out)
	}
	if err != nil {
		t.Fatalf("node --test web/client/test: %v", err)
	}
}

func randomHex(t *testing.T) string {
	t.Helper()
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}
