package media

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/parleyhq/parley/internal/protocol"
	"github.com/parleyhq/parley/internal/testenv"
)

// TestBrowser runs test/browser/media.mjs (playwright-core + Debian's
// Chromium) against an SFU behind a minimal WebSocket harness that speaks
// the Parley envelope. It skips when node, Chromium or web/media's
// node_modules are missing, unless PARLEY_REQUIRE_BROWSER=1.
func TestBrowser(t *testing.T) {
	testenv.Browser(t, "browser test")
	root, chromium, dist := testenv.RepoRoot(), testenv.Chromium(), filepath.Join(testenv.WebMedia(), "dist")
	if testing.Short() {
		t.Skip("browser test skipped in -short mode")
	}

	for _, sc := range []struct {
		name string
		cfg  Config
	}{
		{"plain", Config{ListenIP: "0.0.0.0", IncludeLoopback: true}},
		{"relay", Config{ListenIP: "0.0.0.0", IncludeLoopback: true, ForceRelay: true,
			EmbeddedTURN: EmbeddedTURN{Enabled: true, ListenIP: "127.0.0.1", RelayIP: "127.0.0.1", Port: -1}}},
		// ICE-TCP: the harness withholds the UDP candidates from the pages,
		// so Chromium can only reach the SFU through its passive TCP ones.
		{"tcp", Config{ListenIP: "0.0.0.0", IncludeLoopback: true, TCPPort: freeTCPPort(t)}},
	} {
		t.Run(sc.name, func(t *testing.T) {
			h := newHarness(t, sc.cfg, dist)
			h.tcpOnly = sc.name == "tcp"
			var watch sync.WaitGroup
			stopWatch := make(chan struct{})
			var maxTCP, maxUDP int
			watch.Add(1)
			go func() { // which transports are connected, and over what
				defer watch.Done()
				for {
					tcp, udp := connectedTransports(h.sfu)
					maxTCP, maxUDP = max(maxTCP, tcp), max(maxUDP, udp)
					select {
					case <-stopWatch:
						return
					case <-time.After(50 * time.Millisecond):
					}
				}
			}()
			room := "browser-" + sc.name
			if _, _, err := h.sfu.StartCall(room, "ua"); err != nil {
				t.Fatal(err)
			}
			wsBase := "ws" + strings.TrimPrefix(h.srv.URL, "http") + "/ws"
			ctx, cancel := context.WithTimeout(context.Background(), 150*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, "node", filepath.Join(root, "test", "browser", "media.mjs"))
			cmd.Env = append(os.Environ(),
				"PARLEY_PAGE_URL="+h.srv.URL+"/",
				"PARLEY_WS_A="+wsBase+"?conn=connA&user=ua",
				"PARLEY_WS_B="+wsBase+"?conn=connB&user=ub",
				"PARLEY_ROOM="+room,
				"PARLEY_SCENARIO="+sc.name,
				"PARLEY_EXPECT_CALL_UPDATED=1", // the harness sends room:call_updated
				"CHROMIUM="+chromium,
			)
			out, err := cmd.CombinedOutput()
			close(stopWatch)
			watch.Wait()
			t.Logf("node output:\n%s", out)
			t.Logf("connected transports seen: %d over TCP, %d over UDP", maxTCP, maxUDP)
			if err != nil {
				t.Fatalf("browser scenario %s failed: %v", sc.name, err)
			}
			if sc.name == "tcp" && (maxTCP < 4 || maxUDP != 0) {
				t.Fatalf("tcp scenario: %d transports connected over TCP, %d over UDP; want 4 and 0", maxTCP, maxUDP)
			}
			if sc.name == "plain" && maxTCP != 0 {
				t.Fatalf("plain scenario: %d transports over TCP", maxTCP)
			}
			if sc.name == "relay" && h.sfu.turnServer.AllocationCount() == 0 {
				// Allocations may already be released by the time the page closed;
				// the script itself asserted relayed candidate pairs.
				t.Log("no TURN allocation left at the end (released)")
			}
		})
	}
}

// harness is a stand-in for the Parley gateway: /ws?conn=&user= upgrades,
// media:* frames go to SFU.Handle, Sender frames go back to the socket,
// Events become room:* frames to every harness connection.
type harness struct {
	tcpOnly bool // strip the UDP candidates from media:transport_created

	sfu   *SFU
	srv   *httptest.Server
	mu    sync.Mutex
	conns map[string]chan []byte
}

