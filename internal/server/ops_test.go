package server_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/parleyhq/parley/internal/protocol"
	"github.com/parleyhq/parley/internal/server/servertest"
)

func TestHealthzAndMetrics(t *testing.T) {
	s := startRooms(t, nil)
	if code, body := s.Do("GET", "/healthz", "", nil); code != 200 || !strings.Contains(string(body), `"ok"`) {
		t.Fatalf("healthz: %d %s", code, body)
	}
	a := s.DialUser("alice", servertest.AllRooms)
	join(a, "r", "j", nil)
	a.Send(`{"type":"nope","id":"x"}`)
	a.ExpectError(protocol.CodeBadRequest, "x")

	code, body := s.Do("GET", "/metrics", "", nil)
	if code != 200 {
		t.Fatalf("metrics: %d", code)
	}
	for _, want := range []string{
		"parley_connections 1",
		"parley_users_connected 1",
		"parley_rooms_live 1",
		`parley_messages_in_total{type="room:join"} 1`,
		`parley_messages_in_total{type="unknown"} 1`,
		`parley_messages_out_total{type="room:state"} 1`,
		`parley_errors_total{code="bad_request"} 1`,
		"parley_connections_total 1",
		"parley_queue_overflows_total 0",
		"parley_heartbeat_timeouts_total 0",
		"go_goroutines",
		"process_resident_memory_bytes",
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	// Draining: healthz answers 503, the client is closed with 1001.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.Srv.Gateway.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case <-a.Closed():
	case <-time.After(5 * time.Second):
		t.Fatal("client not closed")
	}
	if a.CloseCode() != protocol.CloseGoingAway {
		t.Fatalf("close code %d", a.CloseCode())
	}
	if code, body := s.Do("GET", "/healthz", "", nil); code != 503 || !strings.Contains(string(body), "draining") {
		t.Fatalf("healthz while draining: %d %s", code, body)
	}
}

// REST writes are limited per user; refused writes change nothing.
func TestRESTWriteRateLimit(t *testing.T) {
	s := startRooms(t, map[string]string{"PARLEY_REST_RATE": "0.001", "PARLEY_REST_BURST": "3"})
	tok := s.Token("writer", servertest.AllRooms)
	ops := `[{"op":"add","path":"/n","value":1}]`
	for i := 0; i < 3; i++ {
		if code, body := s.Do("PATCH", "/api/rooms/r/storage", tok, ops); code != 200 {
			t.Fatalf("write %d: %d %s", i, code, body)
		}
	}
	code, body := s.Do("PATCH", "/api/rooms/r/storage", tok, ops)
	if code != 429 || !strings.Contains(string(body), `"rate_limited"`) {
		t.Fatalf("4th write: %d %s", code, body)
	}
	if v, _ := restStorage(t, s, "r"); v != 3 {
		t.Fatalf("version %d after a refused write", v)
	}
	// Reads are not limited; another user and the API key have their own budget.
	if code, _ := s.Do("GET", "/api/rooms/r/storage", tok, nil); code != 200 {
		t.Fatalf("read: %d", code)
	}
	if code, _ := s.Do("PATCH", "/api/rooms/r/storage", s.Token("other", servertest.AllRooms), ops); code != 200 {
		t.Fatalf("other user: %d", code)
	}
	for i := 0; i < 5; i++ {
		if code, _ := s.Do("PATCH", "/api/rooms/r/storage", servertest.APIKey, ops); code != 200 {
			t.Fatalf("API key write %d: %d", i, code)
		}
	}
}
