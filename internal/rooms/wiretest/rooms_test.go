package wiretest_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/parleyhq/parley/internal/auth"
	"github.com/parleyhq/parley/internal/config"
	"github.com/parleyhq/parley/internal/protocol"
	"github.com/parleyhq/parley/internal/rooms"
	"github.com/parleyhq/parley/internal/server"
	"github.com/parleyhq/parley/internal/server/servertest"
)

type storageState struct {
	Version int64             `json:"version"`
	Data    json.RawMessage   `json:"data"`
	Updates []json.RawMessage `json:"updates"`
}

type storageUpdated struct {
	RoomID   string          `json:"room_id"`
	Version  int64           `json:"version"`
	ClientID string          `json:"client_id"`
	Ops      json.RawMessage `json:"ops"`
}

func startRooms(t *testing.T, env map[string]string) *servertest.Server {
	t.Helper()
	s := servertest.Start(t, env)
	s.IgnoreTypes = []string{"presence:update"}
	return s
}

func join(c *servertest.Client, room string, since *int64) storageState {
	c.T.Helper()
	data := map[string]any{"room_id": room}
	if since != nil {
		data["since_version"] = *since
	}
	c.Request(protocol.TypeRoomJoin, "j", data)
	var st struct {
		Storage storageState `json:"storage"`
	}
	c.ExpectInto(protocol.TypeRoomState, &st)
	return st.Storage
}

func leave(c *servertest.Client, room string) {
	c.T.Helper()
	c.Request(protocol.TypeRoomLeave, "l", map[string]string{"room_id": room})
	c.Expect(protocol.TypeRoomLeft)
}

// write sends one batch and returns the sender's room:storage_updated.
func write(c *servertest.Client, room, ops string) storageUpdated {
	c.T.Helper()
	c.Request(protocol.TypeRoomUpdateStorage, "w", map[string]any{"room_id": room, "ops": json.RawMessage(ops)})
	// A commit waits for an fsync: allow for a loaded machine.
	f, ok := c.Next(30 * time.Second)
	if !ok || f.Type != protocol.TypeRoomStorageUpdated || f.ID != "w" {
		c.T.Fatalf("want the room:storage_updated reply, got %s id %q %s (ok %v)", f.Type, f.ID, f.Data, ok)
	}
	var u storageUpdated
	if err := json.Unmarshal(f.Data, &u); err != nil {
		c.T.Fatal(err)
	}
	return u
}

func ptr(v int64) *int64 { return &v }

// checkUpdates requires ups to be exactly the broadcast updates want.
func checkUpdates(t *testing.T, ups []json.RawMessage, want []storageUpdated) {
	t.Helper()
	if len(ups) != len(want) {
		t.Fatalf("got %d updates, want %d", len(ups), len(want))
	}
	for i, raw := range ups {
		var u storageUpdated
		if err := json.Unmarshal(raw, &u); err != nil {
			t.Fatal(err)
		}
		if u.Version != want[i].Version || u.ClientID != want[i].ClientID || !bytes.Equal(u.Ops, want[i].Ops) {
			t.Fatalf("update %d = %s, broadcast was %+v", i, raw, want[i])
		}
	}
}

// The catch-up replay a live room keeps is bounded in bytes as well as in
// count: after many large batches its accounted size stays within
// storage-keep-updates-bytes, a since_version inside the kept window gets
// updates and one just before it gets the full document.
func TestRoomCatchUpByteBound(t *testing.T) {
	const bound = 20_000
	s := startRooms(t, map[string]string{"PARLEY_STORAGE_KEEP_UPDATES": "1000",
		"PARLEY_STORAGE_KEEP_UPDATES_BYTES": strconv.Itoa(bound)})
	a := s.DialUser("alice", servertest.AllRooms)
	join(a, "r", nil)
	big := strings.Repeat("y", 2000)
	var sent []storageUpdated
	for i := 1; i <= 30; i++ {
		sent = append(sent, write(a, "r", fmt.Sprintf(`[{"op":"add","path":"/v","value":"%s%d"}]`, big, i)))
		n, b, ok := s.Srv.Rooms.HistoryStats("r")
		if !ok || b > bound || n > i {
			t.Fatalf("after %d batches: %d updates, %d bytes kept (bound %d)", i, n, b, bound)
		}
	}
	n, b, _ := s.Srv.Rooms.HistoryStats("r")
	if n < 5 || n >= 30 || b < bound/2 {
		t.Fatalf("kept %d updates, %d bytes: the bound should keep some but not all", n, b)
	}
	st := join(a, "r", ptr(int64(30-n)))
	if st.Version != 30 || st.Data != nil {
		t.Fatalf("catch-up within the kept window: %+v", st)
	}
	checkUpdates(t, st.Updates, sent[30-n:])
	st = join(a, "r", ptr(int64(30-n-1)))
	if st.Version != 30 || st.Updates != nil || !bytes.Contains(st.Data, []byte(big+"30")) {
		t.Fatalf("catch-up before the kept window must be the full document: version %d, %d updates", st.Version, len(st.Updates))
	}
}

