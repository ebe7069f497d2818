package server_test

import (
	"os"
	"os/exec"
	"testing"

	"github.com/parleyhq/parley/internal/server/servertest"
	"github.com/parleyhq/parley/internal/testenv"
)

// TestJSClient runs web/client's Node tests (the JavaScript client library)
// against a real server.
func TestJSClient(t *testing.T) {
	testenv.Node(t, "JS client test")
	root := testenv.RepoRoot()
	s := startRooms(t, nil)
	cmd := exec.Command("node", "--experimental-websocket", "--no-warnings", "--test", "web/client/test/")
	cmd.Dir = root
	cmd.Env = append(os.Environ(),
		"PARLEY_WS_URL="+s.WSURL,
		"PARLEY_TOKEN_A="+s.Token("js-a", servertest.AllRooms),
		"PARLEY_TOKEN_B="+s.Token("js-b", servertest.AllRooms),
	)
	out, err := cmd.CombinedOutput()
	if err != nil || testing.Verbose() {
		t.Logf("%s", out)
	}
	if err != nil {
		t.Fatalf("node --test web/client/test: %v", err)
	}
}
