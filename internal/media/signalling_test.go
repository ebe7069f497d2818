package media

import (
	"crypto/hmac"
	"crypto/sha1" //nolint:gosec
	"encoding/base64"
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestJoinPayloadShapes(t *testing.T) {
	s, snd, ev := newTestSFU(t, Config{})
	caps, started, err := s.StartCall("r1", "u1")
	if err != nil || !started || len(caps) == 0 {
		t.Fatalf("StartCall: %v %v", started, err)
	}
	if _, again, _ := s.StartCall("r1", "u2"); again {
		t.Fatal("second StartCall reported newly started")
	}
	if !s.CallActive("r1") || s.CallActive("r2") {
		t.Fatal("CallActive wrong")
	}
	mustHandle(t, s, "c1", "u1", TypeJoin, "req-1", map[string]string{"room_id": "r1"})
	fs := snd.of("c1")
	if len(fs) != 2 || fs[0].Type != TypeRouterCapabilities || fs[1].Type != TypeTransportCreated {
		t.Fatalf("join frames: %v", snd.typesOf("c1"))
	}
	if fs[0].ID != "" || fs[1].ID != "req-1" {
		t.Fatalf("ids: %q %q", fs[0].ID, fs[1].ID)
	}
	var rc struct {
		RtpCapabilities struct {
			Codecs []struct {
				Kind                 string         `json:"kind"`
				MimeType             string         `json:"mimeType"`
				PreferredPayloadType int            `json:"preferredPayloadType"`
				ClockRate            int            `json:"clockRate"`
				Channels             int            `json:"channels"`
				Parameters           map[string]any `json:"parameters"`
				RtcpFeedback         []RtcpFeedback `json:"rtcpFeedback"`
			} `json:"codecs"`
			HeaderExtensions []map[string]any `json:"headerExtensions"`
		} `json:"rtp_capabilities"`
	}
	if err := json.Unmarshal(fs[0].Data, &rc); err != nil {
		t.Fatal(err)
	}
	mimes := []string{}
	for _, c := range rc.RtpCapabilities.Codecs {
		mimes = append(mimes, c.MimeType)
		if c.MimeType == "video/VP8" && len(c.RtcpFeedback) != 5 {
			t.Fatalf("VP8 feedback %v", c.RtcpFeedback)
		}
		if c.MimeType == "video/rtx" && c.Parameters["apt"] == nil {
			t.Fatal("rtx without apt")
		}
	}
	if want := []string{"audio/opus", "video/VP8", "video/rtx", "video/H264", "video/rtx", "video/VP9", "video/rtx"}; !reflect.DeepEqual(mimes, want) {
		t.Fatalf("codecs %v", mimes)
	}
	for _, e := range rc.RtpCapabilities.HeaderExtensions {
		for _, k := range []string{"kind", "uri", "preferredId", "preferredEncrypt", "direction"} {
			if _, ok := e[k]; !ok {
				t.Fatalf("header extension without %s: %v", k, e)
			}
		}
	}
	var tc map[string]json.RawMessage
	if err := json.Unmarshal(fs[1].Data, &tc); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"send_transport", "recv_transport", "ice_servers", "force_relay"} {
		if _, ok := tc[k]; !ok {
			t.Fatalf("transport_created lacks %s: %s", k, fs[1].Data)
		}
	}
	if string(tc["ice_servers"]) != "[]" || string(tc["force_relay"]) != "false" {
		t.Fatalf("ice_servers %s force_relay %s", tc["ice_servers"], tc["force_relay"])
	}
	var tr struct {
		ID            string `json:"id"`
		IceParameters struct {
			UsernameFragment string `json:"usernameFragment"`
			Password         string `json:"password"`
			IceLite          bool   `json:"iceLite"`
		} `json:"iceParameters"`
		IceCandidates []struct {
			Foundation string `json:"foundation"`
			Priority   int    `json:"priority"`
			IP         string `json:"ip"`
			Address    string `json:"address"`
			Protocol   string `json:"protocol"`
			Port       int    `json:"port"`
			Type       string `json:"type"`
		} `json:"iceCandidates"`
		DtlsParameters struct {
			Role         string            `json:"role"`
			Fingerprints []DtlsFingerprint `json:"fingerprints"`
		} `json:"dtlsParameters"`
	}
	if err := json.Unmarshal(tc["send_transport"], &tr); err != nil {
		t.Fatal(err)
	}
	if tr.ID == "" || tr.IceParameters.UsernameFragment == "" || len(tr.IceParameters.Password) < 22 || !tr.IceParameters.IceLite {
		t.Fatalf("iceParameters %+v", tr)
	}
	if len(tr.IceCandidates) != 1 || tr.IceCandidates[0].IP != "127.0.0.1" || tr.IceCandidates[0].Address != "127.0.0.1" ||
		tr.IceCandidates[0].Protocol != "udp" || tr.IceCandidates[0].Type != "host" || tr.IceCandidates[0].Port == 0 ||
		tr.IceCandidates[0].Foundation == "" || tr.IceCandidates[0].Priority == 0 {
		t.Fatalf("iceCandidates %+v", tr.IceCandidates)
	}
	if tr.DtlsParameters.Role != "auto" || len(tr.DtlsParameters.Fingerprints) != 1 ||
		tr.DtlsParameters.Fingerprints[0].Algorithm != "sha-256" || len(tr.DtlsParameters.Fingerprints[0].Value) != 95 {
		t.Fatalf("dtlsParameters %+v", tr.DtlsParameters)
	}

	// A second connection gets new_producer for the existing producer.
	ja, _ := snd.last("c1", TypeTransportCreated)
	var tcs struct {
		Send TransportInfo `json:"send_transport"`
	}
	_ = json.Unmarshal(ja.Data, &tcs)
	pid := produce(t, s, snd, "r1", "c1", "u1", tcs.Send.ID, "video", vp8ProduceParams(10, 11))
	mustHandle(t, s, "c2", "u2", TypeJoin, "req-2", map[string]string{"room_id": "r1"})
	if got := snd.typesOf("c2"); !reflect.DeepEqual(got, []string{TypeRouterCapabilities, TypeTransportCreated, TypeNewProducer}) {
		t.Fatalf("c2 frames %v", got)
	}
	np, _ := snd.last("c2", TypeNewProducer)
	var npm map[string]string
	_ = json.Unmarshal(np.Data, &npm)
	if want := map[string]string{"producer_id": pid, "user_id": "u1", "connection_id": "c1", "kind": "video", "source": "webcam"}; !reflect.DeepEqual(npm, want) {
		t.Fatalf("new_producer %v", npm)
	}
	want := []string{"started r1 u1", "updated r1 1", "updated r1 2"}
	if !reflect.DeepEqual(ev.all(), want) {
		t.Fatalf("events %v", ev.all())
	}
}

