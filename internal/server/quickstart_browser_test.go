package server_test

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"github.com/parleyhq/parley/internal/auth"
	"github.com/parleyhq/parley/internal/server/servertest"
	"github.com/parleyhq/parley/internal/testenv"
)

// The README's JavaScript quick start runs as written in a browser too:
// a page on the server's own origin (--web-dir) runs the README block as a
// module with an import map for '@parley/client' (web/client/dist) and
// 'ws' (the browser's WebSocket), and process.env set as the block expects
// (test/browser/quickstart.mjs drives Chromium). web/client/test/
// readme.test.mjs runs the same block on Node 20.
func TestReadmeQuickstartInBrowser(t *testing.T) {
	testenv.Browser(t, "README quick start in a browser")
	testenv.ClientPackage(t, "README quick start in a browser")
	root := testenv.RepoRoot()
	readme, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile("(?s)<!-- js-quickstart[^>]*-->\n```js\n(.*?)```").FindSubmatch(readme)
	if m == nil {
		t.Fatal("README.md: no js-quickstart block")
	}
	web := t.TempDir()
	s := servertest.Start(t, map[string]string{"PARLEY_WEB_DIR": web})
	token := s.Token("readme-browser", map[string]auth.Perm{"team-*": auth.PermAll})
	env, _ := json.Marshal(token)
	files := map[string]string{
		"index.html": `<!doctype html><title>quick start</title>
<script src="/env.js"></script>
<script type="importmap">{"imports":{"@parley/client":"/client/index.js","ws":"/ws-shim.js"}}</script>
<script type="module" src="/quickstart.mjs"></script>
`,
		"env.js":         "globalThis.process = { env: { PARLEY_URL: 'ws://' + location.host + '/ws', PARLEY_TOKEN: " + string(env) + " } };\n",
		"ws-shim.js":     "export default globalThis.WebSocket;\n",
		"quickstart.mjs": string(m[1]),
	}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(web, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink(filepath.Join(root, "web", "client", "dist"), filepath.Join(web, "client")); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "node", filepath.Join(root, "test", "browser", "quickstart.mjs"))
	cmd.Env = append(os.Environ(), "PARLEY_PAGE_URL="+s.URL+"/")
	out, err := cmd.CombinedOutput()
	if err != nil || testing.Verbose() {
		t.Logf("node output:\n%s", out)
	}
	if err != nil {
		t.Fatalf("the quick start failed in Chromium: %v", err)
	}
	var doc struct {
		Data map[string]string `json:"data"`
	}
	code, body := s.Do("GET", "/api/rooms/team-a/storage", servertest.APIKey, nil)
	if code != http.StatusOK || json.Unmarshal(body, &doc) != nil || doc.Data["key1"] != "value1" {
		t.Fatalf("after the quick start: %d %s", code, body)
	}
}
