package rooms

import (
	"encoding/binary"
	"encoding/json"
	"strconv"
	"time"

	"github.com/parleyhq/parley/internal/access"
	"github.com/parleyhq/parley/internal/protocol"
	"github.com/parleyhq/parley/internal/safe"
)

// Large rooms (PROTOCOL.md v1.1 §3 "Large rooms"). Up to
// Options.LargeRoomMembers members a room behaves as in v1: room:state
// lists every member and every join and leave is its own frame. Above it:
//   - room:state lists the first page (join order) with member_count and a
//     members_next cursor; room:members pages through the rest;
//   - joins and leaves are collected and sent as one
//     room:members_changed per Options.LargeRoomInterval, so that a join
//     costs O(1) frames instead of one frame to every member;
//   - with Options.PresenceCoalesce, room:presence_updated to the others is
//     replaced by one room:presence_batch per interval holding the latest
//     presence of each client that changed it (the sender still gets its
//     own room:presence_updated at once, as its reply).
//
// A batch carries each client's NET change since the last batch: a client
// that joined and left within it is listed as left, one that left and
// came back as joined with its current presence. Frames carry the absolute
// member_count. So a batch is correct for every recipient whatever it knew
// before (a joiner's room:state taken in the middle of a batch already
// lists some of it): joined entries are upserts and left entries deletes.
// A frame about a client the recipient does not know (presence of a member
// beyond its first page, or of a joiner whose batch is not sent yet) is
// normal in a large room: clients keep what such frames say.

// DefaultLargeRoomMembers and DefaultLargeRoomInterval are the defaults of
// Options.LargeRoomMembers and LargeRoomInterval.
const (
	DefaultLargeRoomMembers  = 100
	DefaultLargeRoomInterval = 100 * time.Millisecond
	// MaxMembersPage is the most members one room:members_page lists.
	MaxMembersPage = 1000
)

// memberBatch is the net membership change of a large room since its last
// room:members_changed.
type memberBatch struct {
	ids   []string           // clients touched, in first-touch order
	final map[string]*client // the client as it is now; nil when it left
	left  map[string]string  // client id → user id, for clients that left
}

// presenceBatch is the latest presence of each client that changed it
// since the last room:presence_batch.
type presenceBatch struct {
	ids    []string
	latest map[string]presenceEntry
}

type presenceEntry struct {
	ClientID  string          `json:"client_id"`
	UserID    string          `json:"user_id"`
	Presence  json.RawMessage `json:"presence"`
	Timestamp string          `json:"timestamp"`
}

// largeLimit is the member count above which the room is large.
func (r *Room) largeLimit() int {
	if n := r.m.opts.LargeRoomMembers; n > 0 {
		return n
	}
	return DefaultLargeRoomMembers
}

func (r *Room) interval() time.Duration {
	if d := r.m.opts.LargeRoomInterval; d > 0 {
		return d
	}
	return DefaultLargeRoomInterval
}

// coalescesMembers reports whether a membership change now goes into the
// batch: the room is large, or a batch is already waiting (so that no
// individual frame overtakes it). Needs r.mu.
func (r *Room) coalescesMembers() bool {
	return len(r.order) > r.largeLimit() || r.pendingMembers != nil
}

// coalescesPresence reports whether presence changes to the others go
// into the presence batch. Needs r.mu.
func (r *Room) coalescesPresence() bool {
	return r.m.opts.PresenceCoalesce && (len(r.order) > r.largeLimit() || r.pendingPresence != nil)
}

// batchMember records c's join (in) or departure. Needs r.mu; for a
// departure, before c is taken out of r.clients.
func (r *Room) batchMember(c *client, in bool) {
	b := r.pendingMembers
	if b == nil {
		b = &memberBatch{final: map[string]*client{}, left: map[string]string{}}
		r.pendingMembers = b
	}
	if _, seen := b.final[c.id]; !seen {
		if _, seen = b.left[c.id]; !seen {
			b.ids = append(b.ids, c.id)
		}
	}
	if in {
		b.final[c.id] = c
		delete(b.left, c.id)
	} else {
		delete(b.final, c.id)
		b.left[c.id] = c.user
	}
	r.armTick()
}

// batchPresence records c's new presence (enc) for the next presence
// batch. Needs r.mu.
func (r *Room) batchPresence(c *client, enc json.RawMessage, ts string) {
	b := r.pendingPresence
	if b == nil {
		b = &presenceBatch{latest: map[string]presenceEntry{}}
		r.pendingPresence = b
	}
	if _, seen := b.latest[c.id]; !seen {
		b.ids = append(b.ids, c.id)
	}
	b.latest[c.id] = presenceEntry{ClientID: c.id, UserID: c.user, Presence: enc, Timestamp: ts}
	r.armTick()
}

