package rooms

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"slices"
	"sync"
	"time"

	"github.com/parleyhq/parley/internal/access"
	"github.com/parleyhq/parley/internal/protocol"
	"github.com/parleyhq/parley/internal/safe"
)

// Lease is a room's ownership in a cluster: the node that orders the room
// (membership, presence, storage versions, broadcasts) and the epoch of its
// tenure, which only grows while the lease bucket lives (the cluster
// package uses the NATS KV revision of the lease key). It names the tenure
// in node messages and room events. Storage fencing does not rest on it:
// a new owner claims the next epoch from the store itself
// (store.Documents.Claim) and commits with that, so a deposed owner's
// commits are refused (store.ErrFenced) even if the lease bucket was lost
// and its revisions started again.
type Lease struct {
	Node  string
	Epoch uint64
}

// errResyncing: the edge is between owners; the resync answers the caller.
var errResyncing = errors.New("rooms: resync under way")

// ErrLeaseTaken is returned by Cluster.Acquire when another node changed
// the lease first (the compare-and-set lost); read it again with Lease.
var ErrLeaseTaken = errors.New("rooms: room lease taken by another node")

// Cluster is what rooms needs from the other nodes of a cluster
// (implemented over NATS by internal/cluster). A Manager without one is a
// single node: it owns every room.
//
// Delivery contract: the implementation calls the ClusterHandler installed
// with SetHandler from ONE goroutine, in the order its connection received
// the messages, so that a node's messages sent with SendNode and its
// publications with PublishRoom reach every other node in the order that
// node sent them (a join's reply is never overtaken by a later room event).
// Messages are at-most-once: a lost one shows as a gap in a room's
// sequence numbers, or as a Resync after a reconnect.
type Cluster interface {
	// NodeID is this node's id.
	NodeID() string
	// SetHandler installs the receiver of this node's room traffic; it is
	// called once, before any other method.
	SetHandler(h ClusterHandler)

	// Lease returns roomID's current lease; ok is false when no node holds
	// it.
	Lease(ctx context.Context, roomID string) (l Lease, ok bool, err error)
	// Acquire makes this node the owner of roomID: when prev is nil only if
	// no lease exists, else only if the lease is still *prev (compare and
	// set). It returns the new lease (Node is this node, Epoch greater than
	// every earlier epoch of the room) or ErrLeaseTaken.
	Acquire(ctx context.Context, roomID string, prev *Lease) (Lease, error)
	// Release deletes roomID's lease if it is still l; otherwise it does
	// nothing and returns nil.
	Release(ctx context.Context, roomID string, l Lease) error
	// Alive reports whether node is registered, heartbeating and not
	// draining (so it may hold rooms).
	Alive(node string) bool

	// SendNode sends msg to node's room handler (ClusterHandler.NodeMessage).
	SendNode(node string, msg []byte) error
	// PublishRoom sends msg to every node subscribed to roomID
	// (ClusterHandler.RoomMessage), this node included when subscribed.
	PublishRoom(roomID string, msg []byte) error
	// SubscribeRoom starts this node's subscription to roomID's
	// publications; it returns once the NATS server has the interest, so a
	// request sent afterwards cannot be answered by a publication this node
	// misses. Subscribing twice is one subscription.
	SubscribeRoom(roomID string) error
	// UnsubscribeRoom ends it.
	UnsubscribeRoom(roomID string) error
}

// ClusterHandler receives a node's room traffic (Manager implements it).
type ClusterHandler interface {
	// NodeMessage is a message another node sent to this one (SendNode).
	NodeMessage(msg []byte)
	// RoomMessage is a publication on a room this node subscribed to.
	RoomMessage(roomID string, msg []byte)
	// NodeDown reports a node that stopped heartbeating (declared dead) or
	// announced a drain: the rooms it owned need a new owner and its
	// clients have left.
	NodeDown(node string)
	// Resync reports that messages may have been lost (the NATS connection
	// was re-established): every room with local clients is re-read from
	// its owner and its clients get a fresh room:state.
	Resync()
}

