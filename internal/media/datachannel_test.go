package media

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pion/datachannel"
	"github.com/pion/sctp"

	"github.com/parleyhq/parley/internal/protocol"
	"github.com/parleyhq/parley/internal/safe"
)

// ---- SCTP on the pion test client (the browser's part: it initiates) ----

// sctpClient runs an SCTP association (the active end, as browsers) over a
// connected test client's DTLS connection.
func sctpClient(t testing.TB, c *testClient, maxRecv uint32) *sctp.Association {
	t.Helper()
	ctx, cancel := contextWithTimeout(15 * time.Second)
	defer cancel()
	a, err := sctp.ClientContext(ctx, sctp.Config{
		NetConn: c.dc, MaxReceiveBufferSize: maxRecv, MaxMessageSize: 1 << 20,
		LoggerFactory: &pionLogFactory{log: slog.New(slog.DiscardHandler)},
	})
	if err != nil {
		t.Fatalf("sctp client: %v", err)
	}
	t.Cleanup(func() { _ = a.Close() })
	return a
}

// negotiated opens a negotiated DataChannel on stream id, as
// mediasoup-client does for both producing and consuming.
func negotiated(t testing.TB, a *sctp.Association, id uint16, label string) *datachannel.DataChannel {
	t.Helper()
	dc, err := datachannel.Dial(a, id, &datachannel.Config{
		Negotiated: true, ChannelType: datachannel.ChannelTypeReliable, Label: label,
		LoggerFactory: &pionLogFactory{log: slog.New(slog.DiscardHandler)},
	})
	if err != nil {
		t.Fatalf("data channel %d: %v", id, err)
	}
	return dc
}

type dcMessage struct {
	b        []byte
	isString bool
	err      error
}

// reader reads dc's messages into a channel until it ends (the last
// message carries the error).
func reader(dc *datachannel.DataChannel) <-chan dcMessage {
	ch := make(chan dcMessage, 1024)
	go func() {
		buf := make([]byte, 1<<20)
		for {
			n, isString, err := dc.ReadDataChannel(buf)
			if err != nil {
				ch <- dcMessage{err: err}
				close(ch)
				return
			}
			ch <- dcMessage{b: append([]byte(nil), buf[:n]...), isString: isString}
		}
	}()
	return ch
}

