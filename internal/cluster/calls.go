package cluster

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"sync"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/parleyhq/parley/internal/safe"
)

// Calls across nodes (docs/cluster.md, "Calls"). A call lives on one media
// node, which holds the room's call lease in <cluster>_calls; every other
// node relays its clients' call requests to it and it sends its replies
// for those clients back to their nodes:
//
//	<cluster>_calls             JetStream KV bucket: call leases, key roomToken(room id), History 1
//	<cluster>.node.<id>.calls   core NATS: call requests for node <id> as its media node (RequestCall, NotifyCall)
//	<cluster>.node.<id>.conn    core NATS: frames for one connection on node <id> (SendConn)
//
// Both node subjects feed one channel drained by one goroutine (the calls
// goroutine), separate from the node's room/broker dispatch: a call request
// may do store round trips (the call events name the room's members),
// which the room dispatch must never wait for. NodeDown is also reported
// on the calls goroutine, after every call message the connection had
// already read, so a drained media node's last frames reach their
// connections before its departure is handled.

// CallLease is a call's lease: the media node and the KV revision of the
// write that made it (its epoch).
type CallLease struct {
	Node  string
	Epoch uint64
}

// ErrCallLeaseTaken is AcquireCall's lost compare-and-set: another node
// wrote the lease first.
var ErrCallLeaseTaken = errors.New("cluster: call lease taken by another node")

// ErrMediaNodeUnreachable is RequestCall's error when the media node has no
// subscriber (gone) or did not answer before ctx ended.
var ErrMediaNodeUnreachable = errors.New("cluster: the call's media node did not answer")

// CallRequest is one call operation relayed to a media node. Op is the
// server's vocabulary (the cluster package only carries it); Node is the
// sending node, filled in by RequestCall and NotifyCall.
type CallRequest struct {
	Op     string
	RoomID string
	ConnID string
	UserID string
	Node   string
	Type   string
	ID     string
	Data   []byte
}

// CallReply answers a CallRequest: an error when Code is not "", else Data.
type CallReply struct {
	Code    string
	Message string
	Data    []byte
}

// CallHandler receives this node's call traffic, on the calls goroutine.
type CallHandler interface {
	// CallRequest handles a request relayed to this node as a media node;
	// the reply goes back to the requester (nothing for NotifyCall).
	CallRequest(req CallRequest) CallReply
	// ConnFrame delivers a frame a media node sent to a connection on this
	// node.
	ConnFrame(connID string, frame []byte)
	// NodeDown reports a node declared dead or draining (as
	// rooms.ClusterHandler.NodeDown).
	NodeDown(node string)
}

// callsState is a node's call relay: the bucket, the two subscriptions,
// the inbox and the NodeDown queue of the calls goroutine.
type callsState struct {
	kv      jetstream.KeyValue
	h       CallHandler
	inbox   chan *nats.Msg
	reqSubj string // <cluster>.node.<id>.calls
	mu      sync.Mutex
	downs   []string // NodeDown queue
	wake    chan struct{}
}

func (s subjects) callsBucket() string        { return s.cluster + "_calls" }
func (s subjects) nodeCalls(id string) string { return s.nodePrefix + id + ".calls" }
func (s subjects) nodeConn(id string) string  { return s.nodePrefix + id + ".conn" }

// callsNodeDown queues NodeDown for the calls goroutine (from the
// registry, next to the room handler's NodeDown).
func (n *Node) callsNodeDown(node string) {
	c := n.calls.Load()
	if c == nil {
		return
	}
	c.mu.Lock()
	c.downs = append(c.downs, node)
	c.mu.Unlock()
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

func (c *callsState) takeDowns() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	downs := c.downs
	c.downs = nil
	return downs
}