// --- this node's side of rooms in a cluster ---
//
// Every room with clients on this node has an edge: its local clients,
// the lease it believes in (the owner it forwards to), the sequence number
// of the last event it delivered, and the roster (every client of the
// room, on any node) it needs to tell its clients room:left when a node
// dies. The owner's events reach an edge in order (the Cluster delivery
// contract); an event out of sequence, a new epoch, a reconnect, a dead or
// draining owner all lead to one thing: resync, which finds the owner
// (taking the lease when no live node holds it), sends it the edge's
// clients, and gives each of them a fresh room:state.

// edge is this node's view of one room it has clients in.
type edge struct {
	id string

	mu      sync.Mutex
	lease   Lease
	known   bool   // lease is the owner to forward to
	synced  bool   // seq is a baseline from the owner
	seq     uint64 // last event delivered
	clients map[string]*localClient
	roster  map[string]rosterEntry
	// resync is single-flight: again asks the running one for another pass.
	resyncing, again bool
	// syncWait, while a resync waits for the owner's answer, is closed
	// when it arrives (deliverStates).
	syncWait chan struct{}
	// syncing is the set of clients the pending sync sent to the owner:
	// only they are answered by its reply.
	syncing map[string]bool
	// forwardSeq numbers the requests forwarded to a remote owner
	// (forwarded.seq).
	forwardSeq uint64
}

// localClient is one of this node's connections in a room.
type localClient struct {
	s        Session
	perms    access.Set
	presence map[string]json.RawMessage
	joining  bool   // join sent to a remote owner, no room:state yet
	reqID    string // the join's request id while joining
	since    *int64 // the join's since_version while joining
	// inflight: the client's requests forwarded to a remote owner and not
	// answered yet, by request id (see forwarded).
	inflight map[string][]forwarded
}

// joinSince is a joining client's since_version for a sync (nil for a
// client already in). Needs e.mu.
func joinSince(lc *localClient) *int64 {
	if !lc.joining {
		return nil
	}
	return lc.since
}

// forwarded is one client request an edge sent to a remote owner
// (routeCluster). Core NATS is at most once and a draining or dying owner
// answers nothing more, so the edge itself answers a request whose owner
// gave the room up (evMoved), died or drained (NodeDown), or whose answer
// may have been lost (Resync): the client always gets one answer per
// request, and the owner's answer, if it still comes, is dropped.
type forwarded struct {
	lease Lease
	kind  string // the nodeMsg kind: what the edge's own answer says
	seq   uint64 // the edge's count of forwarded requests: answers go out in request order
}

// trackLocked records a request sent to lease's owner. A request without
// an id is not kept: the client cannot tell its answer from another's, and
// the owner does not answer every such request (room:broadcast acks only
// a request with an id). Needs e.mu.
func (e *edge) trackLocked(lc *localClient, reqID string, l Lease, kind string) {
	if reqID == "" {
		return
	}
	if lc.inflight == nil {
		lc.inflight = map[string][]forwarded{}
	}
	e.forwardSeq++
	lc.inflight[reqID] = append(lc.inflight[reqID], forwarded{lease: l, kind: kind, seq: e.forwardSeq})
}

// answeredLocked takes the oldest request with reqID that was sent to node
// off inflight and reports whether to deliver node's answer: not when the
// edge already answered that request itself (an answer to a request the
// client then sent again with the same id, to another owner, is not
// mistaken for it). Answers without an id are always delivered. Needs
// e.mu.
func (lc *localClient) answeredLocked(reqID, node string) bool {
	if reqID == "" {
		return true
	}
	fs := lc.inflight[reqID]
	for i, f := range fs {
		if f.lease.Node != node {
			continue
		}
		if len(fs) == 1 {
			delete(lc.inflight, reqID)
		} else {
			lc.inflight[reqID] = slices.Delete(fs, i, i+1)
		}
		return true
	}
	return false
}

// abandonLocked answers, for the owner, every request of the edge's
// clients sent to an owner that lost matches (it will not answer, or its
// answer may be lost), in the order they were sent. Needs e.mu.
func (e *edge) abandonLocked(lost func(Lease) bool) {
	type answer struct {
		lc    *localClient
		reqID string
		f     forwarded
	}
	var out []answer
	for _, lc := range e.clients {
		for reqID, fs := range lc.inflight {
			kept := fs[:0]
			for _, f := range fs {
				if lost(f.lease) {
					out = append(out, answer{lc, reqID, f})
				} else {
					kept = append(kept, f)
				}
			}
			if len(kept) == 0 {
				delete(lc.inflight, reqID)
			} else {
				lc.inflight[reqID] = kept
			}
		}
	}
	slices.SortFunc(out, func(a, b answer) int { return cmp.Compare(a.f.seq, b.f.seq) })
	for _, a := range out {
		a.lc.s.ReplyError(a.reqID, errUnanswered(e.id, a.f.kind))
	}
}

