// Package access is Parley's one access policy: who may do what in a room
// (PROTOCOL.md v1.1 §4, §5, §6 and §7). Rooms (WebSocket room:*), chat
// (typing:*, messages), media (media:*, calls) and every REST handler ask
// the same Policy; no other package decides a room permission.
//
// Two models share one room-id namespace (§7): token grants (the "rooms"
// claim: read, presence, write on a pattern) and stored rooms with members
// (created over REST; open rooms let anyone read and join). A Policy
// combines them into a Set of Actions per (subject, room):
//
//	action    API key   owner   member   open room, non-member   grant r/p/w   dev mode (any user)
//	read      yes       yes     yes      yes                    read          yes
//	presence  -         yes     yes      yes                    presence      yes
//	write     yes       yes     yes      yes                    write         yes
//	chat      -         yes     yes      -                      -             (members only)
//	call      -         yes     yes      -                      -             yes
//	moderate  yes       yes     -        -                      -             (owner only)
//	join      -         yes     yes      yes                    -             (open rooms only)
//
// "-" for the API key means the action needs a user identity (chat
// messages, calls, presence), not that the key is too weak.
//
// Refusals: a subject without read on a room cannot tell it from a room
// that does not exist; both get Invisible (forbidden, "no access to room
// <id>"). A subject that may read the room gets a forbidden error naming
// the missing action, or not_found when the room has no record and the
// action needs one (chat, moderate, join).
//
// Creating a room record (POST /api/rooms) is Create: a user may create a
// room only when its id has no state anywhere (record, storage, a live
// client, a call); otherwise conflict. The API key may adopt such an id.
package access

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/parleyhq/parley/internal/auth"
	"github.com/parleyhq/parley/internal/protocol"
	"github.com/parleyhq/parley/internal/store"
)

// Action is one thing a subject may do in a room.
type Action uint8

// The named actions of the policy (see the package table).
const (
	// Read: join the room over WebSocket and see its state (members,
	// presence, storage); GET storage; GET the room record; a JSON Patch
	// batch containing a test op.
	Read Action = 1 << iota
	// Presence: set one's own presence in the room.
	Presence
	// Write: update storage (room:update_storage, PATCH storage) and
	// room:broadcast.
	Write
	// Chat: post and list messages, typing:* (members only, §5).
	Chat
	// Call: start, join, leave and end the room's call, list its
	// participants, every media:* request (members only, §6).
	Call
	// Moderate: add and remove members (owner or API key).
	Moderate
	// Join: become a member through POST /api/rooms/{id}/join (open
	// rooms; a no-op for members).
	Join
	// Create: create the room record with this id (POST /api/rooms).
	// Decided by Policy.Decide only; never part of a Set.
	Create
)

var actionNames = [...]struct {
	a    Action
	name string
}{
	{Read, "read"}, {Presence, "presence"}, {Write, "write"}, {Chat, "chat"},
	{Call, "call"}, {Moderate, "moderate"}, {Join, "join"}, {Create, "create"},
}

// String is the action's name ("read", "write", ...); a combination is
// joined by "+".
func (a Action) String() string {
	var out []string
	for _, an := range actionNames {
		if a&an.a != 0 {
			out = append(out, an.name)
		}
	}
	if len(out) == 0 {
		return "none"
	}
	return strings.Join(out, "+")
}

// Set is a set of actions.
type Set = Action

// Subject is who asks: a user (with the claims of their token, which carry
// the room grants) or the server API key.
type Subject struct {
	// UserID is the user; "" for the API key.
	UserID string
	// Claims are the user's token claims (room grants); nil when the
	// grants are unknown or irrelevant (e.g. a stored-membership refresh).
	Claims *auth.Claims
	// APIKey is true for the server API key (REST only).
	APIKey bool
}

// User is the subject of a verified token.
func User(c *auth.Claims) Subject {
	if c == nil {
		return Subject{}
	}
	return Subject{UserID: c.UserID, Claims: c}
}

// Key is the subject of the server API key.
func Key() Subject { return Subject{APIKey: true} }

// Records is what the policy reads from the store: the room record and
// stored membership (store.RoomReader, and so store.Store, implements it).
type Records interface {
	// GetRoom returns the room record, store.ErrNotFound when none.
	GetRoom(ctx context.Context, id string) (store.Room, error)
	// IsMember reports stored membership.
	IsMember(ctx context.Context, roomID, userID string) (bool, error)
}

// StateProbe tells whether a room id has state outside the room record:
// storage written, a live client, a call (§7). Each holder of such state
// implements one (see internal/server).
type StateProbe interface {
	HasState(ctx context.Context, roomID string) (bool, error)
}

// StateFunc adapts a function to StateProbe.
type StateFunc func(ctx context.Context, roomID string) (bool, error)

// HasState implements StateProbe.
func (f StateFunc) HasState(ctx context.Context, roomID string) (bool, error) { return f(ctx, roomID) }

// Policy is the access policy of one node.
type Policy struct {
	// Dev opens every room: any user may read, set presence, write and use
	// calls (chat stays for members, moderation for owners).
	Dev bool
	// Records is the store; required.
	Records Records
	// State probes decide Create; each is asked in order.
	State []StateProbe
}

// Invisible is the refusal for a room the subject may not see, whether or
// not it exists: forbidden, "no access to room <id>" (§4, §7).
func Invisible(roomID string) *protocol.Error {
	return protocol.Errorf(protocol.CodeForbidden, "no access to room %s", roomID)
}

