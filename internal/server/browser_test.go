package server_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/parleyhq/parley/internal/server/servertest"
	"github.com/parleyhq/parley/internal/store"
	"github.com/parleyhq/parley/internal/testenv"
)

func freeUDPPort(t *testing.T) int { return testenv.FreePort(t, "udp") }

// browserMediaEnv is the server environment of the browser call tests
// (the SFU on every interface with loopback candidates, ephemeral ports),
// with extra on top.
func browserMediaEnv(extra map[string]string) map[string]string {
	env := map[string]string{"PARLEY_MEDIA_LISTEN_IP": "0.0.0.0", "PARLEY_MEDIA_LOOPBACK": "true",
		"PARLEY_MEDIA_RTC_MIN_PORT": "0", "PARLEY_MEDIA_RTC_MAX_PORT": "0"}
	for k, v := range extra {
		env[k] = v
	}
	return env
}

// startCallRoom creates room on s, owned by alice with members, and starts
// its call as alice.
func startCallRoom(t *testing.T, s *servertest.Server, room string, members ...string) {
	t.Helper()
	ctx := context.Background()
	if err := s.Srv.Store.CreateRoom(ctx, store.Room{ID: room, Name: room, OwnerID: "alice", CreatedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	for _, u := range members {
		if err := s.Srv.Store.AddMember(ctx, room, u); err != nil {
			t.Fatal(err)
		}
	}
	if code, body := s.Do("POST", "/api/rooms/"+room+"/call/start", s.Token("alice", nil), nil); code != 200 {
		t.Fatalf("call start: %d %s", code, body)
	}
}

// Two Chromium pages running the real mediasoup-client join a call on the
// real Parley server (token auth, membership, REST call start, the gateway),
// exchange audio and video, then one closes its video producer and leaves.
// The relay scenario forces relay through the embedded TURN server.
func TestBrowserCallThroughServer(t *testing.T) {
	testenv.Browser(t, "browser test")
	root := testenv.RepoRoot()
	if testing.Short() {
		t.Skip("browser test skipped in -short mode")
	}
	for _, sc := range []struct {
		name string
		env  map[string]string
	}{
		{"plain", map[string]string{}},
		{"relay", map[string]string{"PARLEY_TURN_EMBEDDED": "true", "PARLEY_TURN_FORCE_RELAY": "true",
			"PARLEY_TURN_SHARED_SECRET": "turn-secret-for-tests", "PARLEY_TURN_EMBEDDED_LISTEN_IP": "127.0.0.1",
			"PARLEY_TURN_EMBEDDED_PORT": fmt.Sprint(freeUDPPort(t))}},
	} {
		t.Run(sc.name, func(t *testing.T) {
			env := browserMediaEnv(map[string]string{"PARLEY_WEB_DIR": filepath.Join(root, "web", "media", "dist")})
			for k, v := range sc.env {
				env[k] = v
			}
			s := servertest.Start(t, env)
			room := "browser-" + sc.name
			startCallRoom(t, s, room, "bob")
			cctx, cancel := context.WithTimeout(context.Background(), 150*time.Second)
			defer cancel()
			cmd := exec.CommandContext(cctx, "node", filepath.Join(root, "test", "browser", "media.mjs"))
			cmd.Env = append(os.Environ(),
				"PARLEY_PAGE_URL="+s.URL+"/",
				"PARLEY_WS_A="+s.WSURL+"?token="+s.Token("alice", nil),
				"PARLEY_WS_B="+s.WSURL+"?token="+s.Token("bob", nil),
				"PARLEY_ROOM="+room,
				"PARLEY_SCENARIO="+sc.name,
				"PARLEY_EXPECT_CALL_UPDATED=1",
			)
			out, err := cmd.CombinedOutput()
			if err != nil || testing.Verbose() {
				t.Logf("node output:\n%s", out)
			}
			if err != nil {
				t.Fatalf("browser scenario %s failed: %v", sc.name, err)
			}
		})
	}
}

// Simulcast with Chromium and the real mediasoup-client through the real
// server (test/browser/simulcast.mjs): layer switches on
// media:set_preferred_layers, a receiver behind a 300 kbit/s relay moved
// down alone, four publishers with three encodings each all decoding.
// PARLEY_SIMULCAST_SCENARIOS (comma list) runs only some of them;
// PARLEY_SIMULCAST_DEBUG=1 logs the SFU's layer decisions.
func TestBrowserSimulcastThroughServer(t *testing.T) {
	testenv.Browser(t, "browser test")
	root := testenv.RepoRoot()
	if testing.Short() {
		t.Skip("browser test skipped in -short mode")
	}
	scenarios := []string{"switch", "svc", "svcfull", "limited", "four"}
	if v := os.Getenv("PARLEY_SIMULCAST_SCENARIOS"); v != "" {
		scenarios = strings.Split(v, ",")
	}
	for _, sc := range scenarios {
		t.Run(sc, func(t *testing.T) {
			env := browserMediaEnv(map[string]string{"PARLEY_WEB_DIR": filepath.Join(root, "web", "media", "dist")})
			if os.Getenv("PARLEY_SIMULCAST_DEBUG") != "" {
				env["PARLEY_LOG_LEVEL"] = "debug" // the SFU logs every layer re-allocation
			}
			s := servertest.Start(t, env)
			room := "simulcast-" + sc
			users := []string{"alice", "bob", "carol", "dave"}
			startCallRoom(t, s, room, users[1:]...)
			cctx, cancel := context.WithTimeout(context.Background(), 240*time.Second)
			defer cancel()
			cmd := exec.CommandContext(cctx, "node", filepath.Join(root, "test", "browser", "simulcast.mjs"))
			cmd.Env = append(os.Environ(), "PARLEY_PAGE_URL="+s.URL+"/", "PARLEY_ROOM="+room, "PARLEY_SCENARIO="+sc)
			for i, u := range users {
				cmd.Env = append(cmd.Env, fmt.Sprintf("PARLEY_WS_%c=%s?token=%s", 'A'+i, s.WSURL, s.Token(u, nil)))
			}
			out, err := cmd.CombinedOutput()
			t.Logf("node output:\n%s", out)
			if err != nil {
				t.Fatalf("simulcast scenario %s failed: %v", sc, err)
			}
		})
	}
}
