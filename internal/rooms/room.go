package rooms

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/parleyhq/parley/internal/access"
	"github.com/parleyhq/parley/internal/jsonpatch"
	"github.com/parleyhq/parley/internal/protocol"
	"github.com/parleyhq/parley/internal/store"
	"github.com/parleyhq/parley/internal/wsdeflate"
)

// This file is the owner's side of a room: the one place that orders its
// membership, presence, broadcasts and storage versions. The owner is this
// node for every room on a single node, and the lease holder in a cluster
// (cluster.go). Requests reach it from a connection on this node (an origin
// with a Sink) or from another node (an origin naming that node).

// Sink is where the owner sends a connection's frames when the connection
// is on this node (a gateway session satisfies it). Send is for events
// (bounded queue: a full queue closes the connection), Reply and
// ReplyError for answers to the connection's own requests (admitted over
// the queue limit, see gateway.Session).
type Sink interface {
	Send(frame []byte) bool
	Reply(typ, id string, data any)
	ReplyError(id string, err *protocol.Error)
}

// origin is the client a request comes from, and where its answers go.
type origin struct {
	conn, user, name string
	node             string // "" for a connection on this node
	sink             Sink   // set when node == ""
	reqID            string
}

// client is one connection inside a room.
type client struct {
	id, user, name string
	node           string // "" on this node
	sink           Sink   // nil for a client on another node
	perms          access.Set
	presence       map[string]json.RawMessage
	joinedAt       time.Time
	seq            uint64 // join order in the room (member list cursors, large.go)
}

// Room is a live room owned by this node. All fields are guarded by mu
// except id, m and refs (m.mu).
type Room struct {
	m  *Manager
	id string

	mu      sync.Mutex
	refs    int // guarded by m.mu
	loaded  bool
	lease   Lease              // this node's tenure (zero on a single node)
	fence   uint64             // the store epoch claimed for it: commits carry it (store.DocUpdate.Epoch)
	clients map[string]*client // by connection id
	order   []*client          // join order, for stable member lists
	remote  int                // clients on other nodes: events are published
	seq     uint64             // last event sequence number of this tenure
	joinSeq uint64             // last client.seq given

	// Large rooms (large.go): the cached first page of room:state's
	// members (nil when stale), and the batches waiting for the next tick.
	pageEnc         []byte
	pendingMembers  *memberBatch
	pendingPresence *presenceBatch
	tickArmed       bool

	// committed is what clients may see; head includes batches still being
	// committed. pending counts those batches.
	committed    jsonpatch.Doc
	committedVer int64
	committedEnc []byte // cached encoding of committed (nil when stale)
	head         jsonpatch.Doc
	headVer      int64
	pending      int
	gen          int // bumped when a commit fails and head is reset
	sinceSnap    int // versions since the last snapshot

	// hist is the catch-up replay: the newest committed updates within
	// KeepUpdates and KeepUpdatesBytes.
	hist history
	// broken is set when a commit callback of the room panicked: its state
	// may be half-updated, so its clients were sent room:left, it takes no
	// one in, and it leaves memory once its pending commits are done (the
	// next join loads it afresh from the store).
	broken bool
	// gone is set when this node stopped owning the room (another node's
	// epoch fenced a commit, or this node handed it over): it answers
	// requests with errNotOwner and leaves memory.
	gone bool
	// reloading is set (one node) while the room is reloaded from the
	// store after a commit conflict: requests are refused (retry).
	reloading bool
	// closing is set while this node hands the room over (drain): new
	// requests are answered with errNotOwner, commits already queued
	// complete and are announced as usual.
	closing bool
}

// errResetting is returned to requests that reach a broken room.
func errResetting(roomID string) *protocol.Error {
	return protocol.Errorf(protocol.CodeInternal, "room %s is being reset after an internal error; retry", roomID)
}

// errNotOwner answers a request that reached a node that no longer orders
// the room; the sender's node finds the new owner and resyncs.
func errNotOwner(roomID string) *protocol.Error {
	return protocol.Errorf(protocol.CodeInternal, "room %s %s", roomID, notOwnerSuffix)
}

const notOwnerSuffix = "moved to another node; retry"

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
	r.committedEnc = nil
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
	return member{ClientID: c.id, UserID: c.user, Name: c.name, Presence: p, JoinedAt: protocol.FormatTime(c.joinedAt)}
}

// event is one room event: a frame for every client except one, plus what
// other nodes need to keep their roster (cluster.go).
type event struct {
	kind   byte   // evFrame, evJoined, evLeft (wire.go)
	except string // connection id that does not get frame ("" for none)
	client string // evJoined/evLeft: the client
	user   string
	node   string        // evJoined: the client's node
	roster []rosterEntry // evMembers: the roster delta (Node "" for a client that left)
	frame  []byte
}

