package clustertest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	natsserver "github.com/nats-io/nats-server/v2/server"

	"github.com/parleyhq/parley/internal/auth"
	"github.com/parleyhq/parley/internal/testenv"
)

// Settings every node gets.
const (
	Secret = "clustertest-secret-0123456789abcdef"
	APIKey = "clustertest-api-key-0123456789abcdef"

	// PostgresEnv names the PostgreSQL URL the suite needs.
	PostgresEnv = "PARLEY_TEST_POSTGRES_URL"
	// BinaryEnv, when set, names a prebuilt parley binary to test.
	BinaryEnv = "PARLEY_CLUSTERTEST_BINARY"
)

var binaryPath string // set by Main

// Main builds the parley binary once (unless BinaryEnv names one), runs
// the tests and removes the build. Without PostgresEnv nothing is built and
// every test skips.
func Main(m *testing.M) {
	flag.Parse() // for testing.Verbose; m.Run does not parse twice
	os.Exit(func() int {
		if os.Getenv(PostgresEnv) == "" {
			return m.Run()
		}
		if p := os.Getenv(BinaryEnv); p != "" {
			binaryPath = p
			return m.Run()
		}
		dir, err := os.MkdirTemp("", "parley-clustertest-")
		if err != nil {
			fmt.Fprintln(os.Stderr, "clustertest:", err)
			return 1
		}
		defer os.RemoveAll(dir)
		start := time.Now()
		bin, err := Build(dir)
		if err != nil {
			fmt.Fprintln(os.Stderr, "clustertest: build parley:", err)
			return 1
		}
		if testing.Verbose() {
			fmt.Fprintf(os.Stderr, "clustertest: built %s in %v\n", bin, time.Since(start).Round(time.Millisecond))
		}
		binaryPath = bin
		return m.Run()
	}())
}

// Build runs `go build -o dir/parley ./cmd/parley` in the module root.
func Build(dir string) (string, error) {
	root, err := moduleRoot()
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "parley")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/parley")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("%v\n%s", err, out)
	}
	return bin, nil
}

func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("go.mod not found above the working directory")
		}
		dir = parent
	}
}

// FreeAddr returns a 127.0.0.1 address with a port that was free a moment
// ago, outside the ephemeral range and never handed out twice in this
// process (testenv.FreePort; CI once gave two nodes one port). The node
// binds it; restarts reuse it.
func FreeAddr(t testing.TB) string {
	t.Helper()
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(testenv.FreePort(t, "tcp")))
}

// ---------------------------------------------------------------- NATS --

// NATS is a private NATS server (JetStream on) embedded in the test
// process. Stop and Start keep its port and its JetStream store.
type NATS struct {
	mu       sync.Mutex
	srv      *natsserver.Server
	port     int
	storeDir string
}

// StartNATS starts a NATS server on a free port until the test ends.
func StartNATS(t testing.TB) *NATS {
	t.Helper()
	n := &NATS{port: -1, storeDir: t.TempDir()}
	if err := n.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.Stop)
	return n
}

// URL is nats://127.0.0.1:port.
func (n *NATS) URL() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return fmt.Sprintf("nats://127.0.0.1:%d", n.port)
}

// Start starts the server (again), on the same port as before.
func (n *NATS) Start() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.srv != nil {
		return nil
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		srv, err := natsserver.NewServer(&natsserver.Options{
			Host: "127.0.0.1", Port: n.port, NoLog: true, NoSigs: true,
			JetStream: true, StoreDir: n.storeDir,
		})
		if err != nil {
			return fmt.Errorf("nats: %w", err)
		}
		go srv.Start()
		if srv.ReadyForConnections(5 * time.Second) {
			n.srv = srv
			n.port = srv.Addr().(*net.TCPAddr).Port
			return nil
		}
		srv.Shutdown()
		if time.Now().After(deadline) {
			return fmt.Errorf("nats did not start on port %d", n.port)
		}
	}
}

// Stop shuts the server down (clients see their connection drop).
func (n *NATS) Stop() {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.srv == nil {
		return
	}
	n.srv.Shutdown()
	n.srv.WaitForShutdown()
	n.srv = nil
}

// Restart is Stop then Start.
func (n *NATS) Restart() error {
	n.Stop()
	return n.Start()
}

// ------------------------------------------------------------ Postgres --

