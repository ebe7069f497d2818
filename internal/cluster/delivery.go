package cluster

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Delivery kinds (the first byte of a delivery).
const (
	kindUsers byte = 2 // on <cluster>.user.<token>: the listed users' connections
	kindAll   byte = 3 // on <cluster>.all: every connection
)

// ToUsers implements Broker: it delivers to the listed users' connections
// on this node at once, then publishes one delivery per distinct user on
// <cluster>.user.<userToken(user)>, which reaches only the nodes where the
// user has a connection (they subscribe on the user's first connection and
// unsubscribe on the last). exceptConn travels along so its node skips it.
func (n *Node) ToUsers(userIDs []string, frame []byte, exceptConn string) {
	if n.hub != nil {
		n.hub.SendToUsers(userIDs, frame, exceptConn)
	}
	var seen map[string]struct{}
	if len(userIDs) > 1 {
		seen = make(map[string]struct{}, len(userIDs))
	}
	for _, u := range userIDs {
		if u == "" {
			continue // no such user, and no subject token
		}
		if seen != nil {
			if _, dup := seen[u]; dup {
				continue
			}
			seen[u] = struct{}{}
		}
		n.publish(n.subj.user(u), encodeDelivery(kindUsers, n.id, exceptConn, []string{u}, frame))
	}
}

// ToAll implements Broker: every connection on this node at once, then one
// delivery on <cluster>.all for the other nodes.
func (n *Node) ToAll(frame []byte, exceptConn string) {
	if n.hub != nil {
		n.hub.SendAll(frame, exceptConn)
	}
	n.publish(n.subj.all, encodeDelivery(kindAll, n.id, exceptConn, nil, frame))
}

func (n *Node) publish(subject string, msg []byte) {
	if err := n.nc.Publish(subject, msg); err != nil && !n.closed.Load() {
		n.log.Warn("NATS publish failed", "subject", subject, "err", err)
	}
}

// syncUser keeps one subscription to <cluster>.user.<token> while userID
// has a connection in the hub (installed with hub.OnUser). It reads the
// hub's current state under usersMu rather than trusting the event, so an
// Add and a Remove racing on two goroutines still end in the right state:
// whichever call comes last sees the final state. A new subscription is
// flushed (when connected) so that the server has the interest before the
// connection's hooks run.
func (n *Node) syncUser(userID string, _ bool) {
	if userID == "" || n.hub == nil {
		return
	}
	n.usersMu.Lock()
	if n.closed.Load() {
		n.usersMu.Unlock()
		return
	}
	online := n.hub.UserOnline(userID)
	sub := n.userSubs[userID]
	subscribed := false
	switch {
	case online && sub == nil:
		s, err := n.nc.ChanSubscribe(n.subj.user(userID), n.inbox)
		if err != nil {
			n.log.Warn("subscribing to a user's deliveries", "user", userID, "err", err)
			break
		}
		n.userSubs[userID] = s
		subscribed = true
	case !online && sub != nil:
		delete(n.userSubs, userID)
		_ = sub.Unsubscribe()
	}
	n.usersMu.Unlock()
	if subscribed && n.nc.IsConnected() {
		if err := n.nc.FlushTimeout(flushTimeout); err != nil {
			n.log.Debug("NATS flush after subscribing to a user", "err", err)
		}
	}
}

// userSubscribed reports whether this node subscribes to userID's
// deliveries (tests).
func (n *Node) userSubscribed(userID string) bool {
	n.usersMu.Lock()
	defer n.usersMu.Unlock()
	return n.userSubs[userID] != nil
}

// receiveDelivery hands a delivery from another node to this node's hub.
// want is the kind the subject carries; anything else is dropped.
func (n *Node) receiveDelivery(data []byte, want byte) {
	if n.hub == nil {
		return
	}
	d, err := decodeDelivery(data)
	if err != nil || d.kind != want {
		n.log.Warn("bad delivery from NATS", "err", err, "kind", d.kind)
		return
	}
	if d.node == n.id {
		return // this node delivered it locally already
	}
	switch d.kind {
	case kindUsers:
		n.hub.SendToUsers(d.users, d.frame, d.id)
	case kindAll:
		n.hub.SendAll(d.frame, d.id)
	}
}

// delivery is one Broker message between nodes. Encoded: kind byte, then
// uvarint-length-prefixed sender node id and except-connection id, a
// uvarint user count and that many length-prefixed user ids, and the frame
// (the rest).
type delivery struct {
	kind  byte
	node  string
	id    string // connection to skip ("" for none)
	users []string
	frame []byte
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func encodeDelivery(kind byte, node, id string, users []string, frame []byte) []byte {
	size := 1 + 3*binary.MaxVarintLen64 + len(node) + len(id) + len(frame)
	for _, u := range users {
		size += binary.MaxVarintLen64 + len(u)
	}
	b := make([]byte, 0, size)
	b = append(b, kind)
	b = appendString(b, node)
	b = appendString(b, id)
	b = binary.AppendUvarint(b, uint64(len(users)))
	for _, u := range users {
		b = appendString(b, u)
	}
	return append(b, frame...)
}

// decodeDelivery parses a delivery. It never allocates more than the input
// holds: every length is checked against the bytes left, and a user count
// cannot exceed them (each user takes at least one byte).
func decodeDelivery(b []byte) (delivery, error) {
	var d delivery
	if len(b) < 1 {
		return d, errors.New("empty delivery")
	}
	d.kind, b = b[0], b[1:]
	if d.kind != kindUsers && d.kind != kindAll {
		return d, fmt.Errorf("unknown delivery kind %d", d.kind)
	}
	readString := func() (string, error) {
		n, k := binary.Uvarint(b)
		if k <= 0 || uint64(len(b)-k) < n {
			return "", errors.New("truncated delivery")
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
	if k <= 0 || n > uint64(len(b)-k) {
		return d, errors.New("truncated delivery user count")
	}
	b = b[k:]
	if n > 0 {
		d.users = make([]string, 0, n)
	}
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
