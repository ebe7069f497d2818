package api

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"unicode"
	"unicode/utf8"

	"github.com/parleyhq/parley/internal/protocol"
	"github.com/parleyhq/parley/internal/rooms"
)

// The server API (PROTOCOL.md v1.1 §7, docs/server-api.md): what an
// application's backend, holding the API key, does with live rooms and
// connections. Every route asks RequireAPIKey, the one check of the key
// (the same as POST /api/tokens); nothing else is decided here. The work
// is cluster-wide (Live: internal/server's liveAPI).

// Live is the live state the server API acts on, on every node.
type Live interface {
	// Broadcast sends event to every client of the live room (room:event
	// with null client and user) and returns how many; not_found when the
	// room has no live client.
	Broadcast(ctx context.Context, roomID string, event json.RawMessage) (int, error)
	// Connections lists a page of the live room's clients.
	Connections(ctx context.Context, roomID, after string, limit int) (rooms.ConnectionsPage, error)
	// LiveRooms lists a page of the rooms with clients, over all nodes.
	LiveRooms(ctx context.Context, after string, limit int) (LiveRoomsPage, error)
	// Disconnect closes every connection of the user on every node with
	// 4003 and reason.
	Disconnect(ctx context.Context, userID, reason string) (DisconnectResult, error)
}

// LiveRoomsPage answers GET /api/live/rooms.
type LiveRoomsPage struct {
	Items     []rooms.LiveRoom `json:"items"`
	NextAfter *string          `json:"next_after"`
	// MissingNodes names the live nodes that did not answer in time: the
	// rooms they own are not in Items (absent when every node answered).
	MissingNodes []string `json:"missing_nodes,omitempty"`
}

// DisconnectResult answers POST /api/users/{id}/disconnect.
type DisconnectResult struct {
	Closed       int      `json:"closed"`
	MissingNodes []string `json:"missing_nodes,omitempty"`
}

// Page sizes of the server API's lists.
const (
	DefaultPageLimit = 100
	MaxPageLimit     = 1000
)

// MaxCloseReason is the longest close reason in bytes: a close frame's
// payload is at most 125 bytes, 2 of them the code (RFC 6455 §5.5).
const MaxCloseReason = 123

// DefaultDisconnectReason is the close reason when none is given.
const DefaultDisconnectReason = "disconnected by the server"

// ServerAPI serves the server API's live routes.
type ServerAPI struct {
	*Base
	Live Live
	// MaxEventBytes bounds a broadcast's event (max-message-bytes, the
	// limit of a client's own room:broadcast frame).
	MaxEventBytes int
}

// Register adds the routes to mux.
func (h *ServerAPI) Register(mux *http.ServeMux) {
	mux.HandleFunc("POST /api/rooms/{id}/broadcast", h.broadcast)
	mux.HandleFunc("GET /api/rooms/{id}/connections", h.connections)
	mux.HandleFunc("GET /api/live/rooms", h.liveRooms)
	mux.HandleFunc("POST /api/users/{id}/disconnect", h.disconnect)
}

// BroadcastBody is POST /api/rooms/{id}/broadcast's body.
type BroadcastBody struct {
	Event json.RawMessage `json:"event"`
}

// DecodeBroadcast decodes and checks a broadcast body: one JSON object
// with the member event (any JSON value, null included) and nothing else,
// at most max bytes of event, valid UTF-8. The event comes back compacted.
func DecodeBroadcast(body []byte, max int) (json.RawMessage, error) {
	var b BroadcastBody
	if err := decodeStrict(body, &b); err != nil {
		return nil, err
	}
	if len(b.Event) == 0 {
		return nil, protocol.Errorf(protocol.CodeBadRequest, "event is required")
	}
	if len(b.Event) > max {
		return nil, protocol.Errorf(protocol.CodeTooLarge, "event larger than %d bytes (max-message-bytes)", max)
	}
	if !utf8.Valid(b.Event) {
		return nil, protocol.Errorf(protocol.CodeBadRequest, "event is not valid UTF-8")
	}
	var out bytes.Buffer
	if err := json.Compact(&out, b.Event); err != nil {
		return nil, protocol.Errorf(protocol.CodeBadRequest, "event is not JSON")
	}
	return out.Bytes(), nil
}