// PostgresURL returns PostgresEnv or skips the test.
func PostgresURL(t testing.TB) string {
	t.Helper()
	url := os.Getenv(PostgresEnv)
	if url == "" {
		t.Skip(PostgresEnv + " not set: skipping the cluster suite (it needs PostgreSQL; CI sets it)")
	}
	if binaryPath == "" {
		t.Fatal("no parley binary: TestMain must call clustertest.Main")
	}
	return url
}

// NewSchema creates a fresh schema, drops it when the test ends, and
// returns base with search_path set to it.
func NewSchema(t testing.TB, base string) string {
	t.Helper()
	schema := fmt.Sprintf("parley_ct_%d", rand.Uint64())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, base)
	if err != nil {
		t.Fatalf("postgres: %v", err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE SCHEMA "+schema); err != nil {
		t.Fatalf("create schema: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if c, err := pgx.Connect(ctx, base); err == nil {
			_, _ = c.Exec(ctx, "DROP SCHEMA "+schema+" CASCADE")
			c.Close(ctx)
		}
	})
	sep := "?"
	if strings.Contains(base, "?") {
		sep = "&"
	}
	return base + sep + "search_path=" + schema
}

// ------------------------------------------------------------- Cluster --

// Options configure New. Zero values give three nodes n1, n2, n3 on a new
// NATS server and a new schema, under a cluster name unique to the test.
type Options struct {
	Nodes       []string          // node ids (nil: n1, n2, n3; empty: none, add them with AddNode)
	Name        string            // PARLEY_CLUSTER_NAME (default unique)
	Env         map[string]string // extra settings for every node
	NATS        *NATS             // share a NATS server (default: a new one)
	PostgresURL string            // share a schema (default: NewSchema)
}

// Cluster is a set of parley processes on one NATS and one schema.
type Cluster struct {
	T           testing.TB
	Name        string
	NATS        *NATS
	PostgresURL string // with search_path
	Env         map[string]string
	Nodes       []*Node
	dir         string
	signer      *auth.Signer
}

// New starts the nodes in parallel and waits until each answers /healthz
// 200. It skips the test when PostgresEnv is unset.
func New(t testing.TB, o Options) *Cluster {
	t.Helper()
	base := PostgresURL(t)
	c := &Cluster{T: t, Name: o.Name, NATS: o.NATS, PostgresURL: o.PostgresURL, Env: o.Env,
		dir: t.TempDir(), signer: auth.NewHS256Signer([]byte(Secret))}
	if c.PostgresURL == "" {
		c.PostgresURL = NewSchema(t, base)
	}
	if c.NATS == nil {
		c.NATS = StartNATS(t)
	}
	if c.Name == "" {
		c.Name = fmt.Sprintf("ct%d", rand.Uint32())
	}
	ids := o.Nodes
	if ids == nil {
		ids = []string{"n1", "n2", "n3"}
	}
	// Registered first, so it runs last, after every node stopped: a data
	// race (a node built with -race, see .ci/run) or an uncontained panic
	// in any node's output fails the test.
	t.Cleanup(func() {
		for _, n := range c.Nodes {
			b, err := os.ReadFile(n.LogPath)
			if err != nil {
				continue
			}
			for _, bad := range []string{"WARNING: DATA RACE", "\npanic: ", "fatal error: "} {
				if bytes.Contains(b, []byte(bad)) {
					t.Errorf("%s's output has %q; log: %s", n.ID, strings.TrimSpace(bad), n.LogPath)
				}
			}
		}
	})
	for _, id := range ids {
		c.AddNode(id, nil)
	}
	t.Cleanup(func() {
		if t.Failed() {
			for _, n := range c.Nodes {
				t.Logf("---- last lines of %s (%s) ----\n%s", n.ID, n.LogPath, n.LogTail(40))
			}
		}
	})
	StartAll(t, c.Nodes...)
	return c
}

// StartAll starts nodes at once and waits until every one is healthy.
func StartAll(t testing.TB, nodes ...*Node) {
	t.Helper()
	for _, n := range nodes {
		if err := n.Start(); err != nil {
			t.Fatalf("start %s: %v", n.ID, err)
		}
	}
	for _, n := range nodes {
		n.WaitHealthy(t, 30*time.Second)
	}
}

// Node returns the node with this id.
func (c *Cluster) Node(id string) *Node {
	for _, n := range c.Nodes {
		if n.ID == id {
			return n
		}
	}
	c.T.Fatalf("no node %s", id)
	return nil
}