func next(t testing.TB, ch <-chan dcMessage, what string) dcMessage {
	t.Helper()
	select {
	case m, ok := <-ch:
		if !ok {
			t.Fatalf("%s: channel ended", what)
		}
		return m
	case <-time.After(15 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
	}
	return dcMessage{}
}

func produceData(t testing.TB, s *SFU, snd *fakeSender, room, conn, user, transportID string, params map[string]any, label string) string {
	t.Helper()
	reqID := "pd-" + conn + "-" + label
	mustHandle(t, s, conn, user, TypeProduceData, reqID, map[string]any{
		"room_id": room, "transport_id": transportID, "sctp_stream_parameters": params, "label": label, "protocol": "proto-" + label,
	})
	fr, ok := snd.last(conn, TypeProduceDataResult)
	if !ok || fr.ID != reqID {
		t.Fatalf("no produce_data_result for %s", reqID)
	}
	var r struct {
		ID string `json:"id"`
	}
	_ = json.Unmarshal(fr.Data, &r)
	return r.ID
}

func consumeData(t testing.TB, s *SFU, snd *fakeSender, room, conn, user, dataProducerID string) dataConsumerCreated {
	t.Helper()
	reqID := "cd-" + conn + "-" + dataProducerID
	mustHandle(t, s, conn, user, TypeConsumeData, reqID, map[string]any{"room_id": room, "data_producer_id": dataProducerID})
	fr, ok := snd.last(conn, TypeDataConsumerCreated)
	if !ok || fr.ID != reqID {
		t.Fatalf("no data_consumer_created for %s", reqID)
	}
	var dc dataConsumerCreated
	if err := json.Unmarshal(fr.Data, &dc); err != nil {
		t.Fatal(err)
	}
	return dc
}

func newDataProducerAnnouncements(snd *fakeSender, conn string) []newDataProducerMsg {
	var out []newDataProducerMsg
	for _, fr := range snd.of(conn) {
		if fr.Type == TypeNewDataProducer {
			var m newDataProducerMsg
			_ = json.Unmarshal(fr.Data, &m)
			out = append(out, m)
		}
	}
	return out
}

// Two pion clients (real SCTP over the real DTLS/ICE of their transports):
// A produces a data channel, B is told (media:new_data_producer) and
// consumes it; strings, binary, empty and 64 KiB messages arrive whole and
// in order with their type; B produces too and A consumes: both ways. A
// third connection joining later is told of both data producers. Then A
// leaves: B's data consumer stream is reset (the DataChannel closes).
func TestDataChannelRelayBetweenPionClients(t *testing.T) {
	s, snd, _ := newTestSFU(t, Config{})
	if _, _, err := s.StartCall("r", "u"); err != nil {
		t.Fatal(err)
	}
	jA := joinCall(t, s, snd, "r", "A", "ua")
	jB := joinCall(t, s, snd, "r", "B", "ub")
	for _, info := range []TransportInfo{jA.Send, jA.Recv, jB.Send, jB.Recv} {
		want := SctpParameters{Port: 5000, OS: 1024, MIS: 1024, MaxMessageSize: 262144}
		if info.SctpParameters == nil || *info.SctpParameters != want {
			t.Fatalf("transport %s sctpParameters %+v, want %+v", info.ID, info.SctpParameters, want)
		}
	}

	// A's send transport and data producer (stream 0, as mediasoup-client's first).
	aSend := connectClient(t, s, "r", "A", "ua", jA.Send)
	defer aSend.close()
	dpA := produceData(t, s, snd, "r", "A", "ua", jA.Send.ID, map[string]any{"streamId": 0, "ordered": true}, "chat")
	ann := newDataProducerAnnouncements(snd, "B")
	if len(ann) != 1 || ann[0] != (newDataProducerMsg{DataProducerID: dpA, UserID: "ua", ConnectionID: "A", Label: "chat", Protocol: "proto-chat"}) {
		t.Fatalf("B's media:new_data_producer: %+v", ann)
	}
	if len(newDataProducerAnnouncements(snd, "A")) != 0 {
		t.Fatal("A was told of its own data producer")
	}
	assocA := sctpClient(t, aSend, 0)
	chA := negotiated(t, assocA, 0, "chat")

	// B consumes before its recv transport connects: the SFU opens the
	// stream once B's association is up.
	cB := consumeData(t, s, snd, "r", "B", "ub", dpA)
	if cB.DataProducerID != dpA || cB.Label != "chat" || cB.Protocol != "proto-chat" || !cB.SctpStreamParameters.Ordered ||
		cB.SctpStreamParameters.MaxRetransmits != nil || cB.SctpStreamParameters.MaxPacketLifeTime != nil {
		t.Fatalf("data_consumer_created %+v", cB)
	}
	bRecv := connectClient(t, s, "r", "B", "ub", jB.Recv)
	defer bRecv.close()
	assocB := sctpClient(t, bRecv, 0)
	inB := reader(negotiated(t, assocB, cB.SctpStreamParameters.StreamID, "chat"))

	big := bytes.Repeat([]byte{0xA5, 0x01, 0x00, 0xFF}, 16<<10) // 64 KiB
	sent := []dcMessage{{b: []byte("hello"), isString: true}, {b: []byte{0, 1, 2, 3}}, {b: []byte{}, isString: true}, {b: []byte{}}, {b: big}, {b: []byte("bye"), isString: true}}
	for _, m := range sent {
		if _, err := chA.WriteDataChannel(m.b, m.isString); err != nil {
			t.Fatal(err)
		}
	}
	for i, want := range sent {
		got := next(t, inB, "message at B")
		if got.err != nil || got.isString != want.isString || !bytes.Equal(got.b, want.b) {
			t.Fatalf("message %d at B: string=%v len=%d err=%v, want string=%v len=%d", i, got.isString, len(got.b), got.err, want.isString, len(want.b))
		}
	}

	// The other way: B produces on its send transport, A consumes.
	bSend := connectClient(t, s, "r", "B", "ub", jB.Send)
	defer bSend.close()
	dpB := produceData(t, s, snd, "r", "B", "ub", jB.Send.ID, map[string]any{"streamId": 3, "ordered": false, "maxRetransmits": 2}, "echo")
	chB := negotiated(t, sctpClient(t, bSend, 0), 3, "echo")
	cA := consumeData(t, s, snd, "r", "A", "ua", dpB)
	if p := cA.SctpStreamParameters; p.Ordered || p.MaxRetransmits == nil || *p.MaxRetransmits != 2 || p.MaxPacketLifeTime != nil {
		t.Fatalf("A's data consumer parameters %+v", p)
	}
	aRecv := connectClient(t, s, "r", "A", "ua", jA.Recv)
	defer aRecv.close()
	aRecvAssoc := sctpClient(t, aRecv, 0)
	inA := reader(negotiated(t, aRecvAssoc, cA.SctpStreamParameters.StreamID, "echo"))
	if _, err := chB.WriteDataChannel([]byte("pong"), true); err != nil {
		t.Fatal(err)
	}
	if got := next(t, inA, "message at A"); got.err != nil || !got.isString || string(got.b) != "pong" {
		t.Fatalf("message at A: %+v", got)
	}
	// A consumes B's data producer a second time, then closes that
	// DataChannel (a stream reset, as DataConsumer.close() does): the SFU
	// closes that data consumer and relays to the first one only.
	cA2 := consumeData(t, s, snd, "r", "A", "ua", dpB)
	if cA2.SctpStreamParameters.StreamID == cA.SctpStreamParameters.StreamID {
		t.Fatalf("two data consumers on stream %d", cA2.SctpStreamParameters.StreamID)
	}
	waitFor(t, 10*time.Second, "the second data consumer's stream open", func() bool {
		r, _ := s.routerFor("r")
		r.mu.Lock()
		defer r.mu.Unlock()
		c := r.participants["A"].dataConsumers[cA2.ID]
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.dc != nil
	})
	if err := negotiated(t, aRecvAssoc, cA2.SctpStreamParameters.StreamID, "echo").Close(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the SFU to close A's second data consumer", func() bool { return s.Stats().DataConsumers == 2 })
	if _, err := chB.WriteDataChannel([]byte("again"), true); err != nil {
		t.Fatal(err)
	}
	if got := next(t, inA, "second message at A"); string(got.b) != "again" {
		t.Fatalf("second message at A: %+v", got)
	}

	// A later participant is told of both data producers after media:join.
	snd.reset()
	joinCall(t, s, snd, "r", "C", "uc")
	var after []string
	for _, fr := range snd.of("C") {
		after = append(after, fr.Type)
	}
	if ann := newDataProducerAnnouncements(snd, "C"); len(ann) != 2 || ann[0].DataProducerID != dpA || ann[1].DataProducerID != dpB {
		t.Fatalf("C's announcements %+v (frames %v)", ann, after)
	}
	if after[len(after)-1] != TypeNewDataProducer || after[1] != TypeTransportCreated {
		t.Fatalf("C's frames %v", after)
	}
	if st := s.Stats(); st.DataProducers != 2 || st.DataConsumers != 2 || st.DataMessages != 8 {
		t.Fatalf("stats %+v", st)
	}

	// A leaves: its data producer closes and so does B's data consumer
	// (stream reset: B's DataChannel read ends).
	mustHandle(t, s, "A", "ua", TypeLeave, "l", map[string]string{"room_id": "r"})
	for {
		m := next(t, inB, "B's data consumer to close")
		if m.err != nil {
			if !errors.Is(m.err, io.EOF) {
				t.Logf("B's read ended with %v", m.err)
			}
			break
		}
	}
	if st := s.Stats(); st.DataProducers != 1 || st.DataConsumers != 0 {
		t.Fatalf("stats after A left %+v", st)
	}
}

// A message over the maximum closes its data producer (the client's stream
// is reset) and its consumers; a consumer that does not read gets at most
// Config.DataSendBuffer bytes queued, the rest is dropped and counted.
func TestDataChannelLimits(t *testing.T) {
	s, snd, _ := newTestSFU(t, Config{MaxDataMessageSize: 16 << 10, DataSendBuffer: 64 << 10})
	if _, _, err := s.StartCall("r", "u"); err != nil {
		t.Fatal(err)
	}
	jA := joinCall(t, s, snd, "r", "A", "ua")
	jB := joinCall(t, s, snd, "r", "B", "ub")
	if m := jA.Send.SctpParameters.MaxMessageSize; m != 16<<10 {
		t.Fatalf("maxMessageSize %d", m)
	}
	aSend := connectClient(t, s, "r", "A", "ua", jA.Send)
	defer aSend.close()
	assocA := sctpClient(t, aSend, 0)
	dp1 := produceData(t, s, snd, "r", "A", "ua", jA.Send.ID, map[string]any{"streamId": 0}, "flood")
	ch1 := negotiated(t, assocA, 0, "flood")
	c1 := consumeData(t, s, snd, "r", "B", "ub", dp1)
	bRecv := connectClient(t, s, "r", "B", "ub", jB.Recv)
	defer bRecv.close()
	// B's association advertises a small window and B never reads.
	assocB := sctpClient(t, bRecv, 32<<10)
	_ = negotiated(t, assocB, c1.SctpStreamParameters.StreamID, "flood")

	msg := bytes.Repeat([]byte("x"), 16<<10)
	for i := 0; i < 64; i++ { // 1 MiB
		if _, err := ch1.WriteDataChannel(msg, false); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 20*time.Second, "messages dropped for B", func() bool { return s.Stats().DataDropped > 0 })
	var queued int
	func() {
		r, _ := s.routerFor("r")
		r.mu.Lock()
		defer r.mu.Unlock()
		for _, c := range r.participants["B"].dataConsumers {
			c.mu.Lock()
			queued = int(c.dc.BufferedAmount()) + c.pendingBytes
			c.mu.Unlock()
		}
	}()
	if queued > 64<<10 {
		t.Fatalf("%d bytes queued for B, over the 64 KiB send buffer", queued)
	}

	// Too large: the data producer is closed, A's channel sees its stream reset.
	dp2 := produceData(t, s, snd, "r", "A", "ua", jA.Send.ID, map[string]any{"streamId": 1}, "big")
	ch2 := negotiated(t, assocA, 1, "big")
	in2 := reader(ch2)
	if _, err := ch2.WriteDataChannel(make([]byte, 16<<10+1), false); err != nil {
		t.Fatal(err)
	}
	if m := next(t, in2, "A's oversized channel to be reset"); m.err == nil {
		t.Fatalf("read %d bytes on the closed channel", len(m.b))
	}
	waitFor(t, 10*time.Second, "data producer closed", func() bool {
		st := s.Stats()
		return st.DataTooLarge == 1 && st.DataProducers == 1
	})
	if err := handle(t, s, "B", "ub", TypeConsumeData, "x", map[string]any{"room_id": "r", "data_producer_id": dp2}); errCode(err) != protocol.CodeNotFound {
		t.Fatalf("consuming the closed data producer: %v", err)
	}
}

// Signalling without sockets: validation, errors, limits, audiences, the
// transports' shape with data channels off.
func TestDataChannelSignalling(t *testing.T) {
	s, snd, _ := newTestSFU(t, Config{MaxDataProducersPerConnection: 2, MaxDataConsumersPerConnection: 2})
	if _, _, err := s.StartCall("r", "u"); err != nil {
		t.Fatal(err)
	}
	jA := joinCall(t, s, snd, "r", "A", "ua")
	jB := joinCall(t, s, snd, "r", "B", "ub")
	pd := func(conn, transport string, params any, extra map[string]any) error {
		d := map[string]any{"room_id": "r", "transport_id": transport, "sctp_stream_parameters": params}
		for k, v := range extra {
			d[k] = v
		}
		return handle(t, s, conn, "u"+strings.ToLower(conn), TypeProduceData, "q", d)
	}
	for _, c := range []struct {
		name   string
		conn   string
		tr     string
		params any
		extra  map[string]any
		code   string
	}{
		{"no stream id", "A", jA.Send.ID, map[string]any{"ordered": true}, nil, protocol.CodeBadRequest},
		{"stream id too high", "A", jA.Send.ID, map[string]any{"streamId": 1024}, nil, protocol.CodeBadRequest},
		{"negative stream id", "A", jA.Send.ID, map[string]any{"streamId": -1}, nil, protocol.CodeBadRequest},
		{"both limits", "A", jA.Send.ID, map[string]any{"streamId": 1, "maxRetransmits": 1, "maxPacketLifeTime": 10}, nil, protocol.CodeBadRequest},
		{"ordered partial", "A", jA.Send.ID, map[string]any{"streamId": 1, "ordered": true, "maxRetransmits": 1}, nil, protocol.CodeBadRequest},
		{"not an object", "A", jA.Send.ID, []int{1}, nil, protocol.CodeBadRequest},
		{"missing", "A", jA.Send.ID, nil, nil, protocol.CodeBadRequest},
		{"recv transport", "A", jA.Recv.ID, map[string]any{"streamId": 1}, nil, protocol.CodeBadRequest},
		{"other's transport", "A", jB.Send.ID, map[string]any{"streamId": 1}, nil, protocol.CodeNotFound},
		{"long label", "A", jA.Send.ID, map[string]any{"streamId": 1}, map[string]any{"label": strings.Repeat("l", 257)}, protocol.CodeBadRequest},
		{"NUL in protocol", "A", jA.Send.ID, map[string]any{"streamId": 1}, map[string]any{"protocol": "a\x00b"}, protocol.CodeBadRequest},
		{"unknown field", "A", jA.Send.ID, map[string]any{"streamId": 1}, map[string]any{"app_data": map[string]any{}}, protocol.CodeBadRequest},
		{"not joined", "Z", jA.Send.ID, map[string]any{"streamId": 1}, nil, protocol.CodeNotFound},
	} {
		if err := pd(c.conn, c.tr, c.params, c.extra); errCode(err) != c.code {
			t.Errorf("%s: %v, want %s", c.name, err, c.code)
		}
	}
	if st := s.Stats(); st.DataProducers != 0 {
		t.Fatalf("a refused request created a data producer: %+v", st)
	}
	// maxRetransmits 0 with ordered true is allowed (mediasoup's rule), no label: "".
	snd.reset()
	if err := pd("A", jA.Send.ID, map[string]any{"streamId": 7, "ordered": true, "maxRetransmits": 0}, nil); err != nil {
		t.Fatal(err)
	}
	var nd newDataProducerMsg
	fr, _ := snd.last("B", TypeNewDataProducer)
	_ = json.Unmarshal(fr.Data, &nd)
	if nd.Label != "" || nd.Protocol != "" || !strings.Contains(string(fr.Data), `"label":""`) {
		t.Fatalf("announcement %s", fr.Data)
	}
	if got := snd.typesOf("A"); len(got) != 1 || got[0] != TypeProduceDataResult {
		t.Fatalf("A got %v", got)
	}
	if err := pd("A", jA.Send.ID, map[string]any{"streamId": 7}, nil); errCode(err) != protocol.CodeBadRequest {
		t.Fatalf("duplicate stream id: %v", err)
	}
	if err := pd("A", jA.Send.ID, map[string]any{"streamId": 8}, nil); err != nil {
		t.Fatal(err)
	}
	if err := pd("A", jA.Send.ID, map[string]any{"streamId": 9}, nil); errCode(err) != protocol.CodeTooLarge {
		t.Fatalf("third data producer: %v", err)
	}

	// Consumers: defaults from the producer, distinct stream ids, the limit.
	id := nd.DataProducerID
	c1 := consumeData(t, s, snd, "r", "B", "ub", id)
	c2 := consumeData(t, s, snd, "r", "B", "ub", id)
	if p := c1.SctpStreamParameters; !p.Ordered || p.MaxRetransmits == nil || *p.MaxRetransmits != 0 || c1.SctpStreamParameters.StreamID == c2.SctpStreamParameters.StreamID {
		t.Fatalf("data consumers %+v %+v", c1, c2)
	}
	fr, _ = snd.last("B", TypeDataConsumerCreated)
	var raw map[string]map[string]any
	_ = json.Unmarshal(fr.Data, &raw)
	if _, ok := raw["sctp_stream_parameters"]["maxPacketLifeTime"]; ok || raw["sctp_stream_parameters"]["streamId"] == nil {
		t.Fatalf("data_consumer_created %s", fr.Data)
	}
	cd := func(dpID string) error {
		return handle(t, s, "B", "ub", TypeConsumeData, "q", map[string]any{"room_id": "r", "data_producer_id": dpID})
	}
	if err := cd(id); errCode(err) != protocol.CodeTooLarge {
		t.Fatalf("third data consumer: %v", err)
	}
	if err := cd("nope"); errCode(err) != protocol.CodeNotFound {
		t.Fatalf("unknown data producer: %v", err)
	}
	if err := cd(""); errCode(err) != protocol.CodeBadRequest {
		t.Fatalf("empty id: %v", err)
	}
	if err := handle(t, s, "B", "ub", TypeConsumeData, "q", map[string]any{"room_id": "r", "data_producer_id": id, "x": 1}); errCode(err) != protocol.CodeBadRequest {
		t.Fatalf("unknown field: %v", err)
	}

	// A rejoins: its data producers close with its old transports, and so
	// do B's data consumers of them.
	joinCall(t, s, snd, "r", "A", "ua")
	if st := s.Stats(); st.DataProducers != 0 || st.DataConsumers != 0 {
		t.Fatalf("stats after A's rejoin %+v", st)
	}

	// Off: no sctpParameters, requests unsupported.
	off, snd2, _ := newTestSFU(t, Config{DisableDataChannels: true})
	if _, _, err := off.StartCall("r", "u"); err != nil {
		t.Fatal(err)
	}
	j := joinCall(t, off, snd2, "r", "A", "ua")
	if j.Send.SctpParameters != nil || j.Recv.SctpParameters != nil {
		t.Fatal("sctpParameters with data channels off")
	}
	fr, _ = snd2.last("A", TypeTransportCreated)
	if strings.Contains(string(fr.Data), "sctpParameters") {
		t.Fatalf("transport_created %s", fr.Data)
	}
	for _, typ := range []string{TypeProduceData, TypeConsumeData} {
		err := handle(t, off, "A", "ua", typ, "q", map[string]any{"room_id": "r"})
		if errCode(err) != protocol.CodeUnsupported || !strings.Contains(err.Error(), "data channels are disabled") {
			t.Fatalf("%s with data channels off: %v", typ, err)
		}
	}
}

// A panic while relaying to one data consumer fails that consumer's
// transport only: its participant leaves, the data producer keeps serving
// the other consumer.
func TestPanicRelayingToADataConsumerIsContained(t *testing.T) {
	pc := newPanicCounter()
	s, snd, _ := newTestSFU(t, Config{Panics: pc})
	if _, _, err := s.StartCall("r", "u"); err != nil {
		t.Fatal(err)
	}
	jA := joinCall(t, s, snd, "r", "A", "ua")
	aSend := connectClient(t, s, "r", "A", "ua", jA.Send)
	defer aSend.close()
	dp := produceData(t, s, snd, "r", "A", "ua", jA.Send.ID, map[string]any{"streamId": 0}, "chat")
	chA := negotiated(t, sctpClient(t, aSend, 0), 0, "chat")
	in := map[string]<-chan dcMessage{}
	for _, conn := range []string{"B", "C"} {
		j := joinCall(t, s, snd, "r", conn, "u"+conn)
		c := consumeData(t, s, snd, "r", conn, "u"+conn, dp)
		cl := connectClient(t, s, "r", conn, "u"+conn, j.Recv)
		defer cl.close()
		in[conn] = reader(negotiated(t, sctpClient(t, cl, 0), c.SctpStreamParameters.StreamID, "chat"))
	}
	if _, err := chA.WriteDataChannel([]byte("one"), true); err != nil {
		t.Fatal(err)
	}
	for _, conn := range []string{"B", "C"} {
		if m := next(t, in[conn], "first message at "+conn); string(m.b) != "one" {
			t.Fatalf("%s got %+v", conn, m)
		}
	}
	var once sync.Once
	setHook(t, &dataForwardHook, func(c *dataConsumer) {
		if c.owner.connID == "B" {
			once.Do(func() { panic("injected data relay panic") })
		}
	})
	if _, err := chA.WriteDataChannel([]byte("two"), true); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "media:peer_left for B at A", func() bool {
		for _, fr := range snd.of("A") {
			if fr.Type == TypePeerLeft && strings.Contains(string(fr.Data), `"connection_id":"B"`) {
				return true
			}
		}
		return false
	})
	if pc.get(safe.MediaPacket) != 1 {
		t.Fatalf("panics counted: %v", pc.n)
	}
	if m := next(t, in["C"], "second message at C"); string(m.b) != "two" {
		t.Fatalf("C got %+v", m)
	}
	if st := s.Stats(); st.DataProducers != 1 || st.DataConsumers != 1 || st.TransportFailures != 1 {
		t.Fatalf("stats %+v", st)
	}
}

// 30 cycles of join, SCTP associations on both sides, a data producer, a
// data consumer, one message, then leave and disconnect: goroutines return
// to the baseline (the associations, their readers and the transports'
// accept loops end with their transports).
func TestNoLeakAfterDataChannelCycles(t *testing.T) {
	if testing.Short() {
		t.Skip("leak test runs real SCTP sessions")
	}
	s, snd, _ := newTestSFU(t, Config{})
	if _, _, err := s.StartCall("leak", "u"); err != nil {
		t.Fatal(err)
	}
	cycle := func(i int) {
		a, b := fmt.Sprintf("a%d", i), fmt.Sprintf("b%d", i)
		ja := joinCall(t, s, snd, "leak", a, "ua")
		jb := joinCall(t, s, snd, "leak", b, "ub")
		pub := connectClient(t, s, "leak", a, "ua", ja.Send)
		dp := produceData(t, s, snd, "leak", a, "ua", ja.Send.ID, map[string]any{"streamId": i % 1024}, "chat")
		assocA := sctpClient(t, pub, 0)
		ch := negotiated(t, assocA, uint16(i%1024), "chat")
		c := consumeData(t, s, snd, "leak", b, "ub", dp)
		sub := connectClient(t, s, "leak", b, "ub", jb.Recv)
		assocB := sctpClient(t, sub, 0)
		in := reader(negotiated(t, assocB, c.SctpStreamParameters.StreamID, "chat"))
		if _, err := ch.WriteDataChannel([]byte("hi"), true); err != nil {
			t.Fatal(err)
		}
		if m := next(t, in, "message"); string(m.b) != "hi" {
			t.Fatalf("cycle %d: %+v", i, m)
		}
		mustHandle(t, s, a, "ua", TypeLeave, "", map[string]string{"room_id": "leak"})
		s.Disconnect(b)
		_ = assocA.Close()
		_ = assocB.Close()
		pub.close()
		sub.close()
		snd.reset()
	}
	cycle(0)
	runtime.GC()
	baseG := settleGoroutines(t, 0, 300*time.Millisecond)
	for i := 1; i <= 30; i++ {
		cycle(i)
	}
	if g := settleGoroutines(t, baseG+3, 10*time.Second); g > baseG+3 {
		buf := make([]byte, 1<<20)
		n := runtime.Stack(buf, true)
		t.Fatalf("goroutines: %d, baseline %d\n%s", g, baseG, buf[:n])
	}
	if st := s.Stats(); st.Transports != 0 || st.DataProducers != 0 || st.DataConsumers != 0 {
		t.Fatalf("state left: %+v", st)
	}
}

// FuzzSctpStreamParameters: the sctp_stream_parameters of a
// media:produce_data decode and validate; what is accepted is a valid
// stream (id in range, at most one partial-reliability limit, never
// ordered with a non-zero one) whose JSON round-trips.
func FuzzSctpStreamParameters(f *testing.F) {
	for _, s := range []string{`{"streamId":0,"ordered":true}`, `{"streamId":1023,"ordered":false,"maxRetransmits":3}`,
		`{"streamId":5,"maxPacketLifeTime":100}`, `{"streamId":2,"ordered":true,"maxRetransmits":0}`,
		`{"streamId":1.5}`, `{"streamId":"1"}`, `{}`, `null`, `[]`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := parseSctpStreamParameters(data)
		if err != nil {
			if errCode(err) != protocol.CodeBadRequest && errCode(err) != protocol.CodeTooLarge {
				t.Fatalf("error %v", err)
			}
			return
		}
		if p.StreamID >= sctpNumStreams || (p.MaxPacketLifeTime != nil && p.MaxRetransmits != nil) {
			t.Fatalf("accepted %+v", p)
		}
		if p.Ordered && ((p.MaxPacketLifeTime != nil && *p.MaxPacketLifeTime > 0) || (p.MaxRetransmits != nil && *p.MaxRetransmits > 0)) {
			t.Fatalf("accepted ordered with a limit: %+v", p)
		}
		back, err := parseSctpStreamParameters(mustMarshal(t, p))
		if err != nil || back.StreamID != p.StreamID || back.Ordered != p.Ordered {
			t.Fatalf("round trip of %+v: %+v %v", p, back, err)
		}
		_, _ = p.channelType()
	})
}

