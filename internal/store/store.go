// Package store is Parley's durable state behind one interface, with an
// embedded SQLite implementation (the default, pure Go, WAL mode) and a
// PostgreSQL implementation for cluster mode. Both pass the same test suite
// (storetest).
package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// Errors every implementation returns (wrapped or bare) so callers can use
// errors.Is.
var (
	ErrNotFound = errors.New("not found")
	ErrConflict = errors.New("conflict") // unique key taken (username, room id), or version already written
	// ErrRefreshTokenReused wraps ErrNotFound: the refresh token was already
	// used (or revoked by logout). Its owner is returned with it so that the
	// caller can revoke the user's other tokens (the token may be stolen).
	ErrRefreshTokenReused = fmt.Errorf("refresh token reused: %w", ErrNotFound)
)

// DocUpdate is one accepted JSON Patch batch of a room's storage document.
type DocUpdate struct {
	RoomID   string          `json:"-"`
	Version  int64           `json:"version"`
	ClientID string          `json:"client_id"`
	Ops      json.RawMessage `json:"ops"`
	// Snapshot, when non-nil, is the whole document as of Version. The store
	// replaces the room's snapshot with it in the same transaction and may
	// then delete updates with version <= Version-KeepUpdates.
	Snapshot json.RawMessage `json:"-"`
	// KeepUpdates is how many updates at or below a new Snapshot's version
	// to keep for catch-up; older ones are deleted. Ignored without Snapshot.
	KeepUpdates int64 `json:"-"`
}

// Document is a room's latest snapshot plus the updates written after it.
// Replaying Updates over Data (in order) gives the current document.
type Document struct {
	Version int64           // version of Data
	Data    json.RawMessage // "{}" for a room never written
	Updates []DocUpdate     // versions Version+1 .. current, in order, no gaps
}

// User is an account; users known only from backend-minted tokens have no row.
type User struct {
	ID           string    `json:"id"`
	Username     string    `json:"username"`
	DisplayName  string    `json:"display_name"`
	PasswordHash string    `json:"-"`
	CreatedAt    time.Time `json:"created_at"`
}

// RefreshToken is stored by the SHA-256 hash of the opaque token.
type RefreshToken struct {
	Hash      string
	UserID    string
	ExpiresAt time.Time
	CreatedAt time.Time
}

// Room is a room record created through REST (live rooms joined over the
// WebSocket need no record).
type Room struct {
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	Open      bool      `json:"open"`
	OwnerID   string    `json:"owner_id"`
	CreatedAt time.Time `json:"created_at"`
}

// Message is one chat message. IDs are UUIDv7 strings: they sort by time.
type Message struct {
	ID        string     `json:"id"`
	RoomID    string     `json:"room_id"`
	AuthorID  string     `json:"author_id"`
	Content   string     `json:"content"`
	Nonce     string     `json:"nonce,omitempty"`
	CreatedAt time.Time  `json:"created_at"`
	UpdatedAt *time.Time `json:"updated_at,omitempty"`
	DeletedAt *time.Time `json:"-"`
}

// Store is everything Parley keeps on disk. Every method is safe for
// concurrent use. Methods that block take a context.
type Store interface {
	// --- room storage documents ---

	// LoadDocument returns the room's snapshot and the updates after it.
	// A room never written is version 0 with data {} and no updates.
	LoadDocument(ctx context.Context, roomID string) (Document, error)
	// AppendUpdates writes all updates (of any rooms) in ONE transaction
	// and returns only after it is durable (fsync'd). Updates of one room
	// arrive in version order with no gaps; an update whose (room, version)
	// already exists fails the whole call with ErrConflict.
	AppendUpdates(ctx context.Context, updates []DocUpdate) error
	// UpdatesSince returns the room's updates with version > since, in
	// order, or ok=false when some of them are no longer kept.
	UpdatesSince(ctx context.Context, roomID string, since int64) (updates []DocUpdate, ok bool, err error)

	// --- users, refresh tokens, user status ---

	CreateUser(ctx context.Context, u User) error // ErrConflict when the username is taken
	UserByUsername(ctx context.Context, username string) (User, error)
	UserByID(ctx context.Context, id string) (User, error)

	CreateRefreshToken(ctx context.Context, t RefreshToken) error
	// ConsumeRefreshToken atomically marks the token used and returns it.
	// A token never issued is ErrNotFound; an expired one is consumed and
	// reported as ErrNotFound; one already used is ErrRefreshTokenReused
	// (which is also ErrNotFound), returned with the token's UserID.
	ConsumeRefreshToken(ctx context.Context, hash string, now time.Time) (RefreshToken, error)
	// RevokeRefreshTokens deletes every refresh token of the user.
	RevokeRefreshTokens(ctx context.Context, userID string) error
	// DeleteRefreshToken deletes one token (logout); unknown is not an error.
	DeleteRefreshToken(ctx context.Context, hash string) error
	// DeleteExpiredRefreshTokens removes tokens (used or not) that expired
	// at or before now and returns how many.
	DeleteExpiredRefreshTokens(ctx context.Context, now time.Time) (int64, error)

	// SetUserStatus stores the user's chosen status (online, idle, dnd,
	// invisible, offline); GetUserStatus returns "" when never set.
	SetUserStatus(ctx context.Context, userID, status string) error
	GetUserStatus(ctx context.Context, userID string) (string, error)

	// --- rooms and membership ---

	CreateRoom(ctx context.Context, r Room) error // creator is added as member; ErrConflict when the id exists
	GetRoom(ctx context.Context, id string) (Room, error)
	RoomsOfUser(ctx context.Context, userID string) ([]Room, error)
	AddMember(ctx context.Context, roomID, userID string) error    // idempotent
	RemoveMember(ctx context.Context, roomID, userID string) error // idempotent
	IsMember(ctx context.Context, roomID, userID string) (bool, error)
	Members(ctx context.Context, roomID string) ([]string, error)

	// --- messages ---

	CreateMessage(ctx context.Context, m Message) error
	GetMessage(ctx context.Context, roomID, id string) (Message, error) // deleted messages are ErrNotFound
	// ListMessages returns up to limit non-deleted messages of the room with
	// id < before (all when before is ""), newest first.
	ListMessages(ctx context.Context, roomID, before string, limit int) ([]Message, error)
	UpdateMessage(ctx context.Context, roomID, id, content string, at time.Time) (Message, error)
	DeleteMessage(ctx context.Context, roomID, id string, at time.Time) error // soft delete

	// Ping checks the store is usable (for /healthz).
	Ping(ctx context.Context) error
	// Close flushes and closes the store.
	Close() error
}
