package rooms

import (
	"context"
	"encoding/json"
	"sort"

	"github.com/parleyhq/parley/internal/jsonpatch"
	"github.com/parleyhq/parley/internal/protocol"
)

// The server API's side of rooms (PROTOCOL.md v1.1 §7; docs/server-api.md):
// a backend's broadcast into a live room, the list of a live room's
// connections, the live rooms this node owns, and the room webhook events.
// Broadcasts and lists are answered by the room's owner, which knows every
// client of the room on any node, reached the way a REST storage patch is
// (a function call here, a node message to another node).

// Events receives the room lifecycle at the room's owner, for webhooks
// (internal/webhook's Sender satisfies it): room.started and
// room.finished when a room gets its first client and loses its last,
// room.client_joined and room.client_left for each client. Emit is
// called under the room's lock and must not block.
type Events interface {
	Emit(event string, data any)
}

// Webhook event names the owner emits (the same strings as
// internal/webhook's constants, which rooms does not import).
const (
	EventRoomStarted  = "room.started"
	EventRoomFinished = "room.finished"
	EventClientJoined = "room.client_joined"
	EventClientLeft   = "room.client_left"
)

// RoomEvent is the data of room.started and room.finished.
type RoomEvent struct {
	RoomID string `json:"room_id"`
}

// ClientEvent is the data of room.client_joined (Name set) and
// room.client_left.
type ClientEvent struct {
	RoomID       string `json:"room_id"`
	ConnectionID string `json:"connection_id"`
	UserID       string `json:"user_id"`
	Name         string `json:"name,omitempty"`
}

// emitJoined reports a client that has just joined (not one carried over
// from a previous owner by a resync). Needs r.mu.
func (r *Room) emitJoined(c *client) {
	ev := r.m.opts.Events
	if ev == nil {
		return
	}
	if len(r.clients) == 1 {
		ev.Emit(EventRoomStarted, RoomEvent{RoomID: r.id})
	}
	ev.Emit(EventClientJoined, ClientEvent{RoomID: r.id, ConnectionID: c.id, UserID: c.user, Name: c.name})
}

// emitLeft reports a client that left; the room's last one finishes it.
// Needs r.mu.
func (r *Room) emitLeft(c *client) {
	ev := r.m.opts.Events
	if ev == nil {
		return
	}
	ev.Emit(EventClientLeft, ClientEvent{RoomID: r.id, ConnectionID: c.id, UserID: c.user})
	if len(r.clients) == 0 {
		ev.Emit(EventRoomFinished, RoomEvent{RoomID: r.id})
	}
}

// errNotLive answers a server-API request for a room without clients.
func errNotLive(roomID string) *protocol.Error {
	return protocol.Errorf(protocol.CodeNotFound, "room %s has no live connection", roomID)
}

// apiEventFrame is room:event with a null client and user: an event the
// application's backend sent (POST /api/rooms/{id}/broadcast).
func apiEventFrame(roomID string, ev json.RawMessage) []byte {
	frame := make([]byte, 0, 96+len(roomID)+len(ev))
	frame = append(frame, `{"type":"room:event","data":{"room_id":`...)
	frame = jsonpatch.AppendString(frame, roomID)
	frame = append(frame, `,"client_id":null,"user_id":null,"event":`...)
	frame = append(frame, ev...)
	return append(frame, `}}`...)
}

// apiBroadcast sends ev to every client of the room (on every node) and
// returns how many there are. Needs r.mu.
func (r *Room) apiBroadcast(ev json.RawMessage) (int, *protocol.Error) {
	if err := r.usable(); err != nil {
		return 0, err
	}
	if len(r.order) == 0 {
		return 0, errNotLive(r.id)
	}
	r.deliver(apiEventFrame(r.id, ev), "")
	return len(r.order), nil
}

// Connection is one client of a live room as the server API lists it.
type Connection struct {
	ConnectionID string                     `json:"connection_id"`
	UserID       string                     `json:"user_id"`
	Name         string                     `json:"name"`
	Presence     map[string]json.RawMessage `json:"presence"`
	JoinedAt     string                     `json:"joined_at"`
}

// ConnectionsPage is one page of a room's connections, ordered by
// connection id; NextAfter (nil at the end) is the cursor for the next.
type ConnectionsPage struct {
	Items     []Connection `json:"items"`
	NextAfter *string      `json:"next_after"`
}

// MaxPageBytes bounds the presence carried by one page of connections
// (a page also ends there), so that an answer fits one NATS message.
const MaxPageBytes = 256 << 10

// connections lists the room's clients after the cursor. Needs r.mu.
func (r *Room) connections(after string, limit int) ConnectionsPage {
	if limit <= 0 {
		limit = 100
	}
	ids := make([]string, 0, len(r.clients))
	for id := range r.clients {
		if id > after {
			ids = append(ids, id)
		}
	}
	sort.Strings(ids)
	page := ConnectionsPage{Items: []Connection{}}
	size := 0
	for i, id := range ids {
		c := r.clients[id]
		w := c.wire()
		for k, v := range w.Presence {
			size += len(k) + len(v) + 4
		}
		page.Items = append(page.Items, Connection{ConnectionID: c.id, UserID: c.user, Name: c.name,
			Presence: w.Presence, JoinedAt: w.JoinedAt})
		if i+1 < len(ids) && (len(page.Items) >= limit || size >= MaxPageBytes) {
			next := id
			page.NextAfter = &next
			break
		}
	}
	return page
}

