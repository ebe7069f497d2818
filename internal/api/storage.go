package api

import (
	"encoding/json"
	"net/http"
	"strconv"

	"github.com/parleyhq/parley/internal/access"
	"github.com/parleyhq/parley/internal/protocol"
	"github.com/parleyhq/parley/internal/rooms"
)

// Storage serves GET/PATCH /api/rooms/{id}/storage. GET needs
// access.Read; PATCH needs access.Write, and access.Read as well when the
// batch holds a test op (a test answers a question about the document).
// The WebSocket asks the same policy (room:update_storage needs Write, and
// its client joined with Read).
type Storage struct {
	*Base
	Rooms  *rooms.Manager
	Access Decider
}

// Register adds the routes to mux.
func (h *Storage) Register(mux *http.ServeMux) {
	mux.HandleFunc("GET /api/rooms/{id}/storage", h.get)
	mux.HandleFunc("PATCH /api/rooms/{id}/storage", h.patch)
}

// authorize authenticates the caller and asks the policy for action on the
// {id} room.
func (h *Storage) authorize(r *http.Request, action access.Action) (string, Caller, error) {
	roomID, err := RoomID(r)
	if err != nil {
		return "", Caller{}, err
	}
	c, err := h.Authenticate(r)
	if err != nil {
		return "", c, err
	}
	return roomID, c, h.allow(r.Context(), h.Access, c, roomID, action)
}

// hasTestOp reports whether a JSON Patch body holds a test op. A body
// that is not an array of objects has none (the patch parser refuses it).
func hasTestOp(body []byte) bool {
	var ops []struct {
		Op json.RawMessage `json:"op"`
	}
	if json.Unmarshal(body, &ops) != nil {
		return false
	}
	for _, op := range ops {
		var name string
		if json.Unmarshal(op.Op, &name) == nil && name == "test" {
			return true
		}
	}
	return false
}

func (h *Storage) get(w http.ResponseWriter, r *http.Request) {
	roomID, _, err := h.authorize(r, access.Read)
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
	roomID, c, err := h.authorize(r, access.Write)
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
	if hasTestOp(body) {
		if err := h.allow(r.Context(), h.Access, c, roomID, access.Read); err != nil {
			Error(w, err)
			return
		}
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
