package postgres

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/parleyhq/parley/internal/store"
)

// migration is one schema step. Step i (from 0) brings the schema to
// version i+1. Steps are append-only: never edit one that has shipped.
type migration struct {
	name  string
	stmts []string
}

// migrations must stay in step with the SQLite ones (same versions, same
// meaning).
var migrations = []migration{
	{name: "initial schema", stmts: []string{
		`CREATE TABLE doc_snapshots (
			room_id text COLLATE "C" PRIMARY KEY,
			version bigint NOT NULL,
			data    json NOT NULL
		)`,
		`CREATE TABLE doc_updates (
			room_id   text COLLATE "C" NOT NULL,
			version   bigint NOT NULL,
			client_id text NOT NULL,
			ops       json NOT NULL,
			PRIMARY KEY (room_id, version)
		)`,

		`CREATE TABLE users (
			id             text COLLATE "C" PRIMARY KEY,
			username       text NOT NULL,
			username_lower text COLLATE "C" NOT NULL UNIQUE,
			display_name   text NOT NULL,
			password_hash  text NOT NULL,
			created_at     timestamptz NOT NULL
		)`,
		`CREATE TABLE refresh_tokens (
			hash       text COLLATE "C" PRIMARY KEY,
			user_id    text COLLATE "C" NOT NULL,
			expires_at timestamptz NOT NULL,
			created_at timestamptz NOT NULL
		)`,
		`CREATE INDEX refresh_tokens_user_id ON refresh_tokens (user_id)`,
		// Users known only from backend-minted tokens have a status but no
		// users row: no foreign key.
		`CREATE TABLE user_status (
			user_id    text COLLATE "C" PRIMARY KEY,
			status     text NOT NULL,
			updated_at timestamptz NOT NULL
		)`,

		`CREATE TABLE rooms (
			id         text COLLATE "C" PRIMARY KEY,
			name       text NOT NULL,
			open       boolean NOT NULL,
			owner_id   text COLLATE "C" NOT NULL,
			created_at timestamptz NOT NULL
		)`,
		`CREATE TABLE room_members (
			room_id   text COLLATE "C" NOT NULL,
			user_id   text COLLATE "C" NOT NULL,
			joined_at timestamptz NOT NULL,
			PRIMARY KEY (room_id, user_id)
		)`,
		`CREATE INDEX room_members_user_id ON room_members (user_id, room_id)`,

		`CREATE TABLE messages (
			id         text COLLATE "C" PRIMARY KEY,
			room_id    text COLLATE "C" NOT NULL,
			author_id  text COLLATE "C" NOT NULL,
			content    text NOT NULL,
			nonce      text NOT NULL DEFAULT '',
			created_at timestamptz NOT NULL,
			updated_at timestamptz,
			deleted_at timestamptz
		)`,
		`CREATE INDEX messages_room_id_id ON messages (room_id, id)`,
	}},
	{name: "refresh token reuse detection", stmts: []string{
		`ALTER TABLE refresh_tokens ADD COLUMN used_at timestamptz`,
	}},
	// The highest owner epoch seen per room (fencing, store.Documents.Fence).
	// Rooms only ever written with epoch 0 (a single node) have no row.
	{name: "room owner epochs", stmts: []string{
		`CREATE TABLE room_epochs (
			room_id text COLLATE "C" PRIMARY KEY,
			epoch   bigint NOT NULL CHECK (epoch >= 0)
		)`,
	}},
}

// migrateLockKey names the advisory lock that serializes migrations of
// nodes starting at once ("Parley" in ASCII).
const migrateLockKey int64 = 0x5061726c6579

// migrate brings the schema up to date in one transaction, holding the
// advisory lock until it commits: a second node starting at the same time
// waits, then finds the schema current.
func (s *Store) migrate(ctx context.Context) error {
	var from int
	err := s.withTx(ctx, pgx.TxOptions{}, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, migrateLockKey); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
			version    integer PRIMARY KEY,
			applied_at timestamptz NOT NULL DEFAULT now()
		)`); err != nil {
			return err
		}
		if err := tx.QueryRow(ctx, `SELECT coalesce(max(version), 0) FROM schema_migrations`).Scan(&from); err != nil {
			return err
		}
		if from > len(migrations) {
			return fmt.Errorf("database has schema version %d, this binary knows versions up to %d: %w",
				from, len(migrations), store.ErrSchemaTooNew)
		}
		for v := from + 1; v <= len(migrations); v++ {
			m := migrations[v-1]
			for _, stmt := range m.stmts {
				if _, err := tx.Exec(ctx, stmt); err != nil {
					return fmt.Errorf("to version %d (%s): %w", v, m.name, err)
				}
			}
			if _, err := tx.Exec(ctx, `INSERT INTO schema_migrations (version) VALUES ($1)`, v); err != nil {
				return fmt.Errorf("to version %d: %w", v, err)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("postgres: migrate: %w", err)
	}
	if from < len(migrations) {
		s.log.Info("store: postgres schema migrated", "from", from, "to", len(migrations))
	}
	return nil
}
