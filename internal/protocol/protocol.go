// Package protocol defines Parley's wire contract: the JSON envelope, every
// message type name, error codes and close codes, and the validation of
// client input. It does no I/O. See docs/protocol.md.
package protocol

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
)

// Envelope is one WebSocket text frame: {"type", "id"?, "data"?}.
type Envelope struct {
	Type string          `json:"type"`
	ID   string          `json:"id,omitempty"`
	Data json.RawMessage `json:"data,omitempty"`
}

// Error codes carried in {"type":"error","data":{"code":...}} and in REST
// error bodies.
const (
	CodeBadRequest      = "bad_request"
	CodeTestFailed      = "test_failed"
	CodeUnauthorized    = "unauthorized"
	CodeForbidden       = "forbidden"
	CodeNotFound        = "not_found"
	CodeVersionConflict = "version_conflict"
	CodeTooLarge        = "too_large"
	CodeRateLimited     = "rate_limited"
	CodeConflict        = "conflict"
	CodeInternal        = "internal"
	// CodeUnsupported answers a well-formed request the server does not
	// implement (PROTOCOL.md §6); it never counts as a protocol violation.
	CodeUnsupported = "unsupported"
)

// WebSocket close codes.
const (
	CloseNormal          = 1000
	CloseGoingAway       = 1001 // server shutting down
	CloseProtocolError   = 1002 // RFC 6455 framing violated (§7.4.1)
	CloseInternalError   = 1011 // a panic contained while serving this connection
	CloseDisconnected    = 4003 // disconnected by the server API: do not reconnect
	CloseTokenExpired    = 4001
	CloseSlowConsumer    = 4008
	CloseMessageTooBig   = 4009
	CloseRateLimited     = 4029
	CloseProtocolAbuse   = 4400
	CloseHeartbeatMissed = 4000 // no frame within the heartbeat timeout
)

// Message types, client → server and server → client.
const (
	TypeConnected = "connected"
	TypeError     = "error"
	TypeAck       = "ack"
	TypePing      = "ping"
	TypePong      = "pong"

	TypeRoomJoin            = "room:join"
	TypeRoomLeave           = "room:leave"
	TypeRoomUpdatePresence  = "room:update_presence"
	TypeRoomUpdateStorage   = "room:update_storage"
	TypeRoomBroadcast       = "room:broadcast"
	TypeRoomState           = "room:state"
	TypeRoomJoined          = "room:joined"
	TypeRoomLeft            = "room:left"
	TypeRoomPresenceUpdated = "room:presence_updated"
	TypeRoomStorageUpdated  = "room:storage_updated"
	TypeRoomEvent           = "room:event"

	TypeTypingStart    = "typing:start"
	TypeTypingStop     = "typing:stop"
	TypePresenceUpdate = "presence:update"
	TypeMessageCreate  = "message:create"
	TypeMessageUpdate  = "message:update"
	TypeMessageDelete  = "message:delete"

	TypeRoomCallStarted = "room:call_started"
	TypeRoomCallUpdated = "room:call_updated"
	TypeRoomCallEnded   = "room:call_ended"
)

// Error is a protocol-level failure with a code from the list above. Handlers
// return it; the gateway turns it into an error frame carrying the request id.
type Error struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

func (e *Error) Error() string { return e.Code + ": " + e.Message }