// errUnanswered is the edge's answer to a forwarded request its owner will
// not answer (abandonLocked), by what retrying it does:
// room:update_storage may have been committed (errOutcomeUnknown), a
// room:broadcast may have been delivered, and presence and room:members
// are safe to send again (errNotOwner: retry).
func errUnanswered(roomID, kind string) *protocol.Error {
	switch kind {
	case kindStorage:
		return errOutcomeUnknown(roomID)
	case kindEvent:
		return protocol.Errorf(protocol.CodeInternal, "the broadcast to room %s was not confirmed and may have been delivered;"+
			" sending it again may deliver it twice", roomID)
	}
	return errNotOwner(roomID)
}

// edgeFor returns the room's edge, creating it (and subscribing to the
// room's events) when create is set.
func (m *Manager) edgeFor(roomID string, create bool) (*edge, error) {
	m.edgeMu.Lock()
	e := m.edges[roomID]
	if e == nil && create {
		e = &edge{id: roomID, clients: map[string]*localClient{}, roster: map[string]rosterEntry{}}
		m.edges[roomID] = e
	}
	m.edgeMu.Unlock()
	if e == nil {
		return nil, nil
	}
	if create {
		if err := m.syncSubscription(roomID); err != nil {
			return nil, err
		}
	}
	return e, nil
}

// dropEdgeIfEmpty forgets an edge without clients and unsubscribes.
func (m *Manager) dropEdgeIfEmpty(e *edge) {
	m.edgeMu.Lock()
	e.mu.Lock()
	empty := len(e.clients) == 0
	e.mu.Unlock()
	if empty && m.edges[e.id] == e {
		delete(m.edges, e.id)
	}
	m.edgeMu.Unlock()
	if empty {
		if err := m.syncSubscription(e.id); err != nil {
			m.log.Warn("room unsubscribe", "room", e.id, "err", err)
		}
	}
}

// syncSubscription makes the room's subscription match whether an edge
// exists, under one lock so that a subscribe and an unsubscribe racing
// each other end in the right state.
func (m *Manager) syncSubscription(roomID string) error {
	m.subMu.Lock()
	defer m.subMu.Unlock()
	m.edgeMu.Lock()
	want := m.edges[roomID] != nil
	m.edgeMu.Unlock()
	switch {
	case want && !m.subbed[roomID]:
		if err := m.cl.SubscribeRoom(roomID); err != nil {
			return fmt.Errorf("subscribe to room %s: %w", roomID, err)
		}
		m.subbed[roomID] = true
	case !want && m.subbed[roomID]:
		delete(m.subbed, roomID)
		return m.cl.UnsubscribeRoom(roomID)
	}
	return nil
}

// resolve finds roomID's owner: the lease holder when it is alive, else
// this node, which takes the lease (compare-and-set), fences the store
// with the new epoch and loads the room. When this node is the owner the
// room is returned with a reference held (the caller releases it), so it
// cannot leave memory before the caller uses it.
func (m *Manager) resolve(ctx context.Context, roomID string) (Lease, *Room, error) {
	// One resolution per room at a time on this node: two joins racing
	// for a room nobody holds must not both take the lease (the second
	// would take it over from the first and load a second copy).
	mu := m.resolveLock(roomID)
	mu.Lock()
	defer mu.Unlock()
	for attempt := 0; attempt < 8; attempt++ {
		l, ok, err := m.cl.Lease(ctx, roomID)
		if err != nil {
			return Lease{}, nil, fmt.Errorf("room %s lease: %w", roomID, err)
		}
		if ok && l.Node == m.cl.NodeID() {
			if r := m.owned(roomID, &l); r != nil {
				return l, r, nil
			}
		} else if ok && m.cl.Alive(l.Node) {
			return l, nil, nil
		}
		if m.draining.Load() {
			return Lease{}, nil, protocol.Errorf(protocol.CodeInternal, "this node is shutting down; reconnect to another")
		}
		var prev *Lease
		if ok {
			prev = &l
		}
		nl, err := m.cl.Acquire(ctx, roomID, prev)
		if errors.Is(err, ErrLeaseTaken) {
			continue
		}
		if err != nil {
			return Lease{}, nil, fmt.Errorf("room %s lease: %w", roomID, err)
		}
		r, err := m.takeRoom(ctx, roomID, nl)
		if err != nil {
			m.releaseLease(roomID, nl)
			return Lease{}, nil, err
		}
		return nl, r, nil
	}
	return Lease{}, nil, protocol.Errorf(protocol.CodeInternal, "room %s: ownership is changing; retry", roomID)
}