// AddNode prepares (does not start) a node with the cluster's settings plus
// env, on a new free port, and appends it to c.Nodes (Node finds the first
// one with an id). It is killed when the test ends.
func (c *Cluster) AddNode(id string, env map[string]string) *Node {
	c.T.Helper()
	tag := fmt.Sprintf("%s-%s-%d", c.Name, id, rand.Uint32())
	n := &Node{c: c, ID: id, Addr: FreeAddr(c.T), LogPath: filepath.Join(c.dir, tag+".log"), AppName: "parley-" + tag}
	sep := "?"
	if strings.Contains(c.PostgresURL, "?") {
		sep = "&"
	}
	n.env = map[string]string{
		"PARLEY_HTTP_ADDR":        n.Addr,
		"PARLEY_DATA_DIR":         filepath.Join(c.dir, "data-"+id),
		"PARLEY_AUTH_SECRET":      Secret,
		"PARLEY_API_KEY":          APIKey,
		"PARLEY_BROKER":           "nats",
		"PARLEY_NATS_URL":         c.NATS.URL(),
		"PARLEY_STORE":            "postgres",
		"PARLEY_POSTGRES_URL":     c.PostgresURL + sep + "application_name=" + n.AppName,
		"PARLEY_NODE_ID":          id,
		"PARLEY_CLUSTER_NAME":     c.Name,
		"PARLEY_NODE_HEARTBEAT":   "200ms",
		"PARLEY_NODE_DEAD_AFTER":  "1500ms",
		"PARLEY_LOG_LEVEL":        "info",
		"PARLEY_SHUTDOWN_TIMEOUT": "10s",
		// Writers here send far more than a browser tab would.
		"PARLEY_MSG_RATE":       "100000",
		"PARLEY_MSG_BYTES_RATE": "0",
		"PARLEY_MSG_BURST":      "100000",
		// Calls are not what this suite is about: keep the SFU small and
		// on loopback (as internal/server's mediaEnv).
		"PARLEY_MEDIA_LISTEN_IP":    "127.0.0.1",
		"PARLEY_MEDIA_LOOPBACK":     "true",
		"PARLEY_MEDIA_RTC_MIN_PORT": "0",
		"PARLEY_MEDIA_RTC_MAX_PORT": "0",
		"PARLEY_MEDIA_WORKERS":      "1",
	}
	for k, v := range c.Env {
		n.env[k] = v
	}
	for k, v := range env {
		n.env[k] = v
	}
	c.T.Cleanup(func() { n.Kill() })
	c.Nodes = append(c.Nodes, n)
	return n
}

// Token mints an HS256 token for user (name "Name <user>", one hour) with
// these room grants (nil: none).
func (c *Cluster) Token(user string, rooms map[string]auth.Perm) string {
	tok, _, err := c.signer.Mint(user, "Name "+user, time.Hour, rooms)
	if err != nil {
		panic(err) // only for grants that are not permissions
	}
	return tok
}

// AllRooms grants everything on every room.
var AllRooms = map[string]auth.Perm{"*": auth.PermAll}

// ---------------------------------------------------------------- Node --

// Node is one parley process (possibly not running).
type Node struct {
	c       *Cluster
	ID      string
	Addr    string // 127.0.0.1:port, kept across restarts
	LogPath string // stdout and stderr of every run, appended
	AppName string // its PostgreSQL application_name (unless Env overrides the URL)

	env map[string]string

	mu    sync.Mutex
	cmd   *exec.Cmd
	done  chan struct{} // closed when the current process has exited
	state *os.ProcessState
	runs  int
}

// URL is http://addr.
func (n *Node) URL() string { return "http://" + n.Addr }

// WSURL is ws://addr/ws.
func (n *Node) WSURL() string { return "ws://" + n.Addr + "/ws" }

// SetEnv changes a setting for the next Start.
func (n *Node) SetEnv(k, v string) { n.env[k] = v }

// Start spawns the process without waiting for it to be ready.
func (n *Node) Start() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd != nil {
		select {
		case <-n.done:
		default:
			return errors.New("already running")
		}
	}
	f, err := os.OpenFile(n.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	n.runs++
	fmt.Fprintf(f, "==== clustertest: start #%d of %s at %s\n", n.runs, n.ID, time.Now().Format(time.RFC3339Nano))
	cmd := exec.Command(binaryPath, "serve")
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PARLEY_") { // nothing from the caller's PARLEY_* leaks in
			cmd.Env = append(cmd.Env, kv)
		}
	}
	for k, v := range n.env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	cmd.Stdout, cmd.Stderr = f, f
	setProcAttr(cmd)
	if err := cmd.Start(); err != nil {
		return err
	}
	done := make(chan struct{})
	n.cmd, n.done, n.state = cmd, done, nil
	go func() {
		_ = cmd.Wait()
		n.mu.Lock()
		n.state = cmd.ProcessState
		n.mu.Unlock()
		close(done)
	}()
	return nil
}

