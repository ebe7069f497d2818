// Package rooms implements live rooms (PROTOCOL.md v1.1 §3): membership,
// per-connection presence, broadcasts and a versioned JSON document per
// room.
//
// One node orders each live room: its owner (room.go). On a single node
// that is always this node; in a cluster (cluster.go) it is the holder of
// the room's lease, and the other nodes with clients in the room forward
// their clients' requests to it and deliver its published events to their
// clients. The package reaches connections only through the Session and
// Sink interfaces below: it does not know the gateway.
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
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/parleyhq/parley/internal/access"
	"github.com/parleyhq/parley/internal/auth"
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
	// Large rooms (large.go): above LargeRoomMembers members (0 =
	// DefaultLargeRoomMembers) room:state lists a first page and joins and
	// leaves go out as room:members_changed every LargeRoomInterval (0 =
	// DefaultLargeRoomInterval); with PresenceCoalesce, presence to the
	// others goes out as room:presence_batch on the same tick.
	LargeRoomMembers  int
	LargeRoomInterval time.Duration
	PresenceCoalesce  bool
	// Events, when set, gets the room webhook events at each room's owner
	// (api.go).
	Events Events
}

// DefaultKeepUpdatesBytes is Options.KeepUpdatesBytes when unset (1 MiB,
// the default of --storage-keep-updates-bytes).
const DefaultKeepUpdatesBytes = 1 << 20

// Access is the access policy rooms ask (access.Policy): every action a
// subject may take in a room. Join needs access.Read, room:update_presence
// access.Presence, room:update_storage and room:broadcast access.Write
// (PROTOCOL.md v1.1 §4; the table is in internal/access).
type Access interface {
	// GrantsOf returns the actions of want that sub may take in roomID
	// (access.Policy.GrantsOf, which reads the store only when the token
	// alone does not grant them all).
	GrantsOf(ctx context.Context, sub access.Subject, roomID string, want access.Set) (access.Set, error)
}

// Documents is what rooms reads from the store (writes go through the
// Committer): a room's document, its kept updates, and the claim that
// gives a new owner the epoch only it may commit with (store.Documents).
type Documents interface {
	LoadDocument(ctx context.Context, roomID string) (store.Document, error)
	UpdatesSince(ctx context.Context, roomID string, since int64) ([]store.DocUpdate, bool, error)
	Claim(ctx context.Context, roomID string) (uint64, error)
}

// Committer queues storage updates for durable group commits
// (store.Committer).
type Committer interface {
	Submit(u store.DocUpdate, done func(error))
}

// Session is a connection as rooms sees it (a gateway session satisfies
// it): who it is, and a Sink for its frames.
type Session interface {
	Sink
	ID() string
	UserID() string
	Name() string
	Claims() *auth.Claims
}

// Manager owns the live rooms of this node.
type Manager struct {
	opts      Options
	limits    jsonpatch.Limits
	store     Documents
	committer Committer
	access    Access
	metrics   *metrics.Metrics
	log       *slog.Logger
	cl        Cluster // nil on a single node

	mu    sync.Mutex
	rooms map[string]*Room // rooms this node owns and has in memory

	connMu    sync.Mutex
	connRooms map[string]map[string]struct{} // connection id → rooms it is in

	// cluster only (cluster.go)
	edgeMu      sync.Mutex
	edges       map[string]*edge // rooms with clients on this node
	subMu       sync.Mutex
	subbed      map[string]bool
	callMu      sync.Mutex
	nextCall    uint64
	calls       map[uint64]chan nodeMsg
	resolveMu   [64]sync.Mutex // stripes: one resolve per room at a time (cluster.go)
	adopting    sync.Map       // room id → adoption of a stale lease under way (handler.go)
	draining    atomic.Bool
	syncTimeout time.Duration
}

