package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/parleyhq/parley/internal/store"
	"github.com/parleyhq/parley/internal/store/storetest"
)

// testURL returns PARLEY_TEST_POSTGRES_URL or skips the test.
func testURL(tb testing.TB) string {
	tb.Helper()
	url := os.Getenv("PARLEY_TEST_POSTGRES_URL")
	if url == "" {
		tb.Skip("PARLEY_TEST_POSTGRES_URL not set: skipping PostgreSQL tests")
	}
	return url
}

func adminExec(tb testing.TB, url, sql string) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, url)
	if err != nil {
		tb.Fatalf("connect: %v", err)
	}
	defer c.Close(ctx)
	if _, err := c.Exec(ctx, sql); err != nil {
		tb.Fatalf("%s: %v", sql, err)
	}
}

// freshSchema creates a schema with a random name and drops it (CASCADE)
// when the test ends.
func freshSchema(tb testing.TB, url string) string {
	tb.Helper()
	name := "parley_test_" + strings.ReplaceAll(uuid.NewString(), "-", "")
	ident := pgx.Identifier{name}.Sanitize()
	adminExec(tb, url, "CREATE SCHEMA "+ident)
	tb.Cleanup(func() { adminExec(tb, url, "DROP SCHEMA "+ident+" CASCADE") })
	return name
}

func testOptions(schema string) Options {
	return Options{SearchPath: schema, Logger: slog.New(slog.DiscardHandler)}
}

func openTest(tb testing.TB, url, schema string) *Store {
	tb.Helper()
	s, err := Open(context.Background(), url, testOptions(schema))
	if err != nil {
		tb.Fatalf("Open: %v", err)
	}
	tb.Cleanup(func() { s.Close() })
	return s
}

func TestConformance(t *testing.T) {
	url := testURL(t)
	storetest.Run(t, func(t *testing.T) store.Store {
		return openTest(t, url, freshSchema(t, url))
	})
}

func migrationRows(t *testing.T, s *Store) (n, maxV int) {
	t.Helper()
	err := s.withConn(t.Context(), func(c *pgx.Conn) error {
		return c.QueryRow(t.Context(), `SELECT count(*), coalesce(max(version), 0) FROM schema_migrations`).Scan(&n, &maxV)
	})
	if err != nil {
		t.Fatal(err)
	}
	return n, maxV
}

