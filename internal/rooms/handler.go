package rooms

import (
	"context"
	"encoding/json"
	"time"

	"github.com/cenkalti/backoff/v5"

	"github.com/parleyhq/parley/internal/protocol"
	"github.com/parleyhq/parley/internal/safe"
	"github.com/parleyhq/parley/internal/wsdeflate"
)

// The ClusterHandler side of the Manager: what other nodes send. These
// methods run on the Cluster's one delivery goroutine, so they never wait
// on I/O: anything that may (a resync, re-deciding permissions) runs on a
// goroutine of its own.

// NodeMessage implements ClusterHandler.
func (m *Manager) NodeMessage(b []byte) {
	msg, err := decodeNodeMsg(b)
	if err != nil {
		m.log.Warn("bad node message", "err", err)
		return
	}
	switch {
	case msg.Kind == kindResult || (msg.Kind == kindNotOwner && msg.Corr != 0):
		m.callMu.Lock()
		ch := m.calls[msg.Corr]
		m.callMu.Unlock()
		if ch != nil {
			select {
			case ch <- msg:
			default:
			}
		}
	case msg.Kind == kindReply || msg.Kind == kindJoined || msg.Kind == kindSynced || msg.Kind == kindNotOwner:
		m.edgeMessage(msg)
	default:
		m.ownerMessage(msg)
	}
}

// ownerMessage runs another node's request for a room this node owns.
func (m *Manager) ownerMessage(msg nodeMsg) {
	l := Lease{Node: m.cl.NodeID(), Epoch: msg.Epoch}
	r := m.owned(msg.Room, &l)
	if r == nil {
		// The lease may name this node from a previous life (it crashed
		// and restarted under its id): take the room, so that the sender,
		// retrying, finds a live owner instead of this answer forever.
		m.adoptStaleLease(msg.Room)
		if msg.Kind == kindLeave || msg.Kind == kindPerms {
			return // the new owner gets the sender's clients by resync
		}
		m.sendNode(msg.From, nodeMsg{Kind: kindNotOwner, Room: msg.Room, Conn: msg.Conn, ReqID: msg.ReqID, Corr: msg.Corr})
		return
	}
	defer m.release(r)
	o := origin{conn: msg.Conn, user: msg.User, name: msg.Name, node: msg.From, reqID: msg.ReqID}
	var perr *protocol.Error
	switch msg.Kind {
	case kindJoin:
		r.mu.Lock()
		perr = r.addClient(o, msg.Perms, msg.Presence, msg.Since, msg.WantRoster)
		r.mu.Unlock()
		if perr != nil {
			m.sendNode(msg.From, nodeMsg{Kind: kindJoined, Room: r.id, Epoch: msg.Epoch, Conn: msg.Conn, ReqID: msg.ReqID,
				Err: perr, State: &joinState{}})
			return
		}
	case kindLeave:
		r.mu.Lock()
		if c := r.clients[msg.Conn]; c != nil && c.node == msg.From {
			r.removeLocked(msg.Conn, "", leftOnItsNode)
		}
		r.mu.Unlock()
	case kindPresence:
		r.mu.Lock()
		_, perr = r.updatePresence(o, msg.Presence)
		r.mu.Unlock()
	case kindEvent:
		r.mu.Lock()
		perr = r.broadcast(o, msg.Event)
		r.mu.Unlock()
	case kindMembers:
		r.mu.Lock()
		perr = r.membersPage(o, msg.After, msg.Limit)
		r.mu.Unlock()
	case kindStorage:
		ops, e := parseBatch(msg.Ops, m.limits)
		if perr = e; perr == nil {
			perr = m.submitOps(r, o, o.conn, ops, msg.Ops, msg.Base, nil)
		}
	case kindPerms:
		r.mu.Lock()
		if c := r.clients[msg.Conn]; c != nil && c.node == msg.From {
			c.perms = msg.Perms
		}
		r.mu.Unlock()
	case kindSync:
		r.mu.Lock()
		r.syncNode(msg.From, msg.Clients)
		r.mu.Unlock()
	case kindSnapshot:
		r.mu.Lock()
		res := nodeMsg{Kind: kindResult, Room: r.id, Corr: msg.Corr}
		if perr := r.usable(); perr != nil {
			res.Err = perr
		} else {
			if r.committedEnc == nil {
				r.committedEnc, _ = r.committed.MarshalJSON()
			}
			res.Version, res.Data = r.committedVer, r.committedEnc
		}
		r.mu.Unlock()
		m.sendNode(msg.From, res)
	case kindAPIEvent, kindAPIConns:
		m.sendNode(msg.From, r.apiOwnerMessage(msg))
	case kindPatch:
		ops, e := parseBatch(msg.Ops, m.limits)
		if e == nil {
			from, corr := msg.From, msg.Corr
			e = m.submitOps(r, origin{}, msg.Client, ops, msg.Ops, msg.Base, func(res StorageResult) {
				m.sendNode(from, nodeMsg{Kind: kindResult, Room: r.id, Corr: corr, Version: res.Version, Err: res.Err})
			})
		}
		if e != nil {
			m.sendNode(msg.From, nodeMsg{Kind: kindResult, Room: r.id, Corr: msg.Corr, Err: e})
		}
	}
	if perr != nil && msg.Conn != "" {
		r.fail(o, perr)
	}
}

