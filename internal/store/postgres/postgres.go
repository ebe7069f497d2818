// Package postgres is Parley's shared store for cluster mode: PostgreSQL
// through pgx/v5, the same schema (in PostgreSQL types) and the same
// semantics as the embedded SQLite store.
//
// Several nodes may Open the same database at once: migrations run in one
// transaction under a transaction-scoped advisory lock. Text keys use
// COLLATE "C" so that ids (UUIDv7 message ids in particular) sort bytewise,
// as in SQLite. Documents are stored in json (not jsonb) columns, which keep
// the client's bytes as they were sent. A commit is durable when it returns
// as long as the server runs with synchronous_commit on (its default).
//
// Connections come from a small built-in pool (pool.go) rather than pgxpool,
// whose dependency (github.com/jackc/puddle/v2) the module does not carry.
package postgres

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/parleyhq/parley/internal/store"
)

// Options tunes Open. The zero value is ready to use.
type Options struct {
	// MaxConns is the most connections open at once (default
	// max(4, 2×GOMAXPROCS)).
	MaxConns int
	// SearchPath, when set, is sent as the search_path run-time parameter
	// of every connection: Parley's tables then live in (and are created
	// in) the first schema of that path, which must exist.
	SearchPath string
	// Logger receives migration notices (default slog.Default()).
	Logger *slog.Logger
}

// Store is the PostgreSQL implementation of store.Store.
type Store struct {
	pool *pgxpool.Pool
	log  *slog.Logger

	closeOnce sync.Once
}

var _ store.Store = (*Store)(nil)

// Open connects to the database at url (a libpq URL or key=value string)
// and migrates its schema. It fails with store.ErrSchemaTooNew when the
// database was migrated by a newer binary.
func Open(ctx context.Context, url string, opts Options) (*Store, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("postgres: %w", err)
	}
	if opts.SearchPath != "" {
		cfg.ConnConfig.RuntimeParams["search_path"] = opts.SearchPath
	}
	if opts.MaxConns <= 0 {
		opts.MaxConns = max(4, 2*runtime.GOMAXPROCS(0))
	}
	cfg.MaxConns = int32(opts.MaxConns)
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	p, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("postgres: %w", err)
	}
	s := &Store{pool: p, log: opts.Logger}
	if err := s.migrate(ctx); err != nil {
		p.Close()
		return nil, err
	}
	return s, nil
}

// Ping checks that the database answers.
func (s *Store) Ping(ctx context.Context) error {
	return s.withConn(ctx, func(c *pgx.Conn) error { return c.Ping(ctx) })
}

// Close closes the store's connections (each in-use one when it is
// released). Committed transactions are already durable.
func (s *Store) Close() error {
	s.closeOnce.Do(s.pool.Close)
	return nil
}

func (s *Store) withConn(ctx context.Context, f func(c *pgx.Conn) error) error {
	c, err := s.pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("postgres: %w", err)
	}
	defer c.Release()
	return f(c.Conn())
}

// withTx runs f in a transaction, committed when f returns nil.
func (s *Store) withTx(ctx context.Context, opts pgx.TxOptions, f func(tx pgx.Tx) error) error {
	return s.withConn(ctx, func(c *pgx.Conn) error {
		return pgx.BeginTxFunc(ctx, c, opts, f)
	})
}

var readTx = pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}

// mapErr turns unique violations (SQLSTATE 23505) into store.ErrConflict.
func mapErr(err error) error {
	var pe *pgconn.PgError
	if errors.As(err, &pe) && pe.Code == "23505" {
		return fmt.Errorf("%w: %w", store.ErrConflict, err)
	}
	return err
}

func utcPtr(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	u := t.UTC()
	return &u
}
