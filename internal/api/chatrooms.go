package api

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"

	"github.com/parleyhq/parley/internal/access"
	"github.com/parleyhq/parley/internal/auth"
	"github.com/parleyhq/parley/internal/chat"
	"github.com/parleyhq/parley/internal/protocol"
	"github.com/parleyhq/parley/internal/store"
)

// ChatRooms serves the room records and their membership:
// POST/GET /api/rooms, GET /api/rooms/{id}, members, join and leave.
//
// A user token acts as itself. The server API key acts as an administrator:
// it may create ownerless rooms (also on an id that already has state),
// read any room and manage any room's members; the endpoints about "me"
// (list, join, leave) need a user token. Every room decision is the access
// policy's (Access): create needs access.Create, get access.Read, members
// access.Moderate, join access.Join; leave needs nothing (anyone may leave,
// and the answer does not tell whether the room exists).
type ChatRooms struct {
	*Base
	Store  store.RoomRecords // room records and membership, read and written
	Chat   *chat.Service
	Access Decider
}

// MaxRoomNameChars is the longest room name.
const MaxRoomNameChars = 100

// Register adds the routes to mux.
func (h *ChatRooms) Register(mux *http.ServeMux) {
	mux.HandleFunc("POST /api/rooms", h.create)
	mux.HandleFunc("GET /api/rooms", h.list)
	mux.HandleFunc("GET /api/rooms/{id}", h.get)
	mux.HandleFunc("POST /api/rooms/{id}/members", h.addMember)
	mux.HandleFunc("DELETE /api/rooms/{id}/members/{user_id}", h.removeMember)
	mux.HandleFunc("POST /api/rooms/{id}/join", h.join)
	mux.HandleFunc("POST /api/rooms/{id}/leave", h.leave)
}

// RoomJSON is a room in REST answers.
type RoomJSON struct {
	ID        string   `json:"id"`
	Name      string   `json:"name"`
	Open      bool     `json:"open"`
	OwnerID   string   `json:"owner_id"`
	CreatedAt string   `json:"created_at"`
	Members   []string `json:"members,omitempty"` // GET /api/rooms/{id} only
}

func roomJSON(r store.Room) RoomJSON {
	return RoomJSON{ID: r.ID, Name: r.Name, Open: r.Open, OwnerID: r.OwnerID, CreatedAt: protocol.FormatTime(r.CreatedAt)}
}

// list is the answer shape of every list endpoint.
type list[T any] struct {
	Items      []T     `json:"items"`
	NextBefore *string `json:"next_before"`
}

// validUserID accepts what a token's sub claim accepts.
func validUserID(id string) bool {
	return strings.TrimSpace(id) != "" && validText(id, auth.MaxUserIDLen)
}

type createRoomBody struct {
	ID   *string `json:"id"`
	Name string  `json:"name"`
	Open bool    `json:"open"`
}

func (h *ChatRooms) create(w http.ResponseWriter, r *http.Request) {
	c, err := h.Authenticate(r)
	if err != nil {
		Error(w, err)
		return
	}
	var b createRoomBody
	if err := h.DecodeJSON(r, &b); err != nil {
		Error(w, err)
		return
	}
	id := uuid.NewString()
	if b.ID != nil {
		id = *b.ID
		if err := protocol.CheckRoomID("id", id); err != nil {
			Error(w, err)
			return
		}
	}
	name := strings.TrimSpace(b.Name)
	if name == "" || utf8.RuneCountInString(name) > MaxRoomNameChars || !validText(name, MaxRoomNameChars) {
		Error(w, protocol.Errorf(protocol.CodeBadRequest, "name must be 1-%d characters without control characters", MaxRoomNameChars))
		return
	}
	if b.ID != nil {
		// PROTOCOL.md v1.1 §7: an id with state (storage, a live client,
		// a call) is taken for users.
		if err := h.allow(r.Context(), h.Access, c, id, access.Create); err != nil {
			Error(w, err)
			return
		}
	}
	room := store.Room{ID: id, Name: name, Open: b.Open, OwnerID: c.UserID(),
		CreatedAt: time.Now().UTC().Truncate(time.Millisecond)}
	if err := h.Store.CreateRoom(r.Context(), room); errors.Is(err, store.ErrConflict) {
		Error(w, protocol.Errorf(protocol.CodeConflict, "room %s exists", id))
		return
	} else if err != nil {
		Error(w, h.Internal(err, "create room"))
		return
	}
	if room.OwnerID != "" {
		// The owner may already be connected: let their live clients see
		// the new membership.
		h.Chat.MembershipChanged(r.Context(), id, room.OwnerID, false)
	}
	WriteJSON(w, http.StatusCreated, roomJSON(room))
}

func (h *ChatRooms) list(w http.ResponseWriter, r *http.Request) {
	c, err := h.RequireUser(r)
	if err != nil {
		Error(w, err)
		return
	}
	rooms, err := h.Store.RoomsOfUser(r.Context(), c.UserID())
	if err != nil {
		Error(w, h.Internal(err, "list rooms"))
		return
	}
	out := list[RoomJSON]{Items: make([]RoomJSON, len(rooms))}
	for i, room := range rooms {
		out.Items[i] = roomJSON(room)
	}
	WriteJSON(w, http.StatusOK, out)
}