// NewManager creates a manager writing storage through committer. cl is
// nil on a single node; in a cluster the manager installs itself as cl's
// handler.
func NewManager(opts Options, st Documents, committer Committer, acc Access, m *metrics.Metrics, log *slog.Logger, cl Cluster) *Manager {
	if opts.KeepUpdatesBytes <= 0 {
		opts.KeepUpdatesBytes = DefaultKeepUpdatesBytes
	}
	mgr := &Manager{
		opts: opts, store: st, committer: committer, access: acc, metrics: m, log: log, cl: cl,
		limits: jsonpatch.Limits{MaxOps: opts.StorageMaxOps, MaxDepth: opts.StorageMaxDepth, MaxBytes: opts.StorageMaxBytes,
			RejectInvalidText: true, RejectDuplicateNames: true},
		rooms:     map[string]*Room{},
		connRooms: map[string]map[string]struct{}{},
		edges:     map[string]*edge{},
		subbed:    map[string]bool{},
		calls:     map[uint64]chan nodeMsg{},

		syncTimeout: DefaultSyncTimeout,
	}
	if cl != nil {
		cl.SetHandler(mgr)
	}
	return mgr
}

// LiveRooms is the number of rooms this node owns and has in memory.
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

func (m *Manager) nodeID() string {
	if m.cl == nil {
		return ""
	}
	return m.cl.NodeID()
}

// acquire returns the loaded live room owned by this node, creating and
// loading it when needed (single node). The caller holds a reference (ref)
// that keeps the room in memory and must call release.
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

// maybeUnloadLocked needs m.mu. In a cluster the room's lease is released
// with it.
func (m *Manager) maybeUnloadLocked(r *Room) {
	if r.refs > 0 {
		return
	}
	r.mu.Lock()
	idle := (len(r.clients) == 0 || r.broken || r.gone) && r.pending == 0
	lease, gone := r.lease, r.gone
	r.mu.Unlock()
	if idle && m.rooms[r.id] == r {
		delete(m.rooms, r.id)
		if m.cl != nil && !gone {
			m.releaseLease(r.id, lease)
		}
	}
}

func (m *Manager) maybeUnload(r *Room) {
	m.mu.Lock()
	m.maybeUnloadLocked(r)
	m.mu.Unlock()
}

// owned returns the room if this node owns it (under lease, when l is not
// nil) with a reference held, or nil.
func (m *Manager) owned(roomID string, l *Lease) *Room {
	m.mu.Lock()
	r := m.rooms[roomID]
	if r == nil {
		m.mu.Unlock()
		return nil
	}
	r.refs++
	m.mu.Unlock()
	r.mu.Lock()
	ok := r.loaded && !r.gone && (l == nil || r.lease == *l)
	r.mu.Unlock()
	if !ok {
		m.release(r)
		return nil
	}
	return r
}

func (m *Manager) track(connID, roomID string) {
	m.connMu.Lock()
	defer m.connMu.Unlock()
	set := m.connRooms[connID]
	if set == nil {
		set = map[string]struct{}{}
		m.connRooms[connID] = set
	}
	set[roomID] = struct{}{}
}

func (m *Manager) untrack(connID, roomID string) {
	m.connMu.Lock()
	defer m.connMu.Unlock()
	set := m.connRooms[connID]
	delete(set, roomID)
	if len(set) == 0 {
		delete(m.connRooms, connID)
	}
}

func (m *Manager) isIn(connID, roomID string) bool {
	m.connMu.Lock()
	defer m.connMu.Unlock()
	_, ok := m.connRooms[connID][roomID]
	return ok
}

func (m *Manager) roomsOfConn(connID string) int {
	m.connMu.Lock()
	defer m.connMu.Unlock()
	return len(m.connRooms[connID])
}

