package media

import (
	"fmt"
	"sort"
	"strconv"
	"sync"
	"time"
)

// router is one call (mediasoup's Router; pion's ORTC objects are the
// model of this split): the codecs and capabilities are the node's
// (RouterCapabilities), the participants (keyed by connection), their
// transports, producers, consumers and data producers are the call's. Its
// lock guards all of them; the packet path never takes it. The methods
// named ...Locked, and those documented so, run with the lock held: the
// signalling layer (signalling*.go) takes it around each request, the
// SFU's entry points (join, leave, end) and the worker around theirs.
type router struct {
	roomID string
	sfu    *SFU
	worker *worker

	mu           sync.Mutex
	closed       bool
	seq          uint64
	participants map[string]*participant
	producers    map[string]*producer
	transports   map[string]*transport

	emptySince    time.Time    // no participant since (zero while it has some): idle calls end
	idleFired     time.Time    // the emptySince an idle end was last started for
	speaker       speakerState // active speaker detection (worker, under mu)
	dataProducers map[string]*dataProducer
}

// participant is one connection in a call (mediasoup-demo's peer): after
// media:join a send transport for its producers and data producers and a
// recv transport for its consumers and data consumers.
type participant struct {
	roomID         string
	connID, userID string
	seq            uint64
	send, recv     *transport
	producers      map[string]*producer
	consumers      map[string]*consumer

	dataProducers map[string]*dataProducer
	dataConsumers map[string]*dataConsumer
}

func newRouter(s *SFU, roomID string, w *worker) *router {
	return &router{
		roomID: roomID, sfu: s, worker: w,
		participants: map[string]*participant{},
		producers:    map[string]*producer{},
		transports:   map[string]*transport{},
		emptySince:   time.Now(),

		dataProducers: map[string]*dataProducer{},
	}
}

func (r *router) addParticipant(connID, userID string) *participant {
	r.seq++
	p := &participant{
		roomID: r.roomID, connID: connID, userID: userID, seq: r.seq,
		producers: map[string]*producer{}, consumers: map[string]*consumer{},
		dataProducers: map[string]*dataProducer{}, dataConsumers: map[string]*dataConsumer{},
	}
	r.participants[connID] = p
	r.emptySince = time.Time{}
	return p
}

func (r *router) sortedParticipants() []*participant {
	out := make([]*participant, 0, len(r.participants))
	for _, p := range r.participants {
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].seq < out[j].seq })
	return out
}

func sortedProducers(m map[string]*producer) []*producer {
	out := make([]*producer, 0, len(m))
	for _, p := range m {
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].seqNo < out[j].seqNo })
	return out
}

// joinResult is what router.join did.
type joinResult struct {
	p     *participant
	isNew bool // a new participant (else a second join of the connection)
	// closedProducers are the producers a second join closed, in creation
	// order (the others are to be told).
	closedProducers []*producer
	stale           []*transport // to close once unlocked
}

// join makes connID a participant with a new send and recv transport
// (mediasoup-client's Device: createSendTransport, createRecvTransport).
// A second join of the same connection restarts its media: its producers
// close (and every consumer of them), its consumers, data producers and
// data consumers go, and its transports are returned in stale. Router
// lock held. An error (a socket or ICE agent that cannot be made) leaves
// the participant without transports and returns what to close in stale.
func (r *router) join(connID, userID string) (joinResult, error) {
	p := r.participants[connID]
	j := joinResult{p: p, isNew: p == nil}
	if j.isNew {
		j.p = r.addParticipant(connID, userID)
		p = j.p
	} else {
		for _, pr := range sortedProducers(p.producers) {
			r.closeProducerLocked(pr)
			j.closedProducers = append(j.closedProducers, pr)
		}
		j.stale = r.clearMediaLocked(p)
	}
	send, err := newTransport(r.sfu, p, dirSend)
	if err != nil {
		return j, fmt.Errorf("send transport: %w", err)
	}
	recv, err := newTransport(r.sfu, p, dirRecv)
	if err != nil {
		j.stale = append(j.stale, send)
		return j, fmt.Errorf("recv transport: %w", err)
	}
	recv.onReady = func(t *transport) {
		// Media may have been dropped while the transport was connecting:
		// ask every video producer it consumes for a key frame (of the layer
		// each consumer waits for).
		for ssrc, c := range *t.consumers.Load() {
			if ssrc == c.ssrc {
				c.requestKeyFrame(true)
			}
		}
	}
	p.send, p.recv = send, recv
	r.transports[send.id] = send
	r.transports[recv.id] = recv
	return j, nil
}