// adoptStaleLease, in the background, makes this node the owner of roomID
// when the room's lease names this node but this process does not hold
// the room (resolve takes it over by compare-and-set and loads it; a room
// with no clients then leaves memory and frees the lease). One adoption
// per room at a time.
func (m *Manager) adoptStaleLease(roomID string) {
	if m.draining.Load() {
		return
	}
	if _, busy := m.adopting.LoadOrStore(roomID, true); busy {
		return
	}
	safe.Go(m.log, m.metrics, safe.Background, func() {
		defer m.adopting.Delete(roomID)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		l, ok, err := m.cl.Lease(ctx, roomID)
		if err != nil || !ok || l.Node != m.cl.NodeID() {
			return
		}
		if r := m.owned(roomID, &l); r != nil {
			m.release(r)
			return
		}
		_, r, err := m.resolve(ctx, roomID)
		if err != nil {
			m.log.Warn("adopt a stale room lease", "room", roomID, "err", err)
			return
		}
		if r != nil {
			m.log.Info("adopted a room lease left by a previous process of this node", "room", roomID)
			m.release(r)
		}
	}, nil)
}

// syncNode makes node's clients in the room exactly clients: the others
// of that node leave, new ones join (a client already in keeps the
// owner's presence, which is current), and the node gets the room's state
// for all of them. Needs r.mu.
func (r *Room) syncNode(node string, clients []syncClient) {
	local := node == r.m.cl.NodeID()
	want := make(map[string]bool, len(clients))
	for _, sc := range clients {
		want[sc.Conn] = true
	}
	for _, c := range append([]*client(nil), r.order...) {
		cnode := c.node
		if cnode == "" {
			cnode = r.m.cl.NodeID()
		}
		if cnode == node && !want[c.id] {
			r.removeLocked(c.id, "", leftOnItsNode)
		}
	}
	if r.usable() != nil {
		return
	}
	for _, sc := range clients {
		if c := r.clients[sc.Conn]; c != nil {
			c.perms = sc.Perms
			continue
		}
		c := &client{id: sc.Conn, user: sc.User, name: sc.Name, perms: sc.Perms, presence: sc.Presence, joinedAt: time.Now()}
		if local {
			c.sink = r.m.localSink(r.id, sc.Conn)
			if c.sink == nil {
				continue
			}
		} else {
			c.node = node
		}
		r.addLocked(c)
		if sc.Joining {
			r.emitJoined(c)
		}
	}
	js := r.snapshotState(nil)
	for _, sc := range clients {
		if !sc.Joining || sc.Since == nil {
			continue
		}
		// A join answered by this sync (its room:join was lost or
		// refused while the room changed owner) still gets its catch-up.
		if st := r.storageFor(sc.Since); st.Updates != nil {
			if js.CatchUp == nil {
				js.CatchUp = map[string]json.RawMessage{}
			}
			js.CatchUp[sc.Conn], _ = protocol.Marshal(st)
		}
	}
	if !local {
		r.m.sendNode(node, nodeMsg{Kind: kindSynced, Room: r.id, Epoch: r.lease.Epoch, Seq: r.seq, State: &js, Roster: r.roster()})
		return
	}
	// This node's own clients: their fresh state straight away.
	r.m.deliverStates(r.id, js, r.lease, r.seq, nil)
}

