package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/parleyhq/parley/internal/auth"
	"github.com/parleyhq/parley/internal/protocol"
)

const testSecret = "main-test-secret-0123456789"

// buildBinary compiles parley once per test binary run.
func buildBinary(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	bin := filepath.Join(dir, "parley")
	cmd := exec.Command("go", "build", "-o", bin, ".")
	cmd.Stderr = os.Stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("build: %v", err)
	}
	return bin
}

type proc struct {
	cmd    *exec.Cmd
	addr   string
	mu     sync.Mutex
	stderr []string // log lines so far
	out    *strings.Builder
	done   chan error
}

var listenRe = regexp.MustCompile(`msg=listening addr=(\S+)`)

// startServer runs the binary and waits for its "listening" log line.
func startServer(t *testing.T, bin string, env []string, args ...string) *proc {
	t.Helper()
	cmd := exec.Command(bin, append([]string{"serve"}, args...)...)
	cmd.Env = append(os.Environ(), env...)
	stderr, _ := cmd.StderrPipe()
	out := &strings.Builder{}
	cmd.Stdout = out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{cmd: cmd, out: out, done: make(chan error, 1)}
	addrCh := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			line := sc.Text()
			p.mu.Lock()
			p.stderr = append(p.stderr, line)
			p.mu.Unlock()
			if m := listenRe.FindStringSubmatch(line); m != nil {
				addrCh <- m[1]
			}
			if testing.Verbose() {
				t.Log(line)
			}
		}
	}()
	go func() { p.done <- cmd.Wait() }()
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	select {
	case p.addr = <-addrCh:
	case err := <-p.done:
		t.Fatalf("server exited before listening: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("server did not start")
	}
	return p
}

func dialWS(t *testing.T, addr, token string) *websocket.Conn {
	t.Helper()
	ws, _, err := websocket.DefaultDialer.Dial("ws://"+addr+"/ws?token="+token, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ws.Close() })
	return ws
}

func readType(t *testing.T, ws *websocket.Conn, typ string) protocol.Envelope {
	t.Helper()
	_ = ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		_, b, err := ws.ReadMessage()
		if err != nil {
			t.Fatalf("waiting for %s: %v", typ, err)
		}
		var env protocol.Envelope
		if err := json.Unmarshal(b, &env); err != nil {
			t.Fatal(err)
		}
		if env.Type == protocol.TypeError {
			t.Fatalf("error while waiting for %s: %s", typ, env.Data)
		}
		if env.Type == typ {
			return env
		}
	}
}

// A process killed with SIGKILL right after acknowledging N updates
// restarts with all N present.
func TestSIGKILLDurability(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := buildBinary(t)
	dataDir := t.TempDir()
	env := []string{"PARLEY_AUTH_SECRET=" + testSecret, "PARLEY_DATA_DIR=" + dataDir, "PARLEY_HTTP_ADDR=127.0.0.1:0",
		"PARLEY_API_KEY=cmd-test-api-key-0123", "PARLEY_SNAPSHOT_EVERY=150", "PARLEY_MSG_RATE=100000", "PARLEY_MSG_BURST=100000"}
	p := startServer(t, bin, env)

	tok, _, _ := auth.NewHS256Signer([]byte(testSecret)).Mint("u1", "", time.Hour, map[string]auth.Perm{"*": auth.PermAll})
	ws := dialWS(t, p.addr, tok)
	readType(t, ws, protocol.TypeConnected)
	_ = ws.WriteJSON(map[string]any{"type": "room:join", "id": "j", "data": map[string]any{"room_id": "durable"}})
	readType(t, ws, protocol.TypeRoomState)

	// Pipeline N updates, then wait for every acknowledgement.
	const n = 400
	for i := 1; i <= n; i++ {
		op := fmt.Sprintf(`[{"op":"add","path":"/k%d","value":%d}]`, i, i)
		if err := ws.WriteJSON(map[string]any{"type": "room:update_storage", "id": fmt.Sprint(i),
			"data": map[string]any{"room_id": "durable", "ops": json.RawMessage(op)}}); err != nil {
			t.Fatal(err)
		}
	}
	last := int64(0)
	for acked := 0; acked < n; {
		f := readType(t, ws, protocol.TypeRoomStorageUpdated)
		var u struct{ Version int64 }
		_ = json.Unmarshal(f.Data, &u)
		if u.Version != last+1 {
			t.Fatalf("version %d after %d", u.Version, last)
		}
		last = u.Version
		acked++
	}
	// Kill at once, no graceful shutdown.
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-p.done

	p2 := startServer(t, bin, env)
	req, _ := http.NewRequest("GET", "http://"+p2.addr+"/api/rooms/durable/storage", nil)
	req.Header.Set("Authorization", "Bearer cmd-test-api-key-0123")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var st struct {
		Version int64          `json:"version"`
		Data    map[string]int `json:"data"`
	}
	if err := json.Unmarshal(body, &st); err != nil {
		t.Fatalf("%s: %v", body, err)
	}
	if st.Version != n || len(st.Data) != n {
		t.Fatalf("after SIGKILL: version %d with %d keys, want %d", st.Version, len(st.Data), n)
	}
	for i := 1; i <= n; i++ {
		if st.Data[fmt.Sprintf("k%d", i)] != i {
			t.Fatalf("k%d = %d", i, st.Data[fmt.Sprintf("k%d", i)])
		}
	}
}

