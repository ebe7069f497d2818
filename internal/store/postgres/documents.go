package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"

	"github.com/jackc/pgx/v5"

	"github.com/parleyhq/parley/internal/store"
)

// All updates in one statement. An update is refused (fewer rows than
// updates) when its version is at or below the room's snapshot: such a
// version was written once, even if trimmed since (ErrConflict).
//
// Every update is refused (ErrFenced; see refused) when one of the rooms
// written with epoch 0 ($1 in sqlInsertUpdates, where every epoch is 0; $5
// in sqlInsertUpdatesEpochs, whose other rooms sqlRaiseEpochs checked) has
// a stored epoch above 0. The test does not depend on the row: it runs once
// per statement, one index probe per distinct room of room_epochs (where
// single-node rooms have no row).
const (
	sqlInsertUpdates = `INSERT INTO doc_updates (room_id, version, client_id, ops)
	SELECT u.room_id, u.version, u.client_id, u.ops::json
	FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[]) AS u(room_id, version, client_id, ops)
	WHERE NOT EXISTS (SELECT 1 FROM doc_snapshots s WHERE s.room_id = u.room_id AND s.version >= u.version)
	AND NOT EXISTS (SELECT 1 FROM room_epochs e WHERE e.room_id = ANY($1::text[]) AND e.epoch > 0)`

	sqlInsertUpdatesEpochs = `INSERT INTO doc_updates (room_id, version, client_id, ops)
	SELECT u.room_id, u.version, u.client_id, u.ops::json
	FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[]) AS u(room_id, version, client_id, ops)
	WHERE NOT EXISTS (SELECT 1 FROM doc_snapshots s WHERE s.room_id = u.room_id AND s.version >= u.version)
	AND NOT EXISTS (SELECT 1 FROM room_epochs e WHERE e.room_id = ANY($5::text[]) AND e.epoch > 0)`
)

// sqlRaiseEpochs checks and raises the epochs of a call's rooms that have
// some ($1 rooms, $2 their greatest epoch in the call, $3 their least): a
// room is updated (or inserted) only when its stored epoch is at most the
// least, so fewer rows than rooms means ErrFenced. ON CONFLICT locks each
// existing row even when its WHERE is false, and a row it inserts is
// another transaction's conflict until commit: a concurrent Fence (or
// another node's append) of the same room waits for this transaction, then
// sees its outcome. Rows are taken in room order, so two such calls cannot
// deadlock. A row at the call's epoch is rewritten unchanged (the price of
// counting it).
const sqlRaiseEpochs = `INSERT INTO room_epochs AS e (room_id, epoch)
	SELECT r.room_id, r.max_epoch FROM unnest($1::text[], $2::bigint[]) AS r(room_id, max_epoch)
	ORDER BY r.room_id COLLATE "C"
	ON CONFLICT (room_id) DO UPDATE SET epoch = excluded.epoch
	WHERE e.epoch <= (SELECT m.min_epoch FROM unnest($1::text[], $3::bigint[]) AS m(room_id, min_epoch)
		WHERE m.room_id = e.room_id)`

// sqlFencedRoom finds a room of ($1 rooms, $2 epochs) whose stored epoch is
// above the given one.
const sqlFencedRoom = `SELECT r.room_id, e.epoch, r.epoch FROM unnest($1::text[], $2::bigint[]) AS r(room_id, epoch)
	JOIN room_epochs e ON e.room_id = r.room_id WHERE e.epoch > r.epoch LIMIT 1`

// sqlFence raises one room's epoch; no row is affected when the stored
// epoch is greater (ErrFenced). Rewriting an equal epoch takes the row's
// lock like a raise: Fence returns only after in-flight appends of the
// room that hold it committed or failed.
const sqlFence = `INSERT INTO room_epochs AS e (room_id, epoch) VALUES ($1, $2)
	ON CONFLICT (room_id) DO UPDATE SET epoch = excluded.epoch WHERE e.epoch <= excluded.epoch`

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