// localSink returns this node's session of connID in roomID's edge.
func (m *Manager) localSink(roomID, connID string) Sink {
	e, _ := m.edgeFor(roomID, false)
	if e == nil {
		return nil
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if lc := e.clients[connID]; lc != nil {
		return lc.s
	}
	return nil
}

// deliverStates completes a sync at this node's edge: the baseline is the
// owner's (lease, seq), the roster is replaced (clients that vanished from
// it get room:left) and every local client gets a fresh room:state (a
// joining client as the answer to its join).
func (m *Manager) deliverStates(roomID string, js joinState, l Lease, seq uint64, roster []rosterEntry) {
	e, _ := m.edgeFor(roomID, false)
	if e == nil {
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.lease != l {
		return // an answer from an owner this edge no longer syncs with
	}
	e.lease, e.known, e.synced, e.seq = l, true, true, seq
	if e.syncWait != nil {
		close(e.syncWait)
		e.syncWait = nil
	}
	if roster != nil {
		next := make(map[string]rosterEntry, len(roster))
		for _, re := range roster {
			next[re.Client] = re
		}
		for id, re := range e.roster {
			if _, ok := next[id]; !ok {
				e.deliverLocked(leftFrame(roomID, id, re.User), "")
			}
		}
		e.roster = next
	}
	sent := e.syncing
	e.syncing = nil
	for id, lc := range e.clients {
		if sent != nil && !sent[id] {
			// Joined after the sync was sent: the owner does not have it
			// yet; the next pass (e.again) takes it and answers it.
			continue
		}
		m.track(id, roomID) // before the client hears it is in
		if lc.joining {
			lc.joining = false
			lc.s.Reply(protocol.TypeRoomState, lc.reqID, js.forClient(id).state(roomID, id))
			continue
		}
		lc.s.Send(protocol.Encode(protocol.TypeRoomState, "", js.forClient("").state(roomID, id)))
	}
}

func leftFrame(roomID, clientID, userID string) []byte {
	return protocol.Encode(protocol.TypeRoomLeft, "", map[string]string{"room_id": roomID, "client_id": clientID, "user_id": userID})
}

// deliverLocked sends frame to the edge's clients that are in the room
// (not still joining), except one. Needs e.mu.
func (e *edge) deliverLocked(frame []byte, except string) {
	sh := wsdeflate.NewShared(frame)
	for id, lc := range e.clients {
		if id != except && !lc.joining {
			wsdeflate.Send(lc.s, sh)
		}
	}
}

// edgeMessage handles an owner's answer to this node.
func (m *Manager) edgeMessage(msg nodeMsg) {
	e, _ := m.edgeFor(msg.Room, false)
	if e == nil {
		return
	}
	switch msg.Kind {
	case kindReply:
		e.mu.Lock()
		lc := e.clients[msg.Conn]
		if lc != nil && !lc.answeredLocked(msg.ReqID, msg.From) {
			lc = nil // answered already by abandonLocked
		}
		e.mu.Unlock()
		if lc == nil {
			return
		}
		if msg.Err != nil {
			lc.s.ReplyError(msg.ReqID, msg.Err)
			return
		}
		if msg.Type == protocol.TypeRoomPresenceUpdated {
			var p struct {
				Presence map[string]json.RawMessage `json:"presence"`
			}
			if json.Unmarshal(msg.Data, &p) == nil {
				e.mu.Lock()
				lc.presence = p.Presence
				e.mu.Unlock()
			}
		}
		lc.s.Reply(msg.Type, msg.ReqID, replyData(msg.Data))
	case kindJoined:
		e.mu.Lock()
		lc := e.clients[msg.Conn]
		if lc == nil || !lc.joining {
			e.mu.Unlock()
			return
		}
		if msg.Err != nil {
			delete(e.clients, msg.Conn)
			e.mu.Unlock()
			m.untrack(msg.Conn, msg.Room)
			lc.s.ReplyError(msg.ReqID, msg.Err)
			m.dropEdgeIfEmpty(e)
			return
		}
		gap := false
		switch {
		case msg.Epoch != e.lease.Epoch:
			gap = true
		case !e.synced && len(msg.Roster) == 0:
			// Answered without the roster (this node had a baseline when
			// it asked, lost it since): the resync gets one.
			gap = true
		case !e.synced:
			e.synced, e.seq = true, msg.Seq
			e.roster = make(map[string]rosterEntry, len(msg.Roster))
			for _, re := range msg.Roster {
				e.roster[re.Client] = re
			}
		case msg.Seq > e.seq:
			gap = true // events this node should have had are missing
		}
		lc.joining = false
		e.mu.Unlock()
		// In the room before it hears so: its next request must find it.
		m.track(msg.Conn, msg.Room)
		lc.s.Reply(protocol.TypeRoomState, msg.ReqID, msg.State.state(msg.Room, msg.Conn))
		if gap {
			m.resync(e)
		}
	case kindSynced:
		m.deliverStates(msg.Room, *msg.State, Lease{Node: msg.From, Epoch: msg.Epoch}, msg.Seq, msg.Roster)
	case kindNotOwner:
		e.mu.Lock()
		lc := e.clients[msg.Conn]
		answer := lc != nil && lc.answeredLocked(msg.ReqID, msg.From)
		if e.syncWait != nil && msg.Conn == "" {
			// The answer to this edge's sync (say the new owner was still
			// loading the room): try again now, not after syncTimeout.
			close(e.syncWait)
			e.syncWait = nil
			e.again = true
		}
		e.mu.Unlock()
		if answer && msg.ReqID != "" {
			// A joining client's join is not in inflight: it gets its
			// room:state from the resync.
			lc.s.ReplyError(msg.ReqID, errNotOwner(msg.Room))
		}
		m.resync(e)
	}
}

// RoomMessage implements ClusterHandler: an owner's event for this node's
// clients in the room.
func (m *Manager) RoomMessage(roomID string, b []byte) {
	ev, err := decodeEvent(b)
	if err != nil {
		m.log.Warn("bad room event", "room", roomID, "err", err)
		return
	}
	if ev.from == m.cl.NodeID() {
		return // delivered here when it was emitted
	}
	e, _ := m.edgeFor(roomID, false)
	if e == nil {
		return
	}
	switch ev.kind {
	case evRefresh:
		user := ev.user
		safe.Go(m.log, m.metrics, safe.Background, func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			m.refreshLocal(ctx, roomID, user)
		}, nil)
		return
	case evMoved:
		e.mu.Lock()
		mine := e.known && e.lease.Epoch == ev.epoch
		// The owner gave the room up: what it had been sent before was
		// answered before this event; what it gets after, it may never
		// answer (it drains). Nothing more is sent to it (known).
		e.abandonLocked(func(l Lease) bool { return l.Node == ev.from && l.Epoch == ev.epoch })
		if mine {
			e.known = false
		}
		e.mu.Unlock()
		if mine {
			m.resync(e)
		}
		return
	}
	e.mu.Lock()
	switch {
	case !e.known || !e.synced || ev.epoch < e.lease.Epoch || (ev.epoch == e.lease.Epoch && ev.seq <= e.seq):
		e.mu.Unlock()
		return // before this node's baseline, or from a deposed owner
	case ev.epoch > e.lease.Epoch || ev.seq != e.seq+1:
		e.mu.Unlock()
		m.log.Info("room events missed: resync", "room", roomID, "epoch", ev.epoch, "seq", ev.seq, "have", e.seq)
		m.resync(e)
		return
	}
	e.seq = ev.seq
	var untrack string
	switch ev.kind {
	case evJoined:
		e.roster[ev.client] = rosterEntry{Client: ev.client, User: ev.user, Node: ev.node}
	case evMembers:
		for _, re := range ev.roster {
			if re.Node == "" {
				delete(e.roster, re.Client)
			} else {
				e.roster[re.Client] = re
			}
		}
	case evLeft:
		if _, ok := e.roster[ev.client]; !ok {
			e.mu.Unlock()
			return // already told (its node died)
		}
		delete(e.roster, ev.client)
		if lc := e.clients[ev.client]; lc != nil && ev.except == "" && !lc.joining {
			// The owner removed one of this node's clients (not a join of
			// the same connection sent after it left).
			lc.s.Send(ev.frame)
			delete(e.clients, ev.client)
			untrack = ev.client
		}
	}
	e.deliverLocked(ev.frame, ev.except)
	e.mu.Unlock()
	if untrack != "" {
		m.untrack(untrack, roomID)
		m.dropEdgeIfEmpty(e)
	}
}

// ownedRooms returns the rooms this node owns now.
func (m *Manager) ownedRooms() []*Room {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]*Room, 0, len(m.rooms))
	for _, r := range m.rooms {
		out = append(out, r)
	}
	return out
}