// armTick makes sure a flush runs one interval from now. Needs r.mu.
func (r *Room) armTick() {
	if r.tickArmed {
		return
	}
	r.tickArmed = true
	time.AfterFunc(r.interval(), r.tick)
}

// tick sends what the batches hold: membership first, so that presence
// never names a client before its join.
func (r *Room) tick() {
	defer safe.Recover(r.m.log, r.m.metrics, safe.Background, nil)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.tickArmed = false
	if r.gone || r.broken {
		r.pendingMembers, r.pendingPresence = nil, nil
		return
	}
	r.flushMembers()
	r.flushPresence()
}

// memberLeft is a left entry of room:members_changed.
type memberLeft struct {
	ClientID string `json:"client_id"`
	UserID   string `json:"user_id"`
}

// flushMembers sends the membership batch as one room:members_changed.
// Needs r.mu.
func (r *Room) flushMembers() {
	b := r.pendingMembers
	if b == nil {
		return
	}
	r.pendingMembers = nil
	joined := make([]member, 0, len(b.final))
	left := make([]memberLeft, 0, len(b.left))
	delta := make([]rosterEntry, 0, len(b.ids))
	for _, id := range b.ids {
		if c, ok := b.final[id]; ok {
			joined = append(joined, c.wire())
			delta = append(delta, rosterEntry{Client: c.id, User: c.user, Node: r.nodeOf(c)})
		} else if u, ok := b.left[id]; ok {
			left = append(left, memberLeft{ClientID: id, UserID: u})
			delta = append(delta, rosterEntry{Client: id, User: u}) // Node "": left
		}
	}
	frame := protocol.Encode(protocol.TypeRoomMembersChanged, "", struct {
		RoomID      string       `json:"room_id"`
		Joined      []member     `json:"joined"`
		Left        []memberLeft `json:"left"`
		MemberCount int          `json:"member_count"`
	}{r.id, joined, left, len(r.order)})
	r.emit(event{kind: evMembers, frame: frame, roster: delta})
}

// flushPresence sends the presence batch as one room:presence_batch to
// every client (the senders included: their entry repeats what their
// reply said). Clients that left meanwhile are skipped. Needs r.mu.
func (r *Room) flushPresence() {
	b := r.pendingPresence
	if b == nil {
		return
	}
	r.pendingPresence = nil
	updates := make([]presenceEntry, 0, len(b.ids))
	for _, id := range b.ids {
		if _, in := r.clients[id]; in {
			updates = append(updates, b.latest[id])
		}
	}
	if len(updates) == 0 {
		return
	}
	frame := protocol.Encode(protocol.TypeRoomPresenceBatch, "", struct {
		RoomID  string          `json:"room_id"`
		Updates []presenceEntry `json:"updates"`
	}{r.id, updates})
	r.emit(event{kind: evFrame, frame: frame})
}

// nodeOf is the node c is connected to.
func (r *Room) nodeOf(c *client) string {
	if c.node != "" {
		return c.node
	}
	return r.m.nodeID()
}

// --- member lists ---

// cursor is a member's position in join order, as clients see it.
func cursor(seq uint64) string { return strconv.FormatUint(seq, 10) }

// firstPage returns the encoded member list of room:state: every member
// up to the limit, else the first page and the cursor after it. Cached
// until a member of that page changes. Needs r.mu.
func (r *Room) firstPage() (json.RawMessage, string) {
	lim := r.largeLimit()
	if r.pageEnc == nil {
		n := min(len(r.order), lim)
		ms := make([]member, 0, n)
		for _, c := range r.order[:n] {
			ms = append(ms, c.wire())
		}
		r.pageEnc, _ = protocol.Marshal(ms)
	}
	if len(r.order) > lim {
		return r.pageEnc, cursor(r.order[lim-1].seq)
	}
	return r.pageEnc, ""
}

// onFirstPage reports whether c is listed by firstPage. Needs r.mu.
func (r *Room) onFirstPage(c *client) bool {
	lim := r.largeLimit()
	if len(r.order) <= lim {
		return true
	}
	return c.seq <= r.order[lim-1].seq
}

