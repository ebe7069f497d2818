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
// the room's snapshot: such a version was written once, even if trimmed
// since (ErrConflict).
const sqlInsertUpdate = `INSERT INTO doc_updates (room_id, version, client_id, ops)
	SELECT ?1, ?2, ?3, ?4
	WHERE NOT EXISTS (SELECT 1 FROM doc_snapshots WHERE room_id = ?1 AND version >= ?2)`

// sqlInsertUpdateUnfenced also refuses the update when the room has a
// stored epoch above 0 (ErrFenced; see refused): it writes the first
// update of each run of a room's epoch-0 updates in a call. The test is one
// primary-key probe of room_epochs (where single-node rooms have no row),
// in the insert itself: no extra statement.
const sqlInsertUpdateUnfenced = sqlInsertUpdate + `
	AND NOT EXISTS (SELECT 1 FROM room_epochs WHERE room_id = ?1 AND epoch > 0)`

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
		// Rooms with epochs: check each once against its least epoch in
		// the call, then raise it to its greatest.
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
		var ins, insUnfenced, snap, trim *sql.Stmt
		for i, u := range updates {
			// An epoch-0 room is checked against room_epochs at the start
			// of each run of its updates (the first one of the call among
			// them); rooms with epochs were checked above.
			st := ins
			if _, ok := spans[u.RoomID]; !ok && (i == 0 || updates[i-1].RoomID != u.RoomID) {
				if insUnfenced == nil {
					insUnfenced = tx.StmtContext(ctx, s.insUnfenced)
				}
				st = insUnfenced
			} else if st == nil {
				ins = tx.StmtContext(ctx, s.insUpdate)
				st = ins
			}
			res, err := st.ExecContext(ctx, u.RoomID, u.Version, u.ClientID, opsText(u.Ops))
			if err != nil {
				return mapErr(err)
			}
			if n, err := res.RowsAffected(); err != nil {
				return err
			} else if n == 0 {
				return s.refused(ctx, tx, u, spans[u.RoomID].Max)
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
// stored epoch is above maxEpoch, its greatest in the call (only an epoch-0
// room's can be: the others were checked and raised before the inserts),
// else ErrConflict.
func (s *Store) refused(ctx context.Context, tx *sql.Tx, u store.DocUpdate, maxEpoch uint64) error {
	stored, err := roomEpoch(ctx, tx.StmtContext(ctx, s.roomEpoch), u.RoomID)
	if err != nil {
		return err
	}
	if stored > maxEpoch {
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

// Claim implements store.Documents.
func (s *Store) Claim(ctx context.Context, roomID string) (uint64, error) {
	var epoch int64
	err := s.withTx(ctx, func(tx *sql.Tx) error {
		return tx.QueryRowContext(ctx, `INSERT INTO room_epochs (room_id, epoch) VALUES (?, 1)
			ON CONFLICT (room_id) DO UPDATE SET epoch = room_epochs.epoch + 1 RETURNING epoch`, roomID).Scan(&epoch)
	})
	if err != nil {
		return 0, fmt.Errorf("sqlite: claim %q: %w", roomID, err)
	}
	return uint64(epoch), nil
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
