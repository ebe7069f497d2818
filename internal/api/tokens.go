package api

import (
	"net/http"
	"time"

	"github.com/parleyhq/parley/internal/auth"
	"github.com/parleyhq/parley/internal/protocol"
)

// Tokens serves POST /api/tokens: a backend holding the server API key
// mints access tokens for its own users (no registration needed).
type Tokens struct {
	*Base
	Signer     *auth.Signer // nil: minting is disabled
	DefaultTTL time.Duration
}

// MaxTokenTTL is the longest lifetime POST /api/tokens grants.
const MaxTokenTTL = 365 * 24 * time.Hour

// Register adds the route to mux.
func (h *Tokens) Register(mux *http.ServeMux) {
	mux.HandleFunc("POST /api/tokens", h.mint)
}

type mintBody struct {
	UserID     string              `json:"user_id"`
	Name       string              `json:"name"`
	TTLSeconds *int64              `json:"ttl_seconds"`
	Rooms      map[string][]string `json:"rooms"`
}

type mintAnswer struct {
	Token     string `json:"token"`
	ExpiresAt string `json:"expires_at"`
}

func (h *Tokens) mint(w http.ResponseWriter, r *http.Request) {
	if err := h.RequireAPIKey(r); err != nil {
		Error(w, err)
		return
	}
	if h.Signer == nil {
		Error(w, protocol.Errorf(protocol.CodeForbidden, "token minting is disabled: the server has no auth-secret"))
		return
	}
	var b mintBody
	if err := h.DecodeJSON(r, &b); err != nil {
		Error(w, err)
		return
	}
	if !validUserID(b.UserID) {
		Error(w, protocol.Errorf(protocol.CodeBadRequest, "user_id must be 1-%d characters without control characters", auth.MaxUserIDLen))
		return
	}
	if !validText(b.Name, auth.MaxNameLen) {
		Error(w, protocol.Errorf(protocol.CodeBadRequest, "name must be at most %d characters without control characters", auth.MaxNameLen))
		return
	}
	ttl := h.DefaultTTL
	if b.TTLSeconds != nil {
		if *b.TTLSeconds < 1 || *b.TTLSeconds > int64(MaxTokenTTL/time.Second) {
			Error(w, protocol.Errorf(protocol.CodeBadRequest, "ttl_seconds must be 1 to %d", int64(MaxTokenTTL/time.Second)))
			return
		}
		ttl = time.Duration(*b.TTLSeconds) * time.Second
	}
	rooms, err := auth.ParseRooms(b.Rooms)
	if err != nil {
		Error(w, protocol.Errorf(protocol.CodeBadRequest, "rooms: %v", err))
		return
	}
	tok, exp, err := h.Signer.Mint(b.UserID, b.Name, ttl, rooms)
	if err != nil {
		Error(w, protocol.Errorf(protocol.CodeBadRequest, "%v", err))
		return
	}
	WriteJSON(w, http.StatusOK, mintAnswer{Token: tok, ExpiresAt: protocol.FormatTime(exp)})
}
