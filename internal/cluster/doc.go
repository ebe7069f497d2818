// Package cluster is the seam between one node and many.
//
// Every delivery that may concern connections on other nodes (a user's
// connections, a set of users, everyone) goes through a Broker: Local
// delivers in-process (one node, the embedded default); a Node also
// publishes to the other nodes, which deliver to their own connections.
// Handlers depend only on the interface.
//
// A Node (Join) is this server's membership in a cluster over NATS: it is
// the Broker, and it implements rooms.Cluster (room leases, node and room
// messaging, liveness) for the rooms package.
//
// # Names
//
// Everything lives under the cluster name (config cluster-name, default
// "parley"; 1–32 of [A-Za-z0-9_-]), so several deployments share one NATS
// without seeing each other's messages, nodes or leases:
//
//	<cluster>.node.<id>.rooms   core NATS: messages for node <id>'s room handler (SendNode)
//	<cluster>.node.<id>.ping    request/reply: answered by the live node <id> (duplicate id check)
//	<cluster>.room.<token>      core NATS: a room's publications (PublishRoom), token = roomToken(room id)
//	<cluster>.user.<token>      core NATS: deliveries to a user's connections (Broker.ToUsers)
//	<cluster>.all               core NATS: deliveries to every connection (Broker.ToAll)
//	<cluster>_nodes             JetStream KV bucket: the node registry, key <id>, History 1, TTL 1 h
//	<cluster>_rooms             JetStream KV bucket: room leases, key roomToken(room id), History 1
//	<cluster>_calls             JetStream KV bucket: call leases (calls.go), key roomToken(room id), History 1
//	<cluster>.node.<id>.calls   core NATS: call requests to node <id> as a call's media node (calls.go)
//	<cluster>.node.<id>.conn    core NATS: a media node's frames for one connection on node <id> (calls.go)
//	<cluster>.node.<id>.api     request/reply: server-API questions for node <id> (api.go, Gather)
//	<cluster>_presence          JetStream KV bucket: user connections per node and user status (Status), History 1
//	<cluster>.typing            core NATS: typing events between nodes (Status)
//
// Node ids are 1–64 of [A-Za-z0-9_-]; room and user ids are encoded as
// unpadded base64url, so any id is one subject token and a valid KV key.
//
// # Interest-based routing
//
// A node subscribes only to what it serves: its own node subjects, the
// rooms in which it has clients or which it owns (SubscribeRoom), and the
// users with a connection on it (the hub reports a user's first and last
// connection). The NATS server then forwards a publication only to nodes
// with interest, so the traffic a node receives grows with the rooms and
// users it serves, not with the size of the cluster; <cluster>.all is the
// one firehose, for the rare deliveries to everyone.
//
// # Ordering
//
// Every subscription of the node, user and room subjects and of
// <cluster>.all feeds one channel (InboxSize messages), drained by one
// goroutine that calls the room handler and the hub in the order the NATS
// connection read the messages. NATS keeps one publisher's order across
// subjects for one subscriber connection, so a node's SendNode and
// PublishRoom messages reach every other node in the order it sent them.
// Delivery is at most once: a message dropped because the channel was
// full (slow consumer) or lost while disconnected is followed by
// ClusterHandler.Resync. NodeDown and Resync run on the same goroutine.
//
// # Registry
//
// Each node writes its entry {id, state, started, heartbeat, instance}
// into <cluster>_nodes every heartbeat (a KV update compare-and-set on its
// last revision) and watches the bucket. A node whose entry has not been
// received for dead-after (by local receive time, so clocks need not
// agree) is declared dead: every node reports NodeDown once and tries to
// delete its key on the revision it last saw (the first succeeds, so the
// registry cleans itself). A node that drains writes state draining; the
// others report NodeDown at once and not again when it leaves (its key is
// deleted). NATS 2.9 has no per-key TTL in KV, hence the heartbeat and the
// sweep; the bucket's TTL only bounds leftovers. While this node is
// disconnected, re-establishing its watch after a reconnect, or not
// receiving its own heartbeats back through the watch (JetStream
// unavailable to it), nobody is declared dead; afterwards every known node
// gets a full dead-after to be heard again.
//
// A node id is unique in a cluster: Join pings the holder of its key on
// <cluster>.node.<id>.ping and refuses to start when it answers; a holder
// that does not answer (no responders, or 1 s) crashed, and its key is
// taken over at once. A node that finds its key taken over by another
// process stops heartbeating and reports it through Healthy; one that
// finds its key deleted (declared dead while unreachable) registers again
// and resyncs its rooms.
//
// # Leases
//
// A room's lease is its key in <cluster>_rooms with the owner's node id.
// Its epoch is the KV revision of the write that made it, which is the
// bucket's stream sequence: it grows with every write to the bucket, so a
// room's epochs grow across release and re-acquire (as long as the bucket
// is not deleted and recreated). Acquire is a KV create (no lease) or an
// update on the previous revision (take over); Release a delete on the
// lease's revision.
package cluster