func newHarness(t *testing.T, cfg Config, dist string) *harness {
	h := &harness{conns: map[string]chan []byte{}}
	s, err := New(cfg, h, h, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	h.sfu = s
	mux := http.NewServeMux()
	mux.Handle("/", http.FileServer(http.Dir(dist)))
	mux.HandleFunc("/ws", h.serveWS)
	h.srv = httptest.NewServer(mux)
	t.Cleanup(func() {
		h.srv.CloseClientConnections()
		h.srv.Close()
		_ = s.Close()
	})
	return h
}

func (h *harness) SendToConnection(connID string, frame []byte) bool {
	if h.tcpOnly {
		frame = stripUDPCandidates(frame)
	}
	h.mu.Lock()
	ch := h.conns[connID]
	h.mu.Unlock()
	if ch == nil {
		return false
	}
	select {
	case ch <- frame:
		return true
	default:
		return false
	}
}

// stripUDPCandidates removes the UDP candidates of both transports from a
// media:transport_created frame (other frames are returned as they are).
func stripUDPCandidates(frame []byte) []byte {
	var env map[string]json.RawMessage
	if json.Unmarshal(frame, &env) != nil || string(env["type"]) != `"`+TypeTransportCreated+`"` {
		return frame
	}
	var data map[string]json.RawMessage
	if json.Unmarshal(env["data"], &data) != nil {
		return frame
	}
	for _, k := range []string{"send_transport", "recv_transport"} {
		var tr map[string]any
		if json.Unmarshal(data[k], &tr) != nil {
			return frame
		}
		cands, _ := tr["iceCandidates"].([]any)
		var keep []any
		for _, c := range cands {
			if m, _ := c.(map[string]any); m != nil && m["protocol"] == "tcp" {
				keep = append(keep, c)
			}
		}
		tr["iceCandidates"] = keep
		data[k], _ = json.Marshal(tr)
	}
	env["data"], _ = json.Marshal(data)
	out, _ := json.Marshal(env)
	return out
}

// connectedTransports counts the SFU's transports whose ICE is connected,
// by the protocol of the selected pair.
func connectedTransports(s *SFU) (tcp, udp int) {
	s.mu.Lock()
	routers := make([]*router, 0, len(s.routers))
	for _, r := range s.routers {
		routers = append(routers, r)
	}
	s.mu.Unlock()
	for _, r := range routers {
		r.mu.Lock()
		for _, t := range r.transports {
			c := t.iceConn.Load()
			if c == nil {
				continue
			}
			if _, ok := c.RemoteAddr().(*net.TCPAddr); ok {
				tcp++
			} else {
				udp++
			}
		}
		r.mu.Unlock()
	}
	return tcp, udp
}

func (h *harness) broadcast(frame []byte) {
	h.mu.Lock()
	ids := make([]string, 0, len(h.conns))
	for id := range h.conns {
		ids = append(ids, id)
	}
	h.mu.Unlock()
	for _, id := range ids {
		h.SendToConnection(id, frame)
	}
}

func (h *harness) CallStarted(roomID, by string) {
	h.broadcast(protocol.Encode(protocol.TypeRoomCallStarted, "", map[string]string{"room_id": roomID, "started_by": by}))
}

func (h *harness) CallUpdated(roomID string, n int) {
	h.broadcast(protocol.Encode(protocol.TypeRoomCallUpdated, "", map[string]any{"room_id": roomID, "participant_count": n}))
}

func (h *harness) CallEnded(roomID string) {
	h.broadcast(protocol.Encode(protocol.TypeRoomCallEnded, "", map[string]string{"room_id": roomID}))
}

var upgrader = websocket.Upgrader{CheckOrigin: func(*http.Request) bool { return true }}

func (h *harness) serveWS(w http.ResponseWriter, r *http.Request) {
	connID, userID := r.URL.Query().Get("conn"), r.URL.Query().Get("user")
	if connID == "" || userID == "" {
		http.Error(w, "conn and user required", http.StatusBadRequest)
		return
	}
	ws, err := upgrader.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	out := make(chan []byte, 256)
	h.mu.Lock()
	h.conns[connID] = out
	h.mu.Unlock()
	done := make(chan struct{})
	go func() { // the single writer
		for {
			select {
			case f := <-out:
				if ws.WriteMessage(websocket.TextMessage, f) != nil {
					return
				}
			case <-done:
				return
			}
		}
	}()
	defer func() {
		h.mu.Lock()
		delete(h.conns, connID)
		h.mu.Unlock()
		close(done)
		_ = ws.Close()
		h.sfu.Disconnect(connID)
	}()
	for {
		_, msg, err := ws.ReadMessage()
		if err != nil {
			return
		}
		env, perr := protocol.Decode(msg)
		if perr != nil {
			h.SendToConnection(connID, protocol.EncodeError(env.ID, perr))
			continue
		}
		if !strings.HasPrefix(env.Type, "media:") {
			h.SendToConnection(connID, protocol.EncodeError(env.ID, protocol.Errorf(protocol.CodeBadRequest, "unknown type")))
			continue
		}
		if err := h.sfu.Handle(r.Context(), connID, userID, env.Type, env.ID, json.RawMessage(env.Data)); err != nil {
			h.SendToConnection(connID, protocol.EncodeError(env.ID, protocol.AsError(err)))
		}
	}
}
