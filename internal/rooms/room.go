package rooms

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"github.com/parleyhq/parley/internal/access"
	"github.com/parleyhq/parley/internal/gateway"
	"github.com/parleyhq/parley/internal/jsonpatch"
	"github.com/parleyhq/parley/internal/protocol"
	"github.com/parleyhq/parley/internal/store"
)

// client is one connection inside a room.
type client struct {
	id       string // session.ID(), kept to skip an interface call per delivery
	session  gateway.Session
	perms    access.Set
	presence map[string]json.RawMessage
	joinedAt time.Time
}

// Room is a live room. All fields are guarded by mu except id and m.
type Room struct {
	m  *Manager
	id string

	mu      sync.Mutex
	refs    int // guarded by m.mu
	loaded  bool
	clients map[string]*client // by connection id
	order   []*client          // join order, for stable member lists

	// committed is what clients may see; head includes batches still being
	// committed. pending counts those batches.
	committed    jsonpatch.Doc
	committedVer int64
	committedEnc []byte // cached encoding of committed (nil when stale)
	head         jsonpatch.Doc
	headVer      int64
	pending      int
	epoch        int // bumped when a commit fails and head is reset
	sinceSnap    int // versions since the last snapshot

	// hist is the catch-up replay: the newest committed updates within
	// KeepUpdates and KeepUpdatesBytes.
	hist history
	// broken is set when a commit callback of the room panicked: its state
	// may be half-updated, so its clients were sent room:left, it takes no
	// one in, and it leaves memory once its pending commits are done (the
	// next join loads it afresh from the store).
	broken bool
}

// errResetting is returned to requests that reach a broken room.
func errResetting(roomID string) *protocol.Error {
	return protocol.Errorf(protocol.CodeInternal, "room %s is being reset after an internal error; retry", roomID)
}

func newRoom(m *Manager, id string) *Room {
	return &Room{m: m, id: id, clients: map[string]*client{}}
}

// load reads the document from the store and replays the updates after
// its snapshot. Needs r.mu.
func (r *Room) load(ctx context.Context) error {
	doc, err := r.m.store.LoadDocument(ctx, r.id)
	if err != nil {
		return fmt.Errorf("load room %s: %w", r.id, err)
	}
	// The stored document was valid when written; do not re-apply limits
	// that may have been lowered since (it would make the room unloadable).
	d, err := jsonpatch.NewDoc(doc.Data, jsonpatch.Limits{})
	if err != nil {
		return fmt.Errorf("load room %s snapshot: %w", r.id, err)
	}
	ver := doc.Version
	for _, u := range doc.Updates {
		ops, err := jsonpatch.ParseOps(u.Ops, jsonpatch.Limits{})
		if err != nil {
			return fmt.Errorf("load room %s update %d: %w", r.id, u.Version, err)
		}
		if d, err = jsonpatch.Apply(d, ops, jsonpatch.Limits{}); err != nil {
			return fmt.Errorf("replay room %s update %d: %w", r.id, u.Version, err)
		}
		ver = u.Version
	}
	r.committed, r.head = d, d
	r.committedVer, r.headVer = ver, ver
	r.sinceSnap = len(doc.Updates)
	r.hist.reset(r.keptUpdates(ctx, doc, ver), r.m.opts.KeepUpdates, r.m.opts.KeepUpdatesBytes)
	r.loaded = true
	return nil
}

// keptUpdates returns the updates to seed the catch-up replay with after a
// load: the last KeepUpdates updates up to version ver, read from the store
// when some of them are older than the snapshot (the store keeps them, see
// store.DocUpdate.KeepUpdates), else the updates that came with the
// snapshot. A failed read is logged and falls back to the latter: catch-up
// then sends the full document, which is always correct.
func (r *Room) keptUpdates(ctx context.Context, doc store.Document, ver int64) []store.DocUpdate {
	keep := int64(r.m.opts.KeepUpdates)
	if int64(len(doc.Updates)) >= keep || doc.Version == 0 {
		return doc.Updates
	}
	ups, ok, err := r.m.store.UpdatesSince(ctx, r.id, max(0, ver-keep))
	switch {
	case err != nil:
		r.m.log.Warn("load room catch-up updates", "room", r.id, "err", err)
	case ok && len(ups) > 0 && ups[len(ups)-1].Version == ver:
		return ups
	}
	return doc.Updates
}

// member is the wire form of a client.
type member struct {
	ClientID string                     `json:"client_id"`
	UserID   string                     `json:"user_id"`
	Name     string                     `json:"name,omitempty"`
	Presence map[string]json.RawMessage `json:"presence"`
	JoinedAt string                     `json:"joined_at"`
}