// resolveLock is the stripe of resolveMu that serialises resolve for
// roomID.
func (m *Manager) resolveLock(roomID string) *sync.Mutex {
	h := fnv.New32a()
	_, _ = h.Write([]byte(roomID))
	return &m.resolveMu[h.Sum32()%uint32(len(m.resolveMu))]
}

// takeRoom makes this node the owner of roomID under l: it claims the
// room's next epoch from the store first (a deposed owner cannot commit
// after this), then loads the room, so it holds every batch anyone
// acknowledged.
func (m *Manager) takeRoom(ctx context.Context, roomID string, l Lease) (*Room, error) {
	r := newRoom(m, roomID)
	r.lease = l
	r.mu.Lock()
	m.mu.Lock()
	if old := m.rooms[roomID]; old != nil {
		old.mu.Lock()
		old.gone = true
		old.mu.Unlock()
	}
	m.rooms[roomID] = r
	r.refs++
	m.mu.Unlock()
	fence, err := m.store.Claim(ctx, roomID)
	if err == nil {
		r.fence = fence
		err = r.load(ctx)
	}
	if err != nil {
		r.gone = true
		r.mu.Unlock()
		m.release(r)
		return nil, fmt.Errorf("take room %s: %w", roomID, err)
	}
	m.log.Debug("room owned", "room", roomID, "lease", l.Epoch, "fence", r.fence, "version", r.committedVer)
	r.mu.Unlock()
	return r, nil
}

// releaseLease gives the lease up in the background (a room left memory).
func (m *Manager) releaseLease(roomID string, l Lease) {
	safe.Go(m.log, m.metrics, safe.Background, func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := m.cl.Release(ctx, roomID, l); err != nil {
			m.log.Warn("release room lease", "room", roomID, "err", err)
		}
	}, nil)
}

// lostRoom handles a commit the store refused because another writer got
// there first (ErrConflict) or a newer owner holds the room (ErrFenced).
// Needs r.mu. In a cluster the room is given up: it leaves memory and this
// node's clients resync with the new owner. On one node nobody else can
// own the room, so it is reloaded from the store in place and every client
// gets a fresh room:state (never a rollback to a stale copy).
func (m *Manager) lostRoom(r *Room) {
	if m.cl == nil {
		m.log.Error("storage conflict on a single node: reloading the room from the store", "room", r.id)
		r.reloading = true
		safe.Go(m.log, m.metrics, safe.Background, func() { m.reloadRoom(r) }, nil)
		return
	}
	m.log.Warn("room lost to another owner", "room", r.id, "epoch", r.lease.Epoch)
	r.gone = true
	safe.Go(m.log, m.metrics, safe.Background, func() { m.giveUp(r) }, nil)
}

// reloadRoom (one node) waits until the room's queued commits are done
// (they fail: the committer skips a failed room's later updates), reloads
// the document from the store and sends every client a fresh room:state. A
// room that cannot be reloaded is reset (its clients get room:left).
func (m *Manager) reloadRoom(r *Room) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	m.waitCommitted(ctx, r)
	r.mu.Lock()
	err := r.load(ctx)
	if err == nil {
		r.reloading = false
		r.gen++
		js := r.snapshotState(nil)
		for _, c := range r.order {
			if c.sink != nil {
				c.sink.Send(protocol.Encode(protocol.TypeRoomState, "", js.state(r.id, c.id)))
			}
		}
	}
	r.mu.Unlock()
	if err != nil {
		m.log.Error("reload room after a storage conflict", "room", r.id, "err", err)
		m.resetRoom(r)
	}
}