// removeParticipant makes connID leave the call: its media closes (see
// clearMediaLocked) and the call counts as empty from now when it was
// the last. Router lock held. It returns the participant (nil when
// connID is not in the call) and its transports to close once unlocked.
func (r *router) removeParticipant(connID string) (*participant, []*transport) {
	p := r.participants[connID]
	if p == nil || r.closed {
		return nil, nil
	}
	ts := r.clearMediaLocked(p)
	delete(r.participants, connID)
	if len(r.participants) == 0 {
		r.emptySince = time.Now()
	}
	return p, ts
}

// produce creates a producer of kind from a validated media:produce on
// send transport t (t.owner's), routes its SSRCs and registers it. Router
// lock held. Errors (plain, the caller's bad_request): an SSRC already
// routed on t, a transport-wide-cc extension id other than the one t's
// producers use.
func (r *router) produce(t *transport, pp *parsedProduce, kind string) (*producer, error) {
	if err := t.admitProducer(pp); err != nil {
		return nil, err
	}
	pr := newProducer(pp, kind, t.owner, t)
	t.addProducer(pr, pp.twccID)
	t.owner.producers[pr.id] = pr
	r.producers[pr.id] = pr
	return pr, nil
}

// consume creates p's consumer of pr on p's recv transport for a device
// with caps (mediasoup's getConsumerRtpParameters: buildConsumer), paused
// or not, and registers it; it forwards nothing until consumer.start.
// Router lock held. Errors (plain, the caller's bad_request): no codec in
// common.
func (r *router) consume(p *participant, pr *producer, caps *RtpCapabilities, paused bool) (*consumer, error) {
	c, err := buildConsumer(pr, caps)
	if err != nil {
		return nil, err
	}
	c.id, c.owner, c.t = newID(), p, p.recv
	if paused {
		c.st.setPaused(true)
	}
	c.params.MID = strconv.Itoa(p.recv.nextMid)
	p.recv.nextMid++
	p.recv.addConsumer(c)
	p.consumers[c.id] = c
	return c, nil
}

// closeConsumerLocked closes a consumer (consumer.close).
func (r *router) closeConsumerLocked(c *consumer) { c.close() }

// closeProducerLocked closes a producer and every consumer of it
// (producer.close) and forgets it.
func (r *router) closeProducerLocked(p *producer) {
	if p.close() {
		delete(r.producers, p.id)
	}
}

// produceData creates a data producer on the client's SCTP stream
// params.StreamID of send transport t (t.owner's) and registers it.
// Router lock held. It returns nil when that stream already carries one.
func (r *router) produceData(t *transport, params SctpStreamParameters, label, proto string) *dataProducer {
	dp := newDataProducer(t, params, label, proto)
	if !t.data.addProducer(dp) {
		return nil
	}
	t.owner.dataProducers[dp.id] = dp
	r.dataProducers[dp.id] = dp
	return dp
}

// consumeData creates p's data consumer of dp on p's recv transport, on a
// stream the SFU picks, with dp's reliability, and registers it. Router
// lock held. It returns nil when no SCTP stream is free.
func (r *router) consumeData(p *participant, dp *dataProducer) *dataConsumer {
	c := &dataConsumer{id: newID(), dp: dp, owner: p, t: p.recv, params: dp.params}
	if !p.recv.data.addConsumer(c) {
		return nil
	}
	dp.setConsumers(func(list []*dataConsumer) []*dataConsumer { return append(list, c) })
	p.dataConsumers[c.id] = c
	return c
}

// clearMediaLocked closes a participant's producers, consumers and
// transports and returns the transports to close outside the lock.
func (r *router) clearMediaLocked(p *participant) []*transport {
	r.clearDataLocked(p)
	for _, pr := range sortedProducers(p.producers) {
		r.closeProducerLocked(pr)
	}
	for _, c := range p.consumers {
		r.closeConsumerLocked(c)
	}
	var ts []*transport
	for _, t := range []*transport{p.send, p.recv} {
		if t != nil {
			delete(r.transports, t.id)
			ts = append(ts, t)
		}
	}
	p.send, p.recv = nil, nil
	return ts
}

// shutdown closes the router's state and returns its transports to close.
func (r *router) shutdown() []*transport {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closed = true
	var ts []*transport
	for _, p := range r.sortedParticipants() {
		ts = append(ts, r.clearMediaLocked(p)...)
	}
	r.participants = map[string]*participant{}
	return ts
}

// closeTransports closes each transport (outside the router's lock:
// close waits for the transport's goroutines).
func closeTransports(ts []*transport) {
	for _, t := range ts {
		t.close()
	}
}
