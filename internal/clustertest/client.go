package clustertest

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/parleyhq/parley/internal/auth"
)

// Wire names (PROTOCOL.md §1, §3), spelled out here so that the suite
// stays black-box.
const (
	TypeConnected      = "connected"
	TypeError          = "error"
	TypeAck            = "ack"
	TypePing           = "ping"
	TypePong           = "pong"
	TypeJoin           = "room:join"
	TypeLeave          = "room:leave"
	TypeUpdatePresence = "room:update_presence"
	TypeUpdateStorage  = "room:update_storage"
	TypeBroadcast      = "room:broadcast"
	TypeState          = "room:state"
	TypeJoined         = "room:joined"
	TypeLeft           = "room:left"
	TypePresence       = "room:presence_updated"
	TypeStorage        = "room:storage_updated"
	TypeEvent          = "room:event"

	CodeInternal  = "internal"
	CodeForbidden = "forbidden"
	CodeNotFound  = "not_found"

	CloseGoingAway = 1001
)

// Frame is one frame received, with the time it arrived and its position
// in the client's log.
type Frame struct {
	Type string          `json:"type"`
	ID   string          `json:"id,omitempty"`
	Data json.RawMessage `json:"data,omitempty"`
	At   time.Time       `json:"-"`
	Seq  int             `json:"-"`
}

func (f Frame) String() string {
	s := f.Type
	if f.ID != "" {
		s += " id=" + f.ID
	}
	d := string(f.Data)
	if len(d) > 300 {
		d = d[:300] + "…"
	}
	return s + " " + d
}

// Decode unmarshals the data into v.
func (f Frame) Decode(v any) error { return json.Unmarshal(f.Data, v) }

// ErrorCode is data.code of an error frame ("" for others).
func (f Frame) ErrorCode() string {
	if f.Type != TypeError {
		return ""
	}
	var e struct {
		Code string `json:"code"`
	}
	_ = f.Decode(&e)
	return e.Code
}

// Field returns a top-level string field of data ("" when absent).
func (f Frame) Field(key string) string {
	var m map[string]json.RawMessage
	if f.Decode(&m) != nil {
		return ""
	}
	var s string
	if json.Unmarshal(m[key], &s) != nil {
		return ""
	}
	return s
}

// Version is data.version (room:storage_updated) or data.storage.version
// (room:state); -1 for other frames.
func (f Frame) Version() int64 {
	switch f.Type {
	case TypeStorage:
		var u StorageUpdate
		if f.Decode(&u) == nil {
			return u.Version
		}
	case TypeState:
		var s RoomState
		if f.Decode(&s) == nil {
			return s.Storage.Version
		}
	}
	return -1
}

// RoomState is the data of room:state.
type RoomState struct {
	RoomID      string   `json:"room_id"`
	ClientID    string   `json:"client_id"`
	Members     []Member `json:"members"`
	MemberCount int      `json:"member_count"`
	Storage     struct {
		Version int64           `json:"version"`
		Data    json.RawMessage `json:"data"`
		Updates []StorageUpdate `json:"updates"`
	} `json:"storage"`
}

// Member is one entry of room:state members.
type Member struct {
	ClientID string         `json:"client_id"`
	UserID   string         `json:"user_id"`
	Name     string         `json:"name"`
	Presence map[string]any `json:"presence"`
	JoinedAt string         `json:"joined_at"`
}

// StorageUpdate is room:storage_updated data, or one catch-up update.
type StorageUpdate struct {
	RoomID   string          `json:"room_id"`
	Version  int64           `json:"version"`
	ClientID string          `json:"client_id"`
	Ops      json.RawMessage `json:"ops"`
}

// Client is a real WebSocket client whose reader keeps every frame it
// receives in a log. Waits look through the log; WaitFor takes the frame it
// returns, so that two waits for the same kind of frame see two frames.
type Client struct {
	T      testing.TB
	Node   *Node
	Label  string // e.g. "A@n1", used in messages
	UserID string
	ConnID string

	ws     *websocket.Conn
	wmu    sync.Mutex
	nextID atomic.Int64

	mu        sync.Mutex
	frames    []Frame
	taken     []bool
	changed   chan struct{} // closed and replaced on every new frame
	closed    chan struct{}
	closeCode int
	closeErr  error
}