func TestSignallingErrors(t *testing.T) {
	s, snd, _ := newTestSFU(t, Config{})
	if err := handle(t, s, "c1", "u1", TypeJoin, "x", map[string]string{"room_id": "nope"}); errCode(err) != "not_found" {
		t.Fatalf("join unknown call: %v", err)
	}
	if err := handle(t, s, "c1", "u1", TypeJoin, "x", map[string]string{"room_id": "bad room!"}); errCode(err) != "bad_request" {
		t.Fatalf("join invalid room: %v", err)
	}
	if err := handle(t, s, "c1", "u1", "media:bogus", "x", map[string]string{"room_id": "r"}); errCode(err) != "bad_request" {
		t.Fatalf("unknown type: %v", err)
	}
	if err := handle(t, s, "c1", "u1", TypeJoin, "x", map[string]any{"room_id": 5}); errCode(err) != "bad_request" {
		t.Fatalf("wrong field type: %v", err)
	}
	if err := handle(t, s, "c1", "u1", TypeJoin, "x", map[string]any{"room_id": "r", "extra": 1}); errCode(err) != "bad_request" {
		t.Fatalf("unknown field: %v", err)
	}
	s.StartCall("r", "u1")
	// Not joined yet.
	if err := handle(t, s, "c1", "u1", TypeProduce, "x", map[string]any{"room_id": "r", "transport_id": "t", "kind": "audio", "rtp_parameters": opusProduceParams(1)}); errCode(err) != "not_found" {
		t.Fatalf("produce before join: %v", err)
	}
	ja := joinCall(t, s, snd, "r", "c1", "u1")
	jb := joinCall(t, s, snd, "r", "c2", "u2")
	before := len(snd.of("c1")) + len(snd.of("c2"))

	dtls := map[string]any{"role": "client", "fingerprints": []map[string]string{{"algorithm": "sha-256", "value": strings.Repeat("AB:", 31) + "AB"}}}
	cases := []struct {
		name, conn, typ string
		data            any
		code            string
	}{
		{"connect unknown transport", "c1", TypeConnectTransport, map[string]any{"room_id": "r", "transport_id": "nope", "dtls_parameters": dtls}, "not_found"},
		{"connect another connection's transport", "c1", TypeConnectTransport, map[string]any{"room_id": "r", "transport_id": jb.Send.ID, "dtls_parameters": dtls}, "not_found"},
		{"connect bad role", "c1", TypeConnectTransport, map[string]any{"room_id": "r", "transport_id": ja.Send.ID, "dtls_parameters": map[string]any{"role": "boss", "fingerprints": dtls["fingerprints"]}}, "bad_request"},
		{"connect no fingerprints", "c1", TypeConnectTransport, map[string]any{"room_id": "r", "transport_id": ja.Send.ID, "dtls_parameters": map[string]any{"role": "client", "fingerprints": []any{}}}, "bad_request"},
		{"connect bad algorithm", "c1", TypeConnectTransport, map[string]any{"room_id": "r", "transport_id": ja.Send.ID, "dtls_parameters": map[string]any{"fingerprints": []map[string]string{{"algorithm": "md5", "value": "AA"}}}}, "bad_request"},
		{"connect missing dtls", "c1", TypeConnectTransport, map[string]any{"room_id": "r", "transport_id": ja.Send.ID}, "bad_request"},
		{"produce bad kind", "c1", TypeProduce, map[string]any{"room_id": "r", "transport_id": ja.Send.ID, "kind": "data", "rtp_parameters": opusProduceParams(1)}, "bad_request"},
		{"produce kind/codec mismatch", "c1", TypeProduce, map[string]any{"room_id": "r", "transport_id": ja.Send.ID, "kind": "video", "rtp_parameters": opusProduceParams(1)}, "bad_request"},
		{"produce on recv transport", "c1", TypeProduce, map[string]any{"room_id": "r", "transport_id": ja.Recv.ID, "kind": "audio", "rtp_parameters": opusProduceParams(1)}, "bad_request"},
		{"produce unknown transport", "c1", TypeProduce, map[string]any{"room_id": "r", "transport_id": "zzz", "kind": "audio", "rtp_parameters": opusProduceParams(1)}, "not_found"},
		{"produce source too long", "c1", TypeProduce, map[string]any{"room_id": "r", "transport_id": ja.Send.ID, "kind": "audio", "source": strings.Repeat("s", 33), "rtp_parameters": opusProduceParams(1)}, "bad_request"},
		{"produce no ssrc", "c1", TypeProduce, map[string]any{"room_id": "r", "transport_id": ja.Send.ID, "kind": "audio", "rtp_parameters": withEncodings(opusProduceParams(1), []map[string]any{{"rid": "r0"}})}, "bad_request"},
		{"produce unsupported codec", "c1", TypeProduce, map[string]any{"room_id": "r", "transport_id": ja.Send.ID, "kind": "audio", "rtp_parameters": map[string]any{"codecs": []map[string]any{{"mimeType": "audio/PCMU", "payloadType": 0, "clockRate": 8000}}, "encodings": []map[string]any{{"ssrc": 1}}}}, "bad_request"},
		{"produce missing rtp_parameters", "c1", TypeProduce, map[string]any{"room_id": "r", "transport_id": ja.Send.ID, "kind": "audio"}, "bad_request"},
		{"produce huge rtp_parameters", "c1", TypeProduce, map[string]any{"room_id": "r", "transport_id": ja.Send.ID, "kind": "audio", "rtp_parameters": withMID(opusProduceParams(1), strings.Repeat("x", 20000))}, "too_large"},
		{"consume unknown producer", "c2", TypeConsume, map[string]any{"room_id": "r", "producer_id": "nope", "rtp_capabilities": deviceCaps()}, "not_found"},
		{"producer_close unknown", "c1", TypeProducerClose, map[string]any{"room_id": "r", "producer_id": "nope"}, "not_found"},
		{"leave other room", "c1", TypeLeave, map[string]any{"room_id": "other"}, "not_found"},
	}
	for _, tc := range cases {
		if err := handle(t, s, tc.conn, "u", tc.typ, "e", tc.data); errCode(err) != tc.code {
			t.Errorf("%s: got %v, want %s", tc.name, err, tc.code)
		}
	}
	if after := len(snd.of("c1")) + len(snd.of("c2")); after != before {
		t.Fatalf("refused messages sent frames: %v / %v", snd.typesOf("c1"), snd.typesOf("c2"))
	}
	if st := s.Stats(); st.Producers != 0 || st.Consumers != 0 || st.Participants != 2 {
		t.Fatalf("refused messages changed state: %+v", st)
	}

	// connect twice: the second is refused, the first stays.
	mustHandle(t, s, "c1", "u1", TypeConnectTransport, "k1", map[string]any{"room_id": "r", "transport_id": ja.Send.ID, "dtls_parameters": dtls})
	if fr, ok := snd.last("c1", TypeTransportConnected); !ok || fr.ID != "k1" || !strings.Contains(string(fr.Data), ja.Send.ID) {
		t.Fatalf("transport_connected: %+v", fr)
	}
	if err := handle(t, s, "c1", "u1", TypeConnectTransport, "k2", map[string]any{"room_id": "r", "transport_id": ja.Send.ID, "dtls_parameters": dtls}); errCode(err) != "bad_request" {
		t.Fatalf("double connect: %v", err)
	}

	// Incompatible consume: the device has no VP8.
	pid := produce(t, s, snd, "r", "c1", "u1", ja.Send.ID, "video", vp8ProduceParams(10, 11))
	audioOnly := RouterCapabilities()
	audioOnly.Codecs = audioOnly.Codecs[:1]
	err := handle(t, s, "c2", "u2", TypeConsume, "q", map[string]any{"room_id": "r", "producer_id": pid, "rtp_capabilities": audioOnly})
	if errCode(err) != "bad_request" || !strings.Contains(err.Error(), "no compatible codec") {
		t.Fatalf("incompatible consume: %v", err)
	}
	if err := handle(t, s, "c2", "u2", TypeConsume, "q", map[string]any{"room_id": "r", "producer_id": pid, "rtp_capabilities": "x"}); errCode(err) != "bad_request" {
		t.Fatalf("caps not an object: %v", err)
	}
	// Producing the same SSRC twice is refused.
	if err := handle(t, s, "c1", "u1", TypeProduce, "d", map[string]any{"room_id": "r", "transport_id": ja.Send.ID, "kind": "video", "rtp_parameters": vp8ProduceParams(10, 12)}); errCode(err) != "bad_request" {
		t.Fatalf("duplicate ssrc: %v", err)
	}
	// Closing another connection's producer is not possible.
	if err := handle(t, s, "c2", "u2", TypeProducerClose, "d", map[string]any{"room_id": "r", "producer_id": pid}); errCode(err) != "not_found" {
		t.Fatalf("close other's producer: %v", err)
	}
}

