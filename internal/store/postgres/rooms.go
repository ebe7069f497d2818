package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/parleyhq/parley/internal/store"
)

// CreateRoom inserts the room and its owner as a member in one transaction;
// ErrConflict when the id exists.
func (s *Store) CreateRoom(ctx context.Context, r store.Room) error {
	err := s.withTx(ctx, pgx.TxOptions{}, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `INSERT INTO rooms (id, name, open, owner_id, created_at) VALUES ($1, $2, $3, $4, $5)`,
			r.ID, r.Name, r.Open, r.OwnerID, r.CreatedAt); err != nil {
			return mapErr(err)
		}
		if r.OwnerID == "" {
			return nil
		}
		_, err := tx.Exec(ctx, `INSERT INTO room_members (room_id, user_id, joined_at) VALUES ($1, $2, $3)
			ON CONFLICT DO NOTHING`, r.ID, r.OwnerID, r.CreatedAt)
		return err
	})
	if err != nil {
		return fmt.Errorf("postgres: create room %q: %w", r.ID, err)
	}
	return nil
}

const roomColumns = `r.id, r.name, r.open, r.owner_id, r.created_at`

func scanRoom(row pgx.Row) (store.Room, error) {
	var r store.Room
	if err := row.Scan(&r.ID, &r.Name, &r.Open, &r.OwnerID, &r.CreatedAt); err != nil {
		return store.Room{}, err
	}
	r.CreatedAt = r.CreatedAt.UTC()
	return r, nil
}

// GetRoom returns the room record; ErrNotFound when there is none.
func (s *Store) GetRoom(ctx context.Context, id string) (store.Room, error) {
	var r store.Room
	err := s.withConn(ctx, func(c *pgx.Conn) error {
		var err error
		r, err = scanRoom(c.QueryRow(ctx, `SELECT `+roomColumns+` FROM rooms r WHERE r.id = $1`, id))
		return err
	})
	if errors.Is(err, pgx.ErrNoRows) {
		return store.Room{}, fmt.Errorf("postgres: room %q: %w", id, store.ErrNotFound)
	}
	if err != nil {
		return store.Room{}, fmt.Errorf("postgres: room %q: %w", id, err)
	}
	return r, nil
}

// RoomsOfUser returns the rooms the user is a member of, oldest first (ties
// by id).
func (s *Store) RoomsOfUser(ctx context.Context, userID string) ([]store.Room, error) {
	rooms := []store.Room{}
	err := s.withConn(ctx, func(c *pgx.Conn) error {
		rows, err := c.Query(ctx, `SELECT `+roomColumns+`
			FROM room_members m JOIN rooms r ON r.id = m.room_id
			WHERE m.user_id = $1 ORDER BY r.created_at, r.id`, userID)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			r, err := scanRoom(rows)
			if err != nil {
				return err
			}
			rooms = append(rooms, r)
		}
		return rows.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("postgres: rooms of %q: %w", userID, err)
	}
	return rooms, nil
}

// AddMember makes the user a member of the room (no-op when already one).
func (s *Store) AddMember(ctx context.Context, roomID, userID string) error {
	err := s.withConn(ctx, func(c *pgx.Conn) error {
		_, err := c.Exec(ctx, `INSERT INTO room_members (room_id, user_id, joined_at) VALUES ($1, $2, now())
			ON CONFLICT DO NOTHING`, roomID, userID)
		return err
	})
	if err != nil {
		return fmt.Errorf("postgres: add %q to room %q: %w", userID, roomID, err)
	}
	return nil
}

// RemoveMember removes the user from the room (no-op when not a member).
func (s *Store) RemoveMember(ctx context.Context, roomID, userID string) error {
	err := s.withConn(ctx, func(c *pgx.Conn) error {
		_, err := c.Exec(ctx, `DELETE FROM room_members WHERE room_id = $1 AND user_id = $2`, roomID, userID)
		return err
	})
	if err != nil {
		return fmt.Errorf("postgres: remove %q from room %q: %w", userID, roomID, err)
	}
	return nil
}

