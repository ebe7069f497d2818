package media

import "testing"

// TestProduceRefusesSDPInjection (review h/review5, failing): a producer's
// rtcp.cname and codec parameters are copied verbatim into every
// consumer's rtp_parameters, and mediasoup-client writes them into the SDP
// the consuming browser applies (a=ssrc:... cname:<cname>, a=fmtp:<pt>
// k=v;...). A CR/LF in either injects arbitrary SDP lines into other
// participants' RTCPeerConnections (seen in Chromium: "a=ice-ufrag:evil"
// reached both other pages' setRemoteDescription). media:produce must
// answer bad_request for control characters there (mediasoup's own CNAME
// is printable ASCII; fmtp values are tokens/numbers).
func TestProduceRefusesSDPInjection(t *testing.T) {
	s, snd, _ := newTestSFU(t, Config{})
	if _, _, err := s.StartCall("r1", "u1"); err != nil {
		t.Fatal(err)
	}
	j := joinCall(t, s, snd, "r1", "c1", "u1")
	cases := map[string]func(p map[string]any){
		"cname CRLF": func(p map[string]any) {
			p["rtcp"] = map[string]any{"cname": "x\r\na=ice-ufrag:evil", "reducedSize": true}
		},
		"fmtp value CRLF": func(p map[string]any) {
			p["codecs"].([]map[string]any)[0]["parameters"] = map[string]any{"x": "1\r\na=ice-ufrag:evil"}
		},
		"fmtp key CRLF": func(p map[string]any) {
			p["codecs"].([]map[string]any)[0]["parameters"] = map[string]any{"x\r\na=evil": 1}
		},
	}
	i := uint32(0)
	for name, mutate := range cases {
		i += 2
		p := vp8ProduceParams(0x1234+i, 0x1235+i)
		mutate(p)
		err := handle(t, s, "c1", "u1", TypeProduce, "p-"+name, map[string]any{
			"room_id": "r1", "transport_id": j.Send.ID, "kind": "video", "rtp_parameters": p,
		})
		if errCode(err) != "bad_request" {
			t.Errorf("%s: produce answered %v, want bad_request", name, err)
		}
	}
}