// StartCalls opens <cluster>_calls (creating it when missing, History 1),
// subscribes to this node's calls and conn subjects and starts the calls
// goroutine that hands their messages, and NodeDown, to h. Only the first
// call counts. Errors: JetStream or NATS unavailable (ctx bounds them).
func (n *Node) StartCalls(ctx context.Context, h CallHandler) error {
	if h == nil || n.calls.Load() != nil {
		return nil
	}
	kv, err := n.bucket(ctx, jetstream.KeyValueConfig{Bucket: n.subj.callsBucket(), History: 1,
		Description: "Parley cluster " + n.subj.cluster + ": call leases"})
	if err != nil {
		return err
	}
	c := &callsState{kv: kv, h: h, inbox: make(chan *nats.Msg, InboxSize), reqSubj: n.subj.nodeCalls(n.id), wake: make(chan struct{}, 1)}
	subs := make([]*nats.Subscription, 0, 2)
	for _, subj := range []string{n.subj.nodeCalls(n.id), n.subj.nodeConn(n.id)} {
		sub, err := n.nc.ChanSubscribe(subj, c.inbox)
		if err != nil {
			for _, s := range subs {
				_ = s.Unsubscribe()
			}
			return fmt.Errorf("cluster: subscribe %s: %w", subj, err)
		}
		subs = append(subs, sub)
	}
	if err := n.nc.FlushWithContext(ctx); err != nil {
		for _, s := range subs {
			_ = s.Unsubscribe()
		}
		return fmt.Errorf("cluster: flush the call subscriptions: %w", err)
	}
	if !n.calls.CompareAndSwap(nil, c) {
		for _, s := range subs {
			_ = s.Unsubscribe()
		}
		return nil
	}
	n.wg.Add(1)
	go n.callsLoop(c)
	return nil
}

// callsLoop is the calls goroutine. A NodeDown is handled after the
// messages the inbox holds at that moment (those read before it).
func (n *Node) callsLoop(c *callsState) {
	defer n.wg.Done()
	for {
		select {
		case m := <-c.inbox:
			n.callsDispatch(c, m)
		case <-c.wake:
			for k := len(c.inbox); k > 0; k-- {
				n.callsDispatch(c, <-c.inbox)
			}
			for _, node := range c.takeDowns() {
				func() {
					defer safe.Recover(n.log, n.panics, safe.Broker, nil)
					c.h.NodeDown(node)
				}()
			}
		case <-n.stop:
			return
		}
	}
}

// callsDispatch hands one message to the handler; a panic is contained to
// it (a request then gets an internal error reply).
func (n *Node) callsDispatch(c *callsState, m *nats.Msg) {
	replied := false
	defer safe.Recover(n.log, n.panics, safe.Broker, func(any) {
		if m.Reply != "" && !replied {
			_ = m.Respond(encodeCallReply(CallReply{Code: "internal", Message: "internal error on the media node"}))
		}
	})
	if m.Subject != c.reqSubj {
		connID, frame, err := decodeConnFrame(m.Data)
		if err != nil {
			n.log.Warn("bad connection frame from NATS", "err", err)
			return
		}
		c.h.ConnFrame(connID, frame)
		return
	}
	req, err := decodeCallRequest(m.Data)
	rep := CallReply{Code: "bad_request", Message: "malformed call request"}
	if err != nil {
		n.log.Warn("bad call request from NATS", "err", err)
	} else {
		rep = c.h.CallRequest(req)
	}
	if m.Reply != "" {
		replied = true
		if err := m.Respond(encodeCallReply(rep)); err != nil && !n.closed.Load() {
			n.log.Warn("answering a call request", "err", err)
		}
	}
}

