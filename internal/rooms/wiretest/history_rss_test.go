package wiretest_test

import (
	"encoding/json"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/parleyhq/parley/internal/protocol"
	"github.com/parleyhq/parley/internal/server/servertest"
)

// rssBytes is the resident set size of this process, from /proc/self/status.
func rssBytes(t *testing.T) int64 {
	t.Helper()
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Skipf("no /proc: %v", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	t.Skip("no VmRSS")
	return 0
}

func settledRSS(t *testing.T) int64 {
	runtime.GC()
	debug.FreeOSMemory()
	return rssBytes(t)
}

// TestRoomHistoryRSS reproduces issue 9 §5 (history case): five rooms each
// get 1,500 batches of ~60 KiB with the default limits, all committed while
// one client per room stays joined (the rooms stay in memory). It reports
// the process RSS before and after; the replay kept for catch-up is bounded
// by storage-keep-updates-bytes, so the growth must stay far below the
// unbounded case (about 5 × 1,500 × 60 KiB ≈ 440 MiB). It writes ~440 MiB
// to SQLite, so it runs only with PARLEY_RSS_HISTORY=1.
func TestRoomHistoryRSS(t *testing.T) {
	if os.Getenv("PARLEY_RSS_HISTORY") == "" {
		t.Skip("set PARLEY_RSS_HISTORY=1 to run the history RSS measurement")
	}
	s := servertest.Start(t, map[string]string{
		"PARLEY_MSG_RATE": "100000", "PARLEY_MSG_BURST": "100000",
		"PARLEY_QUEUE_MAX_BYTES": strconv.Itoa(512 << 20),
	})
	s.IgnoreTypes = []string{"presence:update"}
	const rooms, batches = 5, 1500
	big := strings.Repeat("x", 60_000)
	before := settledRSS(t)
	done := make(chan error, rooms)
	for i := 0; i < rooms; i++ {
		room := fmt.Sprintf("hist%d", i)
		c := s.DialUser(fmt.Sprintf("u%d", i), servertest.AllRooms)
		c.Request(protocol.TypeRoomJoin, "j", map[string]any{"room_id": room})
		c.Expect(protocol.TypeRoomState)
		go func() {
			for v := 1; v <= batches; v++ {
				ops := fmt.Sprintf(`[{"op":"add","path":"/x","value":"%s%d"}]`, big, v)
				c.Request(protocol.TypeRoomUpdateStorage, "", map[string]any{"room_id": room, "ops": json.RawMessage(ops)})
			}
			for {
				f, ok := c.Next(60 * time.Second)
				if !ok {
					done <- fmt.Errorf("room %s: no frame within 60 s", room)
					return
				}
				if f.Type != protocol.TypeRoomStorageUpdated {
					done <- fmt.Errorf("room %s: got %s %s", room, f.Type, f.Data)
					return
				}
				var u struct {
					Version int64 `json:"version"`
				}
				_ = json.Unmarshal(f.Data, &u)
				if u.Version == batches {
					done <- nil
					return
				}
			}
		}()
	}
	for i := 0; i < rooms; i++ {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	after := settledRSS(t)
	t.Logf("history RSS: before %d MiB, after %d MiB (growth %d MiB), live rooms %d",
		before>>20, after>>20, (after-before)>>20, s.Srv.Rooms.LiveRooms())
	if growth := after - before; growth > 150<<20 {
		t.Errorf("RSS grew by %d MiB holding catch-up history of %d rooms", growth>>20, rooms)
	}
}
