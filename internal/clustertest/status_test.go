package clustertest

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"
)

// Issue 11 parts 1 and 2: user status and typing over all nodes
// (PROTOCOL.md §5, §9). Nodes run with a 1 s offline grace and no status
// coalescing, so every change is one frame.

const (
	TypePresenceUpdate = "presence:update"
	TypeTypingStart    = "typing:start"
	TypeTypingStop     = "typing:stop"
	TypeMessageCreate  = "message:create"

	statusGrace = time.Second
	// graceSlack is how long nodes other than the one that started a grace
	// wait past its end before finishing it (internal/chat): a window
	// after which a wrong offline would have been sent.
	graceSlack = 2 * time.Second
)

func statusEnv() map[string]string {
	return map[string]string{
		"PARLEY_PRESENCE_OFFLINE_GRACE":   statusGrace.String(),
		"PARLEY_PRESENCE_UPDATE_INTERVAL": "0s",
	}
}

// chatRoom creates a REST room with these members through n.
func chatRoom(t *testing.T, n *Node, room string, members ...string) {
	t.Helper()
	if code, body := n.Do(t, "POST", "/api/rooms", APIKey, map[string]any{"id": room, "name": room}); code != 201 {
		t.Fatalf("create room %s: %d %s", room, code, body)
	}
	for _, u := range members {
		if code, body := n.Do(t, "POST", "/api/rooms/"+room+"/members", APIKey, map[string]any{"user_id": u}); code/100 != 2 {
			t.Fatalf("add member %s: %d %s", u, code, body)
		}
	}
}

// statusesOf returns the presence values c was sent about user, in order.
func statusesOf(c *Client, user string) []string { return statusesIn(c.Frames(), user) }

// statusesIn is statusesOf over frames (WaitUntilE's conditions hold the
// client's lock: they must not call Frames).
func statusesIn(frames []Frame, user string) []string {
	var out []string
	for _, f := range frames {
		if f.Type == TypePresenceUpdate && f.Field("user_id") == user {
			out = append(out, f.Field("presence"))
		}
	}
	return out
}

func countAbout(frames []Frame, typ, user string) int {
	n := 0
	for _, f := range frames {
		if f.Type == typ && f.Field("user_id") == user {
			n++
		}
	}
	return n
}

// waitStatuses waits until c was sent exactly want about user.
func waitStatuses(t *testing.T, c *Client, user string, within time.Duration, want ...string) {
	t.Helper()
	w := strings.Join(want, ",")
	err := c.WaitUntilE(within, fmt.Sprintf("presence:update of %s: %s", user, w), func(fs []Frame) bool {
		return strings.Join(statusesIn(fs, user), ",") == w
	})
	if err != nil {
		t.Fatalf("%v (got %v)", err, statusesOf(c, user))
	}
}

// noNewStatus watches c for window and fails if it is sent anything about
// user beyond want.
func noNewStatus(t *testing.T, c *Client, user string, window time.Duration, want ...string) {
	t.Helper()
	w := strings.Join(want, ",")
	err := c.WaitUntilE(window, "a status change", func(fs []Frame) bool {
		return strings.Join(statusesIn(fs, user), ",") != w
	})
	if err == nil {
		t.Fatalf("%s was sent %v about %s, want %v", c.Label, statusesOf(c, user), user, want)
	}
}

// restStatus is GET /api/presence on n as viewer ("" = the API key).
func restStatus(t *testing.T, c *Cluster, n *Node, viewer, user string) string {
	t.Helper()
	cred := APIKey
	if viewer != "" {
		cred = c.Token(viewer, nil)
	}
	code, body, err := n.DoE("GET", "/api/presence?user_ids="+user, cred, nil)
	if err != nil || code != 200 {
		return fmt.Sprintf("error %d %v %s", code, err, body)
	}
	var r struct {
		Items []struct {
			Presence string `json:"presence"`
		} `json:"items"`
	}
	if json.Unmarshal(body, &r) != nil || len(r.Items) != 1 {
		return "bad body " + string(body)
	}
	return r.Items[0].Presence
}

