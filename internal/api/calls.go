package api

import (
	"context"
	"encoding/json"
	"net/http"

	"github.com/parleyhq/parley/internal/access"
	"github.com/parleyhq/parley/internal/hub"
	"github.com/parleyhq/parley/internal/media"
	"github.com/parleyhq/parley/internal/protocol"
)

// Calls serves the call endpoints under /api/rooms/{id}/call. Every one
// needs access.Call (members; every user in dev mode; PROTOCOL.md §6, §7),
// decided here, on the node that received the request; the operation
// itself runs wherever the call lives (CallService).
type Calls struct {
	*Base
	Calls  CallService
	Hub    *hub.Hub
	Access Decider
}

// CallService runs call operations on the room's call: the local SFU on
// one node, the call's media node in a cluster (internal/server's relay).
// Errors are *protocol.Error values (not_found: no call in the room).
type CallService interface {
	// StartCall starts the room's call unless one runs (anywhere) and
	// returns the router's RTP capabilities.
	StartCall(ctx context.Context, roomID, userID string) (json.RawMessage, error)
	// JoinCall makes connID (a live connection of userID on this node) a
	// participant without transports.
	JoinCall(ctx context.Context, roomID, connID, userID string) error
	// LeaveCall makes connID leave, or every connection of userID when
	// connID is "".
	LeaveCall(ctx context.Context, roomID, connID, userID string) error
	// EndCall ends the call for everyone.
	EndCall(ctx context.Context, roomID string) error
	// Participants lists the call's participants in join order.
	Participants(ctx context.Context, roomID string) ([]media.Participant, error)
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
	caps, err := h.Calls.StartCall(r.Context(), roomID, c.UserID())
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
	if err := h.Calls.JoinCall(r.Context(), roomID, b.ConnectionID, c.UserID()); err != nil {
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
	if b.ConnectionID != "" {
		if err := h.ownConnection(c, b.ConnectionID); err != nil {
			Error(w, err)
			return
		}
	}
	if err := h.Calls.LeaveCall(r.Context(), roomID, b.ConnectionID, c.UserID()); err != nil {
		Error(w, h.Internal(err, "leave call"))
		return
	}
	WriteJSON(w, http.StatusOK, map[string]bool{"left": true})
}

func (h *Calls) end(w http.ResponseWriter, r *http.Request) {
	_, roomID, err := h.member(r)
	if err != nil {
		Error(w, err)
		return
	}
	if err := h.Calls.EndCall(r.Context(), roomID); err != nil {
		Error(w, h.Internal(err, "end call"))
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
	ps, err := h.Calls.Participants(r.Context(), roomID)
	if err != nil {
		Error(w, h.Internal(err, "participants"))
		return
	}
	if ps == nil {
		ps = []media.Participant{}
	}
	WriteJSON(w, http.StatusOK, map[string]any{"items": ps, "next_before": nil})
}
