// Package hub is the registry of live connections on this node (the
// WsStorage/dispatcher design): indexed by connection id and by user id, with
// delivery to one connection, every connection of a user, the connections of
// a set of users (optionally except one connection) and everyone.
//
// Delivery never blocks: it hands the same encoded bytes to each target's
// bounded outbound queue (Conn.Send). A full queue is the connection's
// problem (it closes itself with 4008), never the sender's.
package hub

import (
	"hash/maphash"
	"sync"
	"sync/atomic"

	"github.com/parleyhq/parley/internal/wsdeflate"
)

// Conn is one live connection as the hub sees it.
type Conn interface {
	ID() string
	UserID() string
	// Send enqueues one encoded frame without blocking. It returns false
	// when the connection is closed or its queue overflowed.
	Send(frame []byte) bool
}

const shardCount = 64

type connShard struct {
	mu    sync.RWMutex
	conns map[string]Conn
}

type userShard struct {
	mu    sync.RWMutex
	users map[string]map[string]Conn // user id → connection id → conn
	slots map[string]int             // user id → reserved slots (Reserve)
}

// Hub indexes the node's connections. The zero value is not usable; use New.
type Hub struct {
	seed   maphash.Seed
	conns  [shardCount]connShard
	users  [shardCount]userShard
	nConns atomic.Int64
	nUsers atomic.Int64
	nSlots atomic.Int64 // reserved slots, all users (Reserve)

	hookMu sync.Mutex                                         // serialises OnUser
	onUser atomic.Pointer[[]func(userID string, online bool)] // copy on write
}

// New returns an empty hub.
func New() *Hub {
	h := &Hub{seed: maphash.MakeSeed()}
	for i := range h.conns {
		h.conns[i].conns = make(map[string]Conn)
		h.users[i].users = make(map[string]map[string]Conn)
		h.users[i].slots = make(map[string]int)
	}
	return h
}

func (h *Hub) shard(key string) int {
	return int(maphash.String(h.seed, key) % shardCount)
}

// Add registers c. first reports whether c is its user's only connection
// now (the user just came online on this node).
func (h *Hub) Add(c Conn) (first bool) {
	cs := &h.conns[h.shard(c.ID())]
	cs.mu.Lock()
	if _, dup := cs.conns[c.ID()]; dup {
		cs.mu.Unlock()
		return false
	}
	cs.conns[c.ID()] = c
	cs.mu.Unlock()
	h.nConns.Add(1)

	us := &h.users[h.shard(c.UserID())]
	us.mu.Lock()
	m := us.users[c.UserID()]
	if m == nil {
		m = make(map[string]Conn, 1)
		us.users[c.UserID()] = m
		h.nUsers.Add(1)
	}
	m[c.ID()] = c
	first = len(m) == 1
	us.mu.Unlock()
	if first {
		h.notifyUser(c.UserID(), true)
	}
	return first
}

// Remove unregisters c. last reports whether the user has no connection
// left on this node. Removing an unknown connection is a no-op (false).
func (h *Hub) Remove(c Conn) (last bool) {
	cs := &h.conns[h.shard(c.ID())]
	cs.mu.Lock()
	if cur, ok := cs.conns[c.ID()]; !ok || cur != c {
		cs.mu.Unlock()
		return false
	}
	delete(cs.conns, c.ID())
	cs.mu.Unlock()
	h.nConns.Add(-1)

	us := &h.users[h.shard(c.UserID())]
	us.mu.Lock()
	m := us.users[c.UserID()]
	delete(m, c.ID())
	if len(m) == 0 {
		delete(us.users, c.UserID())
		h.nUsers.Add(-1)
		last = true
	}
	us.mu.Unlock()
	if last {
		h.notifyUser(c.UserID(), false)
	}
	return last
}

// OnUser registers fn to be told when a user comes online on this node
// (Add added the user's first connection: online is true) or goes offline
// here (Remove removed the last one: online is false). fn runs on the
// goroutine that called Add or Remove, after the hub's locks are
// released, so it may call the hub; it should not block for long.
//
// Because it runs outside the locks, the calls for one user may arrive out
// of order when an Add and a Remove race on two goroutines: fn should read
// the current state (UserOnline) under a lock of its own instead of
// trusting online; the last call then always sees the final state.
// Register hooks before connections are added.
func (h *Hub) OnUser(fn func(userID string, online bool)) {
	h.hookMu.Lock()
	defer h.hookMu.Unlock()
	var hooks []func(string, bool)
	if p := h.onUser.Load(); p != nil {
		hooks = append(hooks, *p...)
	}
	hooks = append(hooks, fn)
	h.onUser.Store(&hooks)
}

func (h *Hub) notifyUser(userID string, online bool) {
	if p := h.onUser.Load(); p != nil {
		for _, fn := range *p {
			fn(userID, online)
		}
	}
}

// Conn returns the connection with that id.
func (h *Hub) Conn(id string) (Conn, bool) {
	cs := &h.conns[h.shard(id)]
	cs.mu.RLock()
	c, ok := cs.conns[id]
	cs.mu.RUnlock()
	return c, ok
}

// ConnsOfUser returns a snapshot of the user's connections.
func (h *Hub) ConnsOfUser(userID string) []Conn {
	us := &h.users[h.shard(userID)]
	us.mu.RLock()
	m := us.users[userID]
	out := make([]Conn, 0, len(m))
	for _, c := range m {
		out = append(out, c)
	}
	us.mu.RUnlock()
	return out
}

