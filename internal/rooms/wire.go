package rooms

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/parleyhq/parley/internal/access"
	"github.com/parleyhq/parley/internal/protocol"
)

// What rooms sends between nodes (cluster.go): node messages (requests to
// a room's owner and its answers, JSON, Cluster.SendNode) and room events
// (the owner's ordered publications, a compact binary header before the
// frame every client gets, Cluster.PublishRoom). Both decoders bound every
// length by the message's own size and are fuzzed (wire_fuzz_test.go).

// Node message kinds.
const (
	// edge → owner
	kindJoin     = "join"      // Conn, User, Name, ReqID, Perms, Presence, Since, WantRoster
	kindLeave    = "leave"     // Conn
	kindPresence = "presence"  // Conn, ReqID, Presence (a patch)
	kindStorage  = "storage"   // Conn, ReqID, Ops, Base
	kindEvent    = "event"     // Conn, ReqID, Event (room:broadcast)
	kindPerms    = "perms"     // Conn, Perms
	kindSync     = "sync"      // Clients: every client of the sender in the room
	kindPatch    = "patch"     // Corr, Client, Ops, Base (REST)
	kindSnapshot = "snapshot"  // Corr (REST)
	kindMembers  = "members"   // Conn, ReqID, After, Limit (room:members)
	kindAPIEvent = "api_event" // Corr, Event (server API broadcast)
	kindAPIConns = "api_conns" // Corr, After, Limit (server API connection list)
	// owner → edge
	kindReply    = "reply"     // Conn, Type, ReqID, Data or Err: one frame for one client
	kindJoined   = "joined"    // Conn, ReqID, Epoch, Seq, State, Roster (when asked for): a join's room:state
	kindSynced   = "synced"    // Epoch, Seq, State, Roster: answer to sync
	kindResult   = "result"    // Corr, Version, Data or Err (REST, server API)
	kindNotOwner = "not_owner" // Conn, ReqID or Corr: the room is not the receiver's to order
)

// nodeMsg is one message between two nodes about one room.
type nodeMsg struct {
	Kind     string                     `json:"k"`
	From     string                     `json:"f"`
	Room     string                     `json:"r"`
	Epoch    uint64                     `json:"e,omitempty"`
	Seq      uint64                     `json:"s,omitempty"`
	Corr     uint64                     `json:"c,omitempty"`
	Conn     string                     `json:"cn,omitempty"`
	User     string                     `json:"u,omitempty"`
	Name     string                     `json:"n,omitempty"`
	ReqID    string                     `json:"id,omitempty"`
	Client   string                     `json:"cl,omitempty"`
	Type     string                     `json:"t,omitempty"`
	Perms    access.Set                 `json:"p,omitempty"`
	Presence map[string]json.RawMessage `json:"pr,omitempty"`
	Since    *int64                     `json:"sv,omitempty"`
	Ops      json.RawMessage            `json:"o,omitempty"`
	Base     *int64                     `json:"b,omitempty"`
	Event    json.RawMessage            `json:"ev,omitempty"`
	Data     json.RawMessage            `json:"d,omitempty"`
	Version  int64                      `json:"v,omitempty"`
	Err      *protocol.Error            `json:"err,omitempty"`
	State    *joinState                 `json:"st,omitempty"`
	Roster   []rosterEntry              `json:"ro,omitempty"`
	Clients  []syncClient               `json:"cs,omitempty"`
	After    string                     `json:"af,omitempty"`
	Limit    int                        `json:"l,omitempty"`
	// WantRoster: the joiner's node has no baseline for the room and needs
	// its roster in the answer (otherwise it is left out: O(members)).
	WantRoster bool `json:"wr,omitempty"`
}

// rosterEntry is one client of a room as other nodes track it: enough to
// tell their clients room:left when its node dies.
type rosterEntry struct {
	Client string `json:"c"`
	User   string `json:"u"`
	Node   string `json:"n"`
}

// syncClient is one of a node's clients in a room, sent to the room's
// (new) owner so that it can take them in (kindSync).
type syncClient struct {
	Conn     string                     `json:"c"`
	User     string                     `json:"u"`
	Name     string                     `json:"n,omitempty"`
	Perms    access.Set                 `json:"p"`
	Presence map[string]json.RawMessage `json:"pr,omitempty"`
	// Joining: its room:join is not answered yet, so the owner takes it
	// in as a new client (room.client_joined), not as one carried over.
	Joining bool `json:"j,omitempty"`
	// Since is a joining client's since_version: the owner answers with
	// the updates after it when it still keeps them (joinState.CatchUp).
	Since *int64 `json:"s,omitempty"`
}

