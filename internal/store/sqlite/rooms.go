package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/parleyhq/parley/internal/store"
)

// CreateRoom inserts the room and its owner as a member in one transaction;
// ErrConflict when the id exists.
func (s *Store) CreateRoom(ctx context.Context, r store.Room) error {
	err := s.withTx(ctx, func(tx *sql.Tx) error {
		created := fmtTime(r.CreatedAt)
		if _, err := tx.ExecContext(ctx, `INSERT INTO rooms (id, name, open, owner_id, created_at) VALUES (?, ?, ?, ?, ?)`,
			r.ID, r.Name, r.Open, r.OwnerID, created); err != nil {
			return mapErr(err)
		}
		if r.OwnerID == "" {
			return nil
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO room_members (room_id, user_id, joined_at) VALUES (?, ?, ?)
			ON CONFLICT DO NOTHING`, r.ID, r.OwnerID, created)
		return err
	})
	if err != nil {
		return fmt.Errorf("sqlite: create room %q: %w", r.ID, err)
	}
	return nil
}

const roomColumns = `r.id, r.name, r.open, r.owner_id, r.created_at`

func scanRoom(sc interface{ Scan(...any) error }) (store.Room, error) {
	var (
		r       store.Room
		created string
	)
	if err := sc.Scan(&r.ID, &r.Name, &r.Open, &r.OwnerID, &created); err != nil {
		return store.Room{}, err
	}
	var err error
	r.CreatedAt, err = parseTime(created)
	return r, err
}

// GetRoom returns the room record; ErrNotFound when there is none.
func (s *Store) GetRoom(ctx context.Context, id string) (store.Room, error) {
	r, err := scanRoom(s.queryRow(ctx, `SELECT `+roomColumns+` FROM rooms r WHERE r.id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return store.Room{}, fmt.Errorf("sqlite: room %q: %w", id, store.ErrNotFound)
	}
	if err != nil {
		return store.Room{}, fmt.Errorf("sqlite: room %q: %w", id, err)
	}
	return r, nil
}

// RoomsOfUser returns the rooms the user is a member of, oldest first (ties
// by id).
func (s *Store) RoomsOfUser(ctx context.Context, userID string) ([]store.Room, error) {
	rows, err := s.query(ctx, `SELECT `+roomColumns+`
		FROM room_members m JOIN rooms r ON r.id = m.room_id
		WHERE m.user_id = ? ORDER BY r.created_at, r.id`, userID)
	if err != nil {
		return nil, fmt.Errorf("sqlite: rooms of %q: %w", userID, err)
	}
	defer rows.Close()
	rooms := []store.Room{}
	for rows.Next() {
		r, err := scanRoom(rows)
		if err != nil {
			return nil, fmt.Errorf("sqlite: rooms of %q: %w", userID, err)
		}
		rooms = append(rooms, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: rooms of %q: %w", userID, err)
	}
	return rooms, nil
}

// AddMember makes the user a member of the room (no-op when already one).
func (s *Store) AddMember(ctx context.Context, roomID, userID string) error {
	_, err := s.w.ExecContext(ctx, `INSERT INTO room_members (room_id, user_id, joined_at) VALUES (?, ?, ?)
		ON CONFLICT DO NOTHING`, roomID, userID, fmtTime(time.Now()))
	if err != nil {
		return fmt.Errorf("sqlite: add %q to room %q: %w", userID, roomID, err)
	}
	return nil
}

// RemoveMember removes the user from the room (no-op when not a member).
func (s *Store) RemoveMember(ctx context.Context, roomID, userID string) error {
	if _, err := s.w.ExecContext(ctx, `DELETE FROM room_members WHERE room_id = ? AND user_id = ?`, roomID, userID); err != nil {
		return fmt.Errorf("sqlite: remove %q from room %q: %w", userID, roomID, err)
	}
	return nil
}

// IsMember reports whether the user is a member of the room.
func (s *Store) IsMember(ctx context.Context, roomID, userID string) (bool, error) {
	var ok bool
	err := s.queryRow(ctx, `SELECT EXISTS (SELECT 1 FROM room_members WHERE room_id = ? AND user_id = ?)`,
		roomID, userID).Scan(&ok)
	if err != nil {
		return false, fmt.Errorf("sqlite: is %q in room %q: %w", userID, roomID, err)
	}
	return ok, nil
}

// Members returns the user ids of the room's members, sorted.
func (s *Store) Members(ctx context.Context, roomID string) ([]string, error) {
	rows, err := s.query(ctx, `SELECT user_id FROM room_members WHERE room_id = ? ORDER BY user_id`, roomID)
	if err != nil {
		return nil, fmt.Errorf("sqlite: members of %q: %w", roomID, err)
	}
	defer rows.Close()
	ids := []string{}
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, fmt.Errorf("sqlite: members of %q: %w", roomID, err)
		}
		ids = append(ids, id)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: members of %q: %w", roomID, err)
	}
	return ids, nil
}

// --- messages ---

const messageColumns = `id, room_id, author_id, content, nonce, created_at, updated_at, deleted_at`

func scanMessage(sc interface{ Scan(...any) error }) (store.Message, error) {
	var (
		m                  store.Message
		created            string
		updated, deletedAt sql.NullString
	)
	if err := sc.Scan(&m.ID, &m.RoomID, &m.AuthorID, &m.Content, &m.Nonce, &created, &updated, &deletedAt); err != nil {
		return store.Message{}, err
	}
	var err error
	if m.CreatedAt, err = parseTime(created); err != nil {
		return store.Message{}, err
	}
	if m.UpdatedAt, err = parseNullTime(updated); err != nil {
		return store.Message{}, err
	}
	if m.DeletedAt, err = parseNullTime(deletedAt); err != nil {
		return store.Message{}, err
	}
	return m, nil
}

// CreateMessage inserts m; ErrConflict when its id exists.
func (s *Store) CreateMessage(ctx context.Context, m store.Message) error {
	_, err := s.w.ExecContext(ctx, `INSERT INTO messages (`+messageColumns+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
		m.ID, m.RoomID, m.AuthorID, m.Content, m.Nonce, fmtTime(m.CreatedAt), fmtNullTime(m.UpdatedAt), fmtNullTime(m.DeletedAt))
	if err != nil {
		return fmt.Errorf("sqlite: create message %q: %w", m.ID, mapErr(err))
	}
	return nil
}

// GetMessage returns a message of the room; ErrNotFound when missing or
// deleted.
func (s *Store) GetMessage(ctx context.Context, roomID, id string) (store.Message, error) {
	m, err := scanMessage(s.queryRow(ctx, `SELECT `+messageColumns+` FROM messages
		WHERE room_id = ? AND id = ? AND deleted_at IS NULL`, roomID, id))
	if errors.Is(err, sql.ErrNoRows) {
		return store.Message{}, fmt.Errorf("sqlite: message %q: %w", id, store.ErrNotFound)
	}
	if err != nil {
		return store.Message{}, fmt.Errorf("sqlite: message %q: %w", id, err)
	}
	return m, nil
}

// ListMessages returns up to limit non-deleted messages of the room with id
// < before (all when before is ""), newest first.
func (s *Store) ListMessages(ctx context.Context, roomID, before string, limit int) ([]store.Message, error) {
	msgs := []store.Message{}
	if limit <= 0 {
		return msgs, nil
	}
	var (
		rows *sql.Rows
		err  error
	)
	if before == "" {
		rows, err = s.query(ctx, `SELECT `+messageColumns+` FROM messages
			WHERE room_id = ? AND deleted_at IS NULL ORDER BY id DESC LIMIT ?`, roomID, limit)
	} else {
		rows, err = s.query(ctx, `SELECT `+messageColumns+` FROM messages
			WHERE room_id = ? AND id < ? AND deleted_at IS NULL ORDER BY id DESC LIMIT ?`, roomID, before, limit)
	}
	if err != nil {
		return nil, fmt.Errorf("sqlite: messages of %q: %w", roomID, err)
	}
	defer rows.Close()
	for rows.Next() {
		m, err := scanMessage(rows)
		if err != nil {
			return nil, fmt.Errorf("sqlite: messages of %q: %w", roomID, err)
		}
		msgs = append(msgs, m)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: messages of %q: %w", roomID, err)
	}
	return msgs, nil
}

// UpdateMessage replaces a message's content and sets its updated_at;
// ErrNotFound when missing or deleted.
func (s *Store) UpdateMessage(ctx context.Context, roomID, id, content string, at time.Time) (store.Message, error) {
	m, err := scanMessage(s.w.QueryRowContext(ctx, `UPDATE messages SET content = ?, updated_at = ?
		WHERE room_id = ? AND id = ? AND deleted_at IS NULL RETURNING `+messageColumns,
		content, fmtTime(at), roomID, id))
	if errors.Is(err, sql.ErrNoRows) {
		return store.Message{}, fmt.Errorf("sqlite: update message %q: %w", id, store.ErrNotFound)
	}
	if err != nil {
		return store.Message{}, fmt.Errorf("sqlite: update message %q: %w", id, err)
	}
	return m, nil
}

// DeleteMessage soft-deletes a message; ErrNotFound when missing or already
// deleted.
func (s *Store) DeleteMessage(ctx context.Context, roomID, id string, at time.Time) error {
	res, err := s.w.ExecContext(ctx, `UPDATE messages SET deleted_at = ?
		WHERE room_id = ? AND id = ? AND deleted_at IS NULL`, fmtTime(at), roomID, id)
	if err != nil {
		return fmt.Errorf("sqlite: delete message %q: %w", id, err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return fmt.Errorf("sqlite: delete message %q: %w", id, err)
	} else if n == 0 {
		return fmt.Errorf("sqlite: delete message %q: %w", id, store.ErrNotFound)
	}
	return nil
}