// Dial connects as user with the given grants and waits for `connected`.
func (n *Node) Dial(t testing.TB, label, user string, rooms map[string]auth.Perm) *Client {
	t.Helper()
	c, err := n.DialToken(t, label, n.c.Token(user, rooms))
	if err != nil {
		t.Fatalf("%s: %v", label, err)
	}
	return c
}

// DialToken connects with token and waits for `connected`. The connection
// is closed when t ends; the client's failing helpers fail t.
func (n *Node) DialToken(t testing.TB, label, token string) (*Client, error) {
	d := websocket.Dialer{HandshakeTimeout: 10 * time.Second}
	ws, resp, err := d.Dial(n.WSURL()+"?token="+token, nil)
	if err != nil {
		if resp != nil {
			body, _ := io.ReadAll(resp.Body)
			return nil, fmt.Errorf("dial %s: %v (HTTP %d %s)", n.ID, err, resp.StatusCode, body)
		}
		return nil, fmt.Errorf("dial %s: %v", n.ID, err)
	}
	c := &Client{T: t, Node: n, Label: label, ws: ws, changed: make(chan struct{}), closed: make(chan struct{})}
	go c.read()
	t.Cleanup(func() { _ = ws.Close() })
	f, err := c.WaitForE(10*time.Second, "connected", OfType(TypeConnected))
	if err != nil {
		return nil, err
	}
	var d2 struct {
		ConnectionID string `json:"connection_id"`
		UserID       string `json:"user_id"`
	}
	_ = f.Decode(&d2)
	c.ConnID, c.UserID = d2.ConnectionID, d2.UserID
	return c, nil
}

// DialStatus tries a WebSocket upgrade and returns the HTTP status of the
// refusal (101 on success, the connection then closed at once).
func DialStatus(n *Node, token string) int {
	ws, resp, err := websocket.DefaultDialer.Dial(n.WSURL()+"?token="+token, nil)
	if err == nil {
		_ = ws.Close()
		return http.StatusSwitchingProtocols
	}
	if resp != nil {
		return resp.StatusCode
	}
	return 0
}

func (c *Client) read() {
	defer close(c.closed)
	for {
		_, b, err := c.ws.ReadMessage()
		now := time.Now()
		if err != nil {
			c.mu.Lock()
			c.closeErr = err
			var ce *websocket.CloseError
			if errors.As(err, &ce) {
				c.closeCode = ce.Code
			}
			c.notifyLocked()
			c.mu.Unlock()
			return
		}
		var f Frame
		if err := json.Unmarshal(b, &f); err != nil {
			// Kept in the log (and shown by failing waits) rather than
			// reported from this goroutine, which may outlive the test.
			raw, _ := json.Marshal(string(b))
			f = Frame{Type: "<invalid JSON>", Data: raw}
		}
		f.At = now
		c.mu.Lock()
		f.Seq = len(c.frames)
		c.frames = append(c.frames, f)
		c.taken = append(c.taken, false)
		c.notifyLocked()
		c.mu.Unlock()
	}
}

func (c *Client) notifyLocked() {
	close(c.changed)
	c.changed = make(chan struct{})
}