// giveUp finishes giving up a room this node lost (cluster): it leaves
// memory, its subscribers are told (evMoved) and this node's clients in it
// resync with the new owner.
func (m *Manager) giveUp(r *Room) {
	r.mu.Lock()
	epoch := r.lease.Epoch
	r.mu.Unlock()
	m.mu.Lock()
	if m.rooms[r.id] == r {
		delete(m.rooms, r.id)
	}
	m.mu.Unlock()
	m.publishCtl(r.id, evMoved, epoch, "")
	if e, _ := m.edgeFor(r.id, false); e != nil {
		m.resync(e)
	}
}

// ownerOf returns the edge's owner, resolving it when not known, and the
// room with a reference held when this node owns it.
func (m *Manager) ownerOf(ctx context.Context, e *edge) (Lease, *Room, error) {
	e.mu.Lock()
	if e.resyncing {
		// Its sync must carry every client: one joining now included.
		e.again = true
		e.mu.Unlock()
		return Lease{}, nil, errResyncing
	}
	l, known := e.lease, e.known
	e.mu.Unlock()
	if known {
		if l.Node != m.cl.NodeID() {
			return l, nil, nil
		}
		if r := m.owned(e.id, &l); r != nil {
			return l, r, nil
		}
	}
	l, r, err := m.resolve(ctx, e.id)
	if err != nil {
		return Lease{}, nil, err
	}
	e.mu.Lock()
	if !e.known || e.lease != l {
		e.lease, e.known, e.synced, e.seq = l, true, l.Node == m.cl.NodeID(), 0
	}
	e.mu.Unlock()
	return l, r, nil
}

// resyncIfIdle starts a resync unless one is under way.
func (m *Manager) resyncIfIdle(e *edge) {
	e.mu.Lock()
	busy := e.resyncing
	e.mu.Unlock()
	if !busy {
		m.resync(e)
	}
}

// joinCluster is room:join in a cluster.
func (m *Manager) joinCluster(ctx context.Context, s Session, reqID string, d joinRequest, perms access.Set) error {
	e, err := m.edgeFor(d.RoomID, true)
	if err != nil {
		return err
	}
	// Tracked from now on, so that a leave or a disconnect before the
	// answer finds the pending join and takes it back at the owner.
	wasIn := m.isIn(s.ID(), d.RoomID)
	m.track(s.ID(), d.RoomID)
	e.mu.Lock()
	lc := e.clients[s.ID()]
	if lc == nil {
		lc = &localClient{s: s, presence: d.Presence}
		e.clients[s.ID()] = lc
	}
	// Joining until answered: a resync that carries it answers the join
	// (deliverStates), and events are not delivered to it before.
	lc.perms, lc.reqID, lc.joining, lc.since = perms, reqID, true, d.SinceVersion
	e.mu.Unlock()
	fail := func(err error) error {
		if !wasIn {
			e.mu.Lock()
			if e.clients[s.ID()] == lc {
				delete(e.clients, s.ID())
			}
			e.mu.Unlock()
			m.untrack(s.ID(), d.RoomID)
		}
		m.dropEdgeIfEmpty(e)
		return err
	}
	l, r, err := m.ownerOf(ctx, e)
	if errors.Is(err, errResyncing) {
		// The resync under way takes this client to the owner and answers
		// its join (deliverStates); ownerOf asked it for another pass.
		return nil
	}
	if err != nil {
		return fail(err)
	}
	if r == nil {
		e.mu.Lock()
		wantRoster := !e.synced
		e.mu.Unlock()
		m.sendNode(l.Node, nodeMsg{Kind: kindJoin, Room: d.RoomID, Epoch: l.Epoch, Conn: s.ID(), User: s.UserID(),
			Name: s.Name(), ReqID: reqID, Perms: perms, Presence: d.Presence, Since: d.SinceVersion, WantRoster: wantRoster})
		// A lost join (at most once) is answered by a resync, which gives
		// every joining client its room:state.
		time.AfterFunc(m.syncTimeout, func() {
			defer safe.Recover(m.log, m.metrics, safe.Background, nil)
			e.mu.Lock()
			still := e.clients[s.ID()] == lc && lc.joining
			e.mu.Unlock()
			if still {
				m.resync(e)
			}
		})
		return nil
	}
	defer m.release(r)
	e.mu.Lock()
	lc.joining = false // answered below, before anything else can reach it
	e.mu.Unlock()
	r.mu.Lock()
	perr := r.addClient(localOrigin(s, reqID), perms, d.Presence, d.SinceVersion, false)
	r.mu.Unlock()
	if perr != nil {
		return fail(perr)
	}
	return nil
}