// CallLease reads roomID's call lease (KV Get on <cluster>_calls). A
// missing or deleted key is ok=false. Errors: StartCalls not called, NATS
// or JetStream unavailable, a malformed value.
func (n *Node) CallLease(ctx context.Context, roomID string) (CallLease, bool, error) {
	c, err := n.callsOrErr(roomID)
	if err != nil {
		return CallLease{}, false, err
	}
	e, err := c.kv.Get(ctx, roomToken(roomID))
	if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
		return CallLease{}, false, nil
	}
	if err != nil {
		return CallLease{}, false, fmt.Errorf("cluster: read the call lease of room %q: %w", roomID, err)
	}
	var v leaseValue
	if err := json.Unmarshal(e.Value(), &v); err != nil || v.Node == "" {
		return CallLease{}, false, fmt.Errorf("cluster: malformed call lease of room %q at revision %d", roomID, e.Revision())
	}
	return CallLease{Node: v.Node, Epoch: e.Revision()}, true, nil
}

// AcquireCall makes this node the media node of roomID's call: with prev
// nil a KV Create (only when no lease exists), else an Update at
// prev.Epoch (taking over a dead or draining holder). A lost
// compare-and-set is ErrCallLeaseTaken.
func (n *Node) AcquireCall(ctx context.Context, roomID string, prev *CallLease) (CallLease, error) {
	c, err := n.callsOrErr(roomID)
	if err != nil {
		return CallLease{}, err
	}
	val, _ := json.Marshal(leaseValue{Node: n.id})
	var rev uint64
	if prev == nil {
		rev, err = c.kv.Create(ctx, roomToken(roomID), val)
	} else {
		rev, err = c.kv.Update(ctx, roomToken(roomID), val, prev.Epoch)
	}
	if isConflict(err) {
		return CallLease{}, ErrCallLeaseTaken
	}
	if err != nil {
		return CallLease{}, fmt.Errorf("cluster: acquire the call lease of room %q: %w", roomID, err)
	}
	return CallLease{Node: n.id, Epoch: rev}, nil
}

// ClearCall deletes roomID's call lease if it is still l (KV Delete at
// l.Epoch), whoever holds it: the holder when the call ends, or a node
// that saw the holder die. deleted is false when the lease had changed.
func (n *Node) ClearCall(ctx context.Context, roomID string, l CallLease) (deleted bool, err error) {
	c, err := n.callsOrErr(roomID)
	if err != nil {
		return false, err
	}
	err = c.kv.Delete(ctx, roomToken(roomID), jetstream.LastRevision(l.Epoch))
	if isConflict(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("cluster: clear the call lease of room %q: %w", roomID, err)
	}
	return true, nil
}

func (n *Node) callsOrErr(roomID string) (*callsState, error) {
	if err := checkRoomID(roomID); err != nil {
		return nil, err
	}
	c := n.calls.Load()
	if c == nil {
		return nil, errors.New("cluster: calls not started (StartCalls)")
	}
	return c, nil
}

// RequestCall sends req to node's calls subject and waits for the reply
// (NATS request/reply, bounded by ctx). Errors: ErrMediaNodeUnreachable
// (no subscriber or no answer in time), a malformed reply, the connection
// closed.
func (n *Node) RequestCall(ctx context.Context, node string, req CallRequest) (CallReply, error) {
	if err := checkNodeID(node); err != nil {
		return CallReply{}, err
	}
	req.Node = n.id
	m, err := n.nc.RequestWithContext(ctx, n.subj.nodeCalls(node), encodeCallRequest(req))
	if errors.Is(err, nats.ErrNoResponders) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) {
		return CallReply{}, fmt.Errorf("%w (node %s, %s)", ErrMediaNodeUnreachable, node, err)
	}
	if err != nil {
		return CallReply{}, fmt.Errorf("cluster: call request to node %q: %w", node, err)
	}
	rep, err := decodeCallReply(m.Data)
	if err != nil {
		return CallReply{}, fmt.Errorf("cluster: call reply from node %q: %w", node, err)
	}
	return rep, nil
}

// NotifyCall publishes req to node's calls subject without waiting (at
// most once; no error when the node is gone).
func (n *Node) NotifyCall(node string, req CallRequest) error {
	if err := checkNodeID(node); err != nil {
		return err
	}
	req.Node = n.id
	if err := n.nc.Publish(n.subj.nodeCalls(node), encodeCallRequest(req)); err != nil {
		return fmt.Errorf("cluster: call notice to node %q: %w", node, err)
	}
	return nil
}

