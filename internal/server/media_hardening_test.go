package server_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/parleyhq/parley/internal/media"
	"github.com/parleyhq/parley/internal/protocol"
	"github.com/parleyhq/parley/internal/server"
	"github.com/parleyhq/parley/internal/server/servertest"
	"github.com/parleyhq/parley/internal/store"
)

// PROTOCOL.md v1.1 §6: a well-formed media:* request the SFU does not
// implement gets `unsupported` with its id and is never a violation. 30 of
// them (the violation limit is 20) leave the connection open; an unknown
// media:* type is still bad_request.
func TestUnsupportedMediaRequestsAreNotViolations(t *testing.T) {
	s := servertest.Start(t, mediaEnv())
	if err := s.Srv.Store.CreateRoom(context.Background(), store.Room{ID: "call", Name: "Call", OwnerID: "alice", CreatedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	s.IgnoreTypes = []string{"presence:update"}
	alice := s.DialUser("alice", nil)
	types := []string{"media:producer_pause", "media:producer_resume", "media:consumer_pause", "media:consumer_resume",
		"media:restart_ice", "media:get_stats", "media:produce_data", "media:consume_data"}
	for i := 0; i < 30; i++ {
		id := fmt.Sprintf("u%d", i)
		alice.Request(types[i%len(types)], id, map[string]any{"room_id": "call", "producer_id": "p", "consumer_id": "c", "transport_id": "t"})
		if e := alice.ExpectError(protocol.CodeUnsupported, id); !strings.Contains(e.Message, types[i%len(types)]) {
			t.Fatalf("message %q does not name the type", e.Message)
		}
	}
	alice.ExpectNothing() // still open: the pong arrives
	select {
	case <-alice.Closed():
		t.Fatalf("connection closed with %d", alice.CloseCode())
	default:
	}
	alice.Request("media:bogus", "b1", map[string]any{"room_id": "call"})
	alice.ExpectError(protocol.CodeBadRequest, "b1")
}

// Start anywhere (issue 9 §8): when the SFU finds no IPv4 address to
// announce, the server still starts; rooms serve, media:join answers
// unsupported naming the flags, REST call/start answers 503, and the media
// metrics are exported.
func TestServerWithoutAnnounceableIPServesRoomsWithoutCalls(t *testing.T) {
	restore := server.SetNewSFUForTest(func(media.Config, media.Sender, media.Events, *slog.Logger) (*media.SFU, error) {
		return nil, media.ErrNoAnnouncedIP
	})
	defer restore()
	s := servertest.Start(t, map[string]string{"PARLEY_MEDIA_LISTEN_IP": "0.0.0.0"})
	if err := s.Srv.Store.CreateRoom(context.Background(), store.Room{ID: "call", Name: "Call", OwnerID: "alice", CreatedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	s.IgnoreTypes = []string{"presence:update"}
	alice := s.DialUser("alice", nil)
	join(alice, "call", "r1", nil)

	alice.Request("media:join", "m1", map[string]string{"room_id": "call"})
	e := alice.ExpectError(protocol.CodeUnsupported, "m1")
	if !strings.Contains(e.Message, "calls are disabled on this server") || !strings.Contains(e.Message, "--media-announced-ip") {
		t.Fatalf("media:join error %q", e.Message)
	}
	code, body := s.Do("POST", "/api/rooms/call/call/start", s.Token("alice", nil), nil)
	if code != http.StatusServiceUnavailable || !strings.Contains(string(body), `"error":"unsupported"`) {
		t.Fatalf("call/start: %d %s", code, body)
	}
	if s.Srv.SFU.CallActive("call") {
		t.Fatal("a disabled SFU reports a call")
	}
	resp, err := http.Get(s.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	m, _ := io.ReadAll(resp.Body)
	if !strings.Contains(string(m), "parley_media_calls 0") {
		t.Fatal("parley_media_calls not exported")
	}
	alice.ExpectNothing()
}
