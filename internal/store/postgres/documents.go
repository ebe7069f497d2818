package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/parleyhq/parley/internal/store"
)

// All updates in one statement. An update is refused (ErrConflict: fewer
// rows than updates) when its version is at or below the room's snapshot:
// such a version was written once, even if trimmed since.
const sqlInsertUpdates = `INSERT INTO doc_updates (room_id, version, client_id, ops)
	SELECT u.room_id, u.version, u.client_id, u.ops::json
	FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[]) AS u(room_id, version, client_id, ops)
	WHERE NOT EXISTS (SELECT 1 FROM doc_snapshots s WHERE s.room_id = u.room_id AND s.version >= u.version)`

const sqlUpsertSnapshot = `INSERT INTO doc_snapshots (room_id, version, data) VALUES ($1, $2, $3::text::json)
	ON CONFLICT (room_id) DO UPDATE SET version = excluded.version, data = excluded.data
	WHERE doc_snapshots.version < excluded.version`

const sqlTrimUpdates = `DELETE FROM doc_updates WHERE room_id = $1 AND version <= $2`

// opsText is how an update's ops are stored: empty ops as JSON null.
func opsText(ops json.RawMessage) string {
	if len(ops) == 0 {
		return "null"
	}
	return string(ops)
}

// AppendUpdates writes all updates in one transaction: one multi-row
// insert, then the snapshots and trims in one batch.
func (s *Store) AppendUpdates(ctx context.Context, updates []store.DocUpdate) error {
	if len(updates) == 0 {
		return nil
	}
	n := len(updates)
	rooms, versions, clients, ops := make([]string, n), make([]int64, n), make([]string, n), make([]string, n)
	var snaps pgx.Batch
	for i, u := range updates {
		rooms[i], versions[i], clients[i], ops[i] = u.RoomID, u.Version, u.ClientID, opsText(u.Ops)
		if u.Snapshot == nil {
			continue
		}
		if len(u.Snapshot) == 0 {
			return fmt.Errorf("postgres: append updates: empty snapshot for room %q version %d", u.RoomID, u.Version)
		}
		snaps.Queue(sqlUpsertSnapshot, u.RoomID, u.Version, string(u.Snapshot))
		snaps.Queue(sqlTrimUpdates, u.RoomID, u.Version-max(u.KeepUpdates, 0))
	}
	err := s.withTx(ctx, pgx.TxOptions{}, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, sqlInsertUpdates, rooms, versions, clients, ops)
		if err != nil {
			return mapErr(err)
		}
		if tag.RowsAffected() != int64(n) {
			return fmt.Errorf("%w: %d of %d updates are at or below their room's snapshot", store.ErrConflict, int64(n)-tag.RowsAffected(), n)
		}
		if snaps.Len() > 0 {
			return tx.SendBatch(ctx, &snaps).Close()
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("postgres: append updates: %w", err)
	}
	return nil
}

// LoadDocument returns the room's snapshot and the updates after it, read in
// one repeatable-read transaction.
func (s *Store) LoadDocument(ctx context.Context, roomID string) (store.Document, error) {
	doc := store.Document{Data: json.RawMessage("{}")}
	err := s.withTx(ctx, readTx, func(tx pgx.Tx) error {
		var data string
		err := tx.QueryRow(ctx, `SELECT version, data::text FROM doc_snapshots WHERE room_id = $1`, roomID).Scan(&doc.Version, &data)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
		case err != nil:
			return err
		default:
			doc.Data = json.RawMessage(data)
		}
		doc.Updates, err = queryUpdates(ctx, tx, roomID, doc.Version)
		return err
	})
	if err != nil {
		return store.Document{}, fmt.Errorf("postgres: load document %q: %w", roomID, err)
	}
	return doc, nil
}

// UpdatesSince returns the updates after since, or ok=false when since is
// negative or ahead of the room or some of those updates were trimmed.
func (s *Store) UpdatesSince(ctx context.Context, roomID string, since int64) ([]store.DocUpdate, bool, error) {
	if since < 0 {
		return nil, false, nil
	}
	var (
		updates []store.DocUpdate
		ok      bool
	)
	err := s.withTx(ctx, readTx, func(tx pgx.Tx) error {
		var current int64
		if err := tx.QueryRow(ctx, `SELECT greatest(
			coalesce((SELECT version FROM doc_snapshots WHERE room_id = $1), 0),
			coalesce((SELECT max(version) FROM doc_updates WHERE room_id = $1), 0))`, roomID).Scan(&current); err != nil {
			return err
		}
		if since > current {
			return nil
		}
		if since == current {
			updates, ok = []store.DocUpdate{}, true
			return nil
		}
		var err error
		if updates, err = queryUpdates(ctx, tx, roomID, since); err != nil {
			return err
		}
		ok = len(updates) > 0 && updates[0].Version == since+1
		return nil
	})
	if err != nil {
		return nil, false, fmt.Errorf("postgres: updates of %q since %d: %w", roomID, since, err)
	}
	if !ok {
		return nil, false, nil
	}
	return updates, true, nil
}

func queryUpdates(ctx context.Context, tx pgx.Tx, roomID string, after int64) ([]store.DocUpdate, error) {
	rows, err := tx.Query(ctx, `SELECT version, client_id, ops::text FROM doc_updates
		WHERE room_id = $1 AND version > $2 ORDER BY version`, roomID, after)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	updates := []store.DocUpdate{}
	for rows.Next() {
		u := store.DocUpdate{RoomID: roomID}
		var ops string
		if err := rows.Scan(&u.Version, &u.ClientID, &ops); err != nil {
			return nil, err
		}
		u.Ops = json.RawMessage(ops)
		updates = append(updates, u)
	}
	return updates, rows.Err()
}