// DisconnectBody is POST /api/users/{id}/disconnect's body (optional).
type DisconnectBody struct {
	Reason *string `json:"reason"`
}

// DecodeDisconnect decodes an optional disconnect body (empty, or an
// object with an optional reason) and returns the close reason: the
// default when absent or empty, else cut to MaxCloseReason bytes on a
// character boundary. Invalid UTF-8 and control characters are refused.
func DecodeDisconnect(body []byte) (string, error) {
	if len(bytes.TrimSpace(body)) == 0 {
		return DefaultDisconnectReason, nil
	}
	if !utf8.Valid(body) {
		return "", protocol.Errorf(protocol.CodeBadRequest, "body is not valid UTF-8")
	}
	var b DisconnectBody
	if err := decodeStrict(body, &b); err != nil {
		return "", err
	}
	if b.Reason == nil || *b.Reason == "" {
		return DefaultDisconnectReason, nil
	}
	for _, r := range *b.Reason {
		// A close reason ends up in client logs and UIs: control
		// characters (NUL, ESC, newlines...) are refused, not relayed.
		if unicode.IsControl(r) {
			return "", protocol.Errorf(protocol.CodeBadRequest, "reason: control characters are not allowed")
		}
	}
	return TruncateUTF8(*b.Reason, MaxCloseReason), nil
}

// TruncateUTF8 cuts s to at most n bytes without splitting a character.
func TruncateUTF8(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

func decodeStrict(body []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return protocol.Errorf(protocol.CodeBadRequest, "invalid JSON body: %v", err)
	}
	if dec.More() {
		return protocol.Errorf(protocol.CodeBadRequest, "trailing data after the JSON body")
	}
	return nil
}

// pageQuery reads ?after= and ?limit= (1 to MaxPageLimit, default
// DefaultPageLimit).
func pageQuery(r *http.Request) (string, int, error) {
	q := r.URL.Query()
	after := q.Get("after")
	if len(after) > 256 {
		return "", 0, protocol.Errorf(protocol.CodeBadRequest, "after is longer than 256 bytes")
	}
	limit := DefaultPageLimit
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > MaxPageLimit {
			return "", 0, protocol.Errorf(protocol.CodeBadRequest, "limit must be 1 to %d", MaxPageLimit)
		}
		limit = n
	}
	return after, limit, nil
}

func (h *ServerAPI) broadcast(w http.ResponseWriter, r *http.Request) {
	if err := h.RequireAPIKey(r); err != nil {
		Error(w, err)
		return
	}
	roomID, err := RoomID(r)
	if err != nil {
		Error(w, err)
		return
	}
	body, err := h.ReadBody(r)
	if err != nil {
		Error(w, err)
		return
	}
	ev, err := DecodeBroadcast(body, h.MaxEventBytes)
	if err != nil {
		Error(w, err)
		return
	}
	n, err := h.Live.Broadcast(r.Context(), roomID, ev)
	if err != nil {
		Error(w, h.Internal(err, "broadcast"))
		return
	}
	WriteJSON(w, http.StatusAccepted, map[string]int{"connections": n})
}

func (h *ServerAPI) connections(w http.ResponseWriter, r *http.Request) {
	if err := h.RequireAPIKey(r); err != nil {
		Error(w, err)
		return
	}
	roomID, err := RoomID(r)
	if err != nil {
		Error(w, err)
		return
	}
	after, limit, err := pageQuery(r)
	if err != nil {
		Error(w, err)
		return
	}
	p, err := h.Live.Connections(r.Context(), roomID, after, limit)
	if err != nil {
		Error(w, h.Internal(err, "list connections"))
		return
	}
	WriteJSON(w, http.StatusOK, p)
}