// Errorf builds an *Error.
func Errorf(code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// AsError maps any error to a protocol error; unknown errors become internal.
func AsError(err error) *Error {
	var pe *Error
	if errors.As(err, &pe) {
		return pe
	}
	return &Error{Code: CodeInternal, Message: "internal error"}
}

// Decode parses one client frame. It rejects anything that is not a JSON
// object with a non-empty string "type", an optional string "id" (at most
// 128 bytes) and an optional object "data", and any frame that is not valid
// UTF-8. A rejected frame's Envelope still carries its id when the id can be
// read (a valid-UTF-8 JSON string of at most 128 bytes at the top level), so
// that the error reply can name the request (PROTOCOL.md §1).
func Decode(frame []byte) (Envelope, *Error) {
	var env Envelope
	if !utf8.Valid(frame) {
		return Envelope{ID: salvageID(frame)}, Errorf(CodeBadRequest, "frame is not valid UTF-8")
	}
	// Unmarshal validates the whole frame (trailing data included) in one
	// pass; it is several times cheaper than a json.Decoder here.
	if err := json.Unmarshal(frame, &env); err != nil {
		// Try to salvage the id so the error can carry it.
		env = Envelope{ID: salvageID(frame)}
		return env, Errorf(CodeBadRequest, "malformed message: %s", shortErr(err))
	}
	// The id is checked first: every later refusal echoes it.
	if len(env.ID) > 128 {
		return Envelope{}, Errorf(CodeBadRequest, "id longer than 128 characters")
	}
	if env.Type == "" {
		return env, Errorf(CodeBadRequest, "missing type")
	}
	if len(env.Data) > 0 && !bytes.Equal(env.Data, []byte("null")) && env.Data[0] != '{' {
		return env, Errorf(CodeBadRequest, "data must be an object")
	}
	return env, nil
}

// salvageID reads the top-level "id" of a frame Decode rejected, or "".
//
// It scans the top-level object once, left to right, and stops at the first
// byte that cannot continue it: the id is the last top-level "id" member
// (encoding/json's rule for duplicates, its case-insensitive key match
// included) whose value was a string and that ended before that point. A
// nested value is skipped by counting brackets outside strings, without
// recursion and without a depth limit, so an id survives a data object too
// deep for encoding/json, trailing garbage, or a truncated frame. The raw id
// must itself be valid UTF-8 (encoding/json would replace bad bytes with
// U+FFFD and the reply would then name an id the client never sent) and at
// most 128 bytes once decoded.
func salvageID(frame []byte) string {
	id := ""
	i := skipWS(frame, 0)
	if i >= len(frame) || frame[i] != '{' {
		return ""
	}
	i = skipWS(frame, i+1)
	if i < len(frame) && frame[i] == '}' {
		return ""
	}
	for {
		// Member name.
		kEnd, ok := scanString(frame, i)
		if !ok {
			return id
		}
		key := frame[i:kEnd]
		i = skipWS(frame, kEnd)
		if i >= len(frame) || frame[i] != ':' {
			return id
		}
		i = skipWS(frame, i+1)
		// Member value.
		vStart := i
		if i, ok = skipValue(frame, i); !ok {
			return id
		}
		if isIDKey(key) {
			id = readID(frame[vStart:i])
		}
		i = skipWS(frame, i)
		if i >= len(frame) {
			return id
		}
		switch frame[i] {
		case ',':
			i = skipWS(frame, i+1)
		case '}':
			return id
		default:
			return id
		}
	}
}

// isIDKey reports whether a raw JSON member name decodes to a name that
// encoding/json matches to the envelope's "id" field.
func isIDKey(raw []byte) bool {
	if len(raw) > 16 { // "id" is short even fully escaped ("\u0069\u0064")
		return false
	}
	var k string
	if json.Unmarshal(raw, &k) != nil {
		return false
	}
	return strings.EqualFold(k, "id")
}

// readID decodes a raw value as an id: a valid-UTF-8 JSON string of at most
// 128 bytes, else "".
func readID(raw []byte) string {
	if len(raw) == 0 || raw[0] != '"' || !utf8.Valid(raw) {
		return ""
	}
	var s string
	if json.Unmarshal(raw, &s) != nil || len(s) > 128 {
		return ""
	}
	return s
}

func skipWS(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// scanString returns the index just past the JSON string starting at i.
func scanString(b []byte, i int) (int, bool) {
	if i >= len(b) || b[i] != '"' {
		return i, false
	}
	for i++; i < len(b); i++ {
		switch b[i] {
		case '\\':
			i++
		case '"':
			return i + 1, true
		}
	}
	return i, false
}

// skipValue returns the index just past the JSON value starting at i. It
// checks only what it needs to find the value's end: strings are scanned
// for their closing quote, objects and arrays by counting brackets (an
// integer, however deep), scalars up to the next delimiter.
func skipValue(b []byte, i int) (int, bool) {
	if i >= len(b) {
		return i, false
	}
	switch b[i] {
	case '"':
		return scanString(b, i)
	case '{', '[':
		depth := 0
		for i < len(b) {
			switch b[i] {
			case '"':
				end, ok := scanString(b, i)
				if !ok {
					return end, false
				}
				i = end
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1, true
				}
			}
			i++
		}
		return i, false
	case '}', ']', ',', ':':
		return i, false
	default:
		start := i
		for i < len(b) {
			switch b[i] {
			case ',', '}', ']', ' ', '\t', '\n', '\r', '"', '{', '[', ':':
				return i, i > start
			}
			i++
		}
		return i, false
	}
}

func shortErr(err error) string {
	s := err.Error()
	if len(s) > 200 {
		s = s[:200]
	}
	return s
}

// DecodeData strictly decodes a message's data into v: wrong field types
// and unknown fields are bad_request.
func DecodeData(data json.RawMessage, v any) *Error {
	if len(data) == 0 || bytes.Equal(data, []byte("null")) {
		data = []byte("{}")
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return Errorf(CodeBadRequest, "invalid data: %s", shortErr(err))
	}
	return nil
}

// ValidRoomID reports whether id is 1–128 chars of [A-Za-z0-9._:-] and
// neither "." nor "..".
func ValidRoomID(id string) bool {
	// "." and ".." fit the character set but are not URL path segments
	// (/api/rooms/../connections is another path): no REST or server API
	// call could name such a room.
	if len(id) == 0 || len(id) > 128 || id == "." || id == ".." {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9',
			c == '.', c == '_', c == ':', c == '-':
		default:
			return false
		}
	}
	return true
}

