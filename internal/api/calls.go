package api

import (
	"encoding/json"
	"net/http"

	"github.com/parleyhq/parley/internal/access"
	"github.com/parleyhq/parley/internal/hub"
	"github.com/parleyhq/parley/internal/media"
	"github.com/parleyhq/parley/internal/protocol"
)

// Calls serves the call endpoints under /api/rooms/{id}/call. Every one
// needs access.Call (members; every user in dev mode; PROTOCOL.md §6, §7).
type Calls struct {
	*Base
	SFU    *media.SFU
	Hub    *hub.Hub
	Access Decider
}

// Register adds the routes to mux.
func (h *Calls) Register(mux *http.ServeMux) {
	mux.HandleFunc("POST /api/rooms/{id}/call/start", h.start)
	mux.HandleFunc("POST /api/rooms/{id}/call/join", h.join)
	mux.HandleFunc("POST /api/rooms/{id}/call/leave", h.leave)
	mux.HandleFunc("POST /api/rooms/{id}/call/end", h.end)
	mux.HandleFunc("GET /api/rooms/{id}/call/participants", h.participants)
}

// member authenticates the caller and asks the policy for access.Call.
func (h *Calls) member(r *http.Request) (Caller, string, error) {
	roomID, err := RoomID(r)
	if err != nil {
		return Caller{}, "", err
	}
	c, err := h.Authenticate(r)
	if err != nil {
		return c, "", err
	}
	return c, roomID, h.allow(r.Context(), h.Access, c, roomID, access.Call)
}

func (h *Calls) start(w http.ResponseWriter, r *http.Request) {
	c, roomID, err := h.member(r)
	if err != nil {
		Error(w, err)
		return
	}
	caps, _, err := h.SFU.StartCall(roomID, c.UserID())
	if err != nil {
		Error(w, h.Internal(err, "start call"))
		return
	}
	WriteJSON(w, http.StatusOK, struct {
		Started         bool            `json:"started"`
		RTPCapabilities json.RawMessage `json:"rtp_capabilities"`
	}{true, caps})
}

type connBody struct {
	ConnectionID string `json:"connection_id"`
}

// ownConnection checks that connID is a live connection of the caller.
func (h *Calls) ownConnection(c Caller, connID string) error {
	conn, ok := h.Hub.Conn(connID)
	if !ok || conn.UserID() != c.UserID() {
		return protocol.Errorf(protocol.CodeNotFound, "no live connection %q of yours", connID)
	}
	return nil
}

func (h *Calls) join(w http.ResponseWriter, r *http.Request) {
	c, roomID, err := h.member(r)
	if err != nil {
		Error(w, err)
		return
	}
	var b connBody
	if err := h.DecodeJSON(r, &b); err != nil {
		Error(w, err)
		return
	}
	if b.ConnectionID == "" {
		Error(w, protocol.Errorf(protocol.CodeBadRequest, "connection_id is required"))
		return
	}
	if err := h.ownConnection(c, b.ConnectionID); err != nil {
		Error(w, err)
		return
	}
	if err := h.SFU.JoinCall(roomID, b.ConnectionID, c.UserID()); err != nil {
		Error(w, h.Internal(err, "join call"))
		return
	}
	WriteJSON(w, http.StatusOK, map[string]bool{"joined": true})
}

func (h *Calls) leave(w http.ResponseWriter, r *http.Request) {
	c, roomID, err := h.member(r)
	if err != nil {
		Error(w, err)
		return
	}
	var b connBody
	if r.ContentLength != 0 {
		if err := h.DecodeJSON(r, &b); err != nil {
			Error(w, err)
			return
		}
	}
	if !h.SFU.CallActive(roomID) {
		Error(w, protocol.Errorf(protocol.CodeNotFound, "no call in room %s", roomID))
		return
	}
	if b.ConnectionID != "" {
		if err := h.ownConnection(c, b.ConnectionID); err != nil {
			Error(w, err)
			return
		}
		h.SFU.LeaveCall(roomID, b.ConnectionID)
	} else {
		h.SFU.LeaveUser(roomID, c.UserID())
	}
	WriteJSON(w, http.StatusOK, map[string]bool{"left": true})
}

func (h *Calls) end(w http.ResponseWriter, r *http.Request) {
	_, roomID, err := h.member(r)
	if err != nil {
		Error(w, err)
		return
	}
	if !h.SFU.EndCall(roomID) {
		Error(w, protocol.Errorf(protocol.CodeNotFound, "no call in room %s", roomID))
		return
	}
	WriteJSON(w, http.StatusOK, map[string]bool{"ended": true})
}

func (h *Calls) participants(w http.ResponseWriter, r *http.Request) {
	_, roomID, err := h.member(r)
	if err != nil {
		Error(w, err)
		return
	}
	ps, err := h.SFU.Participants(roomID)
	if err != nil {
		Error(w, h.Internal(err, "participants"))
		return
	}
	if ps == nil {
		ps = []media.Participant{}
	}
	WriteJSON(w, http.StatusOK, map[string]any{"items": ps, "next_before": nil})
}