func TestServeRefusesWithoutSecret(t *testing.T) {
	var out, errOut strings.Builder
	t.Setenv("PARLEY_AUTH_SECRET", "")
	code := run([]string{"serve", "--data-dir", t.TempDir(), "--http-addr", "127.0.0.1:0"}, &out, &errOut)
	if code == 0 || !strings.Contains(errOut.String(), "auth-secret") || !strings.Contains(errOut.String(), "--dev") {
		t.Fatalf("exit %d, stderr %q", code, errOut.String())
	}
}

func TestInvalidConfigNamesField(t *testing.T) {
	cases := []struct {
		args  []string
		field string
	}{
		{[]string{"serve", "--heartbeat-interval", "soon"}, "heartbeat-interval"},
		{[]string{"serve", "--max-message-bytes", "-1"}, "max-message-bytes"},
		{[]string{"serve", "--log-format", "xml"}, "log-format"},
		{[]string{"serve", "--http-addr", "nowhere"}, "http-addr"},
	}
	for _, tc := range cases {
		var out, errOut strings.Builder
		if code := run(tc.args, &out, &errOut); code != 2 || !strings.Contains(errOut.String(), tc.field) {
			t.Fatalf("%v: exit %d, stderr %q", tc.args, code, errOut.String())
		}
	}
}

func TestTokenCommand(t *testing.T) {
	var out, errOut strings.Builder
	t.Setenv("PARLEY_AUTH_SECRET", testSecret)
	code := run([]string{"token", "--user", "u9", "--name", "Nine", "--ttl", "10m", "--room", "team-*=read,write", "--room", "lobby=read"}, &out, &errOut)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	v, _ := auth.NewVerifier(auth.VerifierConfig{HMACSecret: []byte(testSecret)})
	c, err := v.Verify(strings.TrimSpace(out.String()))
	if err != nil {
		t.Fatal(err)
	}
	if c.UserID != "u9" || c.Name != "Nine" || c.RoomPerms("team-a") != auth.PermRead|auth.PermWrite ||
		c.RoomPerms("lobby") != auth.PermRead || c.RoomPerms("other") != 0 || time.Until(c.ExpiresAt) > 10*time.Minute {
		t.Fatalf("claims = %+v", c)
	}
	for _, bad := range [][]string{{"token"}, {"token", "--user", "u", "--room", "x=fly"}, {"token", "--user", "u", "--ttl", "-1s"}} {
		out.Reset()
		errOut.Reset()
		if code := run(bad, &out, &errOut); code == 0 {
			t.Fatalf("%v succeeded", bad)
		}
	}
}

func TestVersionCommand(t *testing.T) {
	var out, errOut strings.Builder
	if code := run([]string{"version"}, &out, &errOut); code != 0 || !strings.HasPrefix(out.String(), "parley ") {
		t.Fatalf("exit %d out %q", code, out.String())
	}
}

// The binary on its embedded default: --dev prints a token that connects,
// and SIGTERM stops it with exit 0 after closing clients with 1001.
func TestServeDevAndGracefulSIGTERM(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := buildBinary(t)
	dir := t.TempDir()
	p := startServer(t, bin, []string{"PARLEY_AUTH_SECRET=", "PARLEY_HTTP_ADDR=127.0.0.1:0", "PARLEY_DATA_DIR=" + filepath.Join(dir, "data")}, "--dev")
	// The token line is printed right after listening.
	var tok string
	deadline := time.Now().Add(10 * time.Second)
	for tok == "" && time.Now().Before(deadline) {
		if m := regexp.MustCompile(`sample token \(user dev-user, 24h\): (\S+)`).FindStringSubmatch(p.out.String()); m != nil {
			tok = m[1]
		} else {
			time.Sleep(10 * time.Millisecond)
		}
	}
	if tok == "" {
		t.Fatalf("no token printed: %q", p.out.String())
	}
	if _, err := os.Stat(filepath.Join(dir, "data", "parley.db")); err != nil {
		t.Fatalf("SQLite file not created: %v", err)
	}
	ws := dialWS(t, p.addr, tok)
	readType(t, ws, protocol.TypeConnected)
	// Dev mode: rooms are open even without a grant for them.
	_ = ws.WriteJSON(map[string]any{"type": "room:join", "id": "j", "data": map[string]any{"room_id": "anything"}})
	readType(t, ws, protocol.TypeRoomState)
	resp, err := http.Get("http://" + p.addr + "/healthz")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("healthz: %v %v", resp, err)
	}
	resp.Body.Close()

	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	_ = ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		_, _, err := ws.ReadMessage()
		if err != nil {
			if !websocket.IsCloseError(err, protocol.CloseGoingAway) {
				t.Fatalf("close: %v", err)
			}
			break
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	select {
	case err := <-p.done:
		if err != nil {
			t.Fatalf("exit: %v", err)
		}
	case <-ctx.Done():
		t.Fatal("server did not exit after SIGTERM")
	}
}