// UserOnline reports whether the user has a connection on this node.
func (h *Hub) UserOnline(userID string) bool {
	us := &h.users[h.shard(userID)]
	us.mu.RLock()
	n := len(us.users[userID])
	us.mu.RUnlock()
	return n > 0
}

// SendToConn delivers frame to one connection; false when it is unknown or
// closed.
func (h *Hub) SendToConn(connID string, frame []byte) bool {
	c, ok := h.Conn(connID)
	return ok && c.Send(frame)
}

// SendToUser delivers frame to every connection of the user except the
// connection named by except (may be ""), and returns how many accepted it.
func (h *Hub) SendToUser(userID string, frame []byte, except string) int {
	return h.sendToUser(userID, wsdeflate.NewShared(frame), except)
}

// sendToUser is SendToUser with the frame shared by its recipients (a
// connection that compresses it does so once for all: wsdeflate.Shared).
func (h *Hub) sendToUser(userID string, frame *wsdeflate.Shared, except string) int {
	us := &h.users[h.shard(userID)]
	us.mu.RLock()
	// Send is non-blocking, so calling it under the read lock is safe and
	// avoids copying the set.
	n := 0
	for id, c := range us.users[userID] {
		if id != except && wsdeflate.Send(c, frame) {
			n++
		}
	}
	us.mu.RUnlock()
	return n
}

// SendToUsers delivers frame to every connection of every listed user
// (duplicates in the list are delivered once) except one connection.
func (h *Hub) SendToUsers(userIDs []string, frame []byte, except string) int {
	n := 0
	sh := wsdeflate.NewShared(frame)
	if len(userIDs) <= 1 {
		for _, u := range userIDs {
			n += h.sendToUser(u, sh, except)
		}
		return n
	}
	seen := make(map[string]struct{}, len(userIDs))
	for _, u := range userIDs {
		if _, dup := seen[u]; dup {
			continue
		}
		seen[u] = struct{}{}
		n += h.sendToUser(u, sh, except)
	}
	return n
}

// SendAll delivers frame to every connection on this node except one.
func (h *Hub) SendAll(frame []byte, except string) int {
	n := 0
	sh := wsdeflate.NewShared(frame)
	for i := range h.conns {
		cs := &h.conns[i]
		cs.mu.RLock()
		for id, c := range cs.conns {
			if id != except && wsdeflate.Send(c, sh) {
				n++
			}
		}
		cs.mu.RUnlock()
	}
	return n
}

// Each calls fn for every connection (a snapshot per shard; fn may block).
func (h *Hub) Each(fn func(Conn)) {
	var buf []Conn
	for i := range h.conns {
		cs := &h.conns[i]
		cs.mu.RLock()
		buf = buf[:0]
		for _, c := range cs.conns {
			buf = append(buf, c)
		}
		cs.mu.RUnlock()
		for _, c := range buf {
			fn(c)
		}
	}
}

// ConnectedUsers returns the ids of every user with a connection here.
func (h *Hub) ConnectedUsers() []string {
	var out []string
	for i := range h.users {
		us := &h.users[i]
		us.mu.RLock()
		for u := range us.users {
			out = append(out, u)
		}
		us.mu.RUnlock()
	}
	return out
}

// Counts returns the number of connections and of distinct users.
func (h *Hub) Counts() (conns, users int) {
	return int(h.nConns.Load()), int(h.nUsers.Load())
}

// Refusal says why Reserve refused a slot.
type Refusal int

const (
	// Admitted: the slot is reserved; Release it when the connection ends.
	Admitted Refusal = iota
	// NodeFull: the node already holds maxConns slots.
	NodeFull
	// UserFull: the user already holds maxPerUser slots on this node.
	UserFull
)

// Reserve admits one more connection for userID, atomically: at most
// maxConns slots on the node and maxPerUser for one user (0 = no limit).
// A slot is taken before the WebSocket upgrade and held until the
// connection has been removed, so concurrent upgrades cannot overshoot
// either limit. Every Admitted reservation must be Released exactly once.
func (h *Hub) Reserve(userID string, maxConns, maxPerUser int) Refusal {
	if maxConns > 0 {
		for {
			n := h.nSlots.Load()
			if n >= int64(maxConns) {
				return NodeFull
			}
			if h.nSlots.CompareAndSwap(n, n+1) {
				break
			}
		}
	} else {
		h.nSlots.Add(1)
	}
	us := &h.users[h.shard(userID)]
	us.mu.Lock()
	if maxPerUser > 0 && us.slots[userID] >= maxPerUser {
		us.mu.Unlock()
		h.nSlots.Add(-1)
		return UserFull
	}
	us.slots[userID]++
	us.mu.Unlock()
	return Admitted
}

// Release gives back a slot taken by Reserve.
func (h *Hub) Release(userID string) {
	us := &h.users[h.shard(userID)]
	us.mu.Lock()
	if n := us.slots[userID]; n > 1 {
		us.slots[userID] = n - 1
	} else if n == 1 {
		delete(us.slots, userID)
	} else {
		us.mu.Unlock()
		return // not reserved: never drive the counts negative
	}
	us.mu.Unlock()
	h.nSlots.Add(-1)
}

// Reserved returns the slots held on the node and by userID.
func (h *Hub) Reserved(userID string) (node, user int) {
	us := &h.users[h.shard(userID)]
	us.mu.RLock()
	user = us.slots[userID]
	us.mu.RUnlock()
	return int(h.nSlots.Load()), user
}
