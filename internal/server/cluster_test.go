package server_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	natsserver "github.com/nats-io/nats-server/v2/server"

	"github.com/parleyhq/parley/internal/protocol"
	"github.com/parleyhq/parley/internal/server/servertest"
	"github.com/parleyhq/parley/internal/store"
)

// clusterEnv starts an embedded NATS server and a fresh PostgreSQL schema
// and returns the settings that put a node in cluster mode on them.
func clusterEnv(t *testing.T) map[string]string {
	t.Helper()
	url := os.Getenv("PARLEY_TEST_POSTGRES_URL")
	if url == "" {
		t.Skip("PARLEY_TEST_POSTGRES_URL not set: skipping PostgreSQL tests")
	}
	ns, err := natsserver.NewServer(&natsserver.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true,
		JetStream: true, StoreDir: t.TempDir()}) // the cluster registry and leases are JetStream KV buckets
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(5 * time.Second) {
		t.Fatal("nats not ready")
	}
	t.Cleanup(ns.Shutdown)

	schema := fmt.Sprintf("parley_cluster_%d", rand.Uint64())
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "CREATE SCHEMA "+schema); err != nil {
		t.Fatal(err)
	}
	conn.Close(ctx)
	t.Cleanup(func() {
		c, err := pgx.Connect(context.Background(), url)
		if err == nil {
			_, _ = c.Exec(context.Background(), "DROP SCHEMA "+schema+" CASCADE")
			c.Close(context.Background())
		}
	})
	sep := "?"
	if strings.Contains(url, "?") {
		sep = "&"
	}
	env := mediaEnv()
	env["PARLEY_STORE"] = "postgres"
	env["PARLEY_POSTGRES_URL"] = url + sep + "search_path=" + schema
	env["PARLEY_BROKER"] = "nats"
	env["PARLEY_NATS_URL"] = ns.ClientURL()
	return env
}

// Two nodes over NATS with one PostgreSQL: what one node sends to users
// reaches their connections on the other node.
func TestClusterTwoNodes(t *testing.T) {
	env := clusterEnv(t)
	n1 := servertest.Start(t, env)
	n2 := servertest.Start(t, env)
	for _, n := range []*servertest.Server{n1, n2} {
		n.IgnoreTypes = []string{"presence:update"}
	}
	ctx := context.Background()
	// Shared store: a room created through node 1 is visible on node 2.
	if err := n1.Srv.Store.CreateRoom(ctx, store.Room{ID: "team", Name: "Team", OwnerID: "alice", CreatedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	if err := n1.Srv.Store.AddMember(ctx, "team", "bob"); err != nil {
		t.Fatal(err)
	}
	alice := n1.DialUser("alice", nil)
	bob1 := n1.DialUser("bob", nil)
	bob2 := n2.DialUser("bob", nil)

	// A call started on node 2 notifies the members on both nodes once.
	if code, body := n2.Do("POST", "/api/rooms/team/call/start", n2.Token("bob", nil), nil); code != 200 {
		t.Fatalf("call start: %d %s", code, body)
	}
	for _, c := range []*servertest.Client{alice, bob1, bob2} {
		if f := c.Expect(protocol.TypeRoomCallStarted); !strings.Contains(string(f.Data), `"started_by":"bob"`) {
			t.Fatalf("%s: %s", c.UserID, f.Data)
		}
	}
	for _, c := range []*servertest.Client{alice, bob1, bob2} {
		c.ExpectNothing() // delivered exactly once per connection
	}
	// Storage written through node 1's REST API is readable on node 2 after
	// the room is loaded there (shared durable store).
	if code, body := n1.Do("PATCH", "/api/rooms/doc/storage", servertest.APIKey, `[{"op":"add","path":"/a","value":1}]`); code != 200 {
		t.Fatalf("patch: %d %s", code, body)
	}
	if code, body := n2.Do("GET", "/api/rooms/doc/storage", servertest.APIKey, nil); code != 200 || !strings.Contains(string(body), `"a":1`) {
		t.Fatalf("read on node 2: %d %s", code, body)
	}
}

// Fault test: every PostgreSQL connection of the server is killed. Batches
// in flight may fail (their senders get `internal`, nobody else hears of
// them), the pool reconnects by itself, and the room's versions stay
// gapless: what clients were told is exactly what is stored.
func TestPostgresConnectionsKilled(t *testing.T) {
	env := clusterEnv(t)
	env["PARLEY_BROKER"] = "local"
	app := fmt.Sprintf("parley_fault_%d", rand.Uint64())
	env["PARLEY_POSTGRES_URL"] += "&application_name=" + app
	s := servertest.Start(t, env)
	s.IgnoreTypes = []string{"presence:update"}
	a := s.DialUser("alice", servertest.AllRooms)
	join(a, "r", "", nil)
	patch(a, "r", "p0", `[{"op":"add","path":"/n","value":0}]`, nil)
	a.Expect(protocol.TypeRoomStorageUpdated)

	url := os.Getenv("PARLEY_TEST_POSTGRES_URL")
	conn, err := pgx.Connect(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var killed int
	if err := conn.QueryRow(context.Background(),
		`SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1`, app).Scan(&killed); err != nil {
		t.Fatal(err)
	}
	if killed == 0 {
		t.Fatal("no server connection found to kill")
	}

	// Keep writing until writes succeed again; count what was acknowledged.
	acked := 1
	deadline := time.Now().Add(30 * time.Second)
	for i := 1; ; i++ {
		if time.Now().After(deadline) {
			t.Fatal("writes did not recover")
		}
		id := fmt.Sprintf("p%d", i)
		patch(a, "r", id, fmt.Sprintf(`[{"op":"replace","path":"/n","value":%d}]`, i), nil)
		f, ok := a.Next(10 * time.Second)
		if !ok {
			t.Fatal("no reply")
		}
		if f.Type == protocol.TypeRoomStorageUpdated {
			var u storageUpdated
			_ = json.Unmarshal(f.Data, &u)
			acked++
			if u.Version != int64(acked) {
				t.Fatalf("acknowledged version %d, want %d (a gap)", u.Version, acked)
			}
			if acked >= 4 {
				break
			}
			continue
		}
		if f.Type != protocol.TypeError || !strings.Contains(string(f.Data), `"internal"`) {
			t.Fatalf("unexpected reply %s %s", f.Type, f.Data)
		}
	}
	if code, body := s.Do("GET", "/healthz", "", nil); code != 200 {
		t.Fatalf("healthz after recovery: %d %s", code, body)
	}
	// What is stored is exactly what was acknowledged.
	v, _ := restStorage(t, s, "r")
	if v != int64(acked) {
		t.Fatalf("stored version %d, acknowledged %d", v, acked)
	}
	// A fresh load from the database agrees.
	b := s.DialUser("bob", servertest.AllRooms)
	st := join(b, "r", "", nil)
	if st.Storage.Version != int64(acked) {
		t.Fatalf("joined at version %d, acknowledged %d", st.Storage.Version, acked)
	}
}