// allEdges returns the rooms this node has clients in now.
func (m *Manager) allEdges() []*edge {
	m.edgeMu.Lock()
	defer m.edgeMu.Unlock()
	out := make([]*edge, 0, len(m.edges))
	for _, e := range m.edges {
		out = append(out, e)
	}
	return out
}

// NodeDown implements ClusterHandler: node died or drains. Its clients
// leave every room (this node's clients get room:left), and rooms it owned
// find a new owner.
func (m *Manager) NodeDown(node string) {
	owned := m.ownedRooms()
	for _, r := range owned {
		r.mu.Lock()
		for _, c := range append([]*client(nil), r.order...) {
			if c.node == node {
				r.removeLocked(c.id, "", removedNodeDown)
			}
		}
		r.mu.Unlock()
		m.maybeUnload(r)
	}
	edges := m.allEdges()
	for _, e := range edges {
		e.mu.Lock()
		e.abandonLocked(func(l Lease) bool { return l.Node == node })
		if e.known && e.lease.Node == m.cl.NodeID() {
			e.mu.Unlock()
			continue // this node owns the room: done above
		}
		m.edgeNodeDownLocked(e, node)
		ownerDown := e.known && e.lease.Node == node
		if ownerDown {
			e.known = false // nothing more is sent to it
		}
		e.mu.Unlock()
		if ownerDown {
			m.resync(e)
		}
	}
}

