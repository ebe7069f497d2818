package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/parleyhq/parley/internal/store"
)

// An update is refused (no row inserted) when its version is at or below
// the room's snapshot (such a version was written once, even if trimmed
// since: ErrConflict) or when the room's stored epoch is above ?5, the
// room's greatest epoch in the call (ErrFenced). For epoch 0 the second
// test is one primary-key probe of room_epochs, usually empty: the
// single-node write stays one statement per update.
const sqlInsertUpdate = `INSERT INTO doc_updates (room_id, version, client_id, ops)
	SELECT ?1, ?2, ?3, ?4
	WHERE NOT EXISTS (SELECT 1 FROM doc_snapshots WHERE room_id = ?1 AND version >= ?2)
	AND NOT EXISTS (SELECT 1 FROM room_epochs WHERE room_id = ?1 AND epoch > ?5)`

const sqlRoomEpoch = `SELECT epoch FROM room_epochs WHERE room_id = ?`

const sqlRaiseEpoch = `INSERT INTO room_epochs (room_id, epoch) VALUES (?1, ?2)
	ON CONFLICT (room_id) DO UPDATE SET epoch = excluded.epoch WHERE excluded.epoch > room_epochs.epoch`

const sqlUpsertSnapshot = `INSERT INTO doc_snapshots (room_id, version, data) VALUES (?1, ?2, ?3)
	ON CONFLICT (room_id) DO UPDATE SET version = excluded.version, data = excluded.data
	WHERE excluded.version > doc_snapshots.version`

const sqlTrimUpdates = `DELETE FROM doc_updates WHERE room_id = ?1 AND version <= ?2`

// opsText is how an update's ops are stored: empty ops as JSON null.
func opsText(ops json.RawMessage) string {
	if len(ops) == 0 {
		return "null"
	}
	return string(ops)
}