// Running reports whether the process is alive.
func (n *Node) Running() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd == nil {
		return false
	}
	select {
	case <-n.done:
		return false
	default:
		return true
	}
}

// Exited is closed when the current process has exited.
func (n *Node) Exited() <-chan struct{} {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.done
}

// WaitHealthy polls /healthz until it answers 200; it fails the test when
// the process exits first or the deadline passes.
func (n *Node) WaitHealthy(t testing.TB, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	last := "no answer"
	for {
		select {
		case <-n.Exited():
			t.Fatalf("%s exited before it was healthy (%s); log:\n%s", n.ID, n.ExitStatus(), n.LogTail(30))
		default:
		}
		code, body, err := n.Healthz()
		if err == nil && code == 200 {
			return
		}
		if err != nil {
			last = err.Error()
		} else {
			last = fmt.Sprintf("%d %s", code, body)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not healthy within %v (last /healthz: %s); log:\n%s", n.ID, within, last, n.LogTail(30))
		}
		time.Sleep(20 * time.Millisecond) // polling interval
	}
}

// Healthz is one GET /healthz with a 3 s timeout.
func (n *Node) Healthz() (int, string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", n.URL()+"/healthz", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, strings.TrimSpace(string(b)), nil
}

// PollHealthz polls /healthz until it answers want (a connection error
// counts as 0) and returns how long it took, or fails with what it last saw.
func (n *Node) PollHealthz(want int, within time.Duration) (time.Duration, error) {
	start := time.Now()
	last := ""
	for {
		code, body, err := n.Healthz()
		if code == want {
			return time.Since(start), nil
		}
		if err != nil {
			last = err.Error()
		} else {
			last = fmt.Sprintf("%d %s", code, body)
		}
		if time.Since(start) > within {
			return 0, fmt.Errorf("%s: /healthz did not answer %d within %v (last: %s)", n.ID, want, within, last)
		}
		time.Sleep(20 * time.Millisecond) // polling interval
	}
}

// Kill sends SIGKILL (kill -9) and waits for the process to be gone. It
// does nothing when the node is not running.
func (n *Node) Kill() {
	n.mu.Lock()
	cmd, done := n.cmd, n.done
	n.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGKILL)
	<-done
}

// Term sends SIGTERM (graceful drain) and returns at once.
func (n *Node) Term(t testing.TB) {
	t.Helper()
	n.mu.Lock()
	cmd := n.cmd
	n.mu.Unlock()
	if cmd == nil {
		t.Fatalf("%s: not started", n.ID)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatalf("%s: SIGTERM: %v", n.ID, err)
	}
}

// WaitExit waits for the process to exit and returns its exit code (-1 when
// killed by a signal); ok is false at the deadline.
func (n *Node) WaitExit(within time.Duration) (code int, ok bool) {
	t := time.NewTimer(within)
	defer t.Stop()
	select {
	case <-n.Exited():
	case <-t.C:
		return 0, false
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.state.ExitCode(), true
}

// ExitStatus describes how the last process ended.
func (n *Node) ExitStatus() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.state == nil {
		return "running"
	}
	return n.state.String()
}

// Restart starts the node again (on the same address, with the same id)
// after it stopped, and waits until it is healthy.
func (n *Node) Restart(t testing.TB) {
	t.Helper()
	if n.Running() {
		t.Fatalf("%s: restart while running", n.ID)
	}
	if err := n.Start(); err != nil {
		t.Fatalf("restart %s: %v", n.ID, err)
	}
	n.WaitHealthy(t, 30*time.Second)
}

// Log returns everything the node wrote so far.
func (n *Node) Log() string {
	b, _ := os.ReadFile(n.LogPath)
	return string(b)
}

// LogTail returns the last lines of the node's output; a run of lines
// that differ only in their time= prefix is shown once with its count.
func (n *Node) LogTail(lines int) string {
	var out []string
	var runs []int
	prevKey := ""
	for _, l := range strings.Split(strings.TrimRight(n.Log(), "\n"), "\n") {
		key := l
		if strings.HasPrefix(l, "time=") {
			if i := strings.IndexByte(l, ' '); i > 0 {
				key = l[i:]
			}
		}
		if len(out) > 0 && key == prevKey {
			runs[len(runs)-1]++
			continue
		}
		out, runs, prevKey = append(out, l), append(runs, 1), key
	}
	if len(out) > lines {
		out, runs = out[len(out)-lines:], runs[len(runs)-lines:]
	}
	for i, k := range runs {
		if k > 1 {
			out[i] += fmt.Sprintf("   [×%d from this time on]", k)
		}
	}
	return strings.Join(out, "\n")
}

