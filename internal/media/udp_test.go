package media

import (
	"testing"

	"github.com/pion/stun/v4"
)

func bindingRequest(t *testing.T, username, pwd string) []byte {
	t.Helper()
	m, err := stun.Build(stun.TransactionID, stun.BindingRequest, stun.NewUsername(username),
		stun.NewShortTermIntegrity(pwd), stun.Fingerprint)
	if err != nil {
		t.Fatal(err)
	}
	return m.Raw
}

func TestUfragSnifferTakesTheClientUfragFromASignedRequest(t *testing.T) {
	sn := newUfragSniffer(nil, nil)
	var got []string
	sn.expect("srvufrag", "srvpassword-0123456789", func(r string) { got = append(got, r) })

	sn.inspect([]byte{0x80, 0x60, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9})             // RTP
	sn.inspect(bindingRequest(t, "other:cli", "srvpassword-0123456789"))     // another transport
	sn.inspect(bindingRequest(t, "srvufrag:evil", "wrong-password-0123456")) // not signed with our password
	sn.inspect(bindingRequest(t, "srvufrag", "srvpassword-0123456789"))      // no remote part
	if len(got) != 0 {
		t.Fatalf("fired on %v", got)
	}
	sn.inspect(bindingRequest(t, "srvufrag:cliufrag", "srvpassword-0123456789"))
	sn.inspect(bindingRequest(t, "srvufrag:again", "srvpassword-0123456789")) // once only
	if len(got) != 1 || got[0] != "cliufrag" {
		t.Fatalf("got %v", got)
	}
	if len(sn.waiting) != 0 {
		t.Fatal("waiter not removed")
	}
}

func TestLocalIPs(t *testing.T) {
	if got := localIPs("127.0.0.1", "", true); len(got) != 1 || got[0] != "127.0.0.1" {
		t.Fatalf("loopback: %v", got)
	}
	if got := localIPs("0.0.0.0", "203.0.113.7", false); len(got) != 1 || got[0] != "203.0.113.7" {
		t.Fatalf("announced: %v", got)
	}
	got := localIPs("0.0.0.0", "", true)
	if len(got) == 0 || got[len(got)-1] != "127.0.0.1" {
		t.Fatalf("unspecified: %v", got)
	}
}

func TestConfigValidation(t *testing.T) {
	for _, c := range []Config{
		{ListenIP: "nope"}, {AnnouncedIP: "x"}, {RTCMinPort: 10}, {RTCMinPort: 20, RTCMaxPort: 10}, {UDPMuxPort: 70000},
		{TCPPort: 70000}, {TCPPort: -1},
	} {
		if _, err := New(c, newFakeSender(), nil, nil); err == nil {
			t.Errorf("config %+v accepted", c)
		}
	}
}