// Resync implements ClusterHandler: after a reconnect, every room with
// clients here is re-read from its owner.
func (m *Manager) Resync() {
	edges := m.allEdges()
	for _, e := range edges {
		e.mu.Lock()
		// Requests or their answers may be among the lost messages.
		e.abandonLocked(func(Lease) bool { return true })
		e.known = false
		e.mu.Unlock()
		m.resync(e)
	}
}

// resync finds the edge's owner again and sends it this node's clients;
// they get a fresh room:state. Single-flight per edge; retried with
// exponential backoff while the room has clients here.
func (m *Manager) resync(e *edge) {
	e.mu.Lock()
	e.known, e.synced = false, false
	if e.resyncing {
		e.again = true
		e.mu.Unlock()
		return
	}
	e.resyncing = true
	e.mu.Unlock()
	safe.Go(m.log, m.metrics, safe.Background, func() {
		defer func() {
			e.mu.Lock()
			e.resyncing = false
			e.mu.Unlock()
		}()
		for {
			e.mu.Lock()
			e.again = false
			e.mu.Unlock()
			m.resyncOnce(e)
			e.mu.Lock()
			again := e.again && len(e.clients) > 0
			e.mu.Unlock()
			if !again {
				return
			}
		}
	}, nil)
}

// DefaultSyncTimeout is how long a resync waits for the owner's answer
// before it starts over; a join waits as long before it resyncs
// (Manager.syncTimeout, shorter in tests).
const DefaultSyncTimeout = 2 * time.Second

