package server_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/parleyhq/parley/internal/server/servertest"
)

// FuzzRESTBodies sends arbitrary bodies to every REST route that decodes
// one (the auth routes are fuzzed without argon2id in internal/api), through
// the real server's handler with a real SQLite store: no body may panic,
// produce a 5xx, or an answer that is not JSON; every refusal carries
// {"error","message"}.
func FuzzRESTBodies(f *testing.F) {
	s := servertest.Start(f, map[string]string{"PARLEY_REST_RATE": "1000000", "PARLEY_REST_BURST": "1000000"})
	owner := s.Token("fz-owner", nil)
	if st, b := s.Do("POST", "/api/rooms", owner, map[string]any{"id": "fz", "name": "fuzz"}); st != http.StatusCreated {
		f.Fatalf("create room: %d %s", st, b)
	}
	st, b := s.Do("POST", "/api/rooms/fz/messages", owner, map[string]any{"content": "hello"})
	if st != http.StatusCreated {
		f.Fatalf("post message: %d %s", st, b)
	}
	var msg struct {
		ID string `json:"id"`
	}
	_ = json.Unmarshal(b, &msg)
	routes := []struct{ method, path, bearer string }{
		{"POST", "/api/tokens", servertest.APIKey},
		{"POST", "/api/rooms", owner},
		{"POST", "/api/rooms/fz/members", owner},
		{"POST", "/api/rooms/fz/messages", owner},
		{"PATCH", "/api/rooms/fz/messages/" + msg.ID, owner},
		{"PATCH", "/api/rooms/fz/storage", servertest.APIKey},
		{"PATCH", "/api/rooms/fz/storage", owner},
		{"POST", "/api/rooms/fz/call/join", owner},
		{"POST", "/api/rooms/fz/call/leave", owner},
	}
	for _, seed := range []string{
		`{"user_id":"u1","name":"U","ttl_seconds":60,"rooms":{"r-*":["read","write"]}}`,
		`{"id":"room-2","name":"two","open":true}`, `{"name":"x"}`, `{"user_id":"u2"}`,
		`{"content":"hi","nonce":"n1"}`, `{"content":""}`, `{"content":"` + "\xff" + `"}`,
		`[{"op":"add","path":"/a","value":1}]`, `[{"op":"test","path":"/a","value":"\ud800"}]`,
		`[{"op":"move","from":"/a","path":"/a/b"}]`, `{"connection_id":"c1"}`,
		`{"rooms":{"*":["admin"]}}`, `{"ttl_seconds":-1,"user_id":"x"}`, `null`, `[]`, ``, `{`, `{"a":1}{}`,
	} {
		for i := range routes {
			f.Add(uint8(i), []byte(seed))
		}
	}
	h := s.Srv.Handler()
	f.Fuzz(func(t *testing.T, route uint8, body []byte) {
		r := routes[int(route)%len(routes)]
		req := httptest.NewRequest(r.method, r.path, bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+r.bearer)
		req.Header.Set("Content-Type", "application/json")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code >= 500 {
			t.Fatalf("%s %s %q: %d %s", r.method, r.path, body, rec.Code, rec.Body.Bytes())
		}
		if rec.Body.Len() > 0 && !json.Valid(rec.Body.Bytes()) {
			t.Fatalf("%s %s %q: answer is not JSON: %q", r.method, r.path, body, rec.Body.Bytes())
		}
		if rec.Code >= 400 {
			var e struct{ Error, Message string }
			if json.Unmarshal(rec.Body.Bytes(), &e) != nil || e.Error == "" || e.Message == "" {
				t.Fatalf("%s %s %q: refusal without error and message: %s", r.method, r.path, body, rec.Body.Bytes())
			}
		}
	})
}