// agree polls GET /api/presence on every running node until each shows
// user to viewer as want.
func agree(t *testing.T, c *Cluster, viewer, user, want string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		var got []string
		ok := true
		for _, n := range c.Nodes {
			if !n.Running() {
				continue
			}
			s := restStatus(t, c, n, viewer, user)
			got = append(got, n.ID+"="+s)
			ok = ok && s == want
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET /api/presence of %s as %q: %v, want %s on every node", user, viewer, got, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func setStatus(t *testing.T, c *Client, status string) {
	t.Helper()
	if f := c.Call(TypePresenceUpdate, map[string]string{"presence": status}, 5*time.Second); f.Type != TypeAck {
		t.Fatalf("%s: presence:update %s answered %s", c.Label, status, f)
	}
}

func typing(t *testing.T, c *Client, typ, room string) {
	t.Helper()
	if f := c.Call(typ, map[string]string{"room_id": room}, 5*time.Second); f.Type != TypeAck {
		t.Fatalf("%s: %s answered %s", c.Label, typ, f)
	}
}

// TestClusterUserStatus: two tabs on two nodes (closing one sends
// nothing, closing both one offline after the grace), invisible set
// through one node is offline everywhere else and never leaked, moving
// between nodes within the grace sends nothing, GET /api/presence agrees
// on every node, and a message posted through n1 ends typing started
// through n2 (well before the 6 s expiry).
func TestClusterUserStatus(t *testing.T) {
	c := New(t, Options{Env: statusEnv()})
	n1, n2, n3 := c.Node("n1"), c.Node("n2"), c.Node("n3")
	chatRoom(t, n1, "st", "alice", "bob", "carol", "dave")
	bob := n3.Dial(t, "bob@n3", "bob", nil)
	const soon = 10 * time.Second
	window := statusGrace + graceSlack + time.Second

	t.Run("two tabs on two nodes", func(t *testing.T) {
		a1 := n1.Dial(t, "alice@n1", "alice", nil)
		a2 := n2.Dial(t, "alice@n2", "alice", nil)
		waitStatuses(t, bob, "alice", soon, "online")
		agree(t, c, "bob", "alice", "online", soon)
		a1.Close()
		noNewStatus(t, bob, "alice", window, "online")
		agree(t, c, "bob", "alice", "online", soon)
		start := time.Now()
		a2.Close()
		waitStatuses(t, bob, "alice", soon, "online", "offline")
		if took := time.Since(start); took < statusGrace {
			t.Fatalf("offline after %v, before the grace (%v)", took, statusGrace)
		}
		agree(t, c, "bob", "alice", "offline", soon)
	})

	t.Run("invisible across nodes", func(t *testing.T) {
		c1 := n1.Dial(t, "carol@n1", "carol", nil)
		c2 := n2.Dial(t, "carol@n2", "carol", nil)
		waitStatuses(t, bob, "carol", soon, "online")
		setStatus(t, c1, "invisible")
		waitStatuses(t, c2, "carol", soon, "invisible")
		waitStatuses(t, bob, "carol", soon, "online", "offline")
		agree(t, c, "bob", "carol", "offline", soon)
		agree(t, c, "", "carol", "offline", soon)
		agree(t, c, "carol", "carol", "invisible", soon)
		c1.Close()
		c2.Close()
		noNewStatus(t, bob, "carol", window, "online", "offline")
		agree(t, c, "carol", "carol", "offline", soon)
	})

	t.Run("move between nodes within the grace", func(t *testing.T) {
		d1 := n1.Dial(t, "dave@n1", "dave", nil)
		waitStatuses(t, bob, "dave", soon, "online")
		d1.Close()
		d2 := n2.Dial(t, "dave@n2", "dave", nil)
		noNewStatus(t, bob, "dave", window, "online")
		agree(t, c, "bob", "dave", "online", soon)

		// Typing through n2 ended by a post through n1.
		start := time.Now()
		typing(t, d2, TypeTypingStart, "st")
		bob.WaitFor(soon, "typing:start of dave", func(f Frame) bool { return f.Type == TypeTypingStart && f.Field("user_id") == "dave" })
		if code, body := n1.Do(t, "POST", "/api/rooms/st/messages", c.Token("dave", nil), map[string]any{"content": "hi"}); code/100 != 2 {
			t.Fatalf("post through n1: %d %s", code, body)
		}
		bob.WaitFor(soon, "message:create", OfType(TypeMessageCreate))
		bob.WaitFor(soon, "typing:stop of dave", func(f Frame) bool { return f.Type == TypeTypingStop && f.Field("user_id") == "dave" })
		if took := time.Since(start); took >= 6*time.Second {
			t.Fatalf("typing:stop after %v: the expiry, not the post", took)
		}
		if n := countAbout(bob.Frames(), TypeTypingStop, "dave"); n != 1 {
			t.Fatalf("bob got %d typing:stop of dave", n)
		}
	})
}

// TestClusterUserStatusNodeFailure: kill -9 of n3 makes its user offline
// within 15 s plus the grace and ends its typing (typing:stop); then a
// SIGTERM drain of n2 makes its user offline at once plus the grace. Each
// watcher gets one offline and one typing:stop.
func TestClusterUserStatusNodeFailure(t *testing.T) {
	c := New(t, Options{Env: statusEnv()})
	n1, n2, n3 := c.Node("n1"), c.Node("n2"), c.Node("n3")
	chatRoom(t, n1, "fail", "bob", "frank", "gina")
	const soon = 10 * time.Second
	bob := n1.Dial(t, "bob@n1", "bob", nil)
	bob2 := n2.Dial(t, "bob@n2", "bob", nil)
	frank := n3.Dial(t, "frank@n3", "frank", nil)
	gina := n2.Dial(t, "gina@n2", "gina", nil)
	for _, w := range []*Client{bob, bob2} {
		waitStatuses(t, w, "frank", soon, "online")
		waitStatuses(t, w, "gina", soon, "online")
	}
	typing(t, frank, TypeTypingStart, "fail")
	for _, w := range []*Client{bob, bob2, gina} {
		w.WaitFor(soon, "typing:start of frank", func(f Frame) bool { return f.Type == TypeTypingStart && f.Field("user_id") == "frank" })
	}

	start := time.Now()
	n3.Kill()
	for _, w := range []*Client{bob, bob2, gina} {
		w.WaitFor(15*time.Second, "typing:stop of frank after kill -9 of n3", func(f Frame) bool {
			return f.Type == TypeTypingStop && f.Field("user_id") == "frank"
		})
	}
	t.Logf("typing:stop %v after kill -9", time.Since(start).Round(time.Millisecond))
	for _, w := range []*Client{bob, bob2} {
		waitStatuses(t, w, "frank", 15*time.Second+statusGrace, "online", "offline")
	}
	t.Logf("offline %v after kill -9", time.Since(start).Round(time.Millisecond))
	agree(t, c, "bob", "frank", "offline", soon)

	bob2.Close()
	start = time.Now()
	n2.Term(t)
	// The drain closes its connections (up to a couple of seconds for
	// the close handshakes), then the grace runs once, finished on time
	// by n1 since n2 announced its drain.
	waitStatuses(t, bob, "gina", statusGrace+5*time.Second, "online", "offline")
	t.Logf("offline %v after SIGTERM", time.Since(start).Round(time.Millisecond))
	if _, ok := n2.WaitExit(20 * time.Second); !ok {
		t.Fatal("n2 did not exit")
	}
	agree(t, c, "bob", "gina", "offline", soon)
	for _, u := range []string{"frank", "gina"} {
		if got := statusesOf(bob, u); strings.Join(got, ",") != "online,offline" {
			t.Fatalf("bob got %v about %s", got, u)
		}
	}
	if n := countAbout(bob.Frames(), TypeTypingStop, "frank"); n != 1 {
		t.Fatalf("bob got %d typing:stop of frank", n)
	}
}
