package cluster

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"

	"github.com/nats-io/nats.go"

	"github.com/parleyhq/parley/internal/safe"
)

// Server-API requests to every node (scatter-gather; docs/cluster.md,
// "Server API"): the node that received GET /api/live/rooms or POST
// /api/users/{id}/disconnect asks every live node of the registry on its
// own subject and sums the answers:
//
//	<cluster>.node.<id>.api   request/reply: server-API questions for node <id>
//
// The registry says which nodes are live, so the asking node knows whom
// it waits for and who did not answer (Gather's missing list) within the
// caller's deadline. A request is at most once, like every core NATS
// message; the handler's answers are idempotent questions or closes.

// APIHandler answers one server-API request (op and body are the
// caller's vocabulary; the cluster package only carries them). It runs on
// the subscription's goroutine and should not block for long.
type APIHandler func(op string, body []byte) ([]byte, error)

func (s subjects) nodeAPI(id string) string { return s.nodePrefix + id + ".api" }

type apiState struct {
	h   APIHandler
	sub *nats.Subscription
}

// StartAPI subscribes this node to its server-API subject with h. Only the
// first call counts. Errors: NATS unavailable (ctx bounds the flush).
func (n *Node) StartAPI(ctx context.Context, h APIHandler) error {
	if h == nil || n.api.Load() != nil {
		return nil
	}
	st := &apiState{h: h}
	sub, err := n.nc.Subscribe(n.subj.nodeAPI(n.id), func(m *nats.Msg) { n.answerAPI(st, m) })
	if err != nil {
		return fmt.Errorf("cluster: subscribe %s: %w", n.subj.nodeAPI(n.id), err)
	}
	if err := n.nc.FlushWithContext(ctx); err != nil {
		_ = sub.Unsubscribe()
		return fmt.Errorf("cluster: flush the server-API subscription: %w", err)
	}
	st.sub = sub
	if !n.api.CompareAndSwap(nil, st) {
		_ = sub.Unsubscribe()
	}
	return nil
}

// answerAPI runs one request; a panic is contained and answered as an
// error.
func (n *Node) answerAPI(st *apiState, m *nats.Msg) {
	replied := false
	defer safe.Recover(n.log, n.panics, safe.Broker, func(any) {
		if !replied && m.Reply != "" {
			_ = m.Respond(encodeAPIReply(nil, errors.New("internal error")))
		}
	})
	op, body, err := decodeAPIRequest(m.Data)
	var out []byte
	if err == nil {
		out, err = st.h(op, body)
	}
	if m.Reply == "" {
		return
	}
	replied = true
	if rerr := m.Respond(encodeAPIReply(out, err)); rerr != nil && !n.closed.Load() {
		n.log.Warn("answering a server-API request", "err", rerr)
	}
}

// LiveNodes is every node the registry holds alive (heartbeating, not
// draining), this one included when it is, sorted.
func (n *Node) LiveNodes() []string {
	n.reg.mu.Lock()
	ids := make([]string, 0, len(n.reg.peers)+1)
	for id := range n.reg.peers {
		ids = append(ids, id)
	}
	n.reg.mu.Unlock()
	out := make([]string, 0, len(ids)+1)
	if n.Alive(n.id) {
		out = append(out, n.id)
	}
	for _, id := range ids {
		if id != n.id && n.Alive(id) {
			out = append(out, id)
		}
	}
	sort.Strings(out)
	return out
}

// Gather asks every live node (LiveNodes; this node through its own
// handler, without NATS) and returns each answer by node id. missing lists
// the nodes that did not answer before ctx ended, had no subscriber, or
// answered an error (logged), sorted.
func (n *Node) Gather(ctx context.Context, op string, body []byte) (answers map[string][]byte, missing []string) {
	st := n.api.Load()
	nodes := n.LiveNodes()
	answers = make(map[string][]byte, len(nodes))
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, id := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var out []byte
			var err error
			switch {
			case st == nil:
				err = errors.New("server API not started on this node")
			case id == n.id:
				func() {
					defer safe.Recover(n.log, n.panics, safe.Broker, func(any) { err = errors.New("internal error") })
					out, err = st.h(op, body)
				}()
			default:
				out, err = n.requestAPI(ctx, id, op, body)
			}
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				missing = append(missing, id)
				n.log.Warn("server API: a node did not answer", "node", id, "op", op, "err", err)
				return
			}
			answers[id] = out
		}()
	}
	wg.Wait()
	sort.Strings(missing)
	return answers, missing
}

func (n *Node) requestAPI(ctx context.Context, node, op string, body []byte) ([]byte, error) {
	m, err := n.nc.RequestWithContext(ctx, n.subj.nodeAPI(node), encodeAPIRequest(op, body))
	if err != nil {
		return nil, err
	}
	return decodeAPIReply(m.Data)
}

// ---- wire ----
//
// A request: version byte 1, the op (uvarint-length-prefixed), the body
// (the rest). A reply: byte 0 and the answer (the rest), or byte 1 and an
// error message (the rest).

const apiWireVersion = 1

func encodeAPIRequest(op string, body []byte) []byte {
	b := make([]byte, 0, 1+10+len(op)+len(body))
	b = append(b, apiWireVersion)
	b = appendString(b, op)
	return append(b, body...)
}

func decodeAPIRequest(b []byte) (op string, body []byte, err error) {
	if len(b) < 1 || b[0] != apiWireVersion {
		return "", nil, errors.New("unknown server-API request version")
	}
	rest, err := readStrings(b[1:], &op)
	if err != nil || op == "" {
		return "", nil, errors.New("malformed server-API request")
	}
	return op, rest, nil
}

func encodeAPIReply(out []byte, err error) []byte {
	if err != nil {
		return append([]byte{1}, err.Error()...)
	}
	return append([]byte{0}, out...)
}

func decodeAPIReply(b []byte) ([]byte, error) {
	switch {
	case len(b) < 1 || b[0] > 1:
		return nil, errors.New("malformed server-API reply")
	case b[0] == 1:
		return nil, fmt.Errorf("node answered: %s", b[1:])
	}
	return b[1:], nil
}