// emit sends ev to every client of the room on this node and, when some
// clients are on other nodes, publishes it once on the room's subject with
// the next sequence number. Needs r.mu. Returns the local deliveries.
func (r *Room) emit(ev event) int {
	n := 0
	// One Shared per event: a member connection that negotiated
	// permessage-deflate writes the frame compressed once for all of them.
	sh := wsdeflate.NewShared(ev.frame)
	for _, c := range r.order {
		if c.sink != nil && c.id != ev.except && wsdeflate.Send(c.sink, sh) {
			n++
		}
	}
	if r.m.cl != nil {
		r.seq++
		if r.remote > 0 {
			r.m.publish(r, ev)
		}
	}
	return n
}

// deliver sends frame to every client except the one named by except.
// Needs r.mu.
func (r *Room) deliver(frame []byte, except string) int {
	return r.emit(event{kind: evFrame, except: except, frame: frame})
}

// reply answers the origin's request with (typ, data).
func (r *Room) reply(o origin, typ string, data json.RawMessage) {
	if o.sink != nil {
		o.sink.Reply(typ, o.reqID, replyData(data))
		return
	}
	if o.node != "" {
		r.m.sendNode(o.node, nodeMsg{Kind: kindReply, Room: r.id, Conn: o.conn, Type: typ, ReqID: o.reqID, Data: data})
	}
}

// replyData is data for Sink.Reply: nil (no data member) when empty, as a
// nil json.RawMessage would encode as nothing at all.
func replyData(data json.RawMessage) any {
	if len(data) == 0 {
		return nil
	}
	return data
}

// fail answers the origin's request with an error.
func (r *Room) fail(o origin, err *protocol.Error) {
	if o.sink != nil {
		o.sink.ReplyError(o.reqID, err)
		return
	}
	if o.node != "" {
		r.m.sendNode(o.node, nodeMsg{Kind: kindReply, Room: r.id, Conn: o.conn, ReqID: o.reqID, Err: err})
	}
}

// usable refuses requests to a room that cannot take them. Needs r.mu.
func (r *Room) usable() *protocol.Error {
	switch {
	case r.broken, r.reloading:
		return errResetting(r.id)
	case r.gone, r.closing:
		return errNotOwner(r.id)
	}
	return nil
}

// --- join / leave ---

// joinState is a room:state without client_id: the same for every joiner
// at one moment. state(clientID) completes it.
type joinState struct {
	MemberCount int             `json:"member_count"`
	Members     json.RawMessage `json:"members"`
	MembersNext string          `json:"members_next,omitempty"` // a large room's first page ends here (large.go)
	Storage     json.RawMessage `json:"storage"`
	// CatchUp (a sync's answer, kindSynced) is the storage, with the
	// updates after its since_version, of each joining client that asked
	// for one and whose updates are still kept; the others get Storage.
	CatchUp map[string]json.RawMessage `json:"catch_up,omitempty"`
}

// forClient is js as joiner clientID gets it: its catch-up storage when
// it has one.
func (js joinState) forClient(clientID string) joinState {
	if cu, ok := js.CatchUp[clientID]; ok {
		js.Storage = cu
	}
	js.CatchUp = nil
	return js
}

// state completes js for one joiner. The result is written straight into
// the room:state frame by protocol.Encode (an Appender): the first page of
// members, tens of KB in a large room, is copied once per joiner.
func (js joinState) state(roomID, clientID string) stateData {
	return stateData{js: js, roomID: roomID, clientID: clientID}
}

// stateData is one joiner's room:state data (joinState.state).
type stateData struct {
	js               joinState
	roomID, clientID string
}

// JSONLen implements protocol.Appender.
func (s stateData) JSONLen() int {
	return 96 + 2*(len(s.roomID)+len(s.clientID)+len(s.js.MembersNext)) + len(s.js.Members) + len(s.js.Storage)
}

// AppendJSON implements protocol.Appender.
func (s stateData) AppendJSON(b []byte) []byte {
	js := s.js
	b = append(b, `{"room_id":`...)
	b = jsonpatch.AppendString(b, s.roomID)
	b = append(b, `,"client_id":`...)
	b = jsonpatch.AppendString(b, s.clientID)
	b = append(b, `,"member_count":`...)
	b = strconv.AppendInt(b, int64(js.MemberCount), 10)
	b = append(b, `,"members":`...)
	b = append(b, js.Members...)
	if js.MembersNext != "" {
		b = append(b, `,"members_next":`...)
		b = jsonpatch.AppendString(b, js.MembersNext)
	}
	b = append(b, `,"storage":`...)
	b = append(b, js.Storage...)
	return append(b, '}')
}

