package clustertest

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/parleyhq/parley/internal/testenv"
)

// TestClusterBrowserCall: two real Chromium pages running the real
// mediasoup-client (test/browser/media.mjs, as internal/server's
// TestBrowserCallThroughServer), each served from and connected to its own
// node (A on n2, B on n3), in a call started on n1: every media:* request
// is relayed to n1, whose SFU creates the transports (n1's address in the
// candidates), and media flows both ways through it (decoded video and
// growing audio on both pages); then A closes its video producer and its
// page (B hears media:producer_closed, media:peer_left, room:call_updated).
// With PARLEY_REQUIRE_BROWSER=1 a missing Chromium, Node or bundle fails it.
func TestClusterBrowserCall(t *testing.T) {
	testenv.Browser(t, "cluster browser test")
	if testing.Short() {
		t.Skip("browser test skipped in -short mode")
	}
	t.Parallel()
	root := testenv.RepoRoot()
	c := New(t, Options{Env: map[string]string{
		"PARLEY_MEDIA_LISTEN_IP": "0.0.0.0",
		"PARLEY_WEB_DIR":         filepath.Join(root, "web", "media", "dist"),
	}})
	n1, n2, n3 := nodes3(c)
	const room = "browser-cluster"
	setupCallRoom(t, c, n1, room, "alice", "bob")
	startCall(t, c, n1, room, "alice")

	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "node", filepath.Join(root, "test", "browser", "media.mjs"))
	cmd.Env = append(os.Environ(),
		"PARLEY_PAGE_URL="+n2.URL()+"/",
		"PARLEY_PAGE_URL_B="+n3.URL()+"/",
		"PARLEY_WS_A="+n2.WSURL()+"?token="+c.Token("alice", nil),
		"PARLEY_WS_B="+n3.WSURL()+"?token="+c.Token("bob", nil),
		"PARLEY_ROOM="+room,
		"PARLEY_SCENARIO=plain",
		"PARLEY_EXPECT_CALL_UPDATED=1",
	)
	out, err := cmd.CombinedOutput()
	if err != nil || testing.Verbose() {
		t.Logf("node output:\n%s", out)
	}
	if err != nil {
		t.Fatalf("browser call across nodes failed: %v", err)
	}
}