// Handle dispatches the room:* messages of one connection.
func (m *Manager) Handle(ctx context.Context, s Session, env protocol.Envelope) error {
	switch env.Type {
	case protocol.TypeRoomJoin:
		return m.join(ctx, s, env)
	case protocol.TypeRoomLeave:
		d, perr := decodeLeave(env.Data)
		if perr != nil {
			return perr
		}
		if !m.isIn(s.ID(), d.RoomID) {
			return errNotInRoom(d.RoomID)
		}
		m.leave(s, d.RoomID, env.ID)
		return nil
	case protocol.TypeRoomUpdatePresence:
		roomID, patch, perr := decodePresence(env.Data, m.opts.PresenceMaxBytes)
		if perr != nil {
			return perr
		}
		return m.route(s, roomID, env.ID, nodeMsg{Kind: kindPresence, Presence: patch}, func(r *Room, o origin) *protocol.Error {
			r.mu.Lock()
			merged, err := r.updatePresence(o, patch)
			r.mu.Unlock()
			if err == nil && m.cl != nil {
				m.setLocalPresence(r.id, o.conn, merged)
			}
			return err
		})
	case protocol.TypeRoomUpdateStorage:
		d, ops, perr := decodeStorage(env.Data, m.limits)
		if perr != nil {
			return perr
		}
		return m.route(s, d.RoomID, env.ID, nodeMsg{Kind: kindStorage, Ops: d.Ops, Base: d.BaseVersion}, func(r *Room, o origin) *protocol.Error {
			return m.submitOps(r, o, o.conn, ops, d.Ops, d.BaseVersion, nil)
		})
	case protocol.TypeRoomMembers:
		d, limit, perr := decodeMembers(env.Data, m.pageSize())
		if perr != nil {
			return perr
		}
		return m.route(s, d.RoomID, env.ID, nodeMsg{Kind: kindMembers, After: d.After, Limit: limit}, func(r *Room, o origin) *protocol.Error {
			r.mu.Lock()
			defer r.mu.Unlock()
			return r.membersPage(o, d.After, limit)
		})
	case protocol.TypeRoomBroadcast:
		d, perr := decodeBroadcast(env.Data)
		if perr != nil {
			return perr
		}
		return m.route(s, d.RoomID, env.ID, nodeMsg{Kind: kindEvent, Event: d.Event}, func(r *Room, o origin) *protocol.Error {
			r.mu.Lock()
			defer r.mu.Unlock()
			return r.broadcast(o, d.Event)
		})
	}
	return protocol.Errorf(protocol.CodeBadRequest, "unknown message type %q", env.Type)
}

func localOrigin(s Session, reqID string) origin {
	return origin{conn: s.ID(), user: s.UserID(), name: s.Name(), sink: s, reqID: reqID}
}

// route runs a request of a client that is in roomID at the room's owner:
// here (local), or by sending msg to the owner's node.
func (m *Manager) route(s Session, roomID, reqID string, msg nodeMsg, local func(*Room, origin) *protocol.Error) error {
	if !m.isIn(s.ID(), roomID) {
		return errNotInRoom(roomID)
	}
	o := localOrigin(s, reqID)
	if m.cl == nil {
		r := m.owned(roomID, nil)
		if r == nil {
			return errNotInRoom(roomID)
		}
		defer m.release(r)
		if err := local(r, o); err != nil {
			return err
		}
		return nil
	}
	return m.routeCluster(s, roomID, reqID, msg, local)
}

// join handles room:join.
func (m *Manager) join(ctx context.Context, s Session, env protocol.Envelope) error {
	d, perr := decodeJoin(env.Data, m.opts.PresenceMaxBytes)
	if perr != nil {
		return perr
	}
	if max := m.opts.MaxRoomsPerConn; max > 0 && !m.isIn(s.ID(), d.RoomID) && m.roomsOfConn(s.ID()) >= max {
		return protocol.Errorf(protocol.CodeTooLarge, "a connection may be in at most %d rooms; leave one first", max)
	}
	perms, err := m.permsFor(ctx, s, d.RoomID)
	if err != nil {
		return fmt.Errorf("room access: %w", err)
	}
	need := access.Read
	if d.Presence != nil {
		need |= access.Presence
	}
	if err := access.Refusal(d.RoomID, perms, true, subject(s), need); err != nil {
		return err
	}
	if m.cl != nil {
		return m.joinCluster(ctx, s, env.ID, d, perms)
	}
	r, err := m.acquire(ctx, d.RoomID)
	if err != nil {
		return err
	}
	defer m.release(r)
	wasIn := m.isIn(s.ID(), d.RoomID)
	m.track(s.ID(), r.id) // before the client hears it is in
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.addClient(localOrigin(s, env.ID), perms, d.Presence, d.SinceVersion, false); err != nil {
		if !wasIn {
			m.untrack(s.ID(), r.id)
		}
		return err
	}
	return nil
}

// leave takes the connection out of roomID: everyone else gets room:left,
// the leaver its own copy carrying reqID.
func (m *Manager) leave(s Session, roomID, reqID string) {
	m.untrack(s.ID(), roomID)
	if m.cl != nil {
		m.leaveCluster(s, roomID, reqID)
		return
	}
	r := m.owned(roomID, nil)
	if r == nil {
		return
	}
	r.mu.Lock()
	r.removeLocked(s.ID(), reqID, leftByRequest)
	r.mu.Unlock()
	m.release(r)
}