// SendConn publishes frame for connection connID on node's conn subject
// (at most once; in order with this node's other messages to node).
func (n *Node) SendConn(node, connID string, frame []byte) error {
	if err := checkNodeID(node); err != nil {
		return err
	}
	if err := n.nc.Publish(n.subj.nodeConn(node), encodeConnFrame(connID, frame)); err != nil {
		return fmt.Errorf("cluster: frame to node %q: %w", node, err)
	}
	return nil
}

// ---- wire ----
//
// A call request: version byte 1, then seven uvarint-length-prefixed
// strings (op, room, connection, user, node, type, id), then the data (the
// rest). A reply: byte 0 and the data (the rest), or byte 1 and two
// strings (code, message). A connection frame: version byte 1, the
// connection id (length-prefixed), the frame (the rest).

const callWireVersion = 1

func encodeCallRequest(r CallRequest) []byte {
	b := make([]byte, 0, 1+7*binary.MaxVarintLen64+len(r.Op)+len(r.RoomID)+len(r.ConnID)+len(r.UserID)+len(r.Node)+len(r.Type)+len(r.ID)+len(r.Data))
	b = append(b, callWireVersion)
	for _, s := range []string{r.Op, r.RoomID, r.ConnID, r.UserID, r.Node, r.Type, r.ID} {
		b = appendString(b, s)
	}
	return append(b, r.Data...)
}

// readStrings reads k length-prefixed strings; it never allocates more
// than the input holds.
func readStrings(b []byte, out ...*string) ([]byte, error) {
	for _, p := range out {
		l, k := binary.Uvarint(b)
		if k <= 0 || uint64(len(b)-k) < l {
			return nil, errors.New("truncated")
		}
		*p = string(b[k : k+int(l)])
		b = b[k+int(l):]
	}
	return b, nil
}

func decodeCallRequest(b []byte) (CallRequest, error) {
	var r CallRequest
	if len(b) < 1 || b[0] != callWireVersion {
		return r, errors.New("unknown call request version")
	}
	rest, err := readStrings(b[1:], &r.Op, &r.RoomID, &r.ConnID, &r.UserID, &r.Node, &r.Type, &r.ID)
	if err != nil {
		return CallRequest{}, fmt.Errorf("call request: %w", err)
	}
	r.Data = rest
	return r, nil
}

func encodeCallReply(r CallReply) []byte {
	if r.Code != "" {
		b := make([]byte, 0, 1+2*binary.MaxVarintLen64+len(r.Code)+len(r.Message))
		b = append(b, 1)
		b = appendString(b, r.Code)
		return appendString(b, r.Message)
	}
	return append([]byte{0}, r.Data...)
}

func decodeCallReply(b []byte) (CallReply, error) {
	var r CallReply
	if len(b) < 1 || b[0] > 1 {
		return r, errors.New("malformed call reply")
	}
	if b[0] == 0 {
		r.Data = b[1:]
		return r, nil
	}
	rest, err := readStrings(b[1:], &r.Code, &r.Message)
	if err != nil || len(rest) != 0 || r.Code == "" {
		return CallReply{}, errors.New("malformed call reply error")
	}
	return r, nil
}

func encodeConnFrame(connID string, frame []byte) []byte {
	b := make([]byte, 0, 1+binary.MaxVarintLen64+len(connID)+len(frame))
	b = append(b, callWireVersion)
	b = appendString(b, connID)
	return append(b, frame...)
}

func decodeConnFrame(b []byte) (connID string, frame []byte, err error) {
	if len(b) < 1 || b[0] != callWireVersion {
		return "", nil, errors.New("unknown connection frame version")
	}
	rest, err := readStrings(b[1:], &connID)
	if err != nil || connID == "" {
		return "", nil, errors.New("malformed connection frame")
	}
	return connID, rest, nil
}