func encodeNodeMsg(m nodeMsg) []byte {
	b, _ := protocol.Marshal(m)
	return b
}

// decodeNodeMsg decodes and checks a node message: a known kind, a valid
// room id, and nothing a handler would index without checking.
func decodeNodeMsg(b []byte) (nodeMsg, error) {
	var m nodeMsg
	if err := json.Unmarshal(b, &m); err != nil {
		return m, fmt.Errorf("node message: %w", err)
	}
	switch m.Kind {
	case kindJoin, kindLeave, kindPresence, kindStorage, kindEvent, kindPerms, kindSync, kindPatch, kindSnapshot,
		kindMembers, kindAPIEvent, kindAPIConns, kindReply, kindJoined, kindSynced, kindResult, kindNotOwner:
	default:
		return m, fmt.Errorf("node message: unknown kind %q", m.Kind)
	}
	if err := validRoom(m.Room); err != nil {
		return m, fmt.Errorf("node message: %v", err)
	}
	if m.From == "" {
		return m, errors.New("node message: no sender")
	}
	if m.Kind == kindMembers && (m.Limit < 1 || m.Limit > MaxMembersPage) {
		return m, errors.New("node message: members limit out of range")
	}
	if (m.Kind == kindJoined || m.Kind == kindSynced) && m.State == nil {
		return m, errors.New("node message: no state")
	}
	return m, nil
}

// Room event kinds.
const (
	evFrame   byte = iota + 1 // a frame for the room's clients
	evJoined                  // frame is room:joined; client, user, node join the roster
	evLeft                    // frame is room:left; client leaves the roster
	evMoved                   // the owner gave the room up: find the new owner (not sequenced)
	evRefresh                 // user's permissions changed: re-decide them (not sequenced; any node)
	evMembers                 // frame is room:members_changed; roster is its delta (large.go)
)

// wireEvent is a room event as published: who published it, in which
// tenure (epoch) and at which position (seq).
type wireEvent struct {
	event
	from  string
	epoch uint64
	seq   uint64
}

func appendStr(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func encodeEvent(e wireEvent) []byte {
	b := make([]byte, 0, 32+len(e.from)+len(e.except)+len(e.client)+len(e.user)+len(e.node)+len(e.frame))
	b = append(b, e.kind)
	b = appendStr(b, e.from)
	b = binary.AppendUvarint(b, e.epoch)
	b = binary.AppendUvarint(b, e.seq)
	b = appendStr(b, e.except)
	b = appendStr(b, e.client)
	b = appendStr(b, e.user)
	b = appendStr(b, e.node)
	if e.kind == evMembers {
		b = appendRoster(b, e.roster)
	}
	return append(b, e.frame...)
}

var errTruncated = errors.New("room event: truncated")

// decodeEvent is encodeEvent's inverse. Every length is checked against
// what is left of b before it is used (no arithmetic on it that can
// overflow: n is compared to len(b)-k as uint64).
func decodeEvent(b []byte) (wireEvent, error) {
	var e wireEvent
	if len(b) < 1 {
		return e, errTruncated
	}
	e.kind, b = b[0], b[1:]
	if e.kind < evFrame || e.kind > evMembers {
		return e, fmt.Errorf("room event: unknown kind %d", e.kind)
	}
	str := func() (string, error) {
		n, k := binary.Uvarint(b)
		if k <= 0 || n > uint64(len(b)-k) {
			return "", errTruncated
		}
		s := string(b[k : k+int(n)])
		b = b[k+int(n):]
		return s, nil
	}
	num := func() (uint64, error) {
		n, k := binary.Uvarint(b)
		if k <= 0 {
			return 0, errTruncated
		}
		b = b[k:]
		return n, nil
	}
	var err error
	if e.from, err = str(); err != nil {
		return e, err
	}
	if e.epoch, err = num(); err != nil {
		return e, err
	}
	if e.seq, err = num(); err != nil {
		return e, err
	}
	for _, p := range []*string{&e.except, &e.client, &e.user, &e.node} {
		if *p, err = str(); err != nil {
			return e, err
		}
	}
	if e.kind == evMembers {
		n, err := num()
		if err != nil {
			return e, err
		}
		// Each entry takes at least 3 bytes: n is bounded by what is left
		// before anything is allocated for it.
		if n > uint64(len(b))/3 {
			return e, errTruncated
		}
		e.roster = make([]rosterEntry, 0, n)
		for range n {
			var re rosterEntry
			for _, p := range []*string{&re.Client, &re.User, &re.Node} {
				if *p, err = str(); err != nil {
					return e, err
				}
			}
			e.roster = append(e.roster, re)
		}
	}
	e.frame = b
	return e, nil
}