// room asks the policy for action on the {id} room, then loads it: 400 for
// a bad id, the policy's refusal (the same for an unknown room as for one
// the caller may not see), 404 when a visible room has no record.
func (h *ChatRooms) room(r *http.Request, c Caller, action access.Action) (store.Room, error) {
	id, err := RoomID(r)
	if err != nil {
		return store.Room{}, err
	}
	if err := h.allow(r.Context(), h.Access, c, id, action); err != nil {
		return store.Room{}, err
	}
	room, err := h.Store.GetRoom(r.Context(), id)
	if errors.Is(err, store.ErrNotFound) {
		return store.Room{}, NotFound("no room %s", id)
	}
	if err != nil {
		return store.Room{}, h.Internal(err, "load room")
	}
	return room, nil
}

// get answers the room and its member ids to whoever may read the room
// (access.Read: members, anyone for open rooms, read grants, the API key).
func (h *ChatRooms) get(w http.ResponseWriter, r *http.Request) {
	c, err := h.Authenticate(r)
	if err != nil {
		Error(w, err)
		return
	}
	room, err := h.room(r, c, access.Read)
	if err != nil {
		Error(w, err)
		return
	}
	members, err := h.Store.Members(r.Context(), room.ID)
	if err != nil {
		Error(w, h.Internal(err, "list members"))
		return
	}
	out := roomJSON(room)
	out.Members = members
	WriteJSON(w, http.StatusOK, out)
}

type memberBody struct {
	UserID string `json:"user_id"`
}

// addMember (owner or API key) makes any user id a member: registered or
// known only from backend-minted tokens. 204; adding a member again is a
// no-op.
func (h *ChatRooms) addMember(w http.ResponseWriter, r *http.Request) {
	c, err := h.Authenticate(r)
	if err != nil {
		Error(w, err)
		return
	}
	room, err := h.room(r, c, access.Moderate)
	if err != nil {
		Error(w, err)
		return
	}
	var b memberBody
	if err := h.DecodeJSON(r, &b); err != nil {
		Error(w, err)
		return
	}
	if !validUserID(b.UserID) {
		Error(w, protocol.Errorf(protocol.CodeBadRequest, "user_id must be 1-%d characters without control characters", auth.MaxUserIDLen))
		return
	}
	if err := h.Store.AddMember(r.Context(), room.ID, b.UserID); err != nil {
		Error(w, h.Internal(err, "add member"))
		return
	}
	h.Chat.MembershipChanged(r.Context(), room.ID, b.UserID, false)
	w.WriteHeader(http.StatusNoContent)
}

// removeMember (owner or API key) removes a member; the owner cannot be
// removed (403). 204, also when the user was not a member.
func (h *ChatRooms) removeMember(w http.ResponseWriter, r *http.Request) {
	c, err := h.Authenticate(r)
	if err != nil {
		Error(w, err)
		return
	}
	room, err := h.room(r, c, access.Moderate)
	if err != nil {
		Error(w, err)
		return
	}
	user := r.PathValue("user_id")
	if !validUserID(user) {
		Error(w, protocol.Errorf(protocol.CodeBadRequest, "user_id must be 1-%d characters without control characters", auth.MaxUserIDLen))
		return
	}
	if user == room.OwnerID {
		Error(w, protocol.Errorf(protocol.CodeForbidden, "the owner of room %s cannot be removed", room.ID))
		return
	}
	h.removeAndApply(w, r, room.ID, user)
}

func (h *ChatRooms) removeAndApply(w http.ResponseWriter, r *http.Request, roomID, user string) {
	if err := h.Store.RemoveMember(r.Context(), roomID, user); err != nil {
		Error(w, h.Internal(err, "remove member"))
		return
	}
	// Live effect at once: their room clients are re-checked, their typing
	// there ends, and pushes (read from the store) no longer reach them.
	h.Chat.MembershipChanged(context.WithoutCancel(r.Context()), roomID, user, true)
	w.WriteHeader(http.StatusNoContent)
}

// join makes the caller a member of an open room (access.Join; 403 for
// other rooms). 204; joining again is a no-op.
func (h *ChatRooms) join(w http.ResponseWriter, r *http.Request) {
	c, err := h.RequireUser(r)
	if err != nil {
		Error(w, err)
		return
	}
	room, err := h.room(r, c, access.Join)
	if err != nil {
		Error(w, err)
		return
	}
	if err := h.Store.AddMember(r.Context(), room.ID, c.UserID()); err != nil {
		Error(w, h.Internal(err, "add member"))
		return
	}
	h.Chat.MembershipChanged(r.Context(), room.ID, c.UserID(), false)
	w.WriteHeader(http.StatusNoContent)
}

// leave removes the caller from the room; the owner cannot leave (403).
// 204, also when the caller was not a member or the room does not exist:
// leaving needs no permission, and the answer tells nothing about a room
// the caller may not see.
func (h *ChatRooms) leave(w http.ResponseWriter, r *http.Request) {
	c, err := h.RequireUser(r)
	if err != nil {
		Error(w, err)
		return
	}
	id, err := RoomID(r)
	if err != nil {
		Error(w, err)
		return
	}
	room, err := h.Store.GetRoom(r.Context(), id)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		Error(w, h.Internal(err, "load room"))
		return
	}
	if err == nil && c.UserID() == room.OwnerID {
		Error(w, protocol.Errorf(protocol.CodeForbidden, "the owner of room %s cannot leave it", room.ID))
		return
	}
	h.removeAndApply(w, r, id, c.UserID())
}
