package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/parleyhq/parley/internal/protocol"
	"github.com/parleyhq/parley/internal/server/servertest"
	"github.com/parleyhq/parley/internal/webhook"
)

// cli runs the parley command line in-process with stdin.
func cli(t *testing.T, in string, args ...string) (code int, out, errOut string) {
	t.Helper()
	var o, e strings.Builder
	stdin = strings.NewReader(in)
	defer func() { stdin = nil }()
	code = run(args, &o, &e)
	return code, o.String(), e.String()
}

// The operator commands against a real server.
func TestCLIServerAPI(t *testing.T) {
	s := servertest.Start(t, nil)
	s.IgnoreTypes = []string{"presence:update", protocol.TypeRoomJoined}
	a := s.DialUser("ua", servertest.AllRooms)
	b := s.DialUser("ub", servertest.AllRooms)
	for _, c := range []*servertest.Client{a, b} {
		c.Request(protocol.TypeRoomJoin, "j", map[string]any{"room_id": "lobby", "presence": map[string]any{"k": "v"}})
		c.Expect(protocol.TypeRoomState)
	}
	t.Setenv("PARLEY_URL", s.URL)
	t.Setenv("PARLEY_API_KEY", servertest.APIKey)

	// No live room on another server: "items": [] for scripts, not null.
	empty := servertest.Start(t, nil)
	if code, out, errOut := cli(t, "", "rooms", "list", "--json", "--url", empty.URL); code != 0 || !strings.Contains(out, `"items":[]`) {
		t.Fatalf("rooms list --json with no live room: %d %q %q", code, out, errOut)
	}

	code, out, errOut := cli(t, "", "rooms", "list")
	if code != 0 || !strings.Contains(out, "ROOM") || !strings.Contains(out, "lobby  2") || !strings.Contains(out, "1 live rooms, 2 connections") {
		t.Fatalf("rooms list: %d %q %q", code, out, errOut)
	}
	code, out, _ = cli(t, "", "rooms", "list", "--json")
	var live struct {
		Items []struct {
			RoomID      string `json:"room_id"`
			Connections int    `json:"connections"`
		} `json:"items"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &live) != nil || len(live.Items) != 1 || live.Items[0].Connections != 2 {
		t.Fatalf("rooms list --json: %d %q", code, out)
	}

	code, out, errOut = cli(t, "", "rooms", "connections", "lobby")
	if code != 0 || !strings.Contains(out, a.ConnID) || !strings.Contains(out, b.ConnID) || !strings.Contains(out, `{"k":"v"}`) ||
		!strings.Contains(out, "2 connections in lobby") {
		t.Fatalf("rooms connections: %d %q %q", code, out, errOut)
	}
	code, out, _ = cli(t, "", "rooms", "connections", "--json", "lobby", "--limit", "1")
	var page struct {
		Items     []map[string]any `json:"items"`
		NextAfter *string          `json:"next_after"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &page) != nil || len(page.Items) != 1 || page.NextAfter == nil {
		t.Fatalf("rooms connections --json --limit 1: %d %q", code, out)
	}

	code, out, errOut = cli(t, "", "rooms", "broadcast", "lobby", `{"from":"cli"}`)
	if code != 0 || out != "sent to 2 connections in lobby\n" {
		t.Fatalf("rooms broadcast: %d %q %q", code, out, errOut)
	}
	for _, c := range []*servertest.Client{a, b} {
		if f := c.Expect(protocol.TypeRoomEvent); !strings.HasSuffix(string(f.Data), `"client_id":null,"user_id":null,"event":{"from":"cli"}}`) {
			t.Fatalf("event %s", f.Data)
		}
	}
	if code, out, _ = cli(t, `"from stdin"`, "rooms", "broadcast", "lobby", "-", "--json"); code != 0 || out != "{\"connections\":2}\n" {
		t.Fatalf("broadcast from stdin: %d %q", code, out)
	}
	a.Expect(protocol.TypeRoomEvent)
	b.Expect(protocol.TypeRoomEvent)

	for _, tc := range []struct {
		args []string
		code int
		err  string
	}{
		{[]string{"rooms", "broadcast", "nobody", "1"}, 1, "not_found (HTTP 404)"},
		{[]string{"rooms", "broadcast", "lobby", "not json"}, 2, "is not JSON"},
		{[]string{"rooms", "broadcast", "lobby"}, 2, "want ROOM and a JSON value"},
		{[]string{"rooms", "connections"}, 2, "exactly one ROOM"},
		{[]string{"rooms", "list", "--api-key", "wrong-key-0123456789"}, 1, "unauthorized (HTTP 401)"},
		{[]string{"rooms", "list", "--url", "http://127.0.0.1:1"}, 1, "cannot reach"},
		{[]string{"rooms", "list", "--url", "ftp://x"}, 2, "--url"},
		{[]string{"rooms", "fly"}, 2, "unknown command"},
		{[]string{"rooms"}, 2, "usage: parley rooms"},
		{[]string{"users", "disconnect"}, 2, "exactly one USER"},
	} {
		code, _, errOut := cli(t, "", tc.args...)
		if code != tc.code || !strings.Contains(errOut, tc.err) {
			t.Errorf("%v: exit %d %q, want %d and %q", tc.args, code, errOut, tc.code, tc.err)
		}
	}
	t.Setenv("PARLEY_API_KEY", "")
	if code, _, errOut := cli(t, "", "rooms", "list"); code != 2 || !strings.Contains(errOut, "no API key") {
		t.Errorf("without a key: %d %q", code, errOut)
	}
	t.Setenv("PARLEY_API_KEY", servertest.APIKey)

	code, out, errOut = cli(t, "", "users", "disconnect", "ua", "--reason", "maintenance")
	if code != 0 || out != "closed 1 connections of ua\n" {
		t.Fatalf("users disconnect: %d %q %q", code, out, errOut)
	}
	select {
	case <-a.Closed():
	case <-time.After(5 * time.Second):
		t.Fatal("ua not disconnected")
	}
	if a.CloseCode() != 4003 || a.CloseReason() != "maintenance" {
		t.Fatalf("close %d %q", a.CloseCode(), a.CloseReason())
	}
	if code, out, _ = cli(t, "", "users", "disconnect", "--json", "ua"); code != 0 || out != "{\"closed\":0}\n" {
		t.Fatalf("users disconnect --json: %d %q", code, out)
	}
}