// CheckRoomID is ValidRoomID as a bad_request error naming the field (nil
// when valid).
func CheckRoomID(field, id string) error {
	if ValidRoomID(id) {
		return nil
	}
	return Errorf(CodeBadRequest, "%s must be 1-128 characters of [A-Za-z0-9._:-], and not . or ..", field)
}

// Appender is frame data that writes its own JSON encoding: Encode sizes
// the frame by JSONLen and appends the data in place, so a large reply
// built from cached parts (a room:state with its first page of members) is
// copied once, not built and then copied into the frame.
type Appender interface {
	// JSONLen is the length of the encoding, or an estimate of it.
	JSONLen() int
	// AppendJSON appends the encoding (valid JSON) to b.
	AppendJSON(b []byte) []byte
}

// Encode builds one server frame. data may be nil, a json.RawMessage, an
// Appender or any value encoding/json can marshal. Nothing is HTML-escaped (see Marshal):
// a frame is as long as what the limits measured plus the envelope.
func Encode(typ, id string, data any) []byte {
	size := 128
	switch d := data.(type) {
	case json.RawMessage:
		size = 32 + len(typ) + 2*len(id) + len(d) // one allocation, even for a room:state
	case []byte:
		size = 32 + len(typ) + 2*len(id) + len(d)
	case Appender:
		size = 32 + len(typ) + 2*len(id) + d.JSONLen()
	}
	buf := make([]byte, 0, size)
	buf = append(buf, `{"type":`...)
	buf = strconv.AppendQuote(buf, typ) // message types are ASCII
	if id != "" {
		buf = append(buf, `,"id":`...)
		buf = appendString(buf, id)
	}
	if data != nil {
		buf = append(buf, `,"data":`...)
		switch d := data.(type) {
		case json.RawMessage:
			buf = append(buf, d...)
		case []byte:
			buf = append(buf, d...)
		case Appender:
			buf = d.AppendJSON(buf)
		default:
			var err error
			if buf, err = appendJSON(buf, d); err != nil {
				buf = append(buf, `{}`...)
			}
		}
	}
	buf = append(buf, '}')
	return buf
}

// encBuf is a reusable encoder that does not escape HTML.
type encBuf struct {
	buf bytes.Buffer
	enc *json.Encoder
}

var encPool = sync.Pool{New: func() any {
	e := &encBuf{}
	e.enc = json.NewEncoder(&e.buf)
	e.enc.SetEscapeHTML(false)
	return e
}}

// appendJSON appends the JSON encoding of v to dst, without HTML escaping.
// On error dst is returned unchanged.
func appendJSON(dst []byte, v any) ([]byte, error) {
	e := encPool.Get().(*encBuf)
	e.buf.Reset()
	err := e.enc.Encode(v)
	if err == nil {
		b := e.buf.Bytes()
		dst = append(dst, b[:len(b)-1]...) // Encode adds a newline
	}
	if e.buf.Cap() <= 64<<10 { // do not pin huge buffers in the pool
		encPool.Put(e)
	}
	return dst, err
}

// Marshal is json.Marshal without HTML escaping: `<`, `>` and `&` stay as
// they are instead of growing sixfold into \u003c and the like. Every
// server-side encoding of frame content goes through it or Encode, so that
// frames are as long as what the size limits measured.
func Marshal(v any) ([]byte, error) {
	return appendJSON(nil, v)
}

// appendString appends s as a JSON string without HTML escaping.
func appendString(dst []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' {
			out, _ := appendJSON(dst, s)
			return out
		}
	}
	dst = append(dst, '"')
	dst = append(dst, s...)
	return append(dst, '"')
}

// EncodeError builds an error frame.
func EncodeError(id string, e *Error) []byte {
	return Encode(TypeError, id, e)
}

// Now returns the server timestamp format used on the wire (RFC3339 with
// milliseconds, UTC).
func Now() string { return FormatTime(time.Now()) }

// FormatTime formats t the way every server timestamp is sent.
func FormatTime(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.000Z07:00") }
