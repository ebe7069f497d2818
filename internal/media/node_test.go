package media

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/parleyhq/parley/internal/testenv"
)

// TestMediasoupClientAcceptsPayloads runs web/media/test (node --test):
// mediasoup-client's own Device.load, createSendTransport/createRecvTransport
// and consume, with its FakeHandler, on the payloads this SFU produces.
func TestMediasoupClientAcceptsPayloads(t *testing.T) {
	testenv.NPMPackage(t, "mediasoup-client test", "mediasoup-client")
	root, webMedia := testenv.RepoRoot(), testenv.WebMedia()
	// The fixtures come from the Go program, generated here so the test runs
	// against this checkout's code.
	fixtures := filepath.Join(t.TempDir(), "fixtures.json")
	gen := exec.Command("go", "run", "./internal/media/cmd/mediafixtures")
	gen.Dir = root
	out, err := gen.Output()
	if err != nil {
		t.Fatalf("mediafixtures: %v", err)
	}
	if err := os.WriteFile(fixtures, out, 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("node", "--test", "test/")
	cmd.Dir = webMedia
	cmd.Env = append(os.Environ(), "PARLEY_MEDIA_FIXTURES="+fixtures)
	res, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("node --test failed: %v\n%s", err, res)
	}
	t.Logf("%s", res)
}
