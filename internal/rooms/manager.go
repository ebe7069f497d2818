// Package rooms implements live rooms (the room-management design):
// a Manager holds the live Rooms; a Room holds its clients (one per joined
// connection), their presence, and the room's storage document.
//
// Storage ordering and durability: a room's batches are applied one at a
// time under the room's lock against the "head" document, given the next
// version and submitted to the group Committer without waiting. The
// Committer calls back in submission order once each batch is durable; only
// then does the room advance its "committed" document and tell anyone
// (sender included). Joiners see the committed document, never the head, so
// no client ever hears of a batch that is not on disk. Many rooms proceed in
// parallel: there is no global lock on the hot path.
package rooms

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"sync"

	"github.com/parleyhq/parley/internal/access"
	"github.com/parleyhq/parley/internal/gateway"
	"github.com/parleyhq/parley/internal/jsonpatch"
	"github.com/parleyhq/parley/internal/metrics"
	"github.com/parleyhq/parley/internal/protocol"
	"github.com/parleyhq/parley/internal/store"
)

// Options are the room limits (from config).
type Options struct {
	PresenceMaxBytes int
	StorageMaxBytes  int
	StorageMaxOps    int
	StorageMaxDepth  int
	KeepUpdates      int // recent updates kept in memory (and on disk) for catch-up
	// KeepUpdatesBytes bounds the same in-memory replay in bytes (see
	// updateCost); <= 0 means DefaultKeepUpdatesBytes.
	KeepUpdatesBytes int
	SnapshotEvery    int // write a full snapshot every N versions
	MaxRoomsPerConn  int // rooms one connection may be in at once (0 = no limit)
}

// DefaultKeepUpdatesBytes is Options.KeepUpdatesBytes when unset (1 MiB,
// the default of --storage-keep-updates-bytes).
const DefaultKeepUpdatesBytes = 1 << 20

// Access is the access policy rooms ask (access.Policy): every action a
// subject may take in a room. Join needs access.Read, room:update_presence
// access.Presence, room:update_storage and room:broadcast access.Write
// (PROTOCOL.md v1.1 §4; the table is in internal/access).
type Access interface {
	Grants(ctx context.Context, sub access.Subject, roomID string) (access.Set, error)
}

// Manager owns the live rooms of this node.
type Manager struct {
	opts      Options
	limits    jsonpatch.Limits
	store     store.Store
	committer *store.Committer
	access    Access
	metrics   *metrics.Metrics
	log       *slog.Logger

	mu    sync.Mutex
	rooms map[string]*Room

	connMu    sync.Mutex
	connRooms map[string]map[string]*Room // connection id → rooms it is in
}

// NewManager creates a manager writing storage through committer.
func NewManager(opts Options, st store.Store, committer *store.Committer, acc Access, m *metrics.Metrics, log *slog.Logger) *Manager {
	if opts.KeepUpdatesBytes <= 0 {
		opts.KeepUpdatesBytes = DefaultKeepUpdatesBytes
	}
	return &Manager{
		opts: opts, store: st, committer: committer, access: acc, metrics: m, log: log,
		limits: jsonpatch.Limits{MaxOps: opts.StorageMaxOps, MaxDepth: opts.StorageMaxDepth, MaxBytes: opts.StorageMaxBytes,
			RejectInvalidText: true, RejectDuplicateNames: true},
		rooms:     map[string]*Room{},
		connRooms: map[string]map[string]*Room{},
	}
}

// LiveRooms is the number of rooms in memory.
func (m *Manager) LiveRooms() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.rooms)
}

// TrackedConnections is the number of connections that are in at least
// one room (for leak tests and metrics).
func (m *Manager) TrackedConnections() int {
	m.connMu.Lock()
	defer m.connMu.Unlock()
	return len(m.connRooms)
}

// acquire returns the loaded live room, creating and loading it when
// needed. The caller holds a reference (ref) that keeps the room in memory
// and must call release.
func (m *Manager) acquire(ctx context.Context, roomID string) (*Room, error) {
	m.mu.Lock()
	r := m.rooms[roomID]
	if r == nil {
		r = newRoom(m, roomID)
		m.rooms[roomID] = r
	}
	r.refs++
	m.mu.Unlock()

	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.loaded {
		if err := r.load(ctx); err != nil {
			r.mu.Unlock()
			m.release(r)
			r.mu.Lock()
			return nil, err
		}
	}
	return r, nil
}

// release drops a reference; a room with no references, no clients and no
// pending commits leaves memory (its storage stays on disk).
func (m *Manager) release(r *Room) {
	m.mu.Lock()
	r.refs--
	m.maybeUnloadLocked(r)
	m.mu.Unlock()
}

// maybeUnloadLocked needs m.mu.
func (m *Manager) maybeUnloadLocked(r *Room) {
	if r.refs > 0 {
		return
	}
	r.mu.Lock()
	idle := (len(r.clients) == 0 || r.broken) && r.pending == 0
	r.mu.Unlock()
	if idle && m.rooms[r.id] == r {
		delete(m.rooms, r.id)
	}
}