// indexAfter is the position in r.order of the first client that joined
// after the one at cursor seq. Needs r.mu.
func (r *Room) indexAfter(seq uint64) int {
	lo, hi := 0, len(r.order)
	for lo < hi {
		mid := int(uint(lo+hi) >> 1)
		if r.order[mid].seq <= seq {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	return lo
}

// membersPage answers room:members: up to limit members in join order
// after the cursor (from the start when after is ""), and the cursor of
// the next page (null at the end). Needs r.mu. Errors: not_found when the
// origin is not in the room, bad_request for a cursor that is not one.
func (r *Room) membersPage(o origin, after string, limit int) *protocol.Error {
	if err := r.usable(); err != nil {
		return err
	}
	if _, err := r.clientWith(o, access.Read); err != nil {
		return err
	}
	start := 0
	if after != "" {
		seq, err := strconv.ParseUint(after, 10, 64)
		if err != nil {
			return protocol.Errorf(protocol.CodeBadRequest, "after: not a cursor from members_next or next_after")
		}
		start = r.indexAfter(seq)
	}
	end := min(len(r.order), start+limit)
	ms := make([]member, 0, end-start)
	for _, c := range r.order[start:end] {
		ms = append(ms, c.wire())
	}
	var next *string
	if end < len(r.order) && end > start {
		s := cursor(r.order[end-1].seq)
		next = &s
	}
	data, _ := protocol.Marshal(struct {
		RoomID    string   `json:"room_id"`
		Members   []member `json:"members"`
		NextAfter *string  `json:"next_after"`
	}{r.id, ms, next})
	r.reply(o, protocol.TypeRoomMembersPage, data)
	return nil
}

// membersRequest is room:members's data.
type membersRequest struct {
	RoomID string `json:"room_id"`
	After  string `json:"after,omitempty"`
	Limit  *int   `json:"limit,omitempty"`
}

// decodeMembers validates room:members: a room id, a cursor of at most 20
// digits, a limit in 1..MaxMembersPage (default: the first page's size).
func decodeMembers(data json.RawMessage, defLimit int) (membersRequest, int, *protocol.Error) {
	var d membersRequest
	if perr := protocol.DecodeData(data, &d); perr != nil {
		return d, 0, perr
	}
	if err := protocol.CheckRoomID("room_id", d.RoomID); err != nil {
		return d, 0, protocol.AsError(err)
	}
	if len(d.After) > 20 {
		return d, 0, protocol.Errorf(protocol.CodeBadRequest, "after: not a cursor from members_next or next_after")
	}
	limit := defLimit
	if d.Limit != nil {
		if *d.Limit < 1 || *d.Limit > MaxMembersPage {
			return d, 0, protocol.Errorf(protocol.CodeBadRequest, "limit: must be 1..%d", MaxMembersPage)
		}
		limit = *d.Limit
	}
	return d, limit, nil
}

// appendRoster encodes a roster delta of evMembers: a count, then
// (client, user, node) per entry; node "" means the client left.
func appendRoster(b []byte, rs []rosterEntry) []byte {
	b = binary.AppendUvarint(b, uint64(len(rs)))
	for _, re := range rs {
		b = appendStr(b, re.Client)
		b = appendStr(b, re.User)
		b = appendStr(b, re.Node)
	}
	return b
}

// presenceFrame is room:presence_updated for one client.
func presenceFrame(roomID string, e presenceEntry) (json.RawMessage, []byte) {
	data, _ := protocol.Marshal(struct {
		RoomID string `json:"room_id"`
		presenceEntry
	}{roomID, e})
	return data, protocol.Encode(protocol.TypeRoomPresenceUpdated, "", json.RawMessage(data))
}

// edgeNodeDownLocked tells this node's clients in e's room that the
// clients of a dead node left: one room:left each while the room is
// small, one room:members_changed when it is large. Needs e.mu.
func (m *Manager) edgeNodeDownLocked(e *edge, node string) {
	lim := m.opts.LargeRoomMembers
	if lim <= 0 {
		lim = DefaultLargeRoomMembers
	}
	large := len(e.roster) > lim
	var left []memberLeft
	for id, re := range e.roster {
		if re.Node != node {
			continue
		}
		delete(e.roster, id)
		if large {
			left = append(left, memberLeft{ClientID: id, UserID: re.User})
		} else {
			e.deliverLocked(leftFrame(e.id, id, re.User), "")
		}
	}
	if len(left) > 0 {
		e.deliverLocked(protocol.Encode(protocol.TypeRoomMembersChanged, "", struct {
			RoomID      string       `json:"room_id"`
			Joined      []member     `json:"joined"`
			Left        []memberLeft `json:"left"`
			MemberCount int          `json:"member_count"`
		}{e.id, []member{}, left, len(e.roster)}), "")
	}
}

// pageSize is room:members's default limit: the size of room:state's
// first page.
func (m *Manager) pageSize() int {
	if n := m.opts.LargeRoomMembers; n > 0 {
		return min(n, MaxMembersPage)
	}
	return DefaultLargeRoomMembers
}