func (h *ServerAPI) liveRooms(w http.ResponseWriter, r *http.Request) {
	if err := h.RequireAPIKey(r); err != nil {
		Error(w, err)
		return
	}
	after, limit, err := pageQuery(r)
	if err != nil {
		Error(w, err)
		return
	}
	p, err := h.Live.LiveRooms(r.Context(), after, limit)
	if err != nil {
		Error(w, h.Internal(err, "list live rooms"))
		return
	}
	WriteJSON(w, http.StatusOK, p)
}

func (h *ServerAPI) disconnect(w http.ResponseWriter, r *http.Request) {
	if err := h.RequireAPIKey(r); err != nil {
		Error(w, err)
		return
	}
	userID := r.PathValue("id")
	if !validUserID(userID) {
		Error(w, protocol.Errorf(protocol.CodeBadRequest, "user id must be 1-128 characters without control characters"))
		return
	}
	body, err := h.ReadBody(r)
	if err != nil {
		Error(w, err)
		return
	}
	reason, err := DecodeDisconnect(body)
	if err != nil {
		Error(w, err)
		return
	}
	res, err := h.Live.Disconnect(r.Context(), userID, reason)
	if err != nil {
		Error(w, h.Internal(err, "disconnect"))
		return
	}
	WriteJSON(w, http.StatusOK, res)
}

// Node ops: what a node asks every live node (cluster.Node.Gather) for
// GET /api/live/rooms and POST /api/users/{id}/disconnect. JSON; the
// decoders check what the REST handlers checked, since anything that can
// publish on the node's subject reaches them.
const (
	NodeOpLiveRooms  = "live_rooms"
	NodeOpDisconnect = "disconnect"
)

// NodeLiveRooms asks a node for the live rooms it owns after After.
type NodeLiveRooms struct {
	After string `json:"after"`
	Limit int    `json:"limit"`
}

// NodeLiveRoomsAnswer is one node's answer: its rooms, and whether it has
// more after the last.
type NodeLiveRoomsAnswer struct {
	Items []rooms.LiveRoom `json:"items"`
	More  bool             `json:"more"`
}

// NodeDisconnect asks a node to close every connection of UserID.
type NodeDisconnect struct {
	UserID string `json:"user_id"`
	Reason string `json:"reason"`
}

// DecodeNodeLiveRooms decodes and checks a NodeLiveRooms.
func DecodeNodeLiveRooms(b []byte) (NodeLiveRooms, error) {
	var q NodeLiveRooms
	if err := decodeStrict(b, &q); err != nil {
		return q, err
	}
	if q.Limit < 1 || q.Limit > MaxPageLimit || len(q.After) > 256 {
		return q, protocol.Errorf(protocol.CodeBadRequest, "live_rooms: limit 1 to %d, after at most 256 bytes", MaxPageLimit)
	}
	return q, nil
}

// DecodeNodeDisconnect decodes and checks a NodeDisconnect.
func DecodeNodeDisconnect(b []byte) (NodeDisconnect, error) {
	var q NodeDisconnect
	if err := decodeStrict(b, &q); err != nil {
		return q, err
	}
	if !validUserID(q.UserID) || len(q.Reason) > MaxCloseReason || !utf8.ValidString(q.Reason) {
		return q, protocol.Errorf(protocol.CodeBadRequest, "disconnect: a valid user id and a reason of at most %d bytes", MaxCloseReason)
	}
	return q, nil
}

// DecodeNodeLiveRoomsAnswer decodes one node's answer.
func DecodeNodeLiveRoomsAnswer(b []byte) (NodeLiveRoomsAnswer, error) {
	var a NodeLiveRoomsAnswer
	if err := json.Unmarshal(b, &a); err != nil {
		return a, protocol.Errorf(protocol.CodeInternal, "malformed live_rooms answer: %v", err)
	}
	return a, nil
}