// Send writes one message (a string as is, anything else as JSON).
func (c *Client) Send(v any) error {
	var b []byte
	if s, ok := v.(string); ok {
		b = []byte(s)
	} else {
		var err error
		if b, err = json.Marshal(v); err != nil {
			return err
		}
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_ = c.ws.SetWriteDeadline(time.Now().Add(10 * time.Second))
	return c.ws.WriteMessage(websocket.TextMessage, b)
}

// NewID returns a request id unique to this client.
func (c *Client) NewID() string {
	return fmt.Sprintf("%s-%d", c.Label, c.nextID.Add(1))
}

// RequestID sends {type, id, data}; a write error is returned.
func (c *Client) RequestID(typ, id string, data any) error {
	m := map[string]any{"type": typ}
	if id != "" {
		m["id"] = id
	}
	if data != nil {
		m["data"] = data
	}
	return c.Send(m)
}

// Request sends {type, id, data} with a new id and returns the id; a write
// error fails the test.
func (c *Client) Request(typ string, data any) string {
	c.T.Helper()
	id := c.NewID()
	if err := c.RequestID(typ, id, data); err != nil {
		c.T.Fatalf("%s: send %s: %v", c.Label, typ, err)
	}
	return id
}

// CallE sends a request and waits for the frame carrying its id.
func (c *Client) CallE(typ string, data any, within time.Duration) (Frame, error) {
	id := c.NewID()
	if err := c.RequestID(typ, id, data); err != nil {
		return Frame{}, fmt.Errorf("%s: send %s: %w", c.Label, typ, err)
	}
	return c.AwaitE(id, within)
}

// Call sends a request and returns its reply (which may be an error frame).
func (c *Client) Call(typ string, data any, within time.Duration) Frame {
	c.T.Helper()
	f, err := c.CallE(typ, data, within)
	if err != nil {
		c.T.Fatal(err)
	}
	return f
}

// AwaitE waits for the frame with this id.
func (c *Client) AwaitE(id string, within time.Duration) (Frame, error) {
	return c.WaitForE(within, "the reply to "+id, func(f Frame) bool { return f.ID == id })
}

// Await waits for the frame with this id.
func (c *Client) Await(id string, within time.Duration) Frame {
	c.T.Helper()
	f, err := c.AwaitE(id, within)
	if err != nil {
		c.T.Fatal(err)
	}
	return f
}

// OfType matches frames of one type.
func OfType(typ string) func(Frame) bool { return func(f Frame) bool { return f.Type == typ } }

// About matches frames of a type whose data names this client_id.
func About(typ, clientID string) func(Frame) bool {
	return func(f Frame) bool { return f.Type == typ && f.Field("client_id") == clientID }
}

// WaitForE returns the first frame not taken yet that matches, and takes
// it; it fails at the deadline, or when the connection has closed and no
// frame matches.
func (c *Client) WaitForE(within time.Duration, what string, match func(Frame) bool) (Frame, error) {
	timer := time.NewTimer(within)
	defer timer.Stop()
	for {
		c.mu.Lock()
		for i, f := range c.frames {
			if !c.taken[i] && match(f) {
				c.taken[i] = true
				c.mu.Unlock()
				return f, nil
			}
		}
		changed := c.changed
		closed := false
		select {
		case <-c.closed:
			closed = true
		default:
		}
		c.mu.Unlock()
		if closed {
			return Frame{}, fmt.Errorf("%s: waiting for %s: connection closed (%s); last frames:\n%s", c.Label, what, c.closeDesc(), c.recent(8))
		}
		select {
		case <-changed:
		case <-timer.C:
			return Frame{}, fmt.Errorf("%s: no %s within %v; last frames:\n%s", c.Label, what, within, c.recent(8))
		}
	}
}

// WaitFor is WaitForE failing the test.
func (c *Client) WaitFor(within time.Duration, what string, match func(Frame) bool) Frame {
	c.T.Helper()
	f, err := c.WaitForE(within, what, match)
	if err != nil {
		c.T.Fatal(err)
	}
	return f
}

// WaitUntilE waits until cond holds over the whole log (cond must not
// block); closed connections still count what they received.
func (c *Client) WaitUntilE(within time.Duration, what string, cond func([]Frame) bool) error {
	timer := time.NewTimer(within)
	defer timer.Stop()
	for {
		c.mu.Lock()
		ok := cond(c.frames)
		changed := c.changed
		c.mu.Unlock()
		if ok {
			return nil
		}
		select {
		case <-changed:
		case <-c.closed:
			c.mu.Lock()
			ok := cond(c.frames)
			c.mu.Unlock()
			if ok {
				return nil
			}
			return fmt.Errorf("%s: waiting for %s: connection closed (%s); last frames:\n%s", c.Label, what, c.closeDesc(), c.recent(8))
		case <-timer.C:
			return fmt.Errorf("%s: no %s within %v; last frames:\n%s", c.Label, what, within, c.recent(8))
		}
	}
}

// Frames returns a copy of every frame received so far.
func (c *Client) Frames() []Frame {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]Frame(nil), c.frames...)
}