// MarshalJSON is AppendJSON, for encoders other than protocol.Encode.
func (s stateData) MarshalJSON() ([]byte, error) { return s.AppendJSON(nil), nil }

type storageState struct {
	Version int64           `json:"version"`
	Data    json.RawMessage `json:"data,omitempty"`
	// Updates is set (possibly to an empty list) only for a catch-up.
	Updates *[]store.DocUpdate `json:"updates,omitempty"`
}

// snapshotState returns the room's members and storage for a joiner.
// Needs r.mu.
func (r *Room) snapshotState(since *int64) joinState {
	members, next := r.firstPage()
	storage, _ := protocol.Marshal(r.storageFor(since))
	return joinState{MemberCount: len(r.order), Members: members, MembersNext: next, Storage: storage}
}

// roster is every client's id, user and node (for other nodes' rosters).
// Needs r.mu.
func (r *Room) roster() []rosterEntry {
	out := make([]rosterEntry, 0, len(r.order))
	for _, c := range r.order {
		node := c.node
		if node == "" {
			node = r.m.nodeID()
		}
		out = append(out, rosterEntry{Client: c.id, User: c.user, Node: node})
	}
	return out
}

// addClient takes the origin's connection into the room (or refreshes its
// permissions when it is already in) and answers with room:state; the
// others get room:joined. Needs r.mu.
func (r *Room) addClient(o origin, perms access.Set, presence map[string]json.RawMessage, since *int64, wantRoster bool) *protocol.Error {
	if err := r.usable(); err != nil {
		return err
	}
	c, already := r.clients[o.conn]
	if !already {
		c = &client{id: o.conn, user: o.user, name: o.name, node: o.node, sink: o.sink, perms: perms,
			presence: presence, joinedAt: time.Now()}
		r.addLocked(c)
		r.emitJoined(c)
	} else {
		c.perms = perms
	}
	js := r.snapshotState(since)
	if o.sink != nil {
		o.sink.Reply(protocol.TypeRoomState, o.reqID, js.state(r.id, o.conn))
		return nil
	}
	var roster []rosterEntry
	if wantRoster {
		roster = r.roster()
	}
	r.m.sendNode(o.node, nodeMsg{Kind: kindJoined, Room: r.id, Epoch: r.lease.Epoch, Seq: r.seq, Conn: o.conn,
		ReqID: o.reqID, State: &js, Roster: roster})
	return nil
}

// addLocked adds c and tells everyone else. Needs r.mu.
func (r *Room) addLocked(c *client) {
	r.joinSeq++
	c.seq = r.joinSeq
	r.clients[c.id] = c
	r.order = append(r.order, c)
	if c.sink == nil {
		r.remote++
	}
	if len(r.order) <= r.largeLimit() {
		r.pageEnc = nil
	}
	if r.coalescesMembers() {
		r.batchMember(c, true)
		return
	}
	joined := protocol.Encode(protocol.TypeRoomJoined, "", struct {
		RoomID   string                     `json:"room_id"`
		ClientID string                     `json:"client_id"`
		UserID   string                     `json:"user_id"`
		Name     string                     `json:"name,omitempty"`
		Presence map[string]json.RawMessage `json:"presence"`
	}{r.id, c.id, c.user, c.name, c.wire().Presence})
	node := c.node
	if node == "" {
		node = r.m.nodeID()
	}
	r.emit(event{kind: evJoined, except: c.id, client: c.id, user: c.user, node: node, frame: joined})
}

// leaveHow says who is told that a client left, and how.
type leaveHow int

const (
	// leftByRequest: the client asked (room:leave, a disconnect) on this
	// node. Everyone else gets room:left; the leaver its own copy carrying
	// the request id.
	leftByRequest leaveHow = iota
	// leftOnItsNode: the client's node took it out and already gave it its
	// copy (a leave forwarded by another node, a resync without it).
	// Everyone else gets room:left.
	leftOnItsNode
	// removedByOwner: the owner removes the client (a reset, a refused
	// permission). Everyone gets the same room:left, the client's node
	// included, which untracks it there.
	removedByOwner
	// removedNodeDown: the owner removes a client of a node that died.
	// Everyone gets room:left (there is no node of the client to tell).
	removedNodeDown
)

