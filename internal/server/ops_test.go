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