func (c *client) wire() member {
	p := c.presence
	if p == nil {
		p = map[string]json.RawMessage{}
	}
	return member{ClientID: c.session.ID(), UserID: c.session.UserID(), Name: c.session.Name(), Presence: p,
		JoinedAt: protocol.FormatTime(c.joinedAt)}
}

// deliver sends frame to every client except the one named by except.
// Needs r.mu. Returns the number of deliveries.
func (r *Room) deliver(frame []byte, except string) int {
	n := 0
	for _, c := range r.order {
		if c.id != except && c.session.Send(frame) {
			n++
		}
	}
	return n
}

// --- join / leave ---

type joinData struct {
	RoomID       string          `json:"room_id"`
	Presence     json.RawMessage `json:"presence,omitempty"`
	SinceVersion *int64          `json:"since_version,omitempty"`
}

type stateData struct {
	RoomID   string `json:"room_id"`
	ClientID string `json:"client_id"`
	// MemberCount is the number of clients in the room, the joiner
	// included (PROTOCOL.md v1.1 §3); it equals len(Members) while the
	// member list is not paged.
	MemberCount int          `json:"member_count"`
	Members     []member     `json:"members"`
	Storage     storageState `json:"storage"`
}

type storageState struct {
	Version int64           `json:"version"`
	Data    json.RawMessage `json:"data,omitempty"`
	// Updates is set (possibly to an empty list) only for a catch-up.
	Updates *[]store.DocUpdate `json:"updates,omitempty"`
}

func (m *Manager) join(ctx context.Context, s gateway.Session, env protocol.Envelope) error {
	d, perr := decodeJoin(env.Data, m.opts.PresenceMaxBytes)
	if perr != nil {
		return perr
	}
	presence := d.Presence
	if max := m.opts.MaxRoomsPerConn; max > 0 && m.roomOfConn(s.ID(), d.RoomID) == nil && m.roomsOfConn(s.ID()) >= max {
		return protocol.Errorf(protocol.CodeTooLarge, "a connection may be in at most %d rooms; leave one first", max)
	}
	perms, err := m.permsFor(ctx, s, d.RoomID)
	if err != nil {
		return fmt.Errorf("room access: %w", err)
	}
	need := access.Read
	if presence != nil {
		need |= access.Presence
	}
	if err := access.Refusal(d.RoomID, perms, true, subject(s), need); err != nil {
		return err
	}
	r, err := m.acquire(ctx, d.RoomID)
	if err != nil {
		return err
	}
	defer m.release(r)

	r.mu.Lock()
	defer r.mu.Unlock()
	if r.broken {
		return errResetting(r.id)
	}
	c, already := r.clients[s.ID()]
	if !already {
		c = &client{id: s.ID(), session: s, perms: perms, presence: presence, joinedAt: time.Now()}
		r.clients[s.ID()] = c
		r.order = append(r.order, c)
		m.trackConn(s.ID(), r, true)
		joined := protocol.Encode(protocol.TypeRoomJoined, "", struct {
			RoomID   string                     `json:"room_id"`
			ClientID string                     `json:"client_id"`
			UserID   string                     `json:"user_id"`
			Name     string                     `json:"name,omitempty"`
			Presence map[string]json.RawMessage `json:"presence"`
		}{d.RoomID, s.ID(), s.UserID(), s.Name(), c.wire().Presence})
		r.deliver(joined, s.ID())
	} else {
		c.perms = perms
	}
	st := stateData{RoomID: r.id, ClientID: s.ID(), MemberCount: len(r.order), Members: make([]member, 0, len(r.order))}
	for _, mc := range r.order {
		st.Members = append(st.Members, mc.wire())
	}
	st.Storage = r.storageFor(d.SinceVersion)
	s.Reply(protocol.TypeRoomState, env.ID, st)
	return nil
}

// storageFor returns the updates after since when they are still kept,
// else the committed snapshot. Needs r.mu.
func (r *Room) storageFor(since *int64) storageState {
	if since != nil {
		if ups, ok := r.hist.since(*since, r.committedVer); ok {
			return storageState{Version: r.committedVer, Updates: &ups}
		}
	}
	if r.committedEnc == nil {
		r.committedEnc, _ = r.committed.MarshalJSON()
	}
	return storageState{Version: r.committedVer, Data: r.committedEnc}
}

type leaveData struct {
	RoomID string `json:"room_id"`
}

func (m *Manager) leave(s gateway.Session, env protocol.Envelope) error {
	d, perr := decodeLeave(env.Data)
	if perr != nil {
		return perr
	}
	r, err := m.inRoom(s, d.RoomID)
	if err != nil {
		return err
	}
	m.trackConn(s.ID(), r, false)
	m.removeClient(r, s.ID(), env.ID)
	return nil
}