// leaveCluster is room:leave (or a disconnect) in a cluster: the leaver
// gets its room:left here at once, the owner (or the node a resync is
// taking the room's clients to) tells everyone else. A pending join is
// taken back the same way: the leave follows the join (or the sync that
// carried the client) to the same node, in order.
func (m *Manager) leaveCluster(s Session, roomID, reqID string) {
	e, _ := m.edgeFor(roomID, false)
	if e == nil {
		return
	}
	e.mu.Lock()
	_, in := e.clients[s.ID()]
	delete(e.clients, s.ID())
	l := e.lease // the owner, or the one a resync is syncing with
	e.mu.Unlock()
	if !in {
		return
	}
	leftCopy := true
	switch {
	case l.Node == m.cl.NodeID():
		if r := m.owned(roomID, &l); r != nil {
			r.mu.Lock()
			leftCopy = !r.removeLocked(s.ID(), reqID, leftByRequest)
			r.mu.Unlock()
			m.release(r)
		}
	case l.Node != "":
		m.sendNode(l.Node, nodeMsg{Kind: kindLeave, Room: roomID, Epoch: l.Epoch, Conn: s.ID()})
	}
	if leftCopy {
		s.Send(protocol.Encode(protocol.TypeRoomLeft, reqID,
			map[string]string{"room_id": roomID, "client_id": s.ID(), "user_id": s.UserID()}))
	}
	m.dropEdgeIfEmpty(e)
}

// routeCluster runs a client's request at the room's owner.
func (m *Manager) routeCluster(s Session, roomID, reqID string, msg nodeMsg, local func(*Room, origin) *protocol.Error) error {
	e, _ := m.edgeFor(roomID, false)
	if e == nil {
		return errNotInRoom(roomID)
	}
	e.mu.Lock()
	lc := e.clients[s.ID()]
	l, known := e.lease, e.known
	e.mu.Unlock()
	if lc == nil {
		return errNotInRoom(roomID)
	}
	if !known {
		// Between owners: the resync under way (or started here) gives
		// the client a fresh room:state; this request is not applied.
		m.resyncIfIdle(e)
		return errNotOwner(roomID)
	}
	if l.Node == m.cl.NodeID() {
		r := m.owned(roomID, &l)
		if r == nil {
			m.resync(e)
			return errNotOwner(roomID)
		}
		defer m.release(r)
		if err := local(r, localOrigin(s, reqID)); err != nil {
			return err
		}
		return nil
	}
	msg.Room, msg.Epoch, msg.Conn, msg.User, msg.Name, msg.ReqID = roomID, l.Epoch, s.ID(), s.UserID(), s.Name(), reqID
	e.mu.Lock()
	if e.clients[s.ID()] != lc {
		e.mu.Unlock()
		return errNotInRoom(roomID)
	}
	if !e.known || e.lease != l {
		// The owner went since the lease was read (its requests were
		// answered by abandonLocked then): this one would go to it too.
		e.mu.Unlock()
		m.resyncIfIdle(e)
		return errNotOwner(roomID)
	}
	e.trackLocked(lc, reqID, l, msg.Kind)
	e.mu.Unlock()
	if err := m.sendNode(l.Node, msg); err != nil {
		e.mu.Lock()
		answered := lc.answeredLocked(reqID, l.Node) // not sent: the owner will not answer
		e.mu.Unlock()
		if answered {
			return errNotOwner(roomID)
		}
	}
	return nil
}

// setLocalPresence mirrors a local client's merged presence on its edge
// (sent to a new owner on resync).
func (m *Manager) setLocalPresence(roomID, connID string, p map[string]json.RawMessage) {
	e, _ := m.edgeFor(roomID, false)
	if e == nil {
		return
	}
	e.mu.Lock()
	if lc := e.clients[connID]; lc != nil {
		lc.presence = p
	}
	e.mu.Unlock()
}

