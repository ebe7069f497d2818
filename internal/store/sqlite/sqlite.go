// Package sqlite is Parley's embedded store: one SQLite database file in WAL
// mode, through modernc.org/sqlite (pure Go, no cgo).
//
// Every write goes through one connection (a *sql.DB limited to one open
// connection, transactions BEGIN IMMEDIATE) with synchronous=FULL, so a write
// that returned is on disk and survives kill -9 and power loss. Reads use a
// separate pool of query-only connections; WAL lets them run next to the
// writer instead of queueing behind it. The schema is migrated at Open (see
// schema.go).
//
// Times are stored as fixed-width UTC text with microsecond precision
// ("2006-01-02T15:04:05.000000Z"), which sorts in time order, and returned as
// UTC time.Time.
package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"time"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/parleyhq/parley/internal/store"
)

// Options tunes Open. The zero value is ready to use.
type Options struct {
	// BusyTimeout is how long a statement waits for a lock held by another
	// connection or process before failing (default 5s).
	BusyTimeout time.Duration
	// MaxReadConns is the size of the read pool (default max(4, GOMAXPROCS)).
	MaxReadConns int
	// Logger receives migration notices (default slog.Default()).
	Logger *slog.Logger
}

// Store is the SQLite implementation of store.Store.
type Store struct {
	path string
	w    *sql.DB // exactly one connection: all writes
	r    *sql.DB // read pool, query_only connections
	log  *slog.Logger

	// Prepared on w (its only connection) for AppendUpdates, the hot path.
	insUpdate   *sql.Stmt
	insUnfenced *sql.Stmt
	upsertSnap  *sql.Stmt
	trim        *sql.Stmt
	roomEpoch   *sql.Stmt // and Fence
	raiseEpoch  *sql.Stmt

	// Read statements prepared once (database/sql prepares each on every
	// pool connection the first time it runs there): parsing the SQL was a
	// quarter of the CPU of a connect before.
	readStmts sync.Map // query string → *sql.Stmt

	closeOnce sync.Once
	closeErr  error
}

// readStmt returns the prepared read statement for query.
func (s *Store) readStmt(ctx context.Context, query string) (*sql.Stmt, error) {
	if st, ok := s.readStmts.Load(query); ok {
		return st.(*sql.Stmt), nil
	}
	st, err := s.r.PrepareContext(ctx, query)
	if err != nil {
		return nil, err
	}
	if prev, loaded := s.readStmts.LoadOrStore(query, st); loaded {
		_ = st.Close()
		return prev.(*sql.Stmt), nil
	}
	return st, nil
}

// queryRow runs a one-row read through a prepared statement.
func (s *Store) queryRow(ctx context.Context, query string, args ...any) *sql.Row {
	st, err := s.readStmt(ctx, query)
	if err != nil {
		return s.r.QueryRowContext(ctx, query, args...) // reports the same error
	}
	return st.QueryRowContext(ctx, args...)
}

// query runs a read through a prepared statement.
func (s *Store) query(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	st, err := s.readStmt(ctx, query)
	if err != nil {
		return nil, err
	}
	return st.QueryContext(ctx, args...)
}

var _ store.Store = (*Store)(nil)

