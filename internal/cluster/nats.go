package cluster

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"

	"github.com/parleyhq/parley/internal/hub"
	"github.com/parleyhq/parley/internal/safe"
)

// Subject every node publishes deliveries to and subscribes to.
const deliverSubject = "parley.deliver"

const (
	kindConn byte = iota + 1
	kindUsers
	kindAll
)

// NATS delivers locally at once and publishes the delivery for the other
// nodes, which hand it to their own hubs. Core NATS (at-most-once) is the
// right fit: these are live pushes; durable state lives in the store.
type NATS struct {
	nc     *nats.Conn
	sub    *nats.Subscription
	hub    *hub.Hub
	node   string
	local  *Local
	logger *slog.Logger

	panics safe.Counter // panics contained per delivery from another node (may be nil)
}

// NewNATS connects to url and subscribes. nodeID "" picks a random id.
// panics (may be nil) counts panics contained while delivering a message
// from another node.
func NewNATS(url, nodeID string, h *hub.Hub, panics safe.Counter, log *slog.Logger) (*NATS, error) {
	if nodeID == "" {
		nodeID = uuid.NewString()
	}
	nc, err := nats.Connect(url, nats.Name("parley-"+nodeID), nats.MaxReconnects(-1))
	if err != nil {
		return nil, err
	}
	b := &NATS{nc: nc, hub: h, node: nodeID, local: NewLocal(h), logger: log, panics: panics}
	b.sub, err = nc.Subscribe(deliverSubject, b.receive)
	if err != nil {
		nc.Close()
		return nil, err
	}
	if err := nc.Flush(); err != nil {
		nc.Close()
		return nil, err
	}
	return b, nil
}

// NodeID is this node's id.
func (b *NATS) NodeID() string { return b.node }

// ToConn implements Broker.
func (b *NATS) ToConn(connID string, frame []byte) {
	if b.hub.SendToConn(connID, frame) {
		return // it lives here
	}
	b.publish(kindConn, connID, nil, frame)
}

// ToUsers implements Broker.
func (b *NATS) ToUsers(userIDs []string, frame []byte, exceptConn string) {
	b.local.ToUsers(userIDs, frame, exceptConn)
	b.publish(kindUsers, exceptConn, userIDs, frame)
}

// ToAll implements Broker.
func (b *NATS) ToAll(frame []byte, exceptConn string) {
	b.local.ToAll(frame, exceptConn)
	b.publish(kindAll, exceptConn, nil, frame)
}

// Close implements Broker.
func (b *NATS) Close() error {
	if err := b.sub.Unsubscribe(); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
		b.logger.Warn("nats unsubscribe", "err", err)
	}
	b.nc.Close()
	return nil
}

func (b *NATS) publish(kind byte, id string, users []string, frame []byte) {
	msg := encodeDelivery(kind, b.node, id, users, frame)
	if err := b.nc.Publish(deliverSubject, msg); err != nil {
		b.logger.Warn("nats publish failed", "err", err)
	}
}

// receive delivers a message from another node to this node's connections.
// It runs on the NATS client's dispatch goroutine: a panic there would stop
// every later delivery, so it is contained per message.
func (b *NATS) receive(m *nats.Msg) {
	defer safe.Recover(b.logger, b.panics, safe.Broker, nil)
	d, err := decodeDelivery(m.Data)
	if err != nil {
		b.logger.Warn("bad delivery from NATS", "err", err)
		return
	}
	if d.node == b.node {
		return // already delivered locally
	}
	switch d.kind {
	case kindConn:
		b.hub.SendToConn(d.id, d.frame)
	case kindUsers:
		b.hub.SendToUsers(d.users, d.frame, d.id)
	case kindAll:
		b.hub.SendAll(d.frame, d.id)
	}
}

type delivery struct {
	kind  byte
	node  string
	id    string
	users []string
	frame []byte
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func encodeDelivery(kind byte, node, id string, users []string, frame []byte) []byte {
	b := make([]byte, 0, 16+len(node)+len(id)+len(frame)+len(users)*40)
	b = append(b, kind)
	b = appendString(b, node)
	b = appendString(b, id)
	b = binary.AppendUvarint(b, uint64(len(users)))
	for _, u := range users {
		b = appendString(b, u)
	}
	return append(b, frame...)
}

func decodeDelivery(b []byte) (delivery, error) {
	var d delivery
	if len(b) < 1 {
		return d, errors.New("empty")
	}
	d.kind, b = b[0], b[1:]
	readString := func() (string, error) {
		n, k := binary.Uvarint(b)
		if k <= 0 || uint64(len(b)-k) < n {
			return "", fmt.Errorf("truncated")
		}
		s := string(b[k : k+int(n)])
		b = b[k+int(n):]
		return s, nil
	}
	var err error
	if d.node, err = readString(); err != nil {
		return d, err
	}
	if d.id, err = readString(); err != nil {
		return d, err
	}
	n, k := binary.Uvarint(b)
	if k <= 0 || n > uint64(len(b)) {
		return d, errors.New("truncated user count")
	}
	b = b[k:]
	for i := uint64(0); i < n; i++ {
		u, err := readString()
		if err != nil {
			return d, err
		}
		d.users = append(d.users, u)
	}
	d.frame = b
	return d, nil
}