// IsMember reports whether the user is a member of the room.
func (s *Store) IsMember(ctx context.Context, roomID, userID string) (bool, error) {
	var ok bool
	err := s.withConn(ctx, func(c *pgx.Conn) error {
		return c.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM room_members WHERE room_id = $1 AND user_id = $2)`,
			roomID, userID).Scan(&ok)
	})
	if err != nil {
		return false, fmt.Errorf("postgres: is %q in room %q: %w", userID, roomID, err)
	}
	return ok, nil
}

// Members returns the user ids of the room's members, sorted.
func (s *Store) Members(ctx context.Context, roomID string) ([]string, error) {
	ids := []string{}
	err := s.withConn(ctx, func(c *pgx.Conn) error {
		rows, err := c.Query(ctx, `SELECT user_id FROM room_members WHERE room_id = $1 ORDER BY user_id`, roomID)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var id string
			if err := rows.Scan(&id); err != nil {
				return err
			}
			ids = append(ids, id)
		}
		return rows.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("postgres: members of %q: %w", roomID, err)
	}
	return ids, nil
}

// --- messages ---

const messageColumns = `id, room_id, author_id, content, nonce, created_at, updated_at, deleted_at`

func scanMessage(row pgx.Row) (store.Message, error) {
	var m store.Message
	if err := row.Scan(&m.ID, &m.RoomID, &m.AuthorID, &m.Content, &m.Nonce, &m.CreatedAt, &m.UpdatedAt, &m.DeletedAt); err != nil {
		return store.Message{}, err
	}
	m.CreatedAt = m.CreatedAt.UTC()
	m.UpdatedAt, m.DeletedAt = utcPtr(m.UpdatedAt), utcPtr(m.DeletedAt)
	return m, nil
}

// CreateMessage inserts m; ErrConflict when its id exists.
func (s *Store) CreateMessage(ctx context.Context, m store.Message) error {
	err := s.withConn(ctx, func(c *pgx.Conn) error {
		_, err := c.Exec(ctx, `INSERT INTO messages (`+messageColumns+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`,
			m.ID, m.RoomID, m.AuthorID, m.Content, m.Nonce, m.CreatedAt, m.UpdatedAt, m.DeletedAt)
		return err
	})
	if err != nil {
		return fmt.Errorf("postgres: create message %q: %w", m.ID, mapErr(err))
	}
	return nil
}

// GetMessage returns a message of the room; ErrNotFound when missing or
// deleted.
func (s *Store) GetMessage(ctx context.Context, roomID, id string) (store.Message, error) {
	var m store.Message
	err := s.withConn(ctx, func(c *pgx.Conn) error {
		var err error
		m, err = scanMessage(c.QueryRow(ctx, `SELECT `+messageColumns+` FROM messages
			WHERE room_id = $1 AND id = $2 AND deleted_at IS NULL`, roomID, id))
		return err
	})
	if errors.Is(err, pgx.ErrNoRows) {
		return store.Message{}, fmt.Errorf("postgres: message %q: %w", id, store.ErrNotFound)
	}
	if err != nil {
		return store.Message{}, fmt.Errorf("postgres: message %q: %w", id, err)
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
	err := s.withConn(ctx, func(c *pgx.Conn) error {
		var (
			rows pgx.Rows
			err  error
		)
		if before == "" {
			rows, err = c.Query(ctx, `SELECT `+messageColumns+` FROM messages
				WHERE room_id = $1 AND deleted_at IS NULL ORDER BY id DESC LIMIT $2`, roomID, limit)
		} else {
			rows, err = c.Query(ctx, `SELECT `+messageColumns+` FROM messages
				WHERE room_id = $1 AND id < $2 AND deleted_at IS NULL ORDER BY id DESC LIMIT $3`, roomID, before, limit)
		}
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			m, err := scanMessage(rows)
			if err != nil {
				return err
			}
			msgs = append(msgs, m)
		}
		return rows.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("postgres: messages of %q: %w", roomID, err)
	}
	return msgs, nil
}

// UpdateMessage replaces a message's content and sets its updated_at;
// ErrNotFound when missing or deleted.
func (s *Store) UpdateMessage(ctx context.Context, roomID, id, content string, at time.Time) (store.Message, error) {
	var m store.Message
	err := s.withConn(ctx, func(c *pgx.Conn) error {
		var err error
		m, err = scanMessage(c.QueryRow(ctx, `UPDATE messages SET content = $1, updated_at = $2
			WHERE room_id = $3 AND id = $4 AND deleted_at IS NULL RETURNING `+messageColumns,
			content, at, roomID, id))
		return err
	})
	if errors.Is(err, pgx.ErrNoRows) {
		return store.Message{}, fmt.Errorf("postgres: update message %q: %w", id, store.ErrNotFound)
	}
	if err != nil {
		return store.Message{}, fmt.Errorf("postgres: update message %q: %w", id, err)
	}
	return m, nil
}

// DeleteMessage soft-deletes a message; ErrNotFound when missing or already
// deleted.
func (s *Store) DeleteMessage(ctx context.Context, roomID, id string, at time.Time) error {
	var n int64
	err := s.withConn(ctx, func(c *pgx.Conn) error {
		tag, err := c.Exec(ctx, `UPDATE messages SET deleted_at = $1
			WHERE room_id = $2 AND id = $3 AND deleted_at IS NULL`, at, roomID, id)
		n = tag.RowsAffected()
		return err
	})
	if err != nil {
		return fmt.Errorf("postgres: delete message %q: %w", id, err)
	}
	if n == 0 {
		return fmt.Errorf("postgres: delete message %q: %w", id, store.ErrNotFound)
	}
	return nil
}