// Connected is part of the gateway's lifecycle: nothing to do.
func (m *Manager) Connected(Session, bool) {}

// Disconnected removes the connection from every room it was in.
func (m *Manager) Disconnected(s Session, _ bool) {
	m.connMu.Lock()
	set := m.connRooms[s.ID()]
	delete(m.connRooms, s.ID())
	m.connMu.Unlock()
	for roomID := range set {
		m.leave(s, roomID, "")
	}
}

func validRoom(id string) error { return protocol.CheckRoomID("room_id", id) }

// subject is the access subject of a session.
func subject(s Session) access.Subject {
	sub := access.User(s.Claims())
	sub.UserID = s.UserID()
	return sub
}

// roomActions are the actions rooms checks (join, clientWith).
const roomActions = access.Read | access.Presence | access.Write

// permsFor asks the policy which room actions s may take in roomID. This
// runs on every join; the policy answers from the token alone when it
// grants all three (GrantsOf), sparing a store read per join.
func (m *Manager) permsFor(ctx context.Context, s Session, roomID string) (access.Set, error) {
	return m.access.GrantsOf(ctx, subject(s), roomID, roomActions)
}

// HasState reports whether the room is live: on this node a client in it
// or a storage batch still being committed, in a cluster a lease on it (an
// access.StateProbe for PROTOCOL.md v1.1 §7: such an id cannot be claimed
// by POST /api/rooms).
func (m *Manager) HasState(ctx context.Context, roomID string) (bool, error) {
	m.mu.Lock()
	r := m.rooms[roomID]
	m.mu.Unlock()
	if r != nil {
		r.mu.Lock()
		live := len(r.clients) > 0 || r.pending > 0 || r.headVer > 0
		r.mu.Unlock()
		if live {
			return true, nil
		}
	}
	if m.cl != nil {
		_, ok, err := m.cl.Lease(ctx, roomID)
		return ok, err
	}
	return false, nil
}

// RefreshUser re-evaluates the permissions of the user's clients in the
// room (after a membership change), on every node: clients that lost read
// access are removed at once (everyone, the client included, gets
// room:left), others get their new permissions. A store failure removes
// the client too: a removal must never leave a capability behind.
func (m *Manager) RefreshUser(ctx context.Context, roomID, userID string) {
	if m.cl != nil {
		m.publishRefresh(roomID, userID)
	}
	m.refreshLocal(ctx, roomID, userID)
}

// localClientsOf returns this node's sessions of userID in roomID.
func (m *Manager) localClientsOf(roomID, userID string) []Session {
	var out []Session
	if m.cl != nil {
		m.edgeMu.Lock()
		e := m.edges[roomID]
		m.edgeMu.Unlock()
		if e == nil {
			return nil
		}
		e.mu.Lock()
		for _, lc := range e.clients {
			if lc.s.UserID() == userID {
				out = append(out, lc.s)
			}
		}
		e.mu.Unlock()
		return out
	}
	r := m.owned(roomID, nil)
	if r == nil {
		return nil
	}
	defer m.release(r)
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, c := range r.order {
		if c.user == userID {
			if s, ok := c.sink.(Session); ok {
				out = append(out, s)
			}
		}
	}
	return out
}

// refreshLocal re-decides the permissions of this node's clients of
// userID in roomID.
func (m *Manager) refreshLocal(ctx context.Context, roomID, userID string) {
	for _, s := range m.localClientsOf(roomID, userID) {
		p, err := m.permsFor(ctx, s, roomID)
		if err != nil {
			m.log.Warn("refresh permissions", "room", roomID, "user", userID, "err", err)
			p = 0
		}
		if p&access.Read == 0 {
			if m.isIn(s.ID(), roomID) {
				m.leave(s, roomID, "")
			}
			continue
		}
		m.setPerms(s, roomID, p)
	}
}

// setPerms records a client's new permissions at the room's owner.
func (m *Manager) setPerms(s Session, roomID string, p access.Set) {
	if m.cl != nil {
		m.setPermsCluster(s, roomID, p)
		return
	}
	r := m.owned(roomID, nil)
	if r == nil {
		return
	}
	defer m.release(r)
	r.mu.Lock()
	if c := r.clients[s.ID()]; c != nil {
		c.perms = p
	}
	r.mu.Unlock()
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