func withEncodings(p map[string]any, enc []map[string]any) map[string]any {
	p["encodings"] = enc
	return p
}

func withMID(p map[string]any, mid string) map[string]any {
	p["mid"] = mid
	return p
}

func TestProduceConsumeCloseLeaveAudience(t *testing.T) {
	s, snd, ev := newTestSFU(t, Config{})
	s.StartCall("r", "u1")
	a1 := joinCall(t, s, snd, "r", "a1", "u1") // user u1, tab 1
	joinCall(t, s, snd, "r", "a2", "u1")       // user u1, tab 2
	joinCall(t, s, snd, "r", "b", "u2")
	snd.reset()

	pid := produce(t, s, snd, "r", "a1", "u1", a1.Send.ID, "audio", opusProduceParams(77))
	if got := snd.typesOf("a1"); !reflect.DeepEqual(got, []string{TypeProduceResult}) {
		t.Fatalf("producer's own frames: %v", got)
	}
	for _, c := range []string{"a2", "b"} {
		if got := snd.typesOf(c); !reflect.DeepEqual(got, []string{TypeNewProducer}) {
			t.Fatalf("%s frames: %v", c, got)
		}
	}
	np, _ := snd.last("a2", TypeNewProducer)
	if !strings.Contains(string(np.Data), `"source":"mic"`) || !strings.Contains(string(np.Data), `"connection_id":"a1"`) {
		t.Fatalf("new_producer %s", np.Data)
	}
	cc := consume(t, s, snd, "r", "b", "u2", pid)
	rp := cc.RtpParameters
	if cc.Kind != "audio" || cc.ProducerID != pid || cc.ID == "" || rp.Codecs[0].MimeType != "audio/opus" ||
		rp.Codecs[0].PayloadType != 100 || rp.Codecs[0].Channels != 2 || rp.Encodings[0].SSRC == 0 || rp.Encodings[0].SSRC == 77 ||
		rp.Rtcp.CNAME != "testcname" || !rp.Rtcp.ReducedSize || rp.MID != "0" {
		t.Fatalf("consumer_created %+v", cc)
	}
	if rp.Codecs[0].Parameters["useinbandfec"] == nil {
		t.Fatalf("producer codec parameters not kept: %v", rp.Codecs[0].Parameters)
	}
	ps, _ := s.Participants("r")
	if len(ps) != 3 || ps[0].ConnectionID != "a1" || len(ps[0].Producers) != 1 || ps[0].Producers[0] != (ProducerInfo{pid, "audio", "mic"}) || ps[1].UserID != "u1" {
		t.Fatalf("participants %+v", ps)
	}

	snd.reset()
	mustHandle(t, s, "a1", "u1", TypeProducerClose, "pc", map[string]string{"room_id": "r", "producer_id": pid})
	if fr, _ := snd.last("a1", "ack"); fr.ID != "pc" || len(snd.of("a1")) != 1 {
		t.Fatalf("producer_close reply: %v", snd.typesOf("a1"))
	}
	for _, c := range []string{"a2", "b"} {
		fr, ok := snd.last(c, TypeProducerClosed)
		if !ok || !strings.Contains(string(fr.Data), pid) || !strings.Contains(string(fr.Data), `"user_id":"u1"`) {
			t.Fatalf("%s: %v", c, snd.typesOf(c))
		}
	}
	if st := s.Stats(); st.Producers != 0 || st.Consumers != 0 {
		t.Fatalf("after close: %+v", st)
	}

	snd.reset()
	mustHandle(t, s, "a1", "u1", TypeLeave, "lv", map[string]string{"room_id": "r"})
	if got := snd.of("a1"); len(got) != 1 || got[0].Type != "ack" || got[0].ID != "lv" {
		t.Fatalf("leave reply %v", got)
	}
	for _, c := range []string{"a2", "b"} {
		fr, ok := snd.last(c, TypePeerLeft)
		var m map[string]string
		_ = json.Unmarshal(fr.Data, &m)
		if !ok || !reflect.DeepEqual(m, map[string]string{"room_id": "r", "user_id": "u1", "connection_id": "a1"}) {
			t.Fatalf("%s peer_left %v", c, m)
		}
	}
	if evs := ev.all(); evs[len(evs)-1] != "updated r 2" {
		t.Fatalf("events %v", evs)
	}
	if err := handle(t, s, "a1", "u1", TypeLeave, "lv2", map[string]string{"room_id": "r"}); errCode(err) != "not_found" {
		t.Fatalf("second leave %v", err)
	}
	// The other tab of the same user is still in the call.
	ps, _ = s.Participants("r")
	if len(ps) != 2 || ps[0].ConnectionID != "a2" {
		t.Fatalf("participants %+v", ps)
	}
	// Disconnect and LeaveUser.
	s.Disconnect("a2")
	s.LeaveUser("r", "u2")
	if ps, _ = s.Participants("r"); len(ps) != 0 {
		t.Fatalf("participants %+v", ps)
	}
	if _, err := s.Participants("zz"); errCode(err) != "not_found" {
		t.Fatalf("participants unknown: %v", err)
	}
}