// After the room left memory, catch-up still serves the kept updates (read
// from the store on load), not only those after the last snapshot. On the
// old code since_version=5 got the full document here.
func TestRoomCatchUpAfterUnload(t *testing.T) {
	s := startRooms(t, map[string]string{"PARLEY_STORAGE_KEEP_UPDATES": "20", "PARLEY_SNAPSHOT_EVERY": "4"})
	a := s.DialUser("alice", servertest.AllRooms)
	join(a, "r", nil)
	var sent []storageUpdated
	for i := 1; i <= 10; i++ {
		sent = append(sent, write(a, "r", fmt.Sprintf(`[{"op":"add","path":"/k%d","value":%d}]`, i, i)))
	}
	leave(a, "r")
	servertest.WaitFor(t, 5*time.Second, "room unloaded", func() bool { return s.Srv.Rooms.LiveRooms() == 0 })
	st := join(a, "r", ptr(5))
	if st.Version != 10 || st.Data != nil {
		t.Fatalf("reloaded catch-up = %+v", st)
	}
	checkUpdates(t, st.Updates, sent[5:])
	// The next batch follows without a gap.
	if u := write(a, "r", `[{"op":"add","path":"/k11","value":11}]`); u.Version != 11 {
		t.Fatalf("next version %d", u.Version)
	}
}

// startOn runs a real server with cfg (its SQLite file in cfg.DataDir) and
// returns it with a stop function, so that a test can restart on the same
// file.
func startOn(t *testing.T, cfg *config.Config) (*servertest.Server, func()) {
	t.Helper()
	srv, err := server.New(context.Background(), cfg, slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError})))
	if err != nil {
		t.Fatalf("server.New: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv.Start(ln)
	addr := ln.Addr().String()
	s := &servertest.Server{T: t, Srv: srv, Cfg: cfg, URL: "http://" + addr, WSURL: "ws://" + addr + "/ws",
		Signer: auth.NewHS256Signer([]byte(cfg.AuthSecret)), IgnoreTypes: []string{"presence:update"}}
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	}
	t.Cleanup(stop)
	return s, stop
}

// Catch-up across a restart on the same SQLite file serves the kept updates.
func TestRoomCatchUpAfterRestart(t *testing.T) {
	cfg := servertest.Config(t, map[string]string{"PARLEY_STORAGE_KEEP_UPDATES": "20", "PARLEY_SNAPSHOT_EVERY": "4"})
	s, stop := startOn(t, cfg)
	a := s.DialUser("alice", servertest.AllRooms)
	join(a, "r", nil)
	var sent []storageUpdated
	for i := 1; i <= 10; i++ {
		sent = append(sent, write(a, "r", fmt.Sprintf(`[{"op":"add","path":"/k%d","value":%d}]`, i, i)))
	}
	stop()

	s2, _ := startOn(t, cfg)
	b := s2.DialUser("bob", servertest.AllRooms)
	st := join(b, "r", ptr(5))
	if st.Version != 10 || st.Data != nil {
		t.Fatalf("catch-up after restart = %+v", st)
	}
	checkUpdates(t, st.Updates, sent[5:])
}

// A batch whose strings are not valid Unicode (an unpaired surrogate escape)
// is refused with bad_request and changes nothing; a valid one is stored
// exactly as broadcast: the ops a reload serves equal the broadcast ops, and
// the reloaded document holds the same string. On the old code the lone
// surrogate was relayed raw but stored as U+FFFD.
func TestRoomStorageLoneSurrogate(t *testing.T) {
	s := startRooms(t, map[string]string{"PARLEY_SNAPSHOT_EVERY": "1"})
	a := s.DialUser("alice", servertest.AllRooms)
	b := s.DialUser("bob", servertest.AllRooms)
	join(a, "r", nil)
	join(b, "r", nil)
	a.Expect(protocol.TypeRoomJoined)
	for i, ops := range []string{
		`[{"op":"add","path":"/s","value":"\ud800"}]`,
		`[{"op":"add","path":"/s","value":{"k":["x\udc00"]}}]`,
		`[{"op":"add","path":"/\ud83dx","value":1}]`,
	} {
		id := fmt.Sprintf("bad%d", i)
		a.Request(protocol.TypeRoomUpdateStorage, id, map[string]any{"room_id": "r", "ops": json.RawMessage(ops)})
		a.ExpectError(protocol.CodeBadRequest, id)
	}
	b.ExpectNothing()
	good := `[{"op":"add","path":"/s","value":"\ud83d\ude00 é \u00e9"}]`
	sent := write(a, "r", good)
	if sent.Version != 1 {
		t.Fatalf("first accepted batch is version %d (a refused batch changed the version)", sent.Version)
	}
	var seen storageUpdated
	b.ExpectInto(protocol.TypeRoomStorageUpdated, &seen)
	if !bytes.Equal(seen.Ops, sent.Ops) {
		t.Fatalf("broadcast ops differ: %s vs %s", seen.Ops, sent.Ops)
	}
	leave(b, "r")
	a.Expect(protocol.TypeRoomLeft)
	leave(a, "r")
	servertest.WaitFor(t, 5*time.Second, "room unloaded", func() bool { return s.Srv.Rooms.LiveRooms() == 0 })
	st := join(a, "r", ptr(0))
	checkUpdates(t, st.Updates, []storageUpdated{sent})
	st = join(a, "r", nil)
	var ops []struct {
		Value string `json:"value"`
	}
	var doc struct {
		S string `json:"s"`
	}
	if err := json.Unmarshal(sent.Ops, &ops); err != nil || json.Unmarshal(st.Data, &doc) != nil {
		t.Fatalf("decode: %v %s", err, st.Data)
	}
	if doc.S != ops[0].Value || doc.S != "😀 é é" {
		t.Fatalf("reloaded document %q, broadcast value %q", doc.S, ops[0].Value)
	}
}

