// Package api is Parley's REST API under /api: JSON in and out, errors as
// {"error": code, "message": text}. Each file holds one area: storage.go
// (room storage), and the chat/call areas in their own files.
package api

import (
	"bytes"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"

	"github.com/parleyhq/parley/internal/auth"
	"github.com/parleyhq/parley/internal/protocol"
)

// Caller is who made a request: the server API key, or a user's token.
type Caller struct {
	APIKey bool
	Claims *auth.Claims // nil for the API key
}

// UserID is the caller's user id ("" for the API key).
func (c Caller) UserID() string {
	if c.Claims == nil {
		return ""
	}
	return c.Claims.UserID
}

// Base holds what every handler needs.
type Base struct {
	APIKey      string
	Verifier    *auth.Verifier
	MaxBodySize int64
	Log         *slog.Logger
}

// Error writes a JSON error with the HTTP status that matches code.
func Error(w http.ResponseWriter, err error) {
	pe := protocol.AsError(err)
	status := http.StatusInternalServerError
	switch pe.Code {
	case protocol.CodeBadRequest, protocol.CodeTestFailed:
		status = http.StatusBadRequest
	case protocol.CodeUnauthorized:
		status = http.StatusUnauthorized
	case protocol.CodeForbidden:
		status = http.StatusForbidden
	case protocol.CodeNotFound:
		status = http.StatusNotFound
	case protocol.CodeVersionConflict, protocol.CodeConflict:
		status = http.StatusConflict
	case protocol.CodeTooLarge:
		status = http.StatusRequestEntityTooLarge
	case protocol.CodeRateLimited:
		status = http.StatusTooManyRequests
	}
	WriteJSON(w, status, map[string]string{"error": pe.Code, "message": pe.Message})
}

// WriteJSON writes v as JSON with status.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	// Without HTML escaping, like WebSocket frames (protocol.Encode): the
	// stored document comes back as it was written.
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v)
}

// ReadBody reads a request body up to the limit; too large → too_large.
func (b *Base) ReadBody(r *http.Request) ([]byte, error) {
	body, err := io.ReadAll(io.LimitReader(r.Body, b.MaxBodySize+1))
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return nil, protocol.Errorf(protocol.CodeBadRequest, "request body not received in time")
	}
	if err != nil {
		return nil, protocol.Errorf(protocol.CodeBadRequest, "reading body: %v", err)
	}
	if int64(len(body)) > b.MaxBodySize {
		return nil, protocol.Errorf(protocol.CodeTooLarge, "body larger than %d bytes", b.MaxBodySize)
	}
	return body, nil
}

// DecodeJSON strictly decodes the request body into v (unknown fields and
// wrong types are bad_request).
func (b *Base) DecodeJSON(r *http.Request, v any) error {
	body, err := b.ReadBody(r)
	if err != nil {
		return err
	}
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

// Authenticate reads the bearer credential: the API key or an access token.
func (b *Base) Authenticate(r *http.Request) (Caller, error) {
	h := r.Header.Get("Authorization")
	if len(h) < 8 || !strings.EqualFold(h[:7], "bearer ") {
		return Caller{}, protocol.Errorf(protocol.CodeUnauthorized, "missing bearer credentials")
	}
	cred := strings.TrimSpace(h[7:])
	if b.APIKey != "" && subtle.ConstantTimeCompare([]byte(cred), []byte(b.APIKey)) == 1 {
		return Caller{APIKey: true}, nil
	}
	claims, err := b.Verifier.Verify(cred)
	if err != nil {
		return Caller{}, protocol.Errorf(protocol.CodeUnauthorized, "%s", err.Error())
	}
	return Caller{Claims: claims}, nil
}

// RequireUser authenticates a user token (the API key is refused).
func (b *Base) RequireUser(r *http.Request) (Caller, error) {
	c, err := b.Authenticate(r)
	if err != nil {
		return c, err
	}
	if c.Claims == nil {
		return c, protocol.Errorf(protocol.CodeForbidden, "this endpoint needs a user token, not the API key")
	}
	return c, nil
}

// RequireAPIKey authenticates the server API key.
func (b *Base) RequireAPIKey(r *http.Request) error {
	if b.APIKey == "" {
		return protocol.Errorf(protocol.CodeForbidden, "the server API is disabled: no api-key configured")
	}
	c, err := b.Authenticate(r)
	if err != nil {
		// Neither the key nor a valid token: say what this endpoint wants
		// (a wrong key read as a token would otherwise be "invalid token").
		return protocol.Errorf(protocol.CodeUnauthorized, "invalid API key (this endpoint needs the server API key)")
	}
	if !c.APIKey {
		return protocol.Errorf(protocol.CodeForbidden, "this endpoint needs the server API key")
	}
	return nil
}

// RoomID reads and validates the {id} path value.
func RoomID(r *http.Request) (string, error) {
	id := r.PathValue("id")
	if err := protocol.CheckRoomID("room id", id); err != nil {
		return "", err
	}
	return id, nil
}

// Internal logs err and returns a client-safe internal error.
func (b *Base) Internal(err error, what string) error {
	var pe *protocol.Error
	if errors.As(err, &pe) {
		return pe
	}
	b.Log.Error(what, "err", err)
	return protocol.Errorf(protocol.CodeInternal, "%s failed", what)
}

// NotFound is a protocol not_found error.
func NotFound(format string, args ...any) error {
	return protocol.Errorf(protocol.CodeNotFound, "%s", fmt.Sprintf(format, args...))
}