// Open opens (creating it and its parent directory when missing) the
// database file at path and migrates its schema. It fails with
// store.ErrSchemaTooNew when the file was migrated by a newer binary.
func Open(ctx context.Context, path string, opts Options) (*Store, error) {
	if path == "" {
		return nil, errors.New("sqlite: empty database path")
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("sqlite: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(abs), 0o750); err != nil {
		return nil, fmt.Errorf("sqlite: create data directory: %w", err)
	}
	if opts.BusyTimeout <= 0 {
		opts.BusyTimeout = 5 * time.Second
	}
	if opts.MaxReadConns <= 0 {
		opts.MaxReadConns = max(4, runtime.GOMAXPROCS(0))
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	s := &Store{path: abs, log: opts.Logger}
	busy := fmt.Sprintf("busy_timeout(%d)", opts.BusyTimeout.Milliseconds())

	// Pragmas go in the DSN so that a connection database/sql reopens
	// (after a bad connection) is configured the same way.
	wq := url.Values{}
	wq.Add("_pragma", busy)
	wq.Add("_pragma", "journal_mode(WAL)")
	wq.Add("_pragma", "synchronous(FULL)")
	wq.Add("_pragma", "foreign_keys(1)")
	wq.Add("_pragma", "journal_size_limit(67108864)") // WAL left at most 64 MiB after a checkpoint
	wq.Set("_txlock", "immediate")
	if s.w, err = sql.Open("sqlite", fileURI(abs)+"?"+wq.Encode()); err != nil {
		return nil, fmt.Errorf("sqlite: open %s: %w", abs, err)
	}
	s.w.SetMaxOpenConns(1)
	s.w.SetMaxIdleConns(1)
	s.w.SetConnMaxLifetime(0)
	s.w.SetConnMaxIdleTime(0)

	fail := func(err error) (*Store, error) {
		if s.r != nil {
			s.r.Close()
		}
		s.w.Close()
		return nil, err
	}
	if err := s.checkPragmas(ctx); err != nil {
		return fail(err)
	}
	if err := migrate(ctx, s.w, abs, s.log); err != nil {
		return fail(err)
	}

	rq := url.Values{}
	rq.Add("_pragma", busy)
	rq.Add("_pragma", "foreign_keys(1)")
	rq.Add("_pragma", "query_only(1)")
	if s.r, err = sql.Open("sqlite", fileURI(abs)+"?"+rq.Encode()); err != nil {
		return fail(fmt.Errorf("sqlite: open %s: %w", abs, err))
	}
	s.r.SetMaxOpenConns(opts.MaxReadConns)
	s.r.SetMaxIdleConns(opts.MaxReadConns)
	if err := s.r.PingContext(ctx); err != nil {
		return fail(fmt.Errorf("sqlite: open read pool: %w", err))
	}

	for _, p := range []struct {
		st  **sql.Stmt
		sql string
	}{
		{&s.insUpdate, sqlInsertUpdate},
		{&s.insUnfenced, sqlInsertUpdateUnfenced},
		{&s.upsertSnap, sqlUpsertSnapshot},
		{&s.trim, sqlTrimUpdates},
		{&s.roomEpoch, sqlRoomEpoch},
		{&s.raiseEpoch, sqlRaiseEpoch},
	} {
		if *p.st, err = s.w.PrepareContext(ctx, p.sql); err != nil {
			return fail(fmt.Errorf("sqlite: prepare: %w", err))
		}
	}
	return s, nil
}

// checkPragmas makes sure the settings durability depends on took effect
// (journal_mode silently stays as it is where WAL is unsupported).
func (s *Store) checkPragmas(ctx context.Context) error {
	var mode string
	if err := s.w.QueryRowContext(ctx, "PRAGMA journal_mode").Scan(&mode); err != nil {
		return fmt.Errorf("sqlite: open %s: %w", s.path, err)
	}
	if !strings.EqualFold(mode, "wal") {
		return fmt.Errorf("sqlite: open %s: journal_mode is %q, want wal", s.path, mode)
	}
	var sync int
	if err := s.w.QueryRowContext(ctx, "PRAGMA synchronous").Scan(&sync); err != nil {
		return fmt.Errorf("sqlite: open %s: %w", s.path, err)
	}
	if sync != 2 {
		return fmt.Errorf("sqlite: open %s: synchronous is %d, want 2 (FULL)", s.path, sync)
	}
	return nil
}

// Path is the absolute path of the database file.
func (s *Store) Path() string { return s.path }

// Ping checks that the database answers a query.
func (s *Store) Ping(ctx context.Context) error {
	var n int
	if err := s.r.QueryRowContext(ctx, "SELECT count(*) FROM schema_migrations").Scan(&n); err != nil {
		return fmt.Errorf("sqlite: ping: %w", err)
	}
	return nil
}

// Close closes the read pool, checkpoints the WAL into the database file
// (truncating it) and closes the writer. Calls after the first return the
// first one's result.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		var errs []error
		s.readStmts.Range(func(_, st any) bool {
			errs = append(errs, st.(*sql.Stmt).Close())
			return true
		})
		errs = append(errs, s.r.Close())
		for _, st := range []*sql.Stmt{s.insUpdate, s.insUnfenced, s.upsertSnap, s.trim, s.roomEpoch, s.raiseEpoch} {
			errs = append(errs, st.Close())
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := s.w.ExecContext(ctx, "PRAGMA wal_checkpoint(TRUNCATE)"); err != nil {
			errs = append(errs, fmt.Errorf("sqlite: checkpoint: %w", err))
		}
		errs = append(errs, s.w.Close())
		s.closeErr = errors.Join(errs...)
	})
	return s.closeErr
}

// fileURI makes an SQLite URI of an absolute path.
func fileURI(path string) string {
	return "file:" + strings.NewReplacer("%", "%25", "?", "%3f", "#", "%23").Replace(filepath.ToSlash(path))
}

// mapErr turns unique and primary key violations into store.ErrConflict.
func mapErr(err error) error {
	var se *sqlite.Error
	if errors.As(err, &se) {
		switch se.Code() {
		case sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY, sqlite3.SQLITE_CONSTRAINT_UNIQUE:
			return fmt.Errorf("%w: %w", store.ErrConflict, err)
		}
	}
	return err
}

const timeLayout = "2006-01-02T15:04:05.000000Z"

func fmtTime(t time.Time) string { return t.UTC().Format(timeLayout) }

func parseTime(s string) (time.Time, error) {
	t, err := time.Parse(timeLayout, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("sqlite: bad stored time %q: %w", s, err)
	}
	return t, nil
}

func fmtNullTime(t *time.Time) any {
	if t == nil {
		return nil
	}
	return fmtTime(*t)
}

func parseNullTime(s sql.NullString) (*time.Time, error) {
	if !s.Valid {
		return nil, nil
	}
	t, err := parseTime(s.String)
	if err != nil {
		return nil, err
	}
	return &t, nil
}

// withTx runs f in a write transaction and commits it.
func (s *Store) withTx(ctx context.Context, f func(tx *sql.Tx) error) error {
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	if err := f(tx); err != nil {
		tx.Rollback()
		return err
	}
	return tx.Commit()
}

// withReadTx runs f in a read transaction: its queries see one snapshot.
func (s *Store) withReadTx(ctx context.Context, f func(tx *sql.Tx) error) error {
	tx, err := s.r.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	return f(tx)
}