func TestReopenKeepsData(t *testing.T) {
	url := testURL(t)
	schema := freshSchema(t, url)
	ctx := t.Context()
	s := openTest(t, url, schema)
	if err := s.AppendUpdates(ctx, []store.DocUpdate{{RoomID: "r", Version: 1, ClientID: "c", Ops: json.RawMessage(`[1]`)}}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	for range 2 { // up to date: a no-op
		s = openTest(t, url, schema)
		doc, err := s.LoadDocument(ctx, "r")
		if err != nil || len(doc.Updates) != 1 {
			t.Fatalf("after reopen: %d updates, %v", len(doc.Updates), err)
		}
		if n, maxV := migrationRows(t, s); n != len(migrations) || maxV != len(migrations) {
			t.Errorf("schema_migrations has %d rows up to %d, want %d", n, maxV, len(migrations))
		}
		s.Close()
	}
}

func TestSchemaNewerThanBinary(t *testing.T) {
	url := testURL(t)
	schema := freshSchema(t, url)
	openTest(t, url, schema).Close()
	adminExec(t, url, fmt.Sprintf(`INSERT INTO %s.schema_migrations (version) VALUES (%d)`,
		pgx.Identifier{schema}.Sanitize(), len(migrations)+1))
	_, err := Open(t.Context(), url, testOptions(schema))
	if !errors.Is(err, store.ErrSchemaTooNew) {
		t.Fatalf("Open(newer schema) = %v, want ErrSchemaTooNew", err)
	}
	t.Logf("error: %v", err)
}

// TestConcurrentMigration opens one fresh schema from several "nodes" at
// once: the advisory lock makes one migrate and the others find it done.
func TestConcurrentMigration(t *testing.T) {
	url := testURL(t)
	schema := freshSchema(t, url)
	const nodes = 6
	var (
		wg     sync.WaitGroup
		stores = make([]*Store, nodes)
	)
	for i := range nodes {
		wg.Go(func() {
			s, err := Open(t.Context(), url, testOptions(schema))
			if err != nil {
				t.Errorf("node %d: Open: %v", i, err)
				return
			}
			stores[i] = s
		})
	}
	wg.Wait()
	for _, s := range stores {
		if s != nil {
			defer s.Close()
		}
	}
	if t.Failed() {
		return
	}
	if n, maxV := migrationRows(t, stores[0]); n != len(migrations) || maxV != len(migrations) {
		t.Errorf("schema_migrations has %d rows up to %d, want %d", n, maxV, len(migrations))
	}
}

func TestBrokenConnectionsAndClose(t *testing.T) {
	url := testURL(t)
	schema := freshSchema(t, url)
	opts := testOptions(schema)
	opts.MaxConns = 2
	s, err := Open(t.Context(), url, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := t.Context()

	// A query cancelled mid-way breaks its connection; the pool drops it
	// and the store keeps working.
	short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	err = s.withConn(short, func(c *pgx.Conn) error {
		_, err := c.Exec(short, "SELECT pg_sleep(30)")
		return err
	})
	if err == nil {
		t.Fatal("pg_sleep(30) with a 100ms deadline succeeded")
	}
	for i := range 4 { // more than MaxConns: no connection leaked
		if err := s.Ping(ctx); err != nil {
			t.Fatalf("Ping %d after a cancelled query: %v", i, err)
		}
	}
	// After Close, calls fail instead of hanging.
	s.Close()
	done := make(chan error, 1)
	go func() { done <- s.Ping(ctx) }()
	select {
	case err := <-done:
		if err == nil {
			t.Error("Ping after Close succeeded")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Ping after Close hangs")
	}
}

func TestCommitterIntegration(t *testing.T) {
	url := testURL(t)
	s := openTest(t, url, freshSchema(t, url))
	c := store.NewCommitter(s, store.CommitterOptions{MaxBatch: 64})
	const rooms, perRoom = 8, 100
	var wg sync.WaitGroup
	errs := make(chan error, rooms*perRoom)
	wg.Add(rooms * perRoom)
	for v := int64(1); v <= perRoom; v++ {
		for r := range rooms {
			c.Submit(store.DocUpdate{RoomID: fmt.Sprint("room-", r), Version: v, ClientID: "c", Ops: json.RawMessage(`[]`)}, func(err error) {
				if err != nil {
					errs <- err
				}
				wg.Done()
			})
		}
	}
	wg.Wait()
	c.Close()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	for r := range rooms {
		doc, err := s.LoadDocument(t.Context(), fmt.Sprint("room-", r))
		if err != nil {
			t.Fatal(err)
		}
		if len(doc.Updates) != perRoom || doc.Updates[perRoom-1].Version != perRoom {
			t.Errorf("room-%d has %d updates", r, len(doc.Updates))
		}
	}
	t.Logf("stats: %+v", c.Stats())
}

func BenchmarkPostgresAppendSingle(b *testing.B) {
	url := testURL(b)
	storetest.BenchAppendSingle(b, openTest(b, url, freshSchema(b, url)))
}

func BenchmarkPostgresAppendBatch(b *testing.B) {
	url := testURL(b)
	for _, size := range []int{100, 1000} {
		b.Run(fmt.Sprintf("size=%d", size), func(b *testing.B) {
			storetest.BenchAppendBatch(b, openTest(b, url, freshSchema(b, url)), size)
		})
	}
}

func BenchmarkPostgresCommitterParallel(b *testing.B) {
	url := testURL(b)
	for _, rooms := range []int{1, 100} {
		b.Run(fmt.Sprintf("rooms=%d", rooms), func(b *testing.B) {
			storetest.BenchCommitterParallel(b, openTest(b, url, freshSchema(b, url)), rooms, 64)
		})
	}
}

// rawConn is a connection of its own to the test schema, for holding locks
// the way another node's transaction would.
func rawConn(t *testing.T, url, schema string) *pgx.Conn {
	t.Helper()
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		t.Fatal(err)
	}
	cfg.RuntimeParams["search_path"] = schema
	c, err := pgx.ConnectConfig(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(context.Background()) })
	return c
}

// blocked runs f on a goroutine and checks it is still running after a
// while; the returned channel yields f's result.
func blocked(t *testing.T, what string, f func() error) <-chan error {
	t.Helper()
	ch := make(chan error, 1)
	go func() { ch <- f() }()
	select {
	case err := <-ch:
		t.Fatalf("%s returned (%v) while the other transaction held the room", what, err)
	case <-time.After(300 * time.Millisecond):
	}
	return ch
}

func result(t *testing.T, ch <-chan error) error {
	t.Helper()
	select {
	case err := <-ch:
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("still blocked after the other transaction ended")
		return nil
	}
}

// A Fence waits for an owner's append in flight (here: the statements
// AppendUpdates runs, in a transaction another connection holds open), so
// the new owner's load right after Fence sees the append.
func TestFenceWaitsForAppendInFlight(t *testing.T) {
	url := testURL(t)
	schema := freshSchema(t, url)
	s := openTest(t, url, schema)
	ctx := t.Context()
	if err := s.AppendUpdates(ctx, []store.DocUpdate{{RoomID: "r", Version: 1, ClientID: "c", Ops: json.RawMessage(`[]`), Epoch: 1}}); err != nil {
		t.Fatal(err)
	}
	old := rawConn(t, url, schema)
	tx, err := old.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(context.Background())
	if tag, err := tx.Exec(ctx, sqlRaiseEpochs, []string{"r"}, []int64{1}, []int64{1}); err != nil || tag.RowsAffected() != 1 {
		t.Fatalf("raise: %v, %v", tag, err)
	}
	if tag, err := tx.Exec(ctx, sqlInsertUpdatesEpochs, []string{"r"}, []int64{2}, []string{"c"}, []string{"[]"}, []string{}); err != nil || tag.RowsAffected() != 1 {
		t.Fatalf("insert: %v, %v", tag, err)
	}
	fence := blocked(t, "Fence", func() error { return s.Fence(ctx, "r", 2) })
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := result(t, fence); err != nil {
		t.Fatalf("Fence: %v", err)
	}
	doc, err := s.LoadDocument(ctx, "r")
	if err != nil || len(doc.Updates) != 2 {
		t.Fatalf("loaded after Fence: %d updates, %v; want the old owner's 2", len(doc.Updates), err)
	}
	err = s.AppendUpdates(ctx, []store.DocUpdate{{RoomID: "r", Version: 3, ClientID: "c", Ops: json.RawMessage(`[]`), Epoch: 1}})
	if !errors.Is(err, store.ErrFenced) {
		t.Errorf("old owner's append after Fence: %v, want ErrFenced", err)
	}
}

// An append waits for a Fence in flight, then is refused by it; also on a
// room's first Fence (the row is being inserted).
func TestAppendWaitsForFenceInFlight(t *testing.T) {
	url := testURL(t)
	schema := freshSchema(t, url)
	s := openTest(t, url, schema)
	ctx := t.Context()
	if err := s.AppendUpdates(ctx, []store.DocUpdate{{RoomID: "r", Version: 1, ClientID: "c", Ops: json.RawMessage(`[]`), Epoch: 1}}); err != nil {
		t.Fatal(err)
	}
	for _, room := range []string{"r", "first"} {
		t.Run(room, func(t *testing.T) {
			other := rawConn(t, url, schema)
			tx, err := other.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer tx.Rollback(context.Background())
			if tag, err := tx.Exec(ctx, sqlFence, room, int64(3)); err != nil || tag.RowsAffected() != 1 {
				t.Fatalf("fence: %v, %v", tag, err)
			}
			appended := blocked(t, "AppendUpdates", func() error {
				return s.AppendUpdates(ctx, []store.DocUpdate{
					{RoomID: "free", Version: 1, ClientID: "c", Ops: json.RawMessage(`[]`), Epoch: 1},
					{RoomID: room, Version: 2, ClientID: "c", Ops: json.RawMessage(`[]`), Epoch: 1},
				})
			})
			if err := tx.Commit(ctx); err != nil {
				t.Fatal(err)
			}
			if err := result(t, appended); !errors.Is(err, store.ErrFenced) {
				t.Fatalf("AppendUpdates: %v, want ErrFenced", err)
			}
			if us, _, err := s.UpdatesSince(ctx, "free", 0); err != nil || len(us) != 0 {
				t.Errorf("room free: %d updates (%v); the fenced call must write none", len(us), err)
			}
		})
	}
}

// Single-node writes (epoch 0) store no epoch row; the first epoch does.
func TestEpochZeroStoresNothing(t *testing.T) {
	url := testURL(t)
	s := openTest(t, url, freshSchema(t, url))
	ctx := t.Context()
	rows := func() (n int) {
		t.Helper()
		if err := s.withConn(ctx, func(c *pgx.Conn) error {
			return c.QueryRow(ctx, `SELECT count(*) FROM room_epochs`).Scan(&n)
		}); err != nil {
			t.Fatal(err)
		}
		return n
	}
	for v := int64(1); v <= 3; v++ {
		if err := s.AppendUpdates(ctx, []store.DocUpdate{{RoomID: "a", Version: v, ClientID: "c", Ops: json.RawMessage(`[]`)},
			{RoomID: "b", Version: v, ClientID: "c", Ops: json.RawMessage(`[]`)}}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Fence(ctx, "a", 0); err != nil {
		t.Fatal(err)
	}
	if n := rows(); n != 0 {
		t.Errorf("room_epochs has %d rows after epoch-0 writes, want 0", n)
	}
	if err := s.AppendUpdates(ctx, []store.DocUpdate{{RoomID: "a", Version: 4, ClientID: "c", Ops: json.RawMessage(`[]`), Epoch: 2}}); err != nil {
		t.Fatal(err)
	}
	if n := rows(); n != 1 {
		t.Errorf("room_epochs has %d rows, want 1", n)
	}
}

// A database at schema version 2 (before epochs) is migrated to the
// current version with its data kept, and fencing works on it.
func TestMigrateFromVersion2(t *testing.T) {
	url := testURL(t)
	schema := freshSchema(t, url)
	ctx := t.Context()
	all := migrations
	migrations = all[:2]
	s, err := Open(ctx, url, testOptions(schema))
	migrations = all
	if err != nil {
		t.Fatal(err)
	}
	err = s.withConn(ctx, func(c *pgx.Conn) error {
		_, err := c.Exec(ctx, `INSERT INTO doc_updates (room_id, version, client_id, ops) VALUES ('r', 1, 'c', '[]')`)
		return err
	})
	s.Close()
	if err != nil {
		t.Fatal(err)
	}

	s = openTest(t, url, schema)
	if n, maxV := migrationRows(t, s); n != 3 || maxV != 3 || len(migrations) != 3 {
		t.Errorf("schema_migrations has %d rows up to %d (binary knows %d), want 3", n, maxV, len(migrations))
	}
	if doc, err := s.LoadDocument(ctx, "r"); err != nil || len(doc.Updates) != 1 {
		t.Fatalf("after migration: %d updates, %v", len(doc.Updates), err)
	}
	if err := s.Fence(ctx, "r", 2); err != nil {
		t.Fatal(err)
	}
	err = s.AppendUpdates(ctx, []store.DocUpdate{{RoomID: "r", Version: 2, ClientID: "c", Ops: json.RawMessage(`[]`), Epoch: 1}})
	if !errors.Is(err, store.ErrFenced) {
		t.Errorf("append below the fence: %v, want ErrFenced", err)
	}
}
