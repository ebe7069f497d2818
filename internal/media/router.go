package media

import (
	"sort"
	"sync"
	"time"
)

// router is one call: its participants (keyed by connection), their
// transports, producers and consumers. Its lock guards all of them; the
// packet path never takes it.
type router struct {
	roomID string
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

// closeConsumerLocked detaches a consumer from its producer and transport.
func (r *router) closeConsumerLocked(c *consumer) {
	if c.closed.Swap(true) {
		return
	}
	c.p.setConsumers(func(list []*consumer) []*consumer {
		out := list[:0]
		for _, x := range list {
			if x != c {
				out = append(out, x)
			}
		}
		return out
	})
	c.t.setConsumerRoutes(func(m map[uint32]*consumer) {
		delete(m, c.ssrc)
		if c.rtxSSRC != 0 {
			delete(m, c.rtxSSRC)
		}
	})
	delete(c.owner.consumers, c.id)
}

// closeProducerLocked closes a producer and every consumer of it.
func (r *router) closeProducerLocked(p *producer) {
	if p.closed.Swap(true) {
		return
	}
	for _, c := range *p.consumers.Load() {
		r.closeConsumerLocked(c)
	}
	p.t.setProducerRoutes(func(m map[uint32]producerRoute) {
		for ssrc := range p.routes() {
			delete(m, ssrc)
		}
	})
	if p.ridBased {
		p.t.setRIDProducers(func(l []*producer) []*producer {
			out := l[:0]
			for _, x := range l {
				if x != p {
					out = append(out, x)
				}
			}
			return out
		})
	}
	delete(p.owner.producers, p.id)
	delete(r.producers, p.id)
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