func TestJoinCallRESTAndEndCallOrder(t *testing.T) {
	s, snd, ev := newTestSFU(t, Config{})
	if err := s.JoinCall("r", "x", "u"); errCode(err) != "not_found" {
		t.Fatalf("JoinCall without call: %v", err)
	}
	s.StartCall("r", "u1")
	if err := s.JoinCall("r", "rest", "u9"); err != nil {
		t.Fatal(err)
	}
	if err := s.JoinCall("r", "rest", "u9"); err != nil { // idempotent
		t.Fatal(err)
	}
	ja := joinCall(t, s, snd, "r", "a", "u1")
	joinCall(t, s, snd, "r", "b", "u2")
	s.mu.Lock()
	r := s.routers["r"]
	s.mu.Unlock()
	r.mu.Lock()
	tr := r.transports[ja.Send.ID]
	r.mu.Unlock()

	var order []string
	snd.hook = func(conn string, fr frame) {
		if fr.Type == TypeRoomClosed {
			if tr.ctx.Err() != nil {
				t.Errorf("room_closed to %s after teardown started", conn)
			}
			order = append(order, conn+" "+string(fr.Data))
		}
	}
	if !s.EndCall("r") {
		t.Fatal("EndCall false")
	}
	snd.hook = nil
	if want := []string{`rest {"room_id":"r"}`, `a {"room_id":"r"}`, `b {"room_id":"r"}`}; !reflect.DeepEqual(order, want) {
		t.Fatalf("room_closed %v", order)
	}
	if tr.ctx.Err() == nil {
		t.Fatal("transport not closed by EndCall")
	}
	evs := ev.all()
	if evs[len(evs)-1] != "ended r" {
		t.Fatalf("events %v", evs)
	}
	if s.EndCall("r") || s.CallActive("r") {
		t.Fatal("call still there")
	}
	if err := handle(t, s, "a", "u1", TypeLeave, "l", map[string]string{"room_id": "r"}); errCode(err) != "not_found" {
		t.Fatalf("leave after end: %v", err)
	}
}

