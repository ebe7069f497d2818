package api

import (
	"net/http"
	"strings"

	"github.com/parleyhq/parley/internal/chat"
	"github.com/parleyhq/parley/internal/protocol"
)

// Presence serves GET /api/presence?user_ids=a,b: the status of up to
// MaxPresenceIDs users as the caller sees it (offline when not connected;
// invisible shown as offline except to the user themself; with
// --presence-audience shared, offline for users who share no room with the
// caller, as for presence:update frames; PROTOCOL.md §5).
type Presence struct {
	*Base
	Chat *chat.Service
}

// MaxPresenceIDs is the most user ids one GET /api/presence takes.
const MaxPresenceIDs = 100

// Register adds the route to mux.
func (h *Presence) Register(mux *http.ServeMux) {
	mux.HandleFunc("GET /api/presence", h.get)
}

func (h *Presence) get(w http.ResponseWriter, r *http.Request) {
	c, err := h.Authenticate(r)
	if err != nil {
		Error(w, err)
		return
	}
	raw := r.URL.Query().Get("user_ids")
	if raw == "" {
		Error(w, protocol.Errorf(protocol.CodeBadRequest, "user_ids is required (comma-separated)"))
		return
	}
	parts := strings.Split(raw, ",")
	if len(parts) > MaxPresenceIDs {
		Error(w, protocol.Errorf(protocol.CodeBadRequest, "at most %d user_ids", MaxPresenceIDs))
		return
	}
	ids := make([]string, 0, len(parts))
	seen := make(map[string]struct{}, len(parts))
	for _, id := range parts {
		if !validUserID(id) {
			Error(w, protocol.Errorf(protocol.CodeBadRequest, "user_ids holds an empty or invalid id"))
			return
		}
		if _, dup := seen[id]; dup {
			continue
		}
		seen[id] = struct{}{}
		ids = append(ids, id)
	}
	WriteJSON(w, http.StatusOK, struct {
		Items []chat.PresenceEvent `json:"items"`
	}{h.Chat.Statuses(r.Context(), c.UserID(), ids)})
}