func (m *Manager) trackConn(connID string, r *Room, in bool) {
	m.connMu.Lock()
	defer m.connMu.Unlock()
	set := m.connRooms[connID]
	if in {
		if set == nil {
			set = map[string]*Room{}
			m.connRooms[connID] = set
		}
		set[r.id] = r
		return
	}
	delete(set, r.id)
	if len(set) == 0 {
		delete(m.connRooms, connID)
	}
}

func (m *Manager) roomsOfConn(connID string) int {
	m.connMu.Lock()
	defer m.connMu.Unlock()
	return len(m.connRooms[connID])
}

func (m *Manager) roomOfConn(connID, roomID string) *Room {
	m.connMu.Lock()
	defer m.connMu.Unlock()
	return m.connRooms[connID][roomID]
}

// Handle dispatches the room:* messages of one connection.
func (m *Manager) Handle(ctx context.Context, s gateway.Session, env protocol.Envelope) error {
	switch env.Type {
	case protocol.TypeRoomJoin:
		return m.join(ctx, s, env)
	case protocol.TypeRoomLeave:
		return m.leave(s, env)
	case protocol.TypeRoomUpdatePresence:
		return m.updatePresence(s, env)
	case protocol.TypeRoomUpdateStorage:
		return m.updateStorage(s, env)
	case protocol.TypeRoomBroadcast:
		return m.broadcast(s, env)
	}
	return protocol.Errorf(protocol.CodeBadRequest, "unknown message type %q", env.Type)
}

// Connected implements gateway.Lifecycle.
func (m *Manager) Connected(gateway.Session, bool) {}

// Disconnected removes the connection from every room it was in.
func (m *Manager) Disconnected(s gateway.Session, _ bool) {
	m.connMu.Lock()
	set := m.connRooms[s.ID()]
	delete(m.connRooms, s.ID())
	m.connMu.Unlock()
	for _, r := range set {
		m.removeClient(r, s.ID(), "")
	}
}

func validRoom(id string) error { return protocol.CheckRoomID("room_id", id) }

// subject is the access subject of a session.
func subject(s gateway.Session) access.Subject {
	sub := access.User(s.Claims())
	sub.UserID = s.UserID()
	return sub
}

// permsFor asks the policy what s may do in roomID.
func (m *Manager) permsFor(ctx context.Context, s gateway.Session, roomID string) (access.Set, error) {
	return m.access.Grants(ctx, subject(s), roomID)
}

// HasState reports whether the room is live on this node: a client in it
// or a storage batch still being committed (an access.StateProbe for
// PROTOCOL.md v1.1 §7: such an id cannot be claimed by POST /api/rooms).
func (m *Manager) HasState(_ context.Context, roomID string) (bool, error) {
	m.mu.Lock()
	r := m.rooms[roomID]
	m.mu.Unlock()
	if r == nil {
		return false, nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.clients) > 0 || r.pending > 0 || r.headVer > 0, nil
}

// RefreshUser re-evaluates the permissions of the user's clients in the
// room (after a membership change): clients that lost read access are
// removed at once (everyone, the client included, gets room:left), others
// get their new permissions. A store failure removes the client too: a
// removal must never leave a capability behind.
func (m *Manager) RefreshUser(ctx context.Context, roomID, userID string) {
	m.mu.Lock()
	r := m.rooms[roomID]
	if r != nil {
		r.refs++
	}
	m.mu.Unlock()
	if r == nil {
		return
	}
	defer m.release(r)
	r.mu.Lock()
	var affected []*client
	for _, c := range r.order {
		if c.session.UserID() == userID {
			affected = append(affected, c)
		}
	}
	r.mu.Unlock()
	for _, c := range affected {
		p, err := m.permsFor(ctx, c.session, roomID)
		if err != nil {
			m.log.Warn("refresh permissions", "room", roomID, "user", userID, "err", err)
			p = 0
		}
		if p&access.Read == 0 {
			m.trackConn(c.session.ID(), r, false)
			m.removeClient(r, c.session.ID(), "")
			continue
		}
		r.mu.Lock()
		c.perms = p
		r.mu.Unlock()
	}
}

var errNotInRoom = func(roomID string) *protocol.Error {
	return protocol.Errorf(protocol.CodeNotFound, "not in room %s: send room:join first", roomID)
}

// mapPatchError turns a jsonpatch error into a protocol error.
func mapPatchError(err error) *protocol.Error {
	switch {
	case errors.Is(err, jsonpatch.ErrTestFailed):
		return protocol.Errorf(protocol.CodeTestFailed, "%s", err.Error())
	case errors.Is(err, jsonpatch.ErrTooLarge):
		return protocol.Errorf(protocol.CodeTooLarge, "%s", err.Error())
	case errors.Is(err, jsonpatch.ErrInvalid):
		return protocol.Errorf(protocol.CodeBadRequest, "%s", err.Error())
	}
	return protocol.Errorf(protocol.CodeInternal, "patch failed")
}

func compactJSON(raw json.RawMessage) json.RawMessage {
	var out bytes.Buffer
	out.Grow(len(raw))
	if err := json.Compact(&out, raw); err != nil {
		return raw
	}
	return out.Bytes()
}