// Do performs a REST request with an optional bearer credential and body
// (string, []byte or anything JSON-encodable); it fails the test only when
// the request cannot be made.
func (n *Node) Do(t testing.TB, method, path, bearer string, body any) (int, []byte) {
	t.Helper()
	code, out, err := n.DoE(method, path, bearer, body)
	if err != nil {
		t.Fatalf("%s %s on %s: %v", method, path, n.ID, err)
	}
	return code, out
}

// DoE is Do returning the transport error.
func (n *Node) DoE(method, path, bearer string, body any) (int, []byte, error) {
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case []byte:
		rd = bytes.NewReader(b)
	default:
		raw, err := json.Marshal(b)
		if err != nil {
			return 0, nil, err
		}
		rd = bytes.NewReader(raw)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, n.URL()+path, rd)
	if err != nil {
		return 0, nil, err
	}
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	return resp.StatusCode, out, err
}

// Storage is GET /api/rooms/{room}/storage with the API key.
func (n *Node) Storage(t testing.TB, room string) (version int64, data map[string]any) {
	t.Helper()
	code, body := n.Do(t, "GET", "/api/rooms/"+room+"/storage", APIKey, nil)
	if code != 200 {
		t.Fatalf("GET storage of %s on %s: %d %s", room, n.ID, code, body)
	}
	var st struct {
		Version int64          `json:"version"`
		Data    map[string]any `json:"data"`
	}
	if err := json.Unmarshal(body, &st); err != nil {
		t.Fatalf("GET storage of %s on %s: %v in %s", room, n.ID, err, body)
	}
	return st.Version, st.Data
}

// WaitPostgresSessionsGone polls pg_stat_activity until no session of the
// node (by application_name) is left, e.g. after kill -9: a COMMIT the dead
// process had already sent may still be applied until then.
func (n *Node) WaitPostgresSessionsGone(within time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	conn, err := pgx.Connect(ctx, os.Getenv(PostgresEnv))
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	for {
		var k int
		if err := conn.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE application_name = $1`, n.AppName).Scan(&k); err != nil {
			return fmt.Errorf("%s: PostgreSQL sessions still open after %v (%w)", n.ID, within, err)
		}
		if k == 0 {
			return nil
		}
		time.Sleep(20 * time.Millisecond) // polling interval
	}
}

// ----------------------------------------------------------- TCP proxy --

// Proxy forwards 127.0.0.1 connections to a target (e.g. PostgreSQL); Cut
// breaks every connection and refuses new ones until Restore.
type Proxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	cut    bool
	conns  map[net.Conn]struct{}
}

// NewProxy listens on a free port until the test ends.
func NewProxy(t testing.TB, target string) *Proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &Proxy{ln: ln, target: target, conns: map[net.Conn]struct{}{}}
	go p.serve()
	t.Cleanup(func() { _ = ln.Close(); p.Cut() })
	return p
}

// Addr is the proxy's listen address.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

func (p *Proxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		if p.cut {
			p.mu.Unlock()
			_ = c.Close()
			continue
		}
		p.mu.Unlock()
		go p.pipe(c)
	}
}

func (p *Proxy) pipe(c net.Conn) {
	u, err := net.DialTimeout("tcp", p.target, 5*time.Second)
	if err != nil {
		_ = c.Close()
		return
	}
	p.mu.Lock()
	if p.cut {
		p.mu.Unlock()
		_ = c.Close()
		_ = u.Close()
		return
	}
	p.conns[c], p.conns[u] = struct{}{}, struct{}{}
	p.mu.Unlock()
	cp := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src)
		_ = dst.Close()
		_ = src.Close()
		p.mu.Lock()
		delete(p.conns, dst)
		delete(p.conns, src)
		p.mu.Unlock()
	}
	go cp(u, c)
	go cp(c, u)
}

// Cut closes every proxied connection and refuses new ones.
func (p *Proxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = true
	for c := range p.conns {
		_ = c.Close()
	}
	clear(p.conns)
}

// Restore accepts connections again.
func (p *Proxy) Restore() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = false
}