var panicsRe = regexp.MustCompile(`parley_panics_total\{where="commit_callback"\} (\d+)`)

func metric(t *testing.T, s *servertest.Server, re *regexp.Regexp) int {
	t.Helper()
	code, body := s.Do("GET", "/metrics", "", nil)
	if code != 200 {
		t.Fatalf("/metrics: %d", code)
	}
	m := re.FindSubmatch(body)
	if m == nil {
		t.Fatalf("/metrics has no %s", re)
	}
	n, _ := strconv.Atoi(string(m[1]))
	return n
}

// A panic in one room's commit callback is contained: that room is reset
// (its client gets room:left and internal for the batch), other rooms keep
// committing, the node keeps serving, the panic is counted, and the reset
// room reloads with every durable batch and gapless versions.
func TestRoomCommitCallbackPanic(t *testing.T) {
	restore := rooms.SetCommitHook(func(room string, v int64) {
		if room == "boom" && v == 2 {
			panic("injected commit callback panic")
		}
	})
	t.Cleanup(restore) // registered first: runs after the server stopped
	s := startRooms(t, nil)
	a := s.DialUser("alice", servertest.AllRooms)
	b := s.DialUser("bob", servertest.AllRooms)
	join(a, "boom", nil)
	join(b, "calm", nil)
	write(a, "boom", `[{"op":"add","path":"/a","value":1}]`)
	a.Request(protocol.TypeRoomUpdateStorage, "w2", map[string]any{"room_id": "boom", "ops": json.RawMessage(`[{"op":"add","path":"/b","value":2}]`)})
	expectLeftThenError := func() {
		t.Helper()
		var left struct {
			RoomID   string `json:"room_id"`
			ClientID string `json:"client_id"`
		}
		a.ExpectInto(protocol.TypeRoomLeft, &left)
		if left.RoomID != "boom" || left.ClientID != a.ConnID {
			t.Fatalf("room:left = %+v", left)
		}
		a.ExpectError(protocol.CodeInternal, "w2")
	}
	expectLeftThenError()
	// Other rooms, and the node, go on.
	for i := 1; i <= 3; i++ {
		if u := write(b, "calm", fmt.Sprintf(`[{"op":"add","path":"/c%d","value":%d}]`, i, i)); u.Version != int64(i) {
			t.Fatalf("calm version %d, want %d", u.Version, i)
		}
	}
	if n := metric(t, s, panicsRe); n != 1 {
		t.Fatalf("parley_panics_total{where=commit_callback} = %d, want 1", n)
	}
	// The reset room is out of memory once its commits are done; joining
	// reloads it from the store with batch 2 (it was durable).
	servertest.WaitFor(t, 5*time.Second, "reset room unloaded", func() bool {
		_, _, live := s.Srv.Rooms.HistoryStats("boom")
		return !live
	})
	st := join(a, "boom", nil)
	if st.Version != 2 || !bytes.Contains(st.Data, []byte(`"b":2`)) {
		t.Fatalf("reloaded reset room = version %d %s", st.Version, st.Data)
	}
	if u := write(a, "boom", `[{"op":"add","path":"/c","value":3}]`); u.Version != 3 {
		t.Fatalf("after the reset: version %d, want 3", u.Version)
	}
}

var batchCountRe = regexp.MustCompile(`(?m)^parley_storage_commit_batch_size_count (\d+)$`)

// parley_storage_commit_batch_size is observed once per group commit (it
// was registered and never observed).
func TestRoomCommitBatchSizeObserved(t *testing.T) {
	s := startRooms(t, nil)
	before := metric(t, s, batchCountRe)
	a := s.DialUser("alice", servertest.AllRooms)
	join(a, "r", nil)
	write(a, "r", `[{"op":"add","path":"/a","value":1}]`)
	write(a, "r", `[{"op":"add","path":"/b","value":2}]`)
	if after := metric(t, s, batchCountRe); after < before+1 || after > before+2 {
		t.Fatalf("batch size observations %d → %d, want 1 or 2 more", before, after)
	}
}
