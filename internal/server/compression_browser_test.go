package server_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/parleyhq/parley/internal/auth"
	"github.com/parleyhq/parley/internal/server/servertest"
	"github.com/parleyhq/parley/internal/testenv"
)

// Chromium negotiates permessage-deflate with the server (on by default),
// inflates a large shared frame the server sent compressed and a small one
// it sent plain, in order, and the server inflates a large message Chromium
// compressed (test/browser/compression.mjs).
func TestBrowserCompression(t *testing.T) {
	testenv.Browser(t, "permessage-deflate in a browser")
	root := testenv.RepoRoot()
	web := t.TempDir()
	if err := os.WriteFile(filepath.Join(web, "index.html"), []byte("<!doctype html><title>compression</title>\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	s := servertest.Start(t, map[string]string{"PARLEY_WEB_DIR": web})
	grants := map[string]auth.Perm{"z-*": auth.PermAll}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "node", filepath.Join(root, "test", "browser", "compression.mjs"))
	cmd.Env = append(os.Environ(), "PARLEY_PAGE_URL="+s.URL+"/",
		"PARLEY_WS_A="+s.WSURL+"?token="+s.Token("ada", grants),
		"PARLEY_WS_B="+s.WSURL+"?token="+s.Token("bea", grants),
		"PARLEY_ROOM=z-deflate")
	out, err := cmd.CombinedOutput()
	if err != nil || testing.Verbose() {
		t.Logf("node output:\n%s", out)
	}
	if err != nil {
		t.Fatalf("compression in Chromium: %v", err)
	}
}
