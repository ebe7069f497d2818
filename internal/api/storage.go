package api

import (
	"context"
	"encoding/json"
	"net/http"
	"strconv"

	"github.com/parleyhq/parley/internal/auth"
	"github.com/parleyhq/parley/internal/protocol"
	"github.com/parleyhq/parley/internal/rooms"
)

// Storage serves GET/PATCH /api/rooms/{id}/storage.
type Storage struct {
	*Base
	Rooms *rooms.Manager
	// Access is the extra permission a user has in a room (membership,
	// open rooms), as for WebSocket joins.
	Access rooms.AccessFunc
}

// Register adds the routes to mux.
func (h *Storage) Register(mux *http.ServeMux) {
	mux.HandleFunc("GET /api/rooms/{id}/storage", h.get)
	mux.HandleFunc("PATCH /api/rooms/{id}/storage", h.patch)
}

func (h *Storage) perms(ctx context.Context, c Caller, roomID string) (auth.Perm, error) {
	if c.APIKey {
		return auth.PermAll, nil
	}
	p := c.Claims.RoomPerms(roomID)
	if h.Access != nil && p != auth.PermAll {
		extra, err := h.Access(ctx, c.Claims.UserID, roomID)
		if err != nil {
			return 0, h.Internal(err, "room access")
		}
		p |= extra
	}
	return p, nil
}

// authorize checks the caller holds perm on the {id} room.
func (h *Storage) authorize(r *http.Request, perm auth.Perm, what string) (string, Caller, error) {
	roomID, err := RoomID(r)
	if err != nil {
		return "", Caller{}, err
	}
	c, err := h.Authenticate(r)
	if err != nil {
		return "", c, err
	}
	p, err := h.perms(r.Context(), c, roomID)
	if err != nil {
		return "", c, err
	}
	if !p.Has(perm) {
		return "", c, protocol.Errorf(protocol.CodeForbidden, "no %s access to room %s", what, roomID)
	}
	return roomID, c, nil
}

func (h *Storage) get(w http.ResponseWriter, r *http.Request) {
	roomID, _, err := h.authorize(r, auth.PermRead, "read")
	if err != nil {
		Error(w, err)
		return
	}
	ver, data, err := h.Rooms.Snapshot(r.Context(), roomID)
	if err != nil {
		Error(w, h.Internal(err, "load storage"))
		return
	}
	WriteJSON(w, http.StatusOK, struct {
		Version int64           `json:"version"`
		Data    json.RawMessage `json:"data"`
	}{ver, data})
}

// patch takes a JSON Patch array as the body. base_version may be given as
// the query parameter ?base_version=N or an If-Match: "N" header.
func (h *Storage) patch(w http.ResponseWriter, r *http.Request) {
	roomID, c, err := h.authorize(r, auth.PermWrite, "write")
	if err != nil {
		Error(w, err)
		return
	}
	var base *int64
	if s := r.URL.Query().Get("base_version"); s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n < 0 {
			Error(w, protocol.Errorf(protocol.CodeBadRequest, "base_version must be a non-negative integer"))
			return
		}
		base = &n
	}
	body, err := h.ReadBody(r)
	if err != nil {
		Error(w, err)
		return
	}
	if !json.Valid(body) {
		Error(w, protocol.Errorf(protocol.CodeBadRequest, "body must be a JSON Patch array"))
		return
	}
	clientID := "api"
	if !c.APIKey {
		clientID = "user:" + c.Claims.UserID
	}
	ver, err := h.Rooms.Patch(r.Context(), roomID, clientID, body, base)
	if err != nil {
		Error(w, h.Internal(err, "patch storage"))
		return
	}
	WriteJSON(w, http.StatusOK, map[string]int64{"version": ver})
}
