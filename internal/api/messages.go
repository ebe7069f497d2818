package api

import (
	"net/http"
	"strconv"

	"github.com/google/uuid"

	"github.com/parleyhq/parley/internal/chat"
	"github.com/parleyhq/parley/internal/protocol"
)

// ConnectionIDHeader names the WebSocket connection a write comes from; that
// connection is left out of the live push (it has the REST answer).
const ConnectionIDHeader = "X-Connection-Id"

// Messages serves a room's chat messages (members only, user tokens only):
// POST/GET /api/rooms/{id}/messages, PATCH/DELETE .../messages/{mid}.
type Messages struct {
	*Base
	Chat *chat.Service
}

// Register adds the routes to mux.
func (h *Messages) Register(mux *http.ServeMux) {
	mux.HandleFunc("POST /api/rooms/{id}/messages", h.create)
	mux.HandleFunc("GET /api/rooms/{id}/messages", h.list)
	mux.HandleFunc("PATCH /api/rooms/{id}/messages/{mid}", h.edit)
	mux.HandleFunc("DELETE /api/rooms/{id}/messages/{mid}", h.remove)
}

type postBody struct {
	Content *string `json:"content"`
	Nonce   *string `json:"nonce"`
}

type editBody struct {
	Content *string `json:"content"`
}

// request authenticates a user and reads the room id.
func (h *Messages) request(r *http.Request) (Caller, string, error) {
	c, err := h.RequireUser(r)
	if err != nil {
		return c, "", err
	}
	roomID, err := RoomID(r)
	return c, roomID, err
}

func (h *Messages) origin(c Caller, r *http.Request) string {
	return h.Chat.OriginConn(c.UserID(), r.Header.Get(ConnectionIDHeader))
}

func (h *Messages) create(w http.ResponseWriter, r *http.Request) {
	c, roomID, err := h.request(r)
	if err != nil {
		Error(w, err)
		return
	}
	var b postBody
	if err := h.DecodeJSON(r, &b); err != nil {
		Error(w, err)
		return
	}
	if b.Content == nil {
		Error(w, protocol.Errorf(protocol.CodeBadRequest, "content is required"))
		return
	}
	nonce := ""
	if b.Nonce != nil {
		nonce = *b.Nonce
	}
	m, err := h.Chat.PostMessage(r.Context(), roomID, c.Subject(), *b.Content, nonce, h.origin(c, r))
	if err != nil {
		Error(w, err)
		return
	}
	WriteJSON(w, http.StatusCreated, m)
}

func (h *Messages) list(w http.ResponseWriter, r *http.Request) {
	c, roomID, err := h.request(r)
	if err != nil {
		Error(w, err)
		return
	}
	q := r.URL.Query()
	before := q.Get("before")
	if before != "" {
		if _, err := uuid.Parse(before); err != nil || len(before) != 36 {
			Error(w, protocol.Errorf(protocol.CodeBadRequest, "before must be a message id"))
			return
		}
	}
	limit := chat.DefaultPageSize
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > chat.MaxPageSize {
			Error(w, protocol.Errorf(protocol.CodeBadRequest, "limit must be an integer from 1 to %d", chat.MaxPageSize))
			return
		}
		limit = n
	}
	items, next, err := h.Chat.ListMessages(r.Context(), roomID, c.Subject(), before, limit)
	if err != nil {
		Error(w, err)
		return
	}
	out := list[chat.Message]{Items: items}
	if next != "" {
		out.NextBefore = &next
	}
	WriteJSON(w, http.StatusOK, out)
}

func (h *Messages) edit(w http.ResponseWriter, r *http.Request) {
	c, roomID, err := h.request(r)
	if err != nil {
		Error(w, err)
		return
	}
	var b editBody
	if err := h.DecodeJSON(r, &b); err != nil {
		Error(w, err)
		return
	}
	if b.Content == nil {
		Error(w, protocol.Errorf(protocol.CodeBadRequest, "content is required"))
		return
	}
	m, err := h.Chat.EditMessage(r.Context(), roomID, c.Subject(), r.PathValue("mid"), *b.Content, h.origin(c, r))
	if err != nil {
		Error(w, err)
		return
	}
	WriteJSON(w, http.StatusOK, m)
}

func (h *Messages) remove(w http.ResponseWriter, r *http.Request) {
	c, roomID, err := h.request(r)
	if err != nil {
		Error(w, err)
		return
	}
	if err := h.Chat.DeleteMessage(r.Context(), roomID, c.Subject(), r.PathValue("mid"), h.origin(c, r)); err != nil {
		Error(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}
