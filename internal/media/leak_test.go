package media

import (
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/pion/rtp"
)

// TestNoLeakAfterJoinProduceLeaveCycles runs 50 join/connect/produce/
// consume/leave cycles (real ICE+DTLS+SRTP on loopback) and checks that
// goroutines and UDP sockets return to the baseline. In the udp-mux+tcp
// mode the clients are TCP-only (ICE-TCP through Config.TCPPort) and TCP
// sockets are counted too.
func TestNoLeakAfterJoinProduceLeaveCycles(t *testing.T) {
	if testing.Short() {
		t.Skip("leak test runs 50 real media sessions")
	}
	t.Run("per-transport-sockets", func(t *testing.T) { testNoLeak(t, Config{}, 50) })
	t.Run("udp-mux", func(t *testing.T) { testNoLeak(t, Config{UDPMuxPort: freeUDPPort(t)}, 50) })
	t.Run("udp-mux+tcp", func(t *testing.T) {
		testNoLeak(t, Config{UDPMuxPort: freeUDPPort(t), TCPPort: freeTCPPort(t)}, 50)
	})
}

func testNoLeak(t *testing.T, cfg Config, cycles int) {
	s, snd, _ := newTestSFU(t, cfg)
	if _, _, err := s.StartCall("leak", "u"); err != nil {
		t.Fatal(err)
	}
	// Warm-up: let lazily started runtime/test goroutines exist in the baseline.
	runCycle(t, s, snd, 0)
	runtime.GC()
	baseG := settleGoroutines(t, 0, 300*time.Millisecond)
	baseS, baseT := countUDPSockets(), countTCPSockets()
	t.Logf("baseline: %d goroutines, %d UDP sockets, %d TCP sockets", baseG, baseS, baseT)

	for i := 1; i <= cycles; i++ {
		runCycle(t, s, snd, i)
	}
	g := settleGoroutines(t, baseG+3, 10*time.Second)
	sock, tsock := countUDPSockets(), countTCPSockets()
	t.Logf("after %d cycles: %d goroutines, %d UDP sockets, %d TCP sockets", cycles, g, sock, tsock)
	if g > baseG+3 {
		buf := make([]byte, 1<<20)
		n := runtime.Stack(buf, true)
		t.Fatalf("goroutines: %d, baseline %d\n%s", g, baseG, buf[:n])
	}
	if sock > baseS {
		t.Fatalf("UDP sockets: %d, baseline %d", sock, baseS)
	}
	if tsock > baseT {
		t.Fatalf("TCP sockets: %d, baseline %d", tsock, baseT)
	}
	if n := len(s.sharedEPWaiting()); n != 0 {
		t.Fatalf("%d ufrags still awaited by the sniffer", n)
	}
	if st := s.Stats(); st.Transports != 0 || st.Participants != 0 {
		t.Fatalf("state left: %+v", st)
	}

	// EndCall and Close release everything too.
	j := joinCall(t, s, snd, "leak", "z", "uz")
	c := connectClient(t, s, "leak", "z", "uz", clientInfo(t, cfg, j.Send))
	s.EndCall("leak")
	c.close()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	after := settleGoroutines(t, baseG-4, 10*time.Second) // workers (2) are gone now
	if after > baseG {
		buf := make([]byte, 1<<20)
		n := runtime.Stack(buf, true)
		t.Fatalf("after Close: %d goroutines (baseline %d)\n%s", after, baseG, buf[:n])
	}
	wantS := baseS
	if cfg.UDPMuxPort != 0 {
		wantS-- // the shared socket is closed too
	}
	if sock := countUDPSockets(); sock > wantS {
		t.Fatalf("after Close: %d UDP sockets (baseline %d)", sock, baseS)
	}
	wantT := baseT
	if cfg.TCPPort != 0 {
		wantT-- // the listener
	}
	if tsock := countTCPSockets(); tsock > wantT {
		t.Fatalf("after Close: %d TCP sockets (baseline %d)", tsock, baseT)
	}
}

// clientInfo is what a leak-test client is given: only the TCP candidates
// when the SFU offers them.
func clientInfo(t *testing.T, cfg Config, info TransportInfo) TransportInfo {
	if cfg.TCPPort != 0 {
		return onlyTCP(t, info)
	}
	return info
}

func runCycle(t *testing.T, s *SFU, snd *fakeSender, i int) {
	t.Helper()
	a, b := fmt.Sprintf("a%d", i), fmt.Sprintf("b%d", i)
	ja := joinCall(t, s, snd, "leak", a, "ua")
	jb := joinCall(t, s, snd, "leak", b, "ub")
	pub := connectClient(t, s, "leak", a, "ua", clientInfo(t, s.cfg, ja.Send))
	pid := produce(t, s, snd, "leak", a, "ua", ja.Send.ID, "video", vp8ProduceParams(100, 101))
	consume(t, s, snd, "leak", b, "ub", pid)
	got := make(chan struct{}, 1)
	sub := connectClient(t, s, "leak", b, "ub", clientInfo(t, s.cfg, jb.Recv), func(c *testClient) {
		c.onRTP = func(*rtp.Packet) {
			select {
			case got <- struct{}{}:
			default:
			}
		}
	})
	deadline := time.After(10 * time.Second)
	for seq := uint16(0); ; seq++ {
		_ = pub.writeRTP(&rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 96, SequenceNumber: seq, SSRC: 100}, Payload: vp8Payload(100)})
		select {
		case <-got:
			goto done
		case <-deadline:
			t.Fatalf("cycle %d: no media forwarded", i)
		case <-time.After(2 * time.Millisecond):
		}
	}
done:
	mustHandle(t, s, a, "ua", TypeLeave, "", map[string]string{"room_id": "leak"})
	s.Disconnect(b)
	pub.close()
	sub.close()
	snd.reset()
}

// sharedEPWaiting lists the ufrags still awaited on the shared UDP socket
// and on the TCP listener.
func (s *SFU) sharedEPWaiting() map[string]waiter {
	out := map[string]waiter{}
	for _, w := range []*ufragWaiters{s.sharedWaiters(), s.tcpWaiters()} {
		if w == nil {
			continue
		}
		w.mu.Lock()
		for k, v := range w.waiting {
			out[k] = v
		}
		w.mu.Unlock()
	}
	return out
}

func (s *SFU) sharedWaiters() *ufragWaiters {
	if s.sharedEP == nil {
		return nil
	}
	return s.sharedEP.sniffer.ufragWaiters
}

func (s *SFU) tcpWaiters() *ufragWaiters {
	if s.tcpEP == nil {
		return nil
	}
	return s.tcpEP.waiters
}