// FuzzDataHandle: any data for media:produce_data and media:consume_data,
// from a joined connection (real transports, no client) and from one that
// has not joined, answers a protocol error that is never internal or
// succeeds with the reply; nothing panics.
func FuzzDataHandle(f *testing.F) {
	f.Add(false, []byte(`{"room_id":"r","transport_id":"T","sctp_stream_parameters":{"streamId":1},"label":"chat","protocol":""}`))
	f.Add(true, []byte(`{"room_id":"r","data_producer_id":"D"}`))
	f.Add(false, []byte(`{"room_id":"r","transport_id":"T","sctp_stream_parameters":{"streamId":1,"maxRetransmits":65536}}`))
	f.Add(true, []byte(`{"room_id":"x","data_producer_id":""}`))
	pc := newPanicCounter()
	snd := newFakeSender()
	s, err := New(Config{ListenIP: "127.0.0.1", IncludeLoopback: true, Workers: 1, Panics: pc}, snd, nil, nil)
	if err != nil {
		f.Fatal(err)
	}
	defer s.Close()
	if _, _, err := s.StartCall("r", "u"); err != nil {
		f.Fatal(err)
	}
	j := joinCall(f, s, snd, "r", "A", "ua")
	dp := produceData(f, s, snd, "r", "A", "ua", j.Send.ID, map[string]any{"streamId": 0}, "keep")
	r, _ := s.routerFor("r")
	f.Fuzz(func(t *testing.T, consume bool, data []byte) {
		data = bytes.ReplaceAll(bytes.ReplaceAll(data, []byte(`"T"`), []byte(`"`+j.Send.ID+`"`)), []byte(`"D"`), []byte(`"`+dp+`"`))
		typ := TypeProduceData
		if consume {
			typ = TypeConsumeData
		}
		for _, conn := range []string{"A", "nobody"} {
			err := s.Handle(context.Background(), conn, "u", typ, "id", data)
			if pc.get(safe.MediaTransport) != 0 {
				t.Fatalf("%s panicked on %q", typ, data)
			}
			if err != nil {
				var pe *protocol.Error
				if !asProtocolError(err, &pe) || pe.Code == protocol.CodeInternal {
					t.Fatalf("%s: %v", typ, err)
				}
			} else if conn == "nobody" {
				t.Fatalf("%s succeeded for a connection that has not joined", typ)
			}
		}
		// Back to one data producer and no consumer.
		r.mu.Lock()
		p := r.participants["A"]
		for _, x := range sortedDataProducers(p.dataProducers) {
			if x.id != dp {
				r.closeDataProducerLocked(x)
			}
		}
		for _, c := range p.dataConsumers {
			r.closeDataConsumerLocked(c)
		}
		r.mu.Unlock()
	})
}