// AppendUpdates writes all updates in one transaction: the epochs'
// check-and-raise (when some epoch is not 0) and one multi-row insert in
// one round trip, then the snapshots and trims in one batch.
//
// Fencing is exact for rooms with a stored epoch and for updates with an
// epoch: the call holds the room's room_epochs row from its first
// statement to its commit, so it is ordered before or after any Fence. An
// epoch-0 update of a room never fenced locks nothing (that is what keeps
// single-node writes as cheap as before epochs): a room's FIRST Fence does
// not wait for such an update in flight. In a cluster every owner fences
// before writing, so epoch 0 is not written there; if it were, the version
// primary key would still refuse the new owner's write of the same version
// (ErrConflict), never lose one.
func (s *Store) AppendUpdates(ctx context.Context, updates []store.DocUpdate) error {
	if len(updates) == 0 {
		return nil
	}
	spans, err := store.EpochSpans(updates) // nil when every epoch is 0
	if err != nil {
		return fmt.Errorf("postgres: append updates: %w", err)
	}
	n := len(updates)
	rooms, versions, clients, ops := make([]string, n), make([]int64, n), make([]string, n), make([]string, n)
	var maxEpochs []int64 // per update: its room's greatest epoch in the call
	if spans != nil {
		maxEpochs = make([]int64, n)
	}
	var snaps pgx.Batch
	for i, u := range updates {
		rooms[i], versions[i], clients[i], ops[i] = u.RoomID, u.Version, u.ClientID, opsText(u.Ops)
		if maxEpochs != nil {
			maxEpochs[i] = int64(spans[u.RoomID].Max)
		}
		if u.Snapshot == nil {
			continue
		}
		if len(u.Snapshot) == 0 {
			return fmt.Errorf("postgres: append updates: empty snapshot for room %q version %d", u.RoomID, u.Version)
		}
		snaps.Queue(sqlUpsertSnapshot, u.RoomID, u.Version, string(u.Snapshot))
		snaps.Queue(sqlTrimUpdates, u.RoomID, u.Version-max(u.KeepUpdates, 0))
	}
	err = s.withTx(ctx, pgx.TxOptions{}, func(tx pgx.Tx) error {
		var inserted int64
		if spans == nil {
			tag, err := tx.Exec(ctx, sqlInsertUpdates, rooms, versions, clients, ops)
			if err != nil {
				return mapErr(err)
			}
			inserted = tag.RowsAffected()
		} else {
			eRooms := slices.Sorted(maps.Keys(spans))
			eMax, eMin := make([]int64, len(eRooms)), make([]int64, len(eRooms))
			for i, r := range eRooms {
				eMax[i], eMin[i] = int64(spans[r].Max), int64(spans[r].Min)
			}
			var b pgx.Batch
			b.Queue(sqlRaiseEpochs, eRooms, eMax, eMin)
			zeroRooms := []string{} // rooms of the call with epoch 0 only (repeats are harmless)
			for i, r := range rooms {
				if _, ok := spans[r]; !ok && (i == 0 || rooms[i-1] != r) {
					zeroRooms = append(zeroRooms, r)
				}
			}
			b.Queue(sqlInsertUpdatesEpochs, rooms, versions, clients, ops, zeroRooms)
			res := tx.SendBatch(ctx, &b)
			raised, rerr := res.Exec()
			tag, ierr := res.Exec() // after rerr: "transaction aborted"
			cerr := res.Close()
			switch {
			case rerr != nil:
				return rerr
			case raised.RowsAffected() != int64(len(eRooms)):
				if ierr != nil { // the transaction is aborted: no name to give
					return fmt.Errorf("%w: %d of %d rooms have a newer epoch", store.ErrFenced,
						int64(len(eRooms))-raised.RowsAffected(), len(eRooms))
				}
				if err := fenced(ctx, tx, eRooms, eMin); !errors.Is(err, errNotFenced) {
					return err
				}
				return fmt.Errorf("%w: a room has a newer epoch", store.ErrFenced)
			case ierr != nil:
				return mapErr(ierr)
			case cerr != nil:
				return cerr
			}
			inserted = tag.RowsAffected()
		}
		if inserted != int64(n) {
			return refused(ctx, tx, rooms, maxEpochs, int64(n)-inserted, n)
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

// refused tells why the insert left out missing of n updates: ErrFenced
// when a room's stored epoch is above its greatest epoch in the call
// (maxEpochs; nil: all 0), else ErrConflict (a version at or below the
// room's snapshot).
func refused(ctx context.Context, tx pgx.Tx, rooms []string, maxEpochs []int64, missing int64, n int) error {
	if maxEpochs == nil {
		maxEpochs = make([]int64, len(rooms))
	}
	if err := fenced(ctx, tx, rooms, maxEpochs); !errors.Is(err, errNotFenced) {
		return err
	}
	return fmt.Errorf("%w: %d of %d updates are at or below their room's snapshot", store.ErrConflict, missing, n)
}

var errNotFenced = errors.New("not fenced")

// fenced returns ErrFenced naming a room of rooms whose stored epoch is
// above its entry in epochs, errNotFenced when there is none, or the
// query's error.
func fenced(ctx context.Context, tx pgx.Tx, rooms []string, epochs []int64) error {
	var (
		room          string
		stored, given int64
	)
	err := tx.QueryRow(ctx, sqlFencedRoom, rooms, epochs).Scan(&room, &stored, &given)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return errNotFenced
	case err != nil:
		return err
	}
	return fmt.Errorf("%w: room %q has epoch %d, the update has %d", store.ErrFenced, room, stored, given)
}

// Fence raises the room's epoch in one statement (durable when it returns
// nil). It waits for appends of the room in flight that hold its row (see
// AppendUpdates). Fencing with epoch 0 only reads.
func (s *Store) Fence(ctx context.Context, roomID string, epoch uint64) error {
	if err := store.CheckEpoch(epoch); err != nil {
		return fmt.Errorf("postgres: fence %q: %w", roomID, err)
	}
	err := s.withConn(ctx, func(c *pgx.Conn) error {
		if epoch > 0 {
			tag, err := c.Exec(ctx, sqlFence, roomID, int64(epoch))
			if err != nil || tag.RowsAffected() == 1 {
				return err
			}
		}
		var stored int64
		err := c.QueryRow(ctx, `SELECT epoch FROM room_epochs WHERE room_id = $1`, roomID).Scan(&stored)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
			return nil // epoch 0 on a room never fenced
		case err != nil:
			return err
		case uint64(stored) > epoch:
			return fmt.Errorf("%w: room has epoch %d, fence has %d", store.ErrFenced, stored, epoch)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("postgres: fence %q: %w", roomID, err)
	}
	return nil
}

// Claim implements store.Documents. The upsert takes the room's epoch row
// lock, so it waits for an append of the room in flight (as Fence does).
func (s *Store) Claim(ctx context.Context, roomID string) (uint64, error) {
	var epoch int64
	err := s.withConn(ctx, func(c *pgx.Conn) error {
		return c.QueryRow(ctx, `INSERT INTO room_epochs (room_id, epoch) VALUES ($1, 1)
			ON CONFLICT (room_id) DO UPDATE SET epoch = room_epochs.epoch + 1 RETURNING epoch`, roomID).Scan(&epoch)
	})
	if err != nil {
		return 0, fmt.Errorf("postgres: claim %q: %w", roomID, err)
	}
	return uint64(epoch), nil
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