func (m *Manager) resyncOnce(e *edge) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var r *Room
	l, err := backoff.Retry(ctx, func() (Lease, error) {
		e.mu.Lock()
		n := len(e.clients)
		e.mu.Unlock()
		if n == 0 {
			return Lease{}, backoff.Permanent(errNotOwner(e.id))
		}
		l, room, err := m.resolve(ctx, e.id)
		if err != nil {
			m.log.Debug("room resync: finding the owner", "room", e.id, "err", err)
		}
		r = room
		return l, err
	}, backoff.WithBackOff(&backoff.ExponentialBackOff{InitialInterval: 20 * time.Millisecond, RandomizationFactor: 0.5,
		Multiplier: 2, MaxInterval: time.Second}))
	if err != nil {
		e.mu.Lock()
		n := len(e.clients)
		e.mu.Unlock()
		if n > 0 {
			m.log.Error("room resync failed", "room", e.id, "err", err)
		}
		return
	}
	// The lease is the owner this edge syncs with; it is known (requests
	// go to it) only once its answer arrived (deliverStates): a request
	// sent before the sync would reach an owner without this client.
	e.mu.Lock()
	e.lease, e.known, e.synced = l, false, false
	clients := make([]syncClient, 0, len(e.clients))
	e.syncing = make(map[string]bool, len(e.clients))
	for id, lc := range e.clients {
		clients = append(clients, syncClient{Conn: id, User: lc.s.UserID(), Name: lc.s.Name(), Perms: lc.perms, Presence: lc.presence,
			Joining: lc.joining, Since: joinSince(lc)})
		e.syncing[id] = true
	}
	e.mu.Unlock()
	if r == nil {
		// The owner's answer may never come (core NATS is at most once:
		// say the owner was still reconnecting): without it in
		// syncTimeout, the edge resyncs again.
		wait := make(chan struct{})
		e.mu.Lock()
		e.syncWait = wait
		e.mu.Unlock()
		m.sendNode(l.Node, nodeMsg{Kind: kindSync, Room: e.id, Epoch: l.Epoch, Clients: clients})
		t := time.NewTimer(m.syncTimeout)
		defer t.Stop()
		select {
		case <-wait:
		case <-t.C:
			m.log.Info("room resync: no answer from the owner; retrying", "room", e.id, "owner", l.Node)
			e.mu.Lock()
			if e.syncWait == wait {
				e.syncWait = nil
			}
			e.again = true
			e.mu.Unlock()
		}
		return
	}
	if r != nil {
		r.mu.Lock()
		r.syncNode(m.cl.NodeID(), clients)
		r.mu.Unlock()
		m.release(r)
	}
}

// Handover gives up every room this node owns (SIGTERM drain, after the
// gateway closed this node's connections): each room's pending commits
// are waited for, its lease released and its subscribers told (evMoved),
// so that another node takes it at once. The node takes no room after
// this.
func (m *Manager) Handover(ctx context.Context) {
	if m.cl == nil {
		return
	}
	m.draining.Store(true)
	owned := m.ownedRooms()
	for _, r := range owned {
		r.mu.Lock()
		r.closing = true
		r.mu.Unlock()
	}
	for _, r := range owned {
		m.waitCommitted(ctx, r)
		r.mu.Lock()
		r.gone = true
		l := r.lease
		r.mu.Unlock()
		m.mu.Lock()
		if m.rooms[r.id] == r {
			delete(m.rooms, r.id)
		}
		m.mu.Unlock()
		if err := m.cl.Release(ctx, r.id, l); err != nil {
			m.log.Warn("hand over room", "room", r.id, "err", err)
		}
		m.publishCtl(r.id, evMoved, l.Epoch, "")
	}
	m.log.Info("rooms handed over", "rooms", len(owned))
}

// waitCommitted waits until r has no commit pending (or ctx ends).
func (m *Manager) waitCommitted(ctx context.Context, r *Room) {
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		r.mu.Lock()
		n := r.pending
		r.mu.Unlock()
		if n == 0 {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}