// removeClient takes the connection out of r and tells everyone (the
// leaver's copy carries reqID). The room leaves memory when it empties.
func (m *Manager) removeClient(r *Room, connID, reqID string) {
	r.mu.Lock()
	c, ok := r.clients[connID]
	if !ok {
		r.mu.Unlock()
		return
	}
	data := map[string]string{"room_id": r.id, "client_id": connID, "user_id": c.session.UserID()}
	frame := protocol.Encode(protocol.TypeRoomLeft, "", data)
	r.deliver(frame, connID)
	c.session.Send(protocol.Encode(protocol.TypeRoomLeft, reqID, data))
	delete(r.clients, connID)
	for i, oc := range r.order {
		if oc == c {
			r.order = append(r.order[:i], r.order[i+1:]...)
			break
		}
	}
	r.mu.Unlock()
	m.mu.Lock()
	m.maybeUnloadLocked(r)
	m.mu.Unlock()
}

// --- presence ---

type presenceData struct {
	RoomID   string          `json:"room_id"`
	Presence json.RawMessage `json:"presence"`
}

func (m *Manager) updatePresence(s gateway.Session, env protocol.Envelope) error {
	roomID, patch, perr := decodePresence(env.Data, m.opts.PresenceMaxBytes)
	if perr != nil {
		return perr
	}
	r, err := m.inRoom(s, roomID)
	if err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	c, err := r.clientWith(s, access.Presence)
	if err != nil {
		return err
	}
	merged := mergePresence(c.presence, patch)
	enc, perr := encodePresence(merged, m.opts.PresenceMaxBytes)
	if perr != nil {
		return perr
	}
	c.presence = merged
	out := struct {
		RoomID    string          `json:"room_id"`
		ClientID  string          `json:"client_id"`
		UserID    string          `json:"user_id"`
		Presence  json.RawMessage `json:"presence"`
		Timestamp string          `json:"timestamp"`
	}{r.id, s.ID(), s.UserID(), enc, protocol.Now()}
	data, _ := protocol.Marshal(out)
	r.deliver(protocol.Encode(protocol.TypeRoomPresenceUpdated, "", json.RawMessage(data)), s.ID())
	s.Send(protocol.Encode(protocol.TypeRoomPresenceUpdated, env.ID, json.RawMessage(data)))
	return nil
}

// --- broadcast ---

type broadcastData struct {
	RoomID string          `json:"room_id"`
	Event  json.RawMessage `json:"event"`
}

func (m *Manager) broadcast(s gateway.Session, env protocol.Envelope) error {
	d, perr := decodeBroadcast(env.Data)
	if perr != nil {
		return perr
	}
	r, err := m.inRoom(s, d.RoomID)
	if err != nil {
		return err
	}
	// Built by appending: this runs once per event of every room.
	frame := make([]byte, 0, 96+len(d.RoomID)+len(s.ID())+len(s.UserID())+len(d.Event))
	frame = append(frame, `{"type":"room:event","data":{"room_id":`...)
	frame = jsonpatch.AppendString(frame, d.RoomID)
	frame = append(frame, `,"client_id":`...)
	frame = jsonpatch.AppendString(frame, s.ID())
	frame = append(frame, `,"user_id":`...)
	frame = jsonpatch.AppendString(frame, s.UserID())
	frame = append(frame, `,"event":`...)
	frame = append(frame, d.Event...)
	frame = append(frame, `}}`...)
	r.mu.Lock()
	if _, err := r.clientWith(s, access.Write); err != nil {
		r.mu.Unlock()
		return err
	}
	r.deliver(frame, s.ID())
	r.mu.Unlock()
	if env.ID != "" {
		s.Reply(protocol.TypeAck, env.ID, nil)
	}
	return nil
}

// roomMessage is the data of a message aimed at one room.
type roomMessage interface{ room() string }

func (d *leaveData) room() string     { return d.RoomID }
func (d *presenceData) room() string  { return d.RoomID }
func (d *broadcastData) room() string { return d.RoomID }
func (d *storageData) room() string   { return d.RoomID }

// inRoom returns the room roomID that the connection has joined, or
// not_found.
func (m *Manager) inRoom(s gateway.Session, roomID string) (*Room, error) {
	r := m.roomOfConn(s.ID(), roomID)
	if r == nil {
		return nil, errNotInRoom(roomID)
	}
	return r, nil
}

// clientWith returns s's client in r when the policy's answer at join (or
// the last RefreshUser) holds action. Needs r.mu. Errors: not_found when
// not in the room, forbidden naming the missing action (access.Refusal).
func (r *Room) clientWith(s gateway.Session, action access.Action) (*client, error) {
	c, ok := r.clients[s.ID()]
	if !ok {
		return nil, errNotInRoom(r.id)
	}
	if err := access.Refusal(r.id, c.perms, true, subject(s), action); err != nil {
		return nil, err
	}
	return c, nil
}