// liveOwner finds the owner of a room that may be live without taking a
// room nobody holds: on one node the room when it is in memory; in a
// cluster nothing when no lease exists, the remote owner when a live node
// holds the lease, else (a dead, draining or previous-process holder,
// whose clients on other nodes are resyncing) this node takes the room as
// a REST storage request would. r is returned with a reference held.
func (m *Manager) liveOwner(ctx context.Context, roomID string) (r *Room, remote Lease, live bool, err error) {
	if m.cl == nil {
		r = m.owned(roomID, nil)
		return r, Lease{}, r != nil, nil
	}
	l, ok, err := m.cl.Lease(ctx, roomID)
	if err != nil || !ok {
		return nil, Lease{}, false, err
	}
	if l.Node != m.cl.NodeID() && m.cl.Alive(l.Node) {
		return nil, l, true, nil
	}
	if l.Node == m.cl.NodeID() {
		if r = m.owned(roomID, &l); r != nil {
			return r, l, true, nil
		}
	}
	l, r, err = m.resolve(ctx, roomID)
	return r, l, err == nil, err
}

// BroadcastEvent sends a backend's event to every client of the live room
// as room:event {room_id, client_id: null, user_id: null, event}, through
// the room's owner, and returns how many clients it went to. A room with
// no live client is not_found (nothing is sent).
func (m *Manager) BroadcastEvent(ctx context.Context, roomID string, ev json.RawMessage) (n int, err error) {
	if err := validRoom(roomID); err != nil {
		return 0, err
	}
	for attempt := 0; attempt < 3; attempt++ {
		if n, err = m.broadcastEvent(ctx, roomID, ev); !isNotOwner(err) {
			break
		}
	}
	return n, err
}

func (m *Manager) broadcastEvent(ctx context.Context, roomID string, ev json.RawMessage) (int, error) {
	r, remote, live, err := m.liveOwner(ctx, roomID)
	if err != nil {
		return 0, err
	}
	if !live {
		return 0, errNotLive(roomID)
	}
	if r == nil {
		res, err := m.call(ctx, remote, nodeMsg{Kind: kindAPIEvent, Room: roomID, Epoch: remote.Epoch, Event: ev})
		if err != nil {
			return 0, err
		}
		return int(res.Version), nil
	}
	defer m.release(r)
	r.mu.Lock()
	defer r.mu.Unlock()
	n, perr := r.apiBroadcast(ev)
	if perr != nil {
		return 0, perr
	}
	return n, nil
}

// Connections lists a page of the live room's clients (on every node),
// ordered by connection id, after the cursor after (""), at most limit. A
// room with no live client has none.
func (m *Manager) Connections(ctx context.Context, roomID, after string, limit int) (p ConnectionsPage, err error) {
	if err := validRoom(roomID); err != nil {
		return ConnectionsPage{}, err
	}
	for attempt := 0; attempt < 3; attempt++ {
		if p, err = m.connectionsOf(ctx, roomID, after, limit); !isNotOwner(err) {
			break
		}
	}
	return p, err
}

func (m *Manager) connectionsOf(ctx context.Context, roomID, after string, limit int) (ConnectionsPage, error) {
	empty := ConnectionsPage{Items: []Connection{}}
	r, remote, live, err := m.liveOwner(ctx, roomID)
	if err != nil || !live {
		return empty, err
	}
	if r == nil {
		res, err := m.call(ctx, remote, nodeMsg{Kind: kindAPIConns, Room: roomID, Epoch: remote.Epoch, After: after, Limit: limit})
		if err != nil {
			return empty, err
		}
		var p ConnectionsPage
		if err := json.Unmarshal(res.Data, &p); err != nil || p.Items == nil {
			return empty, protocol.Errorf(protocol.CodeInternal, "malformed connection list from the owner of room %s", roomID)
		}
		return p, nil
	}
	defer m.release(r)
	r.mu.Lock()
	defer r.mu.Unlock()
	if perr := r.usable(); perr != nil {
		return empty, perr
	}
	return r.connections(after, limit), nil
}

// LiveRoom is a room with clients and how many (all nodes together).
type LiveRoom struct {
	RoomID      string `json:"room_id"`
	Connections int    `json:"connections"`
}

// OwnedLiveRooms lists the rooms this node orders that have clients (on
// any node), ordered by id, after the cursor, at most limit; more says
// that there are others after the last. In a cluster every live room has
// one owner, so the lists of all nodes together are every live room once.
func (m *Manager) OwnedLiveRooms(after string, limit int) (out []LiveRoom, more bool) {
	out = []LiveRoom{}
	for _, r := range m.ownedRooms() {
		if r.id <= after {
			continue
		}
		r.mu.Lock()
		n := len(r.clients)
		ok := r.loaded && !r.gone && !r.broken && n > 0
		r.mu.Unlock()
		if ok {
			out = append(out, LiveRoom{RoomID: r.id, Connections: n})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].RoomID < out[j].RoomID })
	if limit > 0 && len(out) > limit {
		return out[:limit], true
	}
	return out, false
}

// apiOwnerMessage answers kindAPIEvent and kindAPIConns at the owner.
// Needs nothing held; takes r.mu.
func (r *Room) apiOwnerMessage(msg nodeMsg) nodeMsg {
	res := nodeMsg{Kind: kindResult, Room: r.id, Corr: msg.Corr}
	r.mu.Lock()
	defer r.mu.Unlock()
	switch msg.Kind {
	case kindAPIEvent:
		n, perr := r.apiBroadcast(msg.Event)
		res.Version, res.Err = int64(n), perr
	case kindAPIConns:
		if perr := r.usable(); perr != nil {
			res.Err = perr
			break
		}
		res.Data, _ = protocol.Marshal(r.connections(msg.After, msg.Limit))
	}
	return res
}
