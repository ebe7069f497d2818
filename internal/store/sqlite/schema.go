package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"time"

	"github.com/parleyhq/parley/internal/store"
)

// migration is one schema step. Step i (from 0) brings the schema to
// version i+1. Steps are append-only: never edit one that has shipped.
type migration struct {
	name  string
	stmts []string
}

// migrations must stay in step with the PostgreSQL ones (same versions,
// same meaning).
var migrations = []migration{
	{name: "initial schema", stmts: []string{
		// Room storage documents: the latest snapshot per room and the
		// updates kept for catch-up.
		`CREATE TABLE doc_snapshots (
			room_id TEXT NOT NULL PRIMARY KEY,
			version INTEGER NOT NULL,
			data    TEXT NOT NULL
		)`,
		`CREATE TABLE doc_updates (
			room_id   TEXT NOT NULL,
			version   INTEGER NOT NULL,
			client_id TEXT NOT NULL,
			ops       TEXT NOT NULL,
			PRIMARY KEY (room_id, version)
		)`,

		`CREATE TABLE users (
			id             TEXT NOT NULL PRIMARY KEY,
			username       TEXT NOT NULL,
			username_lower TEXT NOT NULL UNIQUE,
			display_name   TEXT NOT NULL,
			password_hash  TEXT NOT NULL,
			created_at     TEXT NOT NULL
		)`,
		`CREATE TABLE refresh_tokens (
			hash       TEXT NOT NULL PRIMARY KEY,
			user_id    TEXT NOT NULL,
			expires_at TEXT NOT NULL,
			created_at TEXT NOT NULL
		)`,
		`CREATE INDEX refresh_tokens_user_id ON refresh_tokens (user_id)`,
		// Users known only from backend-minted tokens have a status but no
		// users row: no foreign key.
		`CREATE TABLE user_status (
			user_id    TEXT NOT NULL PRIMARY KEY,
			status     TEXT NOT NULL,
			updated_at TEXT NOT NULL
		)`,

		`CREATE TABLE rooms (
			id         TEXT NOT NULL PRIMARY KEY,
			name       TEXT NOT NULL,
			open       INTEGER NOT NULL,
			owner_id   TEXT NOT NULL,
			created_at TEXT NOT NULL
		)`,
		`CREATE TABLE room_members (
			room_id   TEXT NOT NULL,
			user_id   TEXT NOT NULL,
			joined_at TEXT NOT NULL,
			PRIMARY KEY (room_id, user_id)
		) WITHOUT ROWID`,
		`CREATE INDEX room_members_user_id ON room_members (user_id, room_id)`,

		`CREATE TABLE messages (
			id         TEXT NOT NULL PRIMARY KEY,
			room_id    TEXT NOT NULL,
			author_id  TEXT NOT NULL,
			content    TEXT NOT NULL,
			nonce      TEXT NOT NULL DEFAULT '',
			created_at TEXT NOT NULL,
			updated_at TEXT,
			deleted_at TEXT
		)`,
		`CREATE INDEX messages_room_id_id ON messages (room_id, id)`,
	}},
	{name: "refresh token reuse detection", stmts: []string{
		`ALTER TABLE refresh_tokens ADD COLUMN used_at TEXT`,
	}},
	// The highest owner epoch seen per room (fencing, store.Documents.Fence).
	// Rooms only ever written with epoch 0 (a single node) have no row.
	{name: "room owner epochs", stmts: []string{
		`CREATE TABLE room_epochs (
			room_id TEXT NOT NULL PRIMARY KEY,
			epoch   INTEGER NOT NULL CHECK (epoch >= 0)
		) WITHOUT ROWID`,
	}},
}

// migrate brings the schema up to date in one transaction. BEGIN IMMEDIATE
// (the writer's transaction mode) takes the database's write lock first, so
// two processes opening the same file at once migrate one after the other.
func migrate(ctx context.Context, db *sql.DB, path string, log *slog.Logger) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("sqlite: migrate %s: %w", path, err)
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version    INTEGER NOT NULL PRIMARY KEY,
		applied_at TEXT NOT NULL
	)`); err != nil {
		return fmt.Errorf("sqlite: migrate %s: %w", path, err)
	}
	var current int
	if err := tx.QueryRowContext(ctx, `SELECT coalesce(max(version), 0) FROM schema_migrations`).Scan(&current); err != nil {
		return fmt.Errorf("sqlite: migrate %s: %w", path, err)
	}
	if current > len(migrations) {
		return fmt.Errorf("sqlite: %s has schema version %d, this binary knows versions up to %d: %w",
			path, current, len(migrations), store.ErrSchemaTooNew)
	}
	if current == len(migrations) {
		return nil // up to date: nothing written
	}
	now := fmtTime(time.Now())
	for v := current + 1; v <= len(migrations); v++ {
		m := migrations[v-1]
		for _, stmt := range m.stmts {
			if _, err := tx.ExecContext(ctx, stmt); err != nil {
				return fmt.Errorf("sqlite: migrate %s to version %d (%s): %w", path, v, m.name, err)
			}
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)`, v, now); err != nil {
			return fmt.Errorf("sqlite: migrate %s to version %d: %w", path, v, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("sqlite: migrate %s: %w", path, err)
	}
	log.Info("store: sqlite schema migrated", "path", path, "from", current, "to", len(migrations))
	return nil
}