// setPermsCluster records a local client's new permissions at the owner.
func (m *Manager) setPermsCluster(s Session, roomID string, p access.Set) {
	e, _ := m.edgeFor(roomID, false)
	if e == nil {
		return
	}
	e.mu.Lock()
	lc := e.clients[s.ID()]
	if lc != nil {
		lc.perms = p
	}
	l, known := e.lease, e.known
	e.mu.Unlock()
	if lc == nil || !known {
		return
	}
	if l.Node != m.cl.NodeID() {
		m.sendNode(l.Node, nodeMsg{Kind: kindPerms, Room: roomID, Epoch: l.Epoch, Conn: s.ID(), Perms: p})
		return
	}
	if r := m.owned(roomID, &l); r != nil {
		r.mu.Lock()
		if c := r.clients[s.ID()]; c != nil {
			c.perms = p
		}
		r.mu.Unlock()
		m.release(r)
	}
}

// sendNode sends a node message. A failure is logged and returned; most
// callers ignore it (the receiver's resync covers a lost message), a
// forwarded client request answers it (routeCluster).
func (m *Manager) sendNode(node string, msg nodeMsg) error {
	msg.From = m.cl.NodeID()
	err := m.cl.SendNode(node, encodeNodeMsg(msg))
	if err != nil {
		m.log.Warn("send to node", "node", node, "kind", msg.Kind, "room", msg.Room, "err", err)
	}
	return err
}

// publish sends one of r's events to the other nodes with clients in it.
// Needs r.mu (so that events leave in sequence order).
func (m *Manager) publish(r *Room, ev event) {
	b := encodeEvent(wireEvent{event: ev, from: m.cl.NodeID(), epoch: r.lease.Epoch, seq: r.seq})
	if err := m.cl.PublishRoom(r.id, b); err != nil {
		m.log.Warn("publish room event", "room", r.id, "err", err)
	}
}

// publishCtl publishes an unsequenced control event (evMoved, evRefresh).
func (m *Manager) publishCtl(roomID string, kind byte, epoch uint64, user string) {
	b := encodeEvent(wireEvent{event: event{kind: kind, user: user}, from: m.cl.NodeID(), epoch: epoch})
	if err := m.cl.PublishRoom(roomID, b); err != nil {
		m.log.Warn("publish room control", "room", roomID, "err", err)
	}
}

func (m *Manager) publishRefresh(roomID, userID string) { m.publishCtl(roomID, evRefresh, 0, userID) }

// call sends a REST request to the owner and waits for its result.
func (m *Manager) call(ctx context.Context, l Lease, msg nodeMsg) (nodeMsg, error) {
	// Bounded whatever the caller's context: an answer lost with a dead
	// owner must not hold a REST request open.
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	ch := make(chan nodeMsg, 1)
	m.callMu.Lock()
	m.nextCall++
	id := m.nextCall
	m.calls[id] = ch
	m.callMu.Unlock()
	defer func() {
		m.callMu.Lock()
		delete(m.calls, id)
		m.callMu.Unlock()
	}()
	msg.Corr = id
	m.sendNode(l.Node, msg)
	select {
	case res := <-ch:
		if res.Kind == kindNotOwner {
			return res, errNotOwner(msg.Room)
		}
		if res.Err != nil {
			return res, res.Err
		}
		return res, nil
	case <-ctx.Done():
		if msg.Kind == kindPatch {
			return nodeMsg{}, errOutcomeUnknown(msg.Room)
		}
		return nodeMsg{}, fmt.Errorf("waiting for the owner of room %s: %w", msg.Room, ctx.Err())
	}
}

// ownerRoom returns the room with a reference when this node owns it
// (taking it when no live node does), else the remote owner's lease.
func (m *Manager) ownerRoom(ctx context.Context, roomID string) (*Room, Lease, error) {
	if m.cl == nil {
		r, err := m.acquire(ctx, roomID)
		return r, Lease{}, err
	}
	l, r, err := m.resolve(ctx, roomID)
	return r, l, err
}

// callTimeout bounds a REST call relayed to a room's owner.
const callTimeout = 10 * time.Second
