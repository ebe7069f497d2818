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

// The SDK's calls layer (web/client/src/calls.ts, the Call class) in two
// Chromium pages against the real server; test/browser/calls.mjs is the
// scenario. two-party: both produce webcam + mic and play each other's
// video, one leaves (peer_left, track_ended), REST call/end ('closed').
// late-join: producers announced before join() finished are consumed, and
// a producer's pause/resume/close. data: data channels both ways
// (mediasoup-client's produceData/consumeData under the SDK), the server
// closing a data consumer, a leave. controls: the v1.1 call controls
// (consume paused, active speaker, producer and consumer pause, restartIce,
// server stats; see calls.mjs). Screenshots go to $PARLEY_TEST_ARTIFACTS
// when it is set.
func TestBrowserCallsSDK(t *testing.T) {
	testenv.Browser(t, "calls SDK browser test")
	if testing.Short() {
		t.Skip("browser test skipped in -short mode")
	}
	root := testenv.RepoRoot()
	// Bundle calls.ts as it is now (not a dist left by an older build).
	page := t.TempDir()
	if out, err := exec.Command(filepath.Join(testenv.WebMedia(), "build-calls.sh"), page).CombinedOutput(); err != nil {
		t.Fatalf("web/media/build-calls.sh: %v\n%s", err, out)
	}
	for _, scenario := range []string{"two-party", "late-join", "data", "controls", "svc", "cycles"} {
		t.Run(scenario, func(t *testing.T) {
			s := servertest.Start(t, browserMediaEnv(map[string]string{"PARLEY_WEB_DIR": page}))
			room := "calls-" + scenario
			startCallRoom(t, s, room, "bob")
			tokenA := s.Token("alice", nil)
			cctx, cancel := context.WithTimeout(context.Background(), 150*time.Second)
			defer cancel()
			cmd := exec.CommandContext(cctx, "node", filepath.Join(root, "test", "browser", "calls.mjs"))
			cmd.Env = append(os.Environ(),
				"PARLEY_PAGE_URL="+s.URL+"/calls.html",
				"PARLEY_WS_A="+s.WSURL+"?token="+tokenA,
				"PARLEY_WS_B="+s.WSURL+"?token="+s.Token("bob", nil),
				"PARLEY_ROOM="+room,
				"PARLEY_API_URL="+s.URL,
				"PARLEY_TOKEN_A="+tokenA,
				"PARLEY_SCENARIO="+scenario,
			)
			out, err := cmd.CombinedOutput()
			if err != nil || testing.Verbose() {
				t.Logf("node output:\n%s", out)
			}
			if err != nil {
				t.Fatalf("calls scenario %s failed: %v", scenario, err)
			}
			if scenario == "data" {
				// 3 messages A → B, 2 B → A, through the SFU; nothing left open.
				deadline := time.Now().Add(10 * time.Second)
				for {
					st := s.Srv.SFU.Stats()
					if st.DataMessages == 5 && st.DataProducers == 0 && st.DataConsumers == 0 && st.DataDropped == 0 {
						break
					}
					if time.Now().After(deadline) {
						t.Fatalf("SFU data stats after the scenario: %+v", st)
					}
					time.Sleep(50 * time.Millisecond)
				}
			}
		})
	}
}