// Sync sends an application ping and waits for its pong: every frame the
// node queued for this connection before handling the ping is then in
// the log.
func (c *Client) Sync() {
	c.T.Helper()
	f := c.Call(TypePing, nil, 10*time.Second)
	if f.Type != TypePong {
		c.T.Fatalf("%s: ping answered with %s", c.Label, f)
	}
}

// Close closes the connection from the client side and waits for the
// reader to end.
func (c *Client) Close() {
	c.wmu.Lock()
	_ = c.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
	c.wmu.Unlock()
	_ = c.ws.Close()
	<-c.closed
}

// Closed is closed when the connection has ended.
func (c *Client) Closed() <-chan struct{} { return c.closed }

// WaitClosed waits for the connection to end and returns the close code
// received (0 when it ended without a close frame).
func (c *Client) WaitClosed(within time.Duration) (int, error) {
	t := time.NewTimer(within)
	defer t.Stop()
	select {
	case <-c.closed:
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.closeCode, nil
	case <-t.C:
		return 0, fmt.Errorf("%s: connection still open after %v", c.Label, within)
	}
}

// CloseCode is the close code received (0 if none yet).
func (c *Client) CloseCode() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closeCode
}

// CloseReason is the reason of the close frame received ("" if none).
func (c *Client) CloseReason() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var ce *websocket.CloseError
	if errors.As(c.closeErr, &ce) {
		return ce.Text
	}
	return ""
}

func (c *Client) closeDesc() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closeCode != 0 {
		return fmt.Sprintf("close code %d", c.closeCode)
	}
	if c.closeErr != nil {
		return c.closeErr.Error()
	}
	return "open"
}

func (c *Client) recent(n int) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	fs := c.frames
	if len(fs) > n {
		fs = fs[len(fs)-n:]
	}
	if len(fs) == 0 {
		return "  (none)"
	}
	var b strings.Builder
	for _, f := range fs {
		fmt.Fprintf(&b, "  #%d %s\n", f.Seq, f)
	}
	return strings.TrimRight(b.String(), "\n")
}

// ---------------------------------------------------------- room calls --

// JoinE sends room:join and returns the room:state that answers it; an
// error reply is returned as an error naming its code.
func (c *Client) JoinE(room string, extra map[string]any) (RoomState, error) {
	data := map[string]any{"room_id": room}
	for k, v := range extra {
		data[k] = v
	}
	f, err := c.CallE(TypeJoin, data, 10*time.Second)
	if err != nil {
		return RoomState{}, err
	}
	if f.Type != TypeState {
		return RoomState{}, fmt.Errorf("%s: room:join %s answered %s", c.Label, room, f)
	}
	var st RoomState
	if err := f.Decode(&st); err != nil {
		return RoomState{}, fmt.Errorf("%s: room:state: %v", c.Label, err)
	}
	return st, nil
}

// Join is JoinE failing the test.
func (c *Client) Join(room string, extra map[string]any) RoomState {
	c.T.Helper()
	st, err := c.JoinE(room, extra)
	if err != nil {
		c.T.Fatal(err)
	}
	return st
}

// PatchE sends room:update_storage with these ops (a JSON array) and
// returns the reply: the sender's own room:storage_updated or an error.
func (c *Client) PatchE(room, ops string, within time.Duration) (Frame, error) {
	return c.CallE(TypeUpdateStorage, map[string]any{"room_id": room, "ops": json.RawMessage(ops)}, within)
}

// Patch is PatchE requiring an acknowledgement; it returns its version.
func (c *Client) Patch(room, ops string) int64 {
	c.T.Helper()
	f, err := c.PatchE(room, ops, 10*time.Second)
	if err != nil {
		c.T.Fatal(err)
	}
	if f.Type != TypeStorage {
		c.T.Fatalf("%s: room:update_storage %s answered %s", c.Label, ops, f)
	}
	return f.Version()
}

// LastVersion is the highest storage version this client was told of
// (room:state or room:storage_updated), 0 when none.
func (c *Client) LastVersion() int64 {
	var v int64
	for _, f := range c.Frames() {
		v = max(v, f.Version())
	}
	return v
}
