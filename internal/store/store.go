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
	// ErrFenced: a room's update or Fence carried an epoch lower than the
	// room's stored epoch, so a newer owner holds the room (see
	// Documents.Fence). The caller lost the room; retrying cannot succeed.
	ErrFenced = errors.New("fenced: a newer owner epoch holds the room")
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
	// Epoch is the writer's ownership epoch of the room (a fencing token,
	// at most MaxEpoch): the store refuses the update (ErrFenced) when the
	// room's stored epoch is greater, and raises it when Epoch is greater.
	// 0 is a single node's: it passes on a room never fenced. Not stored
	// with the update (loaded updates have Epoch 0).
	Epoch uint64 `json:"-"`
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

// Store is everything Parley keeps on disk: every part below in one value,
// which the implementations provide, the server wires and the conformance
// suite (storetest) checks. Consumers take the smallest part they need
// (Documents, Accounts, Statuses, RoomReader or RoomRecords, Messages,
// Pinger; the Committer an Appender). Every method is safe for concurrent
// use. Methods that block take a context.
type Store interface {
	Documents
	Accounts
	Statuses
	RoomRecords
	Messages
	Pinger
	// Close flushes and closes the store.
	Close() error
}

// Appender writes room document updates: all the Committer needs.
type Appender interface {
	// AppendUpdates is Documents.AppendUpdates.
	AppendUpdates(ctx context.Context, updates []DocUpdate) error
}

// Documents is the rooms' storage documents: what a room's owner loads,
// commits and serves catch-up from, and the fencing of deposed owners.
type Documents interface {
	// LoadDocument returns the room's snapshot and the updates after it.
	// A room never written is version 0 with data {} and no updates.
	// Loaded updates have Epoch 0 (epochs are kept per room, not per
	// update).
	LoadDocument(ctx context.Context, roomID string) (Document, error)
	// AppendUpdates writes all updates (of any rooms) in ONE transaction
	// and returns only after it is durable (fsync'd). Updates of one room
	// arrive in version order with no gaps. The whole call fails, writing
	// nothing (epochs included), when any update fails:
	//   - ErrConflict: an update's (room, version) already exists (or is
	//     at or below the room's snapshot);
	//   - ErrFenced: an update's Epoch is lower than its room's stored
	//     epoch (see Fence), or lower than an earlier update of the same
	//     room in this call. When a call is both fenced and conflicting,
	//     either error may be reported; callers that must tell rooms apart
	//     write each room on its own (the Committer does).
	// An update whose Epoch is greater than its room's stored epoch raises
	// it, in the same transaction. Epoch 0 (single node) passes on a room
	// never fenced and stores nothing. An Epoch above MaxEpoch fails the
	// call with an error that is neither of the two.
	AppendUpdates(ctx context.Context, updates []DocUpdate) error
	// UpdatesSince returns the room's updates with version > since, in
	// order, or ok=false when some of them are no longer kept.
	UpdatesSince(ctx context.Context, roomID string, since int64) (updates []DocUpdate, ok bool, err error)
	// Fence raises the room's stored epoch to epoch, durably, so that a
	// deposed owner's later AppendUpdates with a lower epoch fail with
	// ErrFenced. A new owner calls it with its lease's epoch BEFORE
	// loading the room: whatever the old owner committed is then in what
	// it loads, and nothing the old owner commits afterwards is accepted.
	// Fencing with the stored epoch again is a no-op (nil); with a lower
	// one it fails with ErrFenced (a newer owner holds the room) and
	// changes nothing. An epoch above MaxEpoch is refused (not ErrFenced).
	// Fence waits for appends of the room in flight, so they are ordered
	// before it (and loaded) or after it (and refused); the one exception
	// is PostgreSQL's epoch-0 updates of a room never fenced, which lock
	// nothing (see postgres.Store.AppendUpdates).
	Fence(ctx context.Context, roomID string, epoch uint64) error
	// Claim makes the caller the room's newest owner: it raises the
	// room's stored epoch by one (from 0 for a room never fenced) and
	// returns it, durably, in one statement, with the same ordering
	// against appends in flight as Fence. The store, not NATS, is the
	// source of the epoch, so it keeps growing when the cluster's lease
	// bucket is lost or recreated (its revisions start again at 1). A
	// cluster owner calls it before loading the room and commits with
	// the returned epoch.
	Claim(ctx context.Context, roomID string) (uint64, error)
}

// Accounts is user accounts and their refresh tokens (REST accounts, the
// server's expiry sweep).
type Accounts interface {
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
}

// Statuses is the users' chosen statuses (chat presence).
type Statuses interface {
	// SetUserStatus stores the user's chosen status (online, idle, dnd,
	// invisible, offline); GetUserStatus returns "" when never set.
	SetUserStatus(ctx context.Context, userID, status string) error
	GetUserStatus(ctx context.Context, userID string) (string, error)
}

// RoomReader reads room records and their stored membership (chat, the
// access policy).
type RoomReader interface {
	GetRoom(ctx context.Context, id string) (Room, error) // ErrNotFound when none
	RoomsOfUser(ctx context.Context, userID string) ([]Room, error)
	IsMember(ctx context.Context, roomID, userID string) (bool, error)
	Members(ctx context.Context, roomID string) ([]string, error)
}

// RoomRecords is room records and membership, read and written (the REST
// rooms endpoints).
type RoomRecords interface {
	RoomReader
	CreateRoom(ctx context.Context, r Room) error                  // creator is added as member; ErrConflict when the id exists
	AddMember(ctx context.Context, roomID, userID string) error    // idempotent
	RemoveMember(ctx context.Context, roomID, userID string) error // idempotent
}

// Messages is the rooms' chat messages.
type Messages interface {
	CreateMessage(ctx context.Context, m Message) error
	GetMessage(ctx context.Context, roomID, id string) (Message, error) // deleted messages are ErrNotFound
	// ListMessages returns up to limit non-deleted messages of the room with
	// id < before (all when before is ""), newest first.
	ListMessages(ctx context.Context, roomID, before string, limit int) ([]Message, error)
	UpdateMessage(ctx context.Context, roomID, id, content string, at time.Time) (Message, error)
	DeleteMessage(ctx context.Context, roomID, id string, at time.Time) error // soft delete
}

// Pinger checks the store is usable (for /healthz).
type Pinger interface {
	Ping(ctx context.Context) error
}