// AppendUpdates writes all updates in one transaction (BEGIN IMMEDIATE,
// synchronous=FULL: durable when it returns nil). The writer connection is
// the only one, so the epochs checked at the start of the transaction
// cannot change before it commits.
func (s *Store) AppendUpdates(ctx context.Context, updates []store.DocUpdate) error {
	if len(updates) == 0 {
		return nil
	}
	for _, u := range updates {
		if u.Snapshot != nil && len(u.Snapshot) == 0 {
			return fmt.Errorf("sqlite: append updates: empty snapshot for room %q version %d", u.RoomID, u.Version)
		}
	}
	spans, err := store.EpochSpans(updates) // nil when every epoch is 0
	if err != nil {
		return fmt.Errorf("sqlite: append updates: %w", err)
	}
	err = s.withTx(ctx, func(tx *sql.Tx) error {
		// Rooms with epochs: check each once, then raise it, so that the
		// inserts below (which test epoch > the room's Max) pass.
		var epochOf, raise *sql.Stmt
		if spans != nil {
			epochOf, raise = tx.StmtContext(ctx, s.roomEpoch), tx.StmtContext(ctx, s.raiseEpoch)
		}
		for room, sp := range spans {
			stored, err := roomEpoch(ctx, epochOf, room)
			if err != nil {
				return err
			}
			if stored > sp.Min {
				return fmt.Errorf("%w: room %q has epoch %d, the update has %d", store.ErrFenced, room, stored, sp.Min)
			}
			if sp.Max > stored {
				if _, err := raise.ExecContext(ctx, room, int64(sp.Max)); err != nil {
					return err
				}
			}
		}
		ins := tx.StmtContext(ctx, s.insUpdate)
		var snap, trim *sql.Stmt
		for _, u := range updates {
			maxEpoch := int64(spans[u.RoomID].Max) // 0 when the room has no epochs (or spans is nil)
			res, err := ins.ExecContext(ctx, u.RoomID, u.Version, u.ClientID, opsText(u.Ops), maxEpoch)
			if err != nil {
				return mapErr(err)
			}
			if n, err := res.RowsAffected(); err != nil {
				return err
			} else if n == 0 {
				return s.refused(ctx, tx, u, maxEpoch)
			}
			if u.Snapshot == nil {
				continue
			}
			if snap == nil {
				snap, trim = tx.StmtContext(ctx, s.upsertSnap), tx.StmtContext(ctx, s.trim)
			}
			if _, err := snap.ExecContext(ctx, u.RoomID, u.Version, string(u.Snapshot)); err != nil {
				return err
			}
			if _, err := trim.ExecContext(ctx, u.RoomID, u.Version-max(u.KeepUpdates, 0)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("sqlite: append updates: %w", err)
	}
	return nil
}

// refused tells why the insert of u refused it: ErrFenced when the room's
// epoch is above maxEpoch (only an epoch-0 room's can be, the others were
// checked first), else ErrConflict.
func (s *Store) refused(ctx context.Context, tx *sql.Tx, u store.DocUpdate, maxEpoch int64) error {
	stored, err := roomEpoch(ctx, tx.StmtContext(ctx, s.roomEpoch), u.RoomID)
	if err != nil {
		return err
	}
	if stored > uint64(maxEpoch) {
		return fmt.Errorf("%w: room %q has epoch %d, version %d has %d", store.ErrFenced, u.RoomID, stored, u.Version, u.Epoch)
	}
	return fmt.Errorf("%w: room %q version %d is at or below its snapshot", store.ErrConflict, u.RoomID, u.Version)
}

// roomEpoch reads the room's stored epoch (0 when it has none).
func roomEpoch(ctx context.Context, st *sql.Stmt, roomID string) (uint64, error) {
	var e int64
	err := st.QueryRowContext(ctx, roomID).Scan(&e)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	return uint64(e), err
}

// Fence raises the room's epoch in one write transaction (durable when it
// returns nil). Fencing with epoch 0 or the stored epoch writes nothing.
func (s *Store) Fence(ctx context.Context, roomID string, epoch uint64) error {
	if err := store.CheckEpoch(epoch); err != nil {
		return fmt.Errorf("sqlite: fence %q: %w", roomID, err)
	}
	err := s.withTx(ctx, func(tx *sql.Tx) error {
		stored, err := roomEpoch(ctx, tx.StmtContext(ctx, s.roomEpoch), roomID)
		switch {
		case err != nil:
			return err
		case stored > epoch:
			return fmt.Errorf("%w: room has epoch %d, fence has %d", store.ErrFenced, stored, epoch)
		case stored == epoch:
			return nil
		}
		_, err = tx.StmtContext(ctx, s.raiseEpoch).ExecContext(ctx, roomID, int64(epoch))
		return err
	})
	if err != nil {
		return fmt.Errorf("sqlite: fence %q: %w", roomID, err)
	}
	return nil
}

// LoadDocument returns the room's snapshot and the updates after it, read in
// one transaction.
func (s *Store) LoadDocument(ctx context.Context, roomID string) (store.Document, error) {
	doc := store.Document{Data: json.RawMessage("{}")}
	err := s.withReadTx(ctx, func(tx *sql.Tx) error {
		var data []byte
		err := tx.QueryRowContext(ctx, `SELECT version, data FROM doc_snapshots WHERE room_id = ?`, roomID).Scan(&doc.Version, &data)
		switch {
		case errors.Is(err, sql.ErrNoRows):
		case err != nil:
			return err
		default:
			doc.Data = data
		}
		doc.Updates, err = queryUpdates(ctx, tx, roomID, doc.Version)
		return err
	})
	if err != nil {
		return store.Document{}, fmt.Errorf("sqlite: load document %q: %w", roomID, err)
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
	err := s.withReadTx(ctx, func(tx *sql.Tx) error {
		var snapV, lastV sql.NullInt64
		if err := tx.QueryRowContext(ctx, `SELECT
			(SELECT version FROM doc_snapshots WHERE room_id = ?1),
			(SELECT max(version) FROM doc_updates WHERE room_id = ?1)`, roomID).Scan(&snapV, &lastV); err != nil {
			return err
		}
		current := max(snapV.Int64, lastV.Int64)
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
		return nil, false, fmt.Errorf("sqlite: updates of %q since %d: %w", roomID, since, err)
	}
	if !ok {
		return nil, false, nil
	}
	return updates, true, nil
}

func queryUpdates(ctx context.Context, tx *sql.Tx, roomID string, after int64) ([]store.DocUpdate, error) {
	rows, err := tx.QueryContext(ctx, `SELECT version, client_id, ops FROM doc_updates
		WHERE room_id = ? AND version > ? ORDER BY version`, roomID, after)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	updates := []store.DocUpdate{}
	for rows.Next() {
		u := store.DocUpdate{RoomID: roomID}
		var ops []byte
		if err := rows.Scan(&u.Version, &u.ClientID, &ops); err != nil {
			return nil, err
		}
		u.Ops = ops
		updates = append(updates, u)
	}
	return updates, rows.Err()
}