// A real webhook captured as raw bytes (as `nc -l` would) verifies when
// piped to `parley webhooks verify`; every other input form and every
// kind of refusal too.
func TestCLIWebhooksVerify(t *testing.T) {
	const secret = "whsec-cli-test-0123456789"
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	captured := make(chan []byte, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		var raw bytes.Buffer
		req, err := http.ReadRequest(bufio.NewReader(io.TeeReader(c, &raw)))
		if err == nil {
			_, _ = io.ReadAll(req.Body)
		}
		_, _ = c.Write([]byte("HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"))
		captured <- raw.Bytes()
	}()
	s := servertest.Start(t, map[string]string{"PARLEY_WEBHOOK_URL": "http://" + ln.Addr().String() + "/hook",
		"PARLEY_WEBHOOK_SECRET": secret})
	s.DialUser("hooked", nil) // user.online
	var raw []byte
	select {
	case raw = <-captured:
	case <-time.After(10 * time.Second):
		t.Fatal("no webhook arrived")
	}
	code, out, errOut := cli(t, string(raw), "webhooks", "verify", "--secret", secret)
	if code != 0 || !strings.HasPrefix(out, "valid: user.online ") {
		t.Fatalf("verify a captured request: %d %q %q\n%s", code, out, errOut, raw)
	}
	code, out, _ = cli(t, string(raw), "webhooks", "verify", "--secret", secret, "--json")
	var res struct {
		Valid bool   `json:"valid"`
		Event string `json:"event"`
		ID    string `json:"id"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &res) != nil || !res.Valid || res.Event != "user.online" || res.ID == "" {
		t.Fatalf("--json: %d %q", code, out)
	}

	body := []byte(`{"id":"e1","event":"room.started","created_at":"2026-01-01T00:00:00.000Z","data":{"room_id":"r"}}`)
	now := time.Now()
	sig := webhook.Sign([]byte(secret), now, body)
	old := webhook.Sign([]byte(secret), now.Add(-10*time.Minute), body)
	t.Setenv("PARLEY_WEBHOOK_SECRET", secret)
	for _, tc := range []struct {
		name string
		in   string
		args []string
		code int
		msg  string
	}{
		{"header line", webhook.SignatureHeader + ": " + sig + "\n" + string(body), nil, 0, "valid: room.started e1"},
		{"crlf header line", webhook.SignatureHeader + ": " + sig + "\r\n" + string(body), nil, 0, "valid: room.started e1"},
		{"--signature", string(body), []string{"--signature", sig}, 0, "valid"},
		{"other secret", string(body), []string{"--signature", sig, "--secret", "another-secret-0123456"}, 1, "does not match"},
		{"tampered", strings.Replace(string(body), `"r"`, `"x"`, 1), []string{"--signature", sig}, 1, "does not match"},
		{"echo newline", string(body) + "\n", []string{"--signature", sig}, 1, "hint: the body ends with a newline"},
		{"too old", string(body), []string{"--signature", old}, 1, "outside the tolerance"},
		{"old, tolerance 0", string(body), []string{"--signature", old, "--tolerance", "0"}, 0, "valid"},
		{"old, tolerance 15m", string(body), []string{"--signature", old, "--tolerance", "15m"}, 0, "valid"},
		{"no signature", string(body), nil, 1, "no signature"},
		{"request without header", "POST /h HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}", nil, 1, "no Parley-Signature header"},
		{"over 64 MiB", strings.Repeat("x", 64<<20+1), []string{"--signature", sig}, 1, "larger than 64 MiB"},
		{"malformed", string(body), []string{"--signature", "t=x"}, 1, "malformed"},
	} {
		code, out, errOut := cli(t, tc.in, append([]string{"webhooks", "verify"}, tc.args...)...)
		if code != tc.code || !strings.Contains(out+errOut, tc.msg) {
			t.Errorf("%s: exit %d %q %q, want %d and %q", tc.name, code, out, errOut, tc.code, tc.msg)
		}
	}
	t.Setenv("PARLEY_WEBHOOK_SECRET", "")
	if code, _, errOut := cli(t, string(body), "webhooks", "verify", "--signature", sig); code != 2 || !strings.Contains(errOut, "--secret") {
		t.Errorf("without a secret: %d %q", code, errOut)
	}
}

// parley token --help lists its own flags (and the secret it reads), not
// the ~70 server settings.
func TestTokenHelpListsItsFlags(t *testing.T) {
	code, out, errOut := cli(t, "", "token", "--help")
	help := out + errOut
	if code != 0 || errOut != "" {
		t.Fatalf("exit %d; asked-for help goes to stdout, stderr got %q", code, errOut)
	}
	for _, want := range []string{"-user", "-name", "-ttl", "-room", "-auth-secret", "usage: parley token"} {
		if !strings.Contains(help, want) {
			t.Errorf("help lacks %s:\n%s", want, help)
		}
	}
	if n := strings.Count(help, "\n  -"); n != 6 || strings.Contains(help, "http-addr") || strings.Contains(help, "media-") {
		t.Errorf("help lists %d flags:\n%s", n, help)
	}
	for _, args := range [][]string{{"rooms", "-h"}, {"users", "--help"}, {"webhooks", "help"}, {"rooms", "list", "-h"}} {
		if code, out, errOut := cli(t, "", args...); code != 0 || !strings.Contains(out+errOut, "usage: parley") {
			t.Errorf("%v: %d %q %q", args, code, out, errOut)
		}
	}
}