// Grants returns every action (except Create) that sub may take in roomID:
// the union of the token's grants, the stored record (open, owner,
// membership) and dev mode, as in the package table. Errors are store
// failures only (wrapped, not protocol errors).
func (p *Policy) Grants(ctx context.Context, sub Subject, roomID string) (Set, error) {
	set, _, err := p.grants(ctx, sub, roomID)
	return set, err
}

// GrantsOf returns the actions of want that sub may take in roomID:
// Grants(ctx, sub, roomID) & want. The store is read only when the token's
// grants and dev mode (static) do not already hold every action in want:
// the stored record (open room, membership, owner) can only add actions,
// never take one away, so the answer is the same either way. Rooms asks
// this on every room:join (want = Read|Presence|Write), where a token
// granting all three would otherwise cost a store read per join.
func (p *Policy) GrantsOf(ctx context.Context, sub Subject, roomID string, want Set) (Set, error) {
	if st := p.static(sub, roomID); st&want == want {
		return want, nil
	}
	set, err := p.Grants(ctx, sub, roomID)
	return set & want, err
}

// static is the part of sub's grants in roomID that does not depend on
// the store: the token's grants and dev mode (the API key's Read|Write).
// grants is always a superset.
func (p *Policy) static(sub Subject, roomID string) Set {
	if sub.APIKey {
		return Read | Write
	}
	var set Set
	if sub.Claims != nil {
		g := sub.Claims.RoomPerms(roomID)
		if g.Has(auth.PermRead) {
			set |= Read
		}
		if g.Has(auth.PermPresence) {
			set |= Presence
		}
		if g.Has(auth.PermWrite) {
			set |= Write
		}
	}
	if p.Dev {
		set |= Read | Presence | Write | Call
	}
	return set
}

// grants also reports whether the room has a record.
func (p *Policy) grants(ctx context.Context, sub Subject, roomID string) (Set, bool, error) {
	room, err := p.Records.GetRoom(ctx, roomID)
	exists := err == nil
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return 0, false, fmt.Errorf("access: room %s: %w", roomID, err)
	}
	if sub.APIKey {
		if exists {
			return Read | Write | Moderate, true, nil
		}
		return Read | Write, false, nil
	}
	set := p.static(sub, roomID)
	if !exists || sub.UserID == "" {
		return set, exists, nil
	}
	if room.Open {
		set |= Read | Presence | Write | Join
	}
	member, err := p.Records.IsMember(ctx, roomID, sub.UserID)
	if err != nil {
		return 0, exists, fmt.Errorf("access: membership %s: %w", roomID, err)
	}
	if member {
		set |= Read | Presence | Write | Chat | Call | Join
	}
	if room.OwnerID != "" && room.OwnerID == sub.UserID {
		set |= Moderate
	}
	return set, exists, nil
}

// Decide answers whether sub may take every action in a (usually one) in
// roomID: nil when allowed, else a *protocol.Error:
//   - Invisible (forbidden) when sub may not read the room, whether or not
//     it exists;
//   - not_found "no room <id>" when the room has no record and an action
//     needs one (Chat, Moderate, Join);
//   - forbidden naming what is missing otherwise;
//   - for Create: conflict "room <id> exists" when the id has state and sub
//     is not the API key (§7).
//
// Store failures come back wrapped (not protocol errors); callers map them
// to internal.
func (p *Policy) Decide(ctx context.Context, sub Subject, roomID string, a Action) error {
	if a&Create != 0 {
		return p.decideCreate(ctx, sub, roomID)
	}
	set, exists, err := p.grants(ctx, sub, roomID)
	if err != nil {
		return err
	}
	return Refusal(roomID, set, exists, sub, a)
}

// Refusal is Decide's answer given the subject's Set: nil when set holds
// every action in a. exists tells whether the room has a record.
func Refusal(roomID string, set Set, exists bool, sub Subject, a Action) error {
	if set&a == a {
		return nil
	}
	if set&Read == 0 {
		return Invisible(roomID)
	}
	if !exists && a&(Chat|Moderate|Join) != 0 {
		return protocol.Errorf(protocol.CodeNotFound, "no room %s", roomID)
	}
	missing := a &^ set
	switch {
	case sub.APIKey && missing&(Chat|Call|Presence|Join) != 0:
		return protocol.Errorf(protocol.CodeForbidden, "%s in room %s needs a user token, not the API key", missing, roomID)
	case missing&Join != 0:
		return protocol.Errorf(protocol.CodeForbidden, "room %s is not open; ask its owner to add you", roomID)
	case missing&Moderate != 0:
		return protocol.Errorf(protocol.CodeForbidden, "only the owner of room %s may manage its members", roomID)
	case missing&(Chat|Call) != 0:
		return protocol.Errorf(protocol.CodeForbidden, "only members of room %s may %s there; join it first", roomID, missing&(Chat|Call))
	}
	return protocol.Errorf(protocol.CodeForbidden, "no %s permission in room %s", missing, roomID)
}

// decideCreate: a user may create a record only for an id without state.
func (p *Policy) decideCreate(ctx context.Context, sub Subject, roomID string) error {
	if _, err := p.Records.GetRoom(ctx, roomID); err == nil {
		return protocol.Errorf(protocol.CodeConflict, "room %s exists", roomID)
	} else if !errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("access: room %s: %w", roomID, err)
	}
	if sub.APIKey {
		return nil
	}
	for _, probe := range p.State {
		has, err := probe.HasState(ctx, roomID)
		if err != nil {
			return fmt.Errorf("access: room %s state: %w", roomID, err)
		}
		if has {
			return protocol.Errorf(protocol.CodeConflict, "room %s exists", roomID)
		}
	}
	return nil
}
