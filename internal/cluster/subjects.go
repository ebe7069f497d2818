package cluster

import (
	"encoding/base64"
	"fmt"
	"regexp"
)

// DefaultClusterName is the cluster name when Options.ClusterName is "".
const DefaultClusterName = "parley"

var (
	clusterNameRe = regexp.MustCompile(`^[A-Za-z0-9_-]{1,32}$`)
	nodeIDRe      = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)
)

// ValidClusterName reports whether name can be a cluster name: 1–32 of
// [A-Za-z0-9_-], so that it is one NATS subject token and a valid part of a
// KV bucket name.
func ValidClusterName(name string) bool { return clusterNameRe.MatchString(name) }

// ValidNodeID reports whether id can be a node id: 1–64 of [A-Za-z0-9_-],
// so that it is one NATS subject token and a KV key.
func ValidNodeID(id string) bool { return nodeIDRe.MatchString(id) }

// roomToken encodes a room id as one NATS subject token that is also a
// valid KV key: unpadded base64url (RFC 4648 §5, alphabet [A-Za-z0-9_-]),
// so no '.', '*', '>' or space can reach a subject. A room id of
// [A-Za-z0-9._:-]{1,128} gives 2–171 characters. It is the key of the
// room's lease in the <cluster>_rooms KV bucket and the last token of the
// room's subject <cluster>.room.<token>.
func roomToken(roomID string) string { return base64.RawURLEncoding.EncodeToString([]byte(roomID)) }

// userToken encodes a user id for the subject <cluster>.user.<token>, the
// same way as roomToken (user ids are up to 128 characters of any text,
// at most 683 characters encoded).
func userToken(userID string) string { return base64.RawURLEncoding.EncodeToString([]byte(userID)) }

// subjects are one cluster's NATS subjects and KV bucket names (see the
// package doc for the layout).
type subjects struct {
	cluster     string
	nodesBucket string // <cluster>_nodes
	roomsBucket string // <cluster>_rooms
	all         string // <cluster>.all
	roomPrefix  string // <cluster>.room.
	userPrefix  string // <cluster>.user.
	nodePrefix  string // <cluster>.node.
}

func newSubjects(cluster string) subjects {
	return subjects{
		cluster:     cluster,
		nodesBucket: cluster + "_nodes",
		roomsBucket: cluster + "_rooms",
		all:         cluster + ".all",
		roomPrefix:  cluster + ".room.",
		userPrefix:  cluster + ".user.",
		nodePrefix:  cluster + ".node.",
	}
}

// nodeRooms is <cluster>.node.<id>.rooms: messages for the node's room
// handler (SendNode).
func (s subjects) nodeRooms(id string) string { return s.nodePrefix + id + ".rooms" }

// nodePing is <cluster>.node.<id>.ping: a live node answers requests on it
// (duplicate id detection at Join).
func (s subjects) nodePing(id string) string { return s.nodePrefix + id + ".ping" }

// room is <cluster>.room.<roomToken(id)>.
func (s subjects) room(roomID string) string { return s.roomPrefix + roomToken(roomID) }

// user is <cluster>.user.<userToken(id)>.
func (s subjects) user(userID string) string { return s.userPrefix + userToken(userID) }

func checkNodeID(id string) error {
	if !ValidNodeID(id) {
		return fmt.Errorf("cluster: invalid node id %q: want 1-64 characters of [A-Za-z0-9_-]", id)
	}
	return nil
}
