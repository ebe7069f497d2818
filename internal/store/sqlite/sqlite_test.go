package sqlite

import (
	"bufio"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/parleyhq/parley/internal/store"
	"github.com/parleyhq/parley/internal/store/storetest"
)

var testOptions = Options{Logger: slog.New(slog.DiscardHandler)}

func openTest(tb testing.TB, path string) *Store {
	tb.Helper()
	s, err := Open(context.Background(), path, testOptions)
	if err != nil {
		tb.Fatalf("Open(%s): %v", path, err)
	}
	tb.Cleanup(func() {
		if err := s.Close(); err != nil {
			tb.Errorf("Close: %v", err)
		}
	})
	return s
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		return openTest(t, filepath.Join(t.TempDir(), "parley.db"))
	})
}

func TestReopenKeepsData(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "not", "yet", "there", "parley.db") // Open creates the directories
	s, err := Open(ctx, path, testOptions)
	if err != nil {
		t.Fatal(err)
	}
	snap := store.DocUpdate{RoomID: "r", Version: 2, ClientID: "c", Ops: json.RawMessage(`[]`), Snapshot: json.RawMessage(`{"a":1}`), KeepUpdates: 10}
	if err := s.AppendUpdates(ctx, []store.DocUpdate{{RoomID: "r", Version: 1, ClientID: "c", Ops: json.RawMessage(`[1]`)}, snap}); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateUser(ctx, store.User{ID: "u1", Username: "Ann", CreatedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	// Close checkpointed and truncated the WAL.
	if fi, err := os.Stat(path + "-wal"); err == nil && fi.Size() != 0 {
		t.Errorf("WAL is %d bytes after Close, want 0", fi.Size())
	}

	for range 2 { // the second reopen finds an up-to-date schema: a no-op
		s = openTest(t, path)
		doc, err := s.LoadDocument(ctx, "r")
		if err != nil {
			t.Fatal(err)
		}
		if doc.Version != 2 || string(doc.Data) != `{"a":1}` || len(doc.Updates) != 0 {
			t.Errorf("after reopen: document = {%d %s %d updates}, want {2 {\"a\":1} 0}", doc.Version, doc.Data, len(doc.Updates))
		}
		if us, ok, err := s.UpdatesSince(ctx, "r", 0); err != nil || !ok || len(us) != 2 {
			t.Errorf("after reopen: UpdatesSince(0) = %d updates, %v, %v; want 2 kept", len(us), ok, err)
		}
		if _, err := s.UserByUsername(ctx, "ann"); err != nil {
			t.Errorf("after reopen: UserByUsername: %v", err)
		}
		var n, maxV int
		if err := s.r.QueryRowContext(ctx, `SELECT count(*), max(version) FROM schema_migrations`).Scan(&n, &maxV); err != nil {
			t.Fatal(err)
		}
		if n != len(migrations) || maxV != len(migrations) {
			t.Errorf("schema_migrations has %d rows up to %d, want %d", n, maxV, len(migrations))
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

func TestSchemaNewerThanBinary(t *testing.T) {
	path := filepath.Join(t.TempDir(), "parley.db")
	s := openTest(t, path)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// A newer binary migrated the file further.
	raw, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	newer := len(migrations) + 1
	if _, err := raw.Exec(`INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)`, newer, fmtTime(time.Now())); err != nil {
		t.Fatal(err)
	}
	raw.Close()

	_, err = Open(t.Context(), path, testOptions)
	if !errors.Is(err, store.ErrSchemaTooNew) {
		t.Fatalf("Open(newer schema) = %v, want ErrSchemaTooNew", err)
	}
	t.Logf("error: %v", err)
}

func TestPragmas(t *testing.T) {
	s := openTest(t, filepath.Join(t.TempDir(), "parley.db"))
	ctx := t.Context()
	for _, tc := range []struct {
		db    *sql.DB
		name  string
		pragm string
		want  string
	}{
		{s.w, "writer", "journal_mode", "wal"},
		{s.w, "writer", "synchronous", "2"},
		{s.w, "writer", "foreign_keys", "1"},
		{s.w, "writer", "busy_timeout", "5000"},
		{s.w, "writer", "journal_size_limit", "67108864"},
		{s.r, "reader", "journal_mode", "wal"},
		{s.r, "reader", "foreign_keys", "1"},
		{s.r, "reader", "query_only", "1"},
		{s.r, "reader", "busy_timeout", "5000"},
	} {
		var got string
		if err := tc.db.QueryRowContext(ctx, "PRAGMA "+tc.pragm).Scan(&got); err != nil {
			t.Fatalf("%s PRAGMA %s: %v", tc.name, tc.pragm, err)
		}
		if got != tc.want {
			t.Errorf("%s PRAGMA %s = %s, want %s", tc.name, tc.pragm, got, tc.want)
		}
	}
	if _, err := s.r.ExecContext(ctx, `INSERT INTO user_status (user_id, status, updated_at) VALUES ('u', 'x', 'y')`); err == nil {
		t.Errorf("a write through the read pool succeeded")
	}
}

// TestReadsDoNotWaitForWriter holds the writer's transaction open and reads
// through the read pool meanwhile.
func TestReadsDoNotWaitForWriter(t *testing.T) {
	s := openTest(t, filepath.Join(t.TempDir(), "parley.db"))
	ctx := t.Context()
	if err := s.AppendUpdates(ctx, []store.DocUpdate{{RoomID: "r", Version: 1, ClientID: "c", Ops: json.RawMessage(`[]`)}}); err != nil {
		t.Fatal(err)
	}
	tx, err := s.w.BeginTx(ctx, nil) // BEGIN IMMEDIATE: holds the write lock
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `INSERT INTO doc_updates (room_id, version, client_id, ops) VALUES ('r', 2, 'c', '[]')`); err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	doc, err := s.LoadDocument(rctx, "r")
	if err != nil {
		t.Fatalf("LoadDocument while a write transaction is open: %v", err)
	}
	if len(doc.Updates) != 1 {
		t.Errorf("read saw %d updates, want 1 (the open transaction's is not committed)", len(doc.Updates))
	}
	if _, err := s.GetRoom(rctx, "nope"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetRoom while a write transaction is open: %v", err)
	}
}

func TestCommitterIntegration(t *testing.T) {
	s := openTest(t, filepath.Join(t.TempDir(), "parley.db"))
	c := store.NewCommitter(s, store.CommitterOptions{MaxBatch: 64})
	const rooms, perRoom = 8, 200
	var wg sync.WaitGroup
	errs := make(chan error, rooms*perRoom)
	for r := range rooms {
		wg.Go(func() {
			room := fmt.Sprint("room-", r)
			var mine sync.WaitGroup
			for v := int64(1); v <= perRoom; v++ {
				mine.Add(1)
				c.Submit(store.DocUpdate{RoomID: room, Version: v, ClientID: "c", Ops: json.RawMessage(`[]`)}, func(err error) {
					if err != nil {
						errs <- err
					}
					mine.Done()
				})
			}
			mine.Wait()
		})
	}
	wg.Wait()
	c.Close()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	st := c.Stats()
	if st.Updates != rooms*perRoom || st.Pending != 0 || st.Failed != 0 {
		t.Errorf("stats = %+v", st)
	}
	t.Logf("%d updates in %d transactions", st.Updates, st.Batches)
	for r := range rooms {
		doc, err := s.LoadDocument(t.Context(), fmt.Sprint("room-", r))
		if err != nil {
			t.Fatal(err)
		}
		if len(doc.Updates) != perRoom || doc.Updates[perRoom-1].Version != perRoom {
			t.Errorf("room-%d has %d updates", r, len(doc.Updates))
		}
	}
}

// TestAcknowledgedSurviveKill runs a child process that appends updates
// through a Committer and prints each acknowledged version, kills it with
// SIGKILL mid-stream, and checks every acknowledged update is in the file.
func TestAcknowledgedSurviveKill(t *testing.T) {
	if path := os.Getenv("PARLEY_SQLITE_KILL_CHILD"); path != "" {
		killChild(path)
		return
	}
	if testing.Short() {
		t.Skip("short")
	}
	path := filepath.Join(t.TempDir(), "parley.db")
	cmd := exec.Command(os.Args[0], "-test.run=^TestAcknowledgedSurviveKill$")
	cmd.Env = append(os.Environ(), "PARLEY_SQLITE_KILL_CHILD="+path)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var acked int64
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		v, err := strconv.ParseInt(sc.Text(), 10, 64)
		if err != nil {
			continue // test framework output
		}
		acked = max(acked, v)
		if acked >= 500 {
			break
		}
	}
	cmd.Process.Kill() // SIGKILL
	cmd.Wait()
	if acked < 500 {
		t.Fatalf("child acknowledged only %d updates", acked)
	}

	s := openTest(t, path)
	doc, err := s.LoadDocument(t.Context(), "k")
	if err != nil {
		t.Fatal(err)
	}
	n := int64(len(doc.Updates))
	if n < acked {
		t.Fatalf("after kill -9: %d updates on disk, %d were acknowledged", n, acked)
	}
	if n == 0 || doc.Updates[0].Version != 1 || doc.Updates[n-1].Version != n {
		t.Errorf("versions have a gap: %d updates", n)
	}
	t.Logf("acknowledged %d, found %d after kill -9", acked, n)
}

func killChild(path string) {
	s, err := Open(context.Background(), path, testOptions)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	c := store.NewCommitter(s, store.CommitterOptions{MaxBatch: 16})
	// Keep up to 64 updates in flight until the parent kills us.
	acks := make(chan int64, 64)
	inflight := 0
	for v := int64(1); ; v++ {
		c.Submit(store.DocUpdate{RoomID: "k", Version: v, ClientID: "c", Ops: json.RawMessage(`[{"op":"add","path":"/x","value":1}]`)}, func(err error) {
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				os.Exit(1)
			}
			acks <- v
		})
		for inflight++; inflight >= 64; inflight-- {
			fmt.Println(<-acks)
		}
	}
}

func BenchmarkSQLiteAppendSingle(b *testing.B) {
	s := openTest(b, filepath.Join(b.TempDir(), "parley.db"))
	storetest.BenchAppendSingle(b, s)
}

func BenchmarkSQLiteAppendBatch(b *testing.B) {
	for _, size := range []int{100, 1000} {
		b.Run(fmt.Sprintf("size=%d", size), func(b *testing.B) {
			storetest.BenchAppendBatch(b, openTest(b, filepath.Join(b.TempDir(), "parley.db")), size)
		})
	}
}

func BenchmarkSQLiteCommitterParallel(b *testing.B) {
	for _, rooms := range []int{1, 100} {
		b.Run(fmt.Sprintf("rooms=%d", rooms), func(b *testing.B) {
			s := openTest(b, filepath.Join(b.TempDir(), "parley.db"))
			storetest.BenchCommitterParallel(b, s, rooms, 64)
		})
	}
}

// Single-node writes (epoch 0) store no epoch row; the first epoch does.
func TestEpochZeroStoresNothing(t *testing.T) {
	s := openTest(t, filepath.Join(t.TempDir(), "parley.db"))
	ctx := t.Context()
	rows := func() (n int) {
		t.Helper()
		if err := s.w.QueryRowContext(ctx, `SELECT count(*) FROM room_epochs`).Scan(&n); err != nil {
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

// A file at schema version 2 (before epochs) is migrated to the current
// version with its data kept, and fencing works on it.
func TestMigrateFromVersion2(t *testing.T) {
	path := filepath.Join(t.TempDir(), "parley.db")
	ctx := t.Context()
	raw, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	all := migrations
	migrations = all[:2]
	err = migrate(ctx, raw, path, testOptions.Logger)
	migrations = all
	if err != nil {
		t.Fatal(err)
	}
	_, err = raw.ExecContext(ctx, `INSERT INTO doc_updates (room_id, version, client_id, ops) VALUES ('r', 1, 'c', '[]')`)
	if cerr := raw.Close(); err != nil || cerr != nil {
		t.Fatal(err, cerr)
	}

	s := openTest(t, path)
	var n, maxV int
	if err := s.w.QueryRowContext(ctx, `SELECT count(*), max(version) FROM schema_migrations`).Scan(&n, &maxV); err != nil {
		t.Fatal(err)
	}
	if n != 3 || maxV != 3 || len(migrations) != 3 {
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
