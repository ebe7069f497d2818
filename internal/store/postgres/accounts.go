package postgres

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/parleyhq/parley/internal/store"
)

// CreateUser inserts u; ErrConflict when its id or (case-insensitively) its
// username is taken.
func (s *Store) CreateUser(ctx context.Context, u store.User) error {
	err := s.withConn(ctx, func(c *pgx.Conn) error {
		_, err := c.Exec(ctx, `INSERT INTO users (id, username, username_lower, display_name, password_hash, created_at)
			VALUES ($1, $2, $3, $4, $5, $6)`,
			u.ID, u.Username, strings.ToLower(u.Username), u.DisplayName, u.PasswordHash, u.CreatedAt)
		return err
	})
	if err != nil {
		return fmt.Errorf("postgres: create user %q: %w", u.Username, mapErr(err))
	}
	return nil
}

// UserByUsername finds a user by username, case-insensitively.
func (s *Store) UserByUsername(ctx context.Context, username string) (store.User, error) {
	return s.user(ctx, "username_lower", strings.ToLower(username))
}

// UserByID finds a user by id.
func (s *Store) UserByID(ctx context.Context, id string) (store.User, error) {
	return s.user(ctx, "id", id)
}

func (s *Store) user(ctx context.Context, column, value string) (store.User, error) {
	var u store.User
	err := s.withConn(ctx, func(c *pgx.Conn) error {
		return c.QueryRow(ctx, `SELECT id, username, display_name, password_hash, created_at
			FROM users WHERE `+column+` = $1`, value).Scan(&u.ID, &u.Username, &u.DisplayName, &u.PasswordHash, &u.CreatedAt)
	})
	if errors.Is(err, pgx.ErrNoRows) {
		return store.User{}, fmt.Errorf("postgres: user %s %q: %w", column, value, store.ErrNotFound)
	}
	if err != nil {
		return store.User{}, fmt.Errorf("postgres: user %s %q: %w", column, value, err)
	}
	u.CreatedAt = u.CreatedAt.UTC()
	return u, nil
}

// CreateRefreshToken stores t; ErrConflict when its hash exists.
func (s *Store) CreateRefreshToken(ctx context.Context, t store.RefreshToken) error {
	err := s.withConn(ctx, func(c *pgx.Conn) error {
		_, err := c.Exec(ctx, `INSERT INTO refresh_tokens (hash, user_id, expires_at, created_at) VALUES ($1, $2, $3, $4)`,
			t.Hash, t.UserID, t.ExpiresAt, t.CreatedAt)
		return err
	})
	if err != nil {
		return fmt.Errorf("postgres: create refresh token: %w", mapErr(err))
	}
	return nil
}

// DeleteExpiredRefreshTokens implements store.Store.
func (s *Store) DeleteExpiredRefreshTokens(ctx context.Context, now time.Time) (int64, error) {
	var n int64
	err := s.withConn(ctx, func(c *pgx.Conn) error {
		tag, err := c.Exec(ctx, `DELETE FROM refresh_tokens WHERE expires_at <= $1`, now.UTC())
		n = tag.RowsAffected()
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("postgres: delete expired refresh tokens: %w", err)
	}
	return n, nil
}

// ConsumeRefreshToken deletes the token and returns it, in one statement;
// ErrNotFound when it does not exist or had expired at now.
func (s *Store) ConsumeRefreshToken(ctx context.Context, hash string, now time.Time) (store.RefreshToken, error) {
	t := store.RefreshToken{Hash: hash}
	reused := false
	err := s.withConn(ctx, func(c *pgx.Conn) error {
		err := c.QueryRow(ctx, `UPDATE refresh_tokens SET used_at = $2 WHERE hash = $1 AND used_at IS NULL
			RETURNING user_id, expires_at, created_at`, hash, now.UTC()).Scan(&t.UserID, &t.ExpiresAt, &t.CreatedAt)
		if !errors.Is(err, pgx.ErrNoRows) {
			return err
		}
		// Never issued, or used before: tell the two apart.
		err = c.QueryRow(ctx, `SELECT user_id FROM refresh_tokens WHERE hash = $1`, hash).Scan(&t.UserID)
		if err == nil {
			reused = true
		}
		return err
	})
	if errors.Is(err, pgx.ErrNoRows) {
		return store.RefreshToken{}, fmt.Errorf("postgres: refresh token: %w", store.ErrNotFound)
	}
	if err != nil {
		return store.RefreshToken{}, fmt.Errorf("postgres: consume refresh token: %w", err)
	}
	if reused {
		return store.RefreshToken{Hash: hash, UserID: t.UserID}, fmt.Errorf("postgres: %w", store.ErrRefreshTokenReused)
	}
	t.ExpiresAt, t.CreatedAt = t.ExpiresAt.UTC(), t.CreatedAt.UTC()
	if !now.Before(t.ExpiresAt) {
		return store.RefreshToken{}, fmt.Errorf("postgres: refresh token expired: %w", store.ErrNotFound)
	}
	return t, nil
}

// DeleteRefreshToken implements store.Store.
func (s *Store) DeleteRefreshToken(ctx context.Context, hash string) error {
	err := s.withConn(ctx, func(c *pgx.Conn) error {
		_, err := c.Exec(ctx, `DELETE FROM refresh_tokens WHERE hash = $1`, hash)
		return err
	})
	if err != nil {
		return fmt.Errorf("postgres: delete refresh token: %w", err)
	}
	return nil
}

// RevokeRefreshTokens implements store.Store.
func (s *Store) RevokeRefreshTokens(ctx context.Context, userID string) error {
	err := s.withConn(ctx, func(c *pgx.Conn) error {
		_, err := c.Exec(ctx, `DELETE FROM refresh_tokens WHERE user_id = $1`, userID)
		return err
	})
	if err != nil {
		return fmt.Errorf("postgres: revoke refresh tokens of %q: %w", userID, err)
	}
	return nil
}

// SetUserStatus stores the user's chosen status.
func (s *Store) SetUserStatus(ctx context.Context, userID, status string) error {
	err := s.withConn(ctx, func(c *pgx.Conn) error {
		_, err := c.Exec(ctx, `INSERT INTO user_status (user_id, status, updated_at) VALUES ($1, $2, now())
			ON CONFLICT (user_id) DO UPDATE SET status = excluded.status, updated_at = excluded.updated_at`, userID, status)
		return err
	})
	if err != nil {
		return fmt.Errorf("postgres: set status of %q: %w", userID, err)
	}
	return nil
}

// GetUserStatus returns the user's chosen status, "" when never set.
func (s *Store) GetUserStatus(ctx context.Context, userID string) (string, error) {
	var status string
	err := s.withConn(ctx, func(c *pgx.Conn) error {
		return c.QueryRow(ctx, `SELECT status FROM user_status WHERE user_id = $1`, userID).Scan(&status)
	})
	if errors.Is(err, pgx.ErrNoRows) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("postgres: status of %q: %w", userID, err)
	}
	return status, nil
}
