package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/parleyhq/parley/internal/store"
)

// CreateUser inserts u; ErrConflict when its id or (case-insensitively) its
// username is taken.
func (s *Store) CreateUser(ctx context.Context, u store.User) error {
	_, err := s.w.ExecContext(ctx, `INSERT INTO users (id, username, username_lower, display_name, password_hash, created_at)
		VALUES (?, ?, ?, ?, ?, ?)`,
		u.ID, u.Username, strings.ToLower(u.Username), u.DisplayName, u.PasswordHash, fmtTime(u.CreatedAt))
	if err != nil {
		return fmt.Errorf("sqlite: create user %q: %w", u.Username, mapErr(err))
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
	var (
		u       store.User
		created string
	)
	err := s.queryRow(ctx, `SELECT id, username, display_name, password_hash, created_at
		FROM users WHERE `+column+` = ?`, value).Scan(&u.ID, &u.Username, &u.DisplayName, &u.PasswordHash, &created)
	if errors.Is(err, sql.ErrNoRows) {
		return store.User{}, fmt.Errorf("sqlite: user %s %q: %w", column, value, store.ErrNotFound)
	}
	if err != nil {
		return store.User{}, fmt.Errorf("sqlite: user %s %q: %w", column, value, err)
	}
	if u.CreatedAt, err = parseTime(created); err != nil {
		return store.User{}, err
	}
	return u, nil
}

// CreateRefreshToken stores t; ErrConflict when its hash exists.
func (s *Store) CreateRefreshToken(ctx context.Context, t store.RefreshToken) error {
	_, err := s.w.ExecContext(ctx, `INSERT INTO refresh_tokens (hash, user_id, expires_at, created_at) VALUES (?, ?, ?, ?)`,
		t.Hash, t.UserID, fmtTime(t.ExpiresAt), fmtTime(t.CreatedAt))
	if err != nil {
		return fmt.Errorf("sqlite: create refresh token: %w", mapErr(err))
	}
	return nil
}

// ConsumeRefreshToken deletes the token and returns it, in one statement;
// ErrNotFound when it does not exist or had expired at now.
// DeleteExpiredRefreshTokens implements store.Store.
func (s *Store) DeleteExpiredRefreshTokens(ctx context.Context, now time.Time) (int64, error) {
	res, err := s.w.ExecContext(ctx, `DELETE FROM refresh_tokens WHERE expires_at <= ?`, fmtTime(now))
	if err != nil {
		return 0, fmt.Errorf("sqlite: delete expired refresh tokens: %w", err)
	}
	return res.RowsAffected()
}

func (s *Store) ConsumeRefreshToken(ctx context.Context, hash string, now time.Time) (store.RefreshToken, error) {
	t := store.RefreshToken{Hash: hash}
	var expires, created string
	err := s.w.QueryRowContext(ctx, `UPDATE refresh_tokens SET used_at = ? WHERE hash = ? AND used_at IS NULL
		RETURNING user_id, expires_at, created_at`, fmtTime(now), hash).Scan(&t.UserID, &expires, &created)
	if errors.Is(err, sql.ErrNoRows) {
		// Never issued, or used before: tell the two apart.
		err = s.w.QueryRowContext(ctx, `SELECT user_id FROM refresh_tokens WHERE hash = ?`, hash).Scan(&t.UserID)
		if errors.Is(err, sql.ErrNoRows) {
			return store.RefreshToken{}, fmt.Errorf("sqlite: refresh token: %w", store.ErrNotFound)
		}
		if err != nil {
			return store.RefreshToken{}, fmt.Errorf("sqlite: consume refresh token: %w", err)
		}
		return store.RefreshToken{Hash: hash, UserID: t.UserID}, fmt.Errorf("sqlite: %w", store.ErrRefreshTokenReused)
	}
	if err != nil {
		return store.RefreshToken{}, fmt.Errorf("sqlite: consume refresh token: %w", err)
	}
	if t.ExpiresAt, err = parseTime(expires); err != nil {
		return store.RefreshToken{}, err
	}
	if t.CreatedAt, err = parseTime(created); err != nil {
		return store.RefreshToken{}, err
	}
	if !now.Before(t.ExpiresAt) {
		return store.RefreshToken{}, fmt.Errorf("sqlite: refresh token expired: %w", store.ErrNotFound)
	}
	return t, nil
}

// DeleteRefreshToken implements store.Store.
func (s *Store) DeleteRefreshToken(ctx context.Context, hash string) error {
	if _, err := s.w.ExecContext(ctx, `DELETE FROM refresh_tokens WHERE hash = ?`, hash); err != nil {
		return fmt.Errorf("sqlite: delete refresh token: %w", err)
	}
	return nil
}

// RevokeRefreshTokens implements store.Store.
func (s *Store) RevokeRefreshTokens(ctx context.Context, userID string) error {
	if _, err := s.w.ExecContext(ctx, `DELETE FROM refresh_tokens WHERE user_id = ?`, userID); err != nil {
		return fmt.Errorf("sqlite: revoke refresh tokens of %q: %w", userID, err)
	}
	return nil
}

// SetUserStatus stores the user's chosen status.
func (s *Store) SetUserStatus(ctx context.Context, userID, status string) error {
	_, err := s.w.ExecContext(ctx, `INSERT INTO user_status (user_id, status, updated_at) VALUES (?, ?, ?)
		ON CONFLICT (user_id) DO UPDATE SET status = excluded.status, updated_at = excluded.updated_at`,
		userID, status, fmtTime(time.Now()))
	if err != nil {
		return fmt.Errorf("sqlite: set status of %q: %w", userID, err)
	}
	return nil
}

// GetUserStatus returns the user's chosen status, "" when never set.
func (s *Store) GetUserStatus(ctx context.Context, userID string) (string, error) {
	var status string
	err := s.queryRow(ctx, `SELECT status FROM user_status WHERE user_id = ?`, userID).Scan(&status)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("sqlite: status of %q: %w", userID, err)
	}
	return status, nil
}