func TestRejoinResetsMedia(t *testing.T) {
	s, snd, _ := newTestSFU(t, Config{})
	s.StartCall("r", "u1")
	ja := joinCall(t, s, snd, "r", "a", "u1")
	joinCall(t, s, snd, "r", "b", "u2")
	pid := produce(t, s, snd, "r", "a", "u1", ja.Send.ID, "audio", opusProduceParams(5))
	snd.reset()
	ja2 := joinCall(t, s, snd, "r", "a", "u1")
	if ja2.Send.ID == ja.Send.ID {
		t.Fatal("rejoin kept the old transport")
	}
	if fr, ok := snd.last("b", TypeProducerClosed); !ok || !strings.Contains(string(fr.Data), pid) {
		t.Fatalf("b frames %v", snd.typesOf("b"))
	}
	if st := s.Stats(); st.Transports != 4 || st.Participants != 2 || st.Producers != 0 {
		t.Fatalf("stats %+v", st)
	}
}

func TestIceServersAndTURNCredentials(t *testing.T) {
	s, snd, _ := newTestSFU(t, Config{
		TURNURLs: []string{"turn:turn.example.com:3478"}, TURNSharedSecret: "s3cret",
		TURNCredentialTTL: time.Hour, ForceRelay: true,
		EmbeddedTURN: EmbeddedTURN{Enabled: true, Port: -1},
	})
	s.StartCall("r", "u1")
	j := joinCall(t, s, snd, "r", "a", "u1")
	if !j.ForceRelay || len(j.Servers) != 2 {
		t.Fatalf("ice servers %+v relay %v", j.Servers, j.ForceRelay)
	}
	for _, srv := range j.Servers {
		user, exp, ok := strings.Cut(srv.Username, ":")
		_ = user
		if !ok || exp != "u1" {
			t.Fatalf("username %q", srv.Username)
		}
		mac := hmac.New(sha1.New, []byte("s3cret"))
		mac.Write([]byte(srv.Username))
		if srv.Credential != base64.StdEncoding.EncodeToString(mac.Sum(nil)) {
			t.Fatalf("credential for %v", srv.URLs)
		}
	}
	if !strings.HasPrefix(j.Servers[1].URLs[0], "turn:127.0.0.1:") {
		t.Fatalf("embedded url %v", j.Servers[1].URLs)
	}
	s2, snd2, _ := newTestSFU(t, Config{TURNURLs: []string{"turn:x:3478"}, TURNUsername: "u", TURNPassword: "p"})
	s2.StartCall("r", "u1")
	j2 := joinCall(t, s2, snd2, "r", "a", "u1")
	if len(j2.Servers) != 1 || j2.Servers[0].Username != "u" || j2.Servers[0].Credential != "p" || j2.ForceRelay {
		t.Fatalf("static %+v", j2.Servers)
	}
}
