package server_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/parleyhq/parley/internal/server/servertest"
	"github.com/parleyhq/parley/internal/testenv"
)

// The demo app end to end, through its UI only, in two Chromium contexts
// (test/browser/demo.mjs) against a real server serving the embedded app:
// A signs up and creates a room, B signs up from the room's link; each sees
// the other's cursor move; to-do edits from both converge, and A's undo
// (button, then redo and undo from the keyboard) changes both lists alike;
// A's chat message reaches B, with "Alice is typing…" at B while A types;
// B goes do-not-disturb and A sees B's dot change; both join the call and
// each sees the other's video playing; a reload keeps A signed in and in
// the room. "expiry": with 30 s access tokens, both in a call outlive their
// tokens: each reconnects with a refreshed pair, the call is joined again
// (videos play) and chat still works. "hostile": a third member writes
// to-dos of every wrong shape, bad cursors, colors and names in presence,
// and a storage map renaming people: chat, the good to-dos, cursors and the
// call keep working, names are the server's, the page fits 390 px. Screenshots of both pages at every
// step go to $PARLEY_TEST_ARTIFACTS/<test name> (a temporary directory
// when unset).
func TestDemoAppEndToEnd(t *testing.T) {
	testenv.Browser(t, "demo app e2e test")
	if testing.Short() {
		t.Skip("browser test skipped in -short mode")
	}
	root := testenv.RepoRoot()
	for _, sc := range []struct {
		name string
		env  map[string]string
	}{
		{"full", nil},
		// Tokens that expire inside the test: the socket closes (4001), the
		// app refreshes its pair, reconnects and joins the call again.
		{"expiry", map[string]string{"PARLEY_ACCESS_TOKEN_TTL": "30s"}},
		// A third member writes malformed to-dos, presence and forged
		// names into the room (review finding 2 and 4): both pages keep
		// working and show the server's names only.
		{"hostile", nil},
	} {
		t.Run(sc.name, func(t *testing.T) {
			s := servertest.Start(t, browserMediaEnv(sc.env))
			dir := os.Getenv("PARLEY_TEST_ARTIFACTS")
			if dir == "" {
				dir = t.TempDir()
			} else {
				dir = filepath.Join(dir, t.Name())
			}
			t.Logf("screenshots: %s", dir)
			ctx, cancel := context.WithTimeout(context.Background(), 180*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, "node", filepath.Join(root, "test", "browser", "demo.mjs"))
			cmd.Env = append(os.Environ(), "PARLEY_DEMO_URL="+s.URL, "PARLEY_ARTIFACTS="+dir, "PARLEY_SCENARIO="+sc.name)
			out, err := cmd.CombinedOutput()
			if err != nil || testing.Verbose() {
				t.Logf("node output:\n%s", out)
			}
			if err != nil {
				t.Fatalf("demo e2e %s failed: %v (screenshots in %s)", sc.name, err, dir)
			}
		})
	}
}