// removeLocked takes connID out of the room and tells who how says.
// Needs r.mu. Reports whether the client was in the room.
func (r *Room) removeLocked(connID, reqID string, how leaveHow) bool {
	c, ok := r.clients[connID]
	if !ok {
		return false
	}
	if r.onFirstPage(c) {
		r.pageEnc = nil
	}
	data := map[string]string{"room_id": r.id, "client_id": connID, "user_id": c.user}
	if how != removedByOwner && r.coalescesMembers() {
		r.batchMember(c, false)
	} else {
		if r.pendingMembers != nil {
			r.flushMembers() // an individual frame never overtakes the batch
		}
		frame := protocol.Encode(protocol.TypeRoomLeft, "", data)
		except := connID
		if how == removedByOwner || how == removedNodeDown {
			except = ""
		}
		r.emit(event{kind: evLeft, except: except, client: connID, user: c.user, frame: frame})
	}
	delete(r.clients, connID)
	if i := r.indexAfter(c.seq - 1); i < len(r.order) && r.order[i] == c {
		r.order = append(r.order[:i], r.order[i+1:]...)
	}
	if c.sink == nil {
		r.remote--
	}
	r.emitLeft(c)
	if how == leftByRequest && c.sink != nil {
		enc, _ := protocol.Marshal(data)
		c.sink.Send(protocol.Encode(protocol.TypeRoomLeft, reqID, json.RawMessage(enc)))
	}
	return true
}

// --- presence ---

type presenceData struct {
	RoomID   string          `json:"room_id"`
	Presence json.RawMessage `json:"presence"`
}

// updatePresence merges patch into the origin's presence; everyone gets
// room:presence_updated (the sender's copy is its reply). Needs r.mu.
// Returns the merged presence.
func (r *Room) updatePresence(o origin, patch map[string]json.RawMessage) (map[string]json.RawMessage, *protocol.Error) {
	if err := r.usable(); err != nil {
		return nil, err
	}
	c, err := r.clientWith(o, access.Presence)
	if err != nil {
		return nil, err
	}
	merged := mergePresence(c.presence, patch)
	enc, perr := encodePresence(merged, r.m.opts.PresenceMaxBytes)
	if perr != nil {
		return nil, perr
	}
	c.presence = merged
	if r.onFirstPage(c) {
		r.pageEnc = nil
	}
	e := presenceEntry{ClientID: o.conn, UserID: o.user, Presence: enc, Timestamp: protocol.Now()}
	data, frame := presenceFrame(r.id, e)
	if r.coalescesPresence() {
		r.batchPresence(c, enc, e.Timestamp)
	} else {
		r.deliver(frame, o.conn)
	}
	r.reply(o, protocol.TypeRoomPresenceUpdated, data)
	return merged, nil
}

// --- broadcast ---

type broadcastData struct {
	RoomID string          `json:"room_id"`
	Event  json.RawMessage `json:"event"`
}

// broadcastFrame builds room:event by appending: this runs once per event
// of every room.
func broadcastFrame(roomID, clientID, userID string, ev json.RawMessage) []byte {
	frame := make([]byte, 0, 96+len(roomID)+len(clientID)+len(userID)+len(ev))
	frame = append(frame, `{"type":"room:event","data":{"room_id":`...)
	frame = jsonpatch.AppendString(frame, roomID)
	frame = append(frame, `,"client_id":`...)
	frame = jsonpatch.AppendString(frame, clientID)
	frame = append(frame, `,"user_id":`...)
	frame = jsonpatch.AppendString(frame, userID)
	frame = append(frame, `,"event":`...)
	frame = append(frame, ev...)
	return append(frame, `}}`...)
}

// broadcast relays ev to everyone else in the room; the sender gets an ack
// when it asked with an id. Needs r.mu.
func (r *Room) broadcast(o origin, ev json.RawMessage) *protocol.Error {
	if err := r.usable(); err != nil {
		return err
	}
	if _, err := r.clientWith(o, access.Write); err != nil {
		return err
	}
	r.deliver(broadcastFrame(r.id, o.conn, o.user, ev), o.conn)
	if o.reqID != "" {
		r.reply(o, protocol.TypeAck, nil)
	}
	return nil
}

// clientWith returns the origin's client when the policy's answer at join
// (or the last permission refresh) holds action. Needs r.mu. Errors:
// not_found when not in the room, forbidden naming the missing action
// (access.Refusal).
func (r *Room) clientWith(o origin, action access.Action) (*client, *protocol.Error) {
	c, ok := r.clients[o.conn]
	if !ok {
		return nil, errNotInRoom(r.id)
	}
	if err := access.Refusal(r.id, c.perms, true, access.Subject{UserID: c.user}, action); err != nil {
		return nil, asProtocolError(err)
	}
	return c, nil
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
