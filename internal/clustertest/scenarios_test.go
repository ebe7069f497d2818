package clustertest

import (
	"encoding/json"
	"fmt"
	"reflect"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

// soon is the deadline for a frame that should follow at once (a reply, a
// fan-out to another node); generous for a loaded 2-core machine.
const soon = 10 * time.Second

// The scenarios below take the node of each client: the cluster tests pass
// three different nodes, TestClusterSingleNodeSanity passes n1 three times.

func label(name string, n *Node) string { return name + "@" + n.ID }

// labels names the clients behind client ids, for messages.
func labels(cs ...*Client) map[string]string {
	m := map[string]string{}
	for _, c := range cs {
		m[c.ConnID] = c.Label
	}
	return m
}

// expectMembers checks that a room:state lists exactly these clients.
func expectMembers(t *testing.T, who *Client, st RoomState, want ...*Client) {
	t.Helper()
	names := labels(want...)
	var got, missing, extra []string
	seen := map[string]bool{}
	for _, m := range st.Members {
		seen[m.ClientID] = true
		if n, ok := names[m.ClientID]; ok {
			got = append(got, n)
		} else {
			extra = append(extra, m.UserID+"/"+m.ClientID)
		}
	}
	for _, c := range want {
		if !seen[c.ConnID] {
			missing = append(missing, c.Label)
		}
	}
	if len(missing) > 0 || len(extra) > 0 || st.ClientID != who.ConnID {
		t.Fatalf("%s: room:state of %s lists %v (client_id %s), want %v: missing %v, unexpected %v",
			who.Label, st.RoomID, got, st.ClientID, clientLabels(want), missing, extra)
	}
	if st.MemberCount != 0 && st.MemberCount != len(want) {
		t.Fatalf("%s: room:state member_count %d, want %d", who.Label, st.MemberCount, len(want))
	}
}

func clientLabels(cs []*Client) []string {
	var out []string
	for _, c := range cs {
		out = append(out, c.Label)
	}
	return out
}

// expectJoined waits for watcher's room:joined about joiner.
func expectJoined(t *testing.T, watcher, joiner *Client) {
	t.Helper()
	f := watcher.WaitFor(soon, "room:joined for "+joiner.Label, About(TypeJoined, joiner.ConnID))
	if f.Field("user_id") != joiner.UserID || f.ID != "" {
		t.Fatalf("%s: room:joined for %s = %s", watcher.Label, joiner.Label, f)
	}
}

// expectLeft waits for watcher's room:left about leaver.
func expectLeft(t *testing.T, watcher *Client, leaver *Client, within time.Duration) Frame {
	t.Helper()
	f := watcher.WaitFor(within, "room:left for "+leaver.Label, About(TypeLeft, leaver.ConnID))
	if f.Field("user_id") != leaver.UserID {
		t.Fatalf("%s: room:left for %s = %s", watcher.Label, leaver.Label, f)
	}
	return f
}

// count counts frames in the log that match.
func count(c *Client, match func(Frame) bool) int {
	n := 0
	for _, f := range c.Frames() {
		if match(f) {
			n++
		}
	}
	return n
}

func jsonEqual(a, b json.RawMessage) bool {
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return false
	}
	return reflect.DeepEqual(x, y)
}

// ------------------------------------------------------------ scenarios --

// scenarioMembership: A, B, C join one after the other; each gets a
// room:state listing those before it, the others a room:joined; a leave and
// a disconnect reach everyone as room:left.
func scenarioMembership(t *testing.T, nA, nB, nC *Node) {
	room := "members"
	a := nA.Dial(t, label("A", nA), "alice", AllRooms)
	b := nB.Dial(t, label("B", nB), "bob", AllRooms)
	c := nC.Dial(t, label("C", nC), "carol", AllRooms)

	expectMembers(t, a, a.Join(room, nil), a)
	expectMembers(t, b, b.Join(room, nil), a, b)
	expectJoined(t, a, b)
	expectMembers(t, c, c.Join(room, nil), a, b, c)
	expectJoined(t, a, c)
	expectJoined(t, b, c)

	// C leaves: its own room:left carries the request id, A and B get one.
	f := c.Call(TypeLeave, map[string]any{"room_id": room}, soon)
	if f.Type != TypeLeft || f.Field("client_id") != c.ConnID {
		t.Fatalf("%s: room:leave answered %s", c.Label, f)
	}
	expectLeft(t, a, c, soon)
	expectLeft(t, b, c, soon)

	// B disconnects: A gets room:left.
	b.Close()
	expectLeft(t, a, b, soon)

	// Exactly one room:joined and room:left per change, nothing about A
	// itself, and a later joiner sees only A.
	a.Sync()
	for _, x := range []*Client{b, c} {
		if n := count(a, About(TypeJoined, x.ConnID)); n != 1 {
			t.Fatalf("%s got %d room:joined for %s, want 1", a.Label, n, x.Label)
		}
		if n := count(a, About(TypeLeft, x.ConnID)); n != 1 {
			t.Fatalf("%s got %d room:left for %s, want 1", a.Label, n, x.Label)
		}
	}
	d := nB.Dial(t, label("D", nB), "dave", AllRooms)
	expectMembers(t, d, d.Join(room, nil), a, d)
	expectJoined(t, a, d)
}

// scenarioPresence: B's update_presence is merged and reaches everyone,
// B included (its copy carries the request id); a later joiner's
// room:state shows the merged presence.
func scenarioPresence(t *testing.T, nA, nB, nC *Node) {
	room := "presence"
	a := nA.Dial(t, label("A", nA), "alice", AllRooms)
	b := nB.Dial(t, label("B", nB), "bob", AllRooms)
	c := nC.Dial(t, label("C", nC), "carol", AllRooms)
	a.Join(room, map[string]any{"presence": map[string]any{"color": "red"}})
	b.Join(room, map[string]any{"presence": map[string]any{"color": "blue", "cursor": nil}})
	expectJoined(t, a, b)

	check := func(who *Client, f Frame, want string) {
		t.Helper()
		var p struct {
			ClientID  string          `json:"client_id"`
			UserID    string          `json:"user_id"`
			Presence  json.RawMessage `json:"presence"`
			Timestamp string          `json:"timestamp"`
		}
		_ = f.Decode(&p)
		if p.ClientID != b.ConnID || p.UserID != "bob" || !jsonEqual(p.Presence, json.RawMessage(want)) {
			t.Fatalf("%s: room:presence_updated = %s, want presence %s from %s", who.Label, f, want, b.Label)
		}
		if _, err := time.Parse(time.RFC3339, p.Timestamp); err != nil {
			t.Fatalf("%s: room:presence_updated timestamp %q: %v", who.Label, p.Timestamp, err)
		}
	}
	update := func(presence map[string]any, want string, watchers ...*Client) {
		t.Helper()
		f := b.Call(TypeUpdatePresence, map[string]any{"room_id": room, "presence": presence}, soon)
		if f.Type != TypePresence {
			t.Fatalf("%s: room:update_presence answered %s", b.Label, f)
		}
		check(b, f, want)
		for _, w := range watchers {
			check(w, w.WaitFor(soon, "room:presence_updated from "+b.Label, About(TypePresence, b.ConnID)), want)
		}
	}
	update(map[string]any{"cursor": map[string]any{"x": 1, "y": 2}}, `{"color":"blue","cursor":{"x":1,"y":2}}`, a)

	// C joins after: its room:state holds B's merged presence.
	st := c.Join(room, nil)
	expectMembers(t, c, st, a, b, c)
	for _, m := range st.Members {
		if m.ClientID == b.ConnID {
			raw, _ := json.Marshal(m.Presence)
			if !jsonEqual(raw, json.RawMessage(`{"color":"blue","cursor":{"x":1,"y":2}}`)) {
				t.Fatalf("%s: room:state shows %s's presence %s", c.Label, b.Label, raw)
			}
		}
	}
	expectJoined(t, a, c)
	expectJoined(t, b, c)
	// A key set to null is removed; A and C both hear of it.
	update(map[string]any{"color": nil}, `{"cursor":{"x":1,"y":2}}`, a, c)
}

// scenarioBroadcast: C's room:broadcast reaches A and B as room:event,
// C gets an ack and no room:event of its own.
func scenarioBroadcast(t *testing.T, nA, nB, nC *Node) {
	room := "broadcast"
	a := nA.Dial(t, label("A", nA), "alice", AllRooms)
	b := nB.Dial(t, label("B", nB), "bob", AllRooms)
	c := nC.Dial(t, label("C", nC), "carol", AllRooms)
	for _, x := range []*Client{a, b, c} {
		x.Join(room, nil)
	}
	f := c.Call(TypeBroadcast, map[string]any{"room_id": room, "event": map[string]any{"n": 1, "s": "hi"}}, soon)
	if f.Type != TypeAck {
		t.Fatalf("%s: room:broadcast answered %s", c.Label, f)
	}
	for _, x := range []*Client{a, b} {
		e := x.WaitFor(soon, "room:event from "+c.Label, About(TypeEvent, c.ConnID))
		var d struct {
			UserID string          `json:"user_id"`
			Event  json.RawMessage `json:"event"`
			RoomID string          `json:"room_id"`
		}
		_ = e.Decode(&d)
		if d.UserID != "carol" || d.RoomID != room || !jsonEqual(d.Event, json.RawMessage(`{"n":1,"s":"hi"}`)) {
			t.Fatalf("%s: room:event = %s", x.Label, e)
		}
	}
	// A broadcasts after; once C has A's event, C must not have had its own.
	if f := a.Call(TypeBroadcast, map[string]any{"room_id": room, "event": "second"}, soon); f.Type != TypeAck {
		t.Fatalf("%s: room:broadcast answered %s", a.Label, f)
	}
	c.WaitFor(soon, "room:event from "+a.Label, About(TypeEvent, a.ConnID))
	b.WaitFor(soon, "room:event from "+a.Label, About(TypeEvent, a.ConnID))
	c.Sync()
	if n := count(c, About(TypeEvent, c.ConnID)); n != 0 {
		t.Fatalf("%s received %d room:event of its own broadcast", c.Label, n)
	}
	if n := count(a, About(TypeEvent, a.ConnID)); n != 0 {
		t.Fatalf("%s received %d room:event of its own broadcast", a.Label, n)
	}
}

// scenarioStorageOrder: one writer per node, each pipelining `batches`
// batches; every client sees versions 1..N exactly once in order, every
// writer is acknowledged for each of its batches, no error at all, and
// every node serves version N with the same document.
func scenarioStorageOrder(t *testing.T, cl *Cluster, nodes []*Node, batches int) {
	room := "order"
	var ws []*Client
	for i, n := range nodes {
		w := n.Dial(t, label(fmt.Sprintf("W%d", i+1), n), fmt.Sprintf("writer%d", i+1), AllRooms)
		if st := w.Join(room, nil); st.Storage.Version != 0 {
			t.Fatalf("%s joined at version %d, want 0", w.Label, st.Storage.Version)
		}
		ws = append(ws, w)
	}
	total := int64(batches * len(ws))
	key := func(w *Client, i int) string { return fmt.Sprintf("k%s_%d", strings.ReplaceAll(w.Label, "@", "_"), i) }
	ops := func(w *Client, i int) string {
		return fmt.Sprintf(`[{"op":"add","path":"/%s","value":%d}]`, key(w, i), i)
	}
	reqID := func(w *Client, i int) string { return fmt.Sprintf("%s-b%d", w.Label, i) }

	// Pipelined: all writers send everything at once, replies come later.
	start := time.Now()
	var wg sync.WaitGroup
	sendErr := make([]error, len(ws))
	for wi, w := range ws {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 1; i <= batches; i++ {
				if err := w.RequestID(TypeUpdateStorage, reqID(w, i), map[string]any{"room_id": room, "ops": json.RawMessage(ops(w, i))}); err != nil {
					sendErr[wi] = err
					return
				}
			}
		}()
	}
	wg.Wait()
	for i, err := range sendErr {
		if err != nil {
			t.Fatalf("%s: send: %v", ws[i].Label, err)
		}
	}
	// Every batch gets exactly one reply.
	for _, w := range ws {
		prefix := w.Label + "-b"
		if err := w.WaitUntilE(60*time.Second, fmt.Sprintf("%d replies", batches), func(fs []Frame) bool {
			n := 0
			for _, f := range fs {
				if strings.HasPrefix(f.ID, prefix) {
					n++
				}
			}
			return n >= batches
		}); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("%d batches from %d writers answered in %v", total, len(ws), time.Since(start).Round(time.Millisecond))
	// No error of any kind, `internal` above all.
	var problems []string
	for _, w := range ws {
		codes := map[string]int{}
		first := ""
		for _, f := range w.Frames() {
			if f.Type == TypeError {
				codes[f.ErrorCode()]++
				if first == "" {
					first = f.String()
				}
			}
		}
		if len(codes) > 0 {
			problems = append(problems, fmt.Sprintf("%s got errors %v (first: %s)", w.Label, codes, first))
		}
	}
	if len(problems) > 0 {
		t.Fatalf("batches refused (PROTOCOL §9: no `internal` from contention):\n  %s", strings.Join(problems, "\n  "))
	}
	// Each acknowledgement is the writer's own storage_updated, in send
	// order, with its own ops.
	for _, w := range ws {
		last := int64(0)
		for i := 1; i <= batches; i++ {
			f := w.WaitFor(soon, "ack of "+reqID(w, i), func(f Frame) bool { return f.ID == reqID(w, i) })
			var u StorageUpdate
			_ = f.Decode(&u)
			if f.Type != TypeStorage || u.ClientID != w.ConnID || !jsonEqual(u.Ops, json.RawMessage(ops(w, i))) {
				t.Fatalf("%s: reply to batch %d = %s", w.Label, i, f)
			}
			if u.Version <= last {
				t.Fatalf("%s: batch %d acknowledged at version %d after batch %d at %d", w.Label, i, u.Version, i-1, last)
			}
			last = u.Version
		}
	}
	// Every client sees 1..total, once each, in order.
	for _, w := range ws {
		if err := w.WaitUntilE(30*time.Second, fmt.Sprintf("version %d", total), func(fs []Frame) bool {
			for i := len(fs) - 1; i >= 0; i-- {
				if fs[i].Type == TypeStorage && fs[i].Version() >= total {
					return true
				}
			}
			return false
		}); err != nil {
			t.Fatal(err)
		}
		var vs []int64
		for _, f := range w.Frames() {
			if f.Type == TypeStorage {
				vs = append(vs, f.Version())
			}
		}
		if msg := checkSequence(vs, 1, total); msg != "" {
			t.Fatalf("%s: room:storage_updated versions: %s", w.Label, msg)
		}
	}
	// Every node of the cluster serves the same document at version total.
	var refDoc map[string]any
	for _, n := range cl.Nodes {
		if !n.Running() {
			continue
		}
		v, doc := n.Storage(t, room)
		if v != total || len(doc) != int(total) {
			t.Fatalf("GET storage on %s: version %d with %d keys, want %d", n.ID, v, len(doc), total)
		}
		for _, w := range ws {
			for i := 1; i <= batches; i++ {
				if got, ok := doc[key(w, i)].(float64); !ok || got != float64(i) {
					t.Fatalf("GET storage on %s: %s = %v, want %d", n.ID, key(w, i), doc[key(w, i)], i)
				}
			}
		}
		if refDoc != nil && !reflect.DeepEqual(doc, refDoc) {
			t.Fatalf("GET storage on %s differs from %s", n.ID, cl.Nodes[0].ID)
		}
		refDoc = doc
	}
}

// checkSequence says what is wrong with vs as the sequence from..to, or "".
func checkSequence(vs []int64, from, to int64) string {
	want := from
	for i, v := range vs {
		if v != want {
			lo := max(0, i-3)
			return fmt.Sprintf("at position %d got %d, want %d (…%v…; %d frames in all)", i, v, want, vs[lo:min(len(vs), i+4)], len(vs))
		}
		want++
	}
	if want != to+1 {
		return fmt.Sprintf("ended at %d, want %d (%d frames)", want-1, to, len(vs))
	}
	return ""
}

// scenarioCatchUp: a client on nW writes versions 1..5 and disconnects;
// a client on nR joins with since_version 3 and gets updates 4 and 5.
func scenarioCatchUp(t *testing.T, nW, nR *Node) {
	room := "catchup"
	w := nW.Dial(t, label("W", nW), "walt", AllRooms)
	w.Join(room, nil)
	ops := func(i int) string { return fmt.Sprintf(`[{"op":"add","path":"/v%d","value":%d}]`, i, i) }
	for i := 1; i <= 5; i++ {
		if v := w.Patch(room, ops(i)); v != int64(i) {
			t.Fatalf("%s: batch %d acknowledged at version %d", w.Label, i, v)
		}
	}
	w.Close()
	r := nR.Dial(t, label("R", nR), "walt", AllRooms)
	st := r.Join(room, map[string]any{"since_version": 3})
	var got []int64
	for _, u := range st.Storage.Updates {
		got = append(got, u.Version)
	}
	if st.Storage.Version != 5 || len(got) != 2 || got[0] != 4 || got[1] != 5 {
		t.Fatalf("%s: room:state with since_version 3: version %d, updates %v (data %s), want version 5 with updates [4 5]",
			r.Label, st.Storage.Version, got, st.Storage.Data)
	}
	for _, u := range st.Storage.Updates {
		if !jsonEqual(u.Ops, json.RawMessage(ops(int(u.Version)))) || u.ClientID != w.ConnID {
			t.Fatalf("%s: catch-up update %d = %+v, want ops %s from %s", r.Label, u.Version, u, ops(int(u.Version)), w.ConnID)
		}
	}
}

// scenarioRESTStorage: a PATCH through nR reaches clients on nA and nB;
// WebSocket writes afterwards still succeed and reach the others.
func scenarioRESTStorage(t *testing.T, nA, nB, nR *Node) {
	room := "rest"
	a := nA.Dial(t, label("A", nA), "alice", AllRooms)
	b := nB.Dial(t, label("B", nB), "bob", AllRooms)
	a.Join(room, nil)
	b.Join(room, nil)
	code, body := nR.Do(t, "PATCH", "/api/rooms/"+room+"/storage", APIKey, `[{"op":"add","path":"/title","value":"hello"}]`)
	if code != 200 || !strings.Contains(string(body), `"version":1`) {
		t.Fatalf("PATCH storage through %s: %d %s", nR.ID, code, body)
	}
	for _, x := range []*Client{a, b} {
		f := x.WaitFor(soon, "room:storage_updated for the REST PATCH through "+nR.ID, OfType(TypeStorage))
		var u StorageUpdate
		_ = f.Decode(&u)
		if u.Version != 1 || u.ClientID != "api" {
			t.Fatalf("%s: %s, want version 1 from client api", x.Label, f)
		}
	}
	if v := a.Patch(room, `[{"op":"replace","path":"/title","value":"bye"}]`); v != 2 {
		t.Fatalf("%s: WebSocket write after the REST PATCH acknowledged at version %d, want 2", a.Label, v)
	}
	b.WaitFor(soon, "version 2 from "+a.Label, func(f Frame) bool { return f.Type == TypeStorage && f.Version() == 2 })
	if v := b.Patch(room, `[{"op":"add","path":"/n","value":1}]`); v != 3 {
		t.Fatalf("%s: WebSocket write acknowledged at version %d, want 3", b.Label, v)
	}
	a.WaitFor(soon, "version 3 from "+b.Label, func(f Frame) bool { return f.Type == TypeStorage && f.Version() == 3 })
	if v, doc := nR.Storage(t, room); v != 3 || doc["title"] != "bye" || doc["n"] != float64(1) {
		t.Fatalf("GET storage on %s: version %d %v, want 3 {title: bye, n: 1}", nR.ID, v, doc)
	}
}

// scenarioPermissionChange: a REST-created room with members bob (on nM)
// and carol (on nO); bob is removed through nR: his client gets room:left
// (so does carol's), his later writes and joins are refused.
func scenarioPermissionChange(t *testing.T, nM, nO, nR *Node) {
	room := "perm"
	if code, body := nR.Do(t, "POST", "/api/rooms", APIKey, map[string]any{"id": room, "name": "Perm"}); code != 201 {
		t.Fatalf("POST /api/rooms: %d %s", code, body)
	}
	for _, u := range []string{"bob", "carol"} {
		if code, body := nO.Do(t, "POST", "/api/rooms/"+room+"/members", APIKey, map[string]any{"user_id": u}); code != 204 && code != 200 && code != 201 {
			t.Fatalf("add member %s: %d %s", u, code, body)
		}
	}
	bob := nM.Dial(t, label("bob", nM), "bob", nil) // no grant: membership only
	carol := nO.Dial(t, label("carol", nO), "carol", nil)
	bob.Join(room, nil)
	carol.Join(room, nil)
	if v := bob.Patch(room, `[{"op":"add","path":"/a","value":1}]`); v != 1 {
		t.Fatalf("%s: member write acknowledged at version %d", bob.Label, v)
	}
	if code, body := nR.Do(t, "DELETE", "/api/rooms/"+room+"/members/bob", APIKey, nil); code != 204 && code != 200 {
		t.Fatalf("DELETE member bob through %s: %d %s", nR.ID, code, body)
	}
	for _, x := range []*Client{bob, carol} {
		x.WaitFor(soon, fmt.Sprintf("room:left for %s after DELETE /api/rooms/%s/members/bob through %s", bob.Label, room, nR.ID), About(TypeLeft, bob.ConnID))
	}
	f, err := bob.PatchE(room, `[{"op":"add","path":"/b","value":2}]`, soon)
	if err != nil {
		t.Fatal(err)
	}
	if code := f.ErrorCode(); code != CodeNotFound && code != CodeForbidden {
		t.Fatalf("%s: write after removal answered %s, want error not_found or forbidden", bob.Label, f)
	}
	if _, err := bob.JoinE(room, nil); err == nil || !strings.Contains(err.Error(), CodeForbidden) {
		t.Fatalf("%s: join after removal: %v, want forbidden", bob.Label, err)
	}
	if v := carol.Patch(room, `[{"op":"add","path":"/c","value":3}]`); v != 2 {
		t.Fatalf("%s: write acknowledged at version %d, want 2", carol.Label, v)
	}
	if v, doc := nR.Storage(t, room); v != 2 || doc["b"] != nil {
		t.Fatalf("GET storage on %s: version %d %v", nR.ID, v, doc)
	}
}

// ------------------------------------------------------------- writers --

// writer sends batches one after another (one in flight) until stopped,
// recording what was acknowledged and what was refused.
type writer struct {
	room  string
	label string
	c     *Client

	mu    sync.Mutex
	acks  []ack
	errs  []werr
	stop  chan struct{}
	done  chan struct{}
	index int
}

type ack struct {
	key     string
	value   int
	version int64
	sent    time.Time
	at      time.Time
}

type werr struct {
	code, msg string
	sent, at  time.Time
}

func startWriter(room, lbl string, c *Client) *writer {
	w := &writer{room: room, label: lbl, c: c, stop: make(chan struct{}), done: make(chan struct{})}
	go w.run()
	return w
}

func (w *writer) run() {
	defer close(w.done)
	for {
		select {
		case <-w.stop:
			return
		default:
		}
		w.index++
		i := w.index
		key := fmt.Sprintf("%s_%d", w.label, i)
		sent := time.Now()
		f, err := w.c.PatchE(w.room, fmt.Sprintf(`[{"op":"add","path":"/%s","value":%d}]`, key, i), 10*time.Second)
		w.mu.Lock()
		switch {
		case err != nil:
			w.errs = append(w.errs, werr{code: "no-reply", msg: err.Error(), sent: sent, at: time.Now()})
		case f.Type == TypeStorage:
			w.acks = append(w.acks, ack{key: key, value: i, version: f.Version(), sent: sent, at: f.At})
		default:
			w.errs = append(w.errs, werr{code: f.ErrorCode(), msg: f.String(), sent: sent, at: f.At})
		}
		failed := err != nil || f.Type != TypeStorage
		w.mu.Unlock()
		select {
		case <-w.c.Closed():
			return // the node went away: the test reconnects elsewhere
		default:
		}
		if failed { // a client backs off before retrying
			select {
			case <-w.stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
}

// halt stops the writer and waits for its last request to be answered.
func (w *writer) halt() {
	select {
	case <-w.stop:
	default:
		close(w.stop)
	}
	<-w.done
}

func (w *writer) snapshot() ([]ack, []werr) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]ack(nil), w.acks...), append([]werr(nil), w.errs...)
}

// acksSince counts acknowledgements of batches sent after t.
func (w *writer) acksSince(t time.Time) int {
	acks, _ := w.snapshot()
	n := 0
	for _, a := range acks {
		if a.sent.After(t) {
			n++
		}
	}
	return n
}

func (w *writer) maxAck() int64 {
	acks, _ := w.snapshot()
	var v int64
	for _, a := range acks {
		v = max(v, a.version)
	}
	return v
}

// waitWriters waits until cond holds for every writer, polling their
// records (they change on every reply); abort (may be nil) ends the wait
// at once with the problem it names.
func waitWriters(t *testing.T, within time.Duration, what string, ws []*writer, cond func(*writer) bool, abort func(*writer) string) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		var behind []string
		for _, w := range ws {
			if abort != nil {
				if msg := abort(w); msg != "" {
					t.Fatalf("writers: before %s: %s: %s", what, w.label, msg)
				}
			}
			if !cond(w) {
				acks, errs := w.snapshot()
				behind = append(behind, fmt.Sprintf("%s (%d acks, %d errors%s)", w.label, len(acks), len(errs), lastErr(errs)))
			}
		}
		if len(behind) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("writers: no %s within %v: %s", what, within, strings.Join(behind, "; "))
		}
		time.Sleep(20 * time.Millisecond) // polling interval
	}
}

func lastErr(errs []werr) string {
	if len(errs) == 0 {
		return ""
	}
	return ", last: " + errs[len(errs)-1].msg
}

func summarizeErrs(errs []werr) string {
	codes := map[string]int{}
	for _, e := range errs {
		codes[e.code]++
	}
	keys := make([]string, 0, len(codes))
	for k := range codes {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s×%d", k, codes[k]))
	}
	return strings.Join(parts, " ")
}

// checkAcked requires every acknowledged batch in doc.
func checkAcked(t *testing.T, where string, doc map[string]any, ws ...*writer) {
	t.Helper()
	var lost []string
	n := 0
	for _, w := range ws {
		acks, _ := w.snapshot()
		for _, a := range acks {
			n++
			if got, ok := doc[a.key].(float64); !ok || got != float64(a.value) {
				lost = append(lost, fmt.Sprintf("%s (acked at v%d)", a.key, a.version))
			}
		}
	}
	if len(lost) > 0 {
		if len(lost) > 10 {
			lost = append(lost[:10], fmt.Sprintf("… %d more", len(lost)-10))
		}
		t.Errorf("%s: %d of %d acknowledged batches missing: %v", where, len(lost), n, lost)
	}
}

// checkVersionStream checks what one client was told about versions:
// a room:storage_updated follows the previous version by exactly one, a
// room:state never goes back, nothing is older than what the client was
// acknowledged before. It returns the problems found.
func checkVersionStream(c *Client) []string {
	var problems []string
	known := int64(-1)
	acked := int64(0)
	for _, f := range c.Frames() {
		switch f.Type {
		case TypeState:
			v := f.Version()
			if v < known || v < acked {
				problems = append(problems, fmt.Sprintf("#%d room:state at version %d after version %d (acknowledged %d)", f.Seq, v, known, acked))
			}
			known = max(known, v)
		case TypeStorage:
			v := f.Version()
			switch {
			case known < 0:
				problems = append(problems, fmt.Sprintf("#%d room:storage_updated %d before any room:state", f.Seq, v))
			case v < acked:
				problems = append(problems, fmt.Sprintf("#%d version %d after being acknowledged %d", f.Seq, v, acked))
			case v != known+1:
				problems = append(problems, fmt.Sprintf("#%d version %d after %d (gap or repeat)", f.Seq, v, known))
			}
			known = max(known, v)
			if f.ID != "" {
				acked = max(acked, v)
			}
		}
		if len(problems) >= 5 {
			problems = append(problems, "…")
			break
		}
	}
	return problems
}

// ------------------------------------------------------------ failover --

// scenarioFailover: clients A, B, C on placement's nodes join one room in
// that order (the first joiner's node owns the room in the design), each
// writing continuously. Once every writer has 20 acknowledgements (and no
// refusal), the victim node is killed (kill -9) or drained (SIGTERM, then
// its clients must get close 1001). Clients of the victim reconnect to
// rescue with since_version = the last version they saw and are never told
// a version older than one they were acknowledged; the others see them
// leave within 15 s and keep writing (after a drain, no `internal` beyond
// drainRetryWindow); in the end every running node serves the same
// document holding every acknowledged batch, and every client converges
// to its version.
type failover struct {
	placement []*Node // of A, B, C
	victim    *Node   // killed or drained
	rescue    *Node   // where the victim's clients reconnect
	drain     bool    // SIGTERM instead of kill -9
	settle    bool    // after kill -9, wait for the victim's PostgreSQL sessions to end
}

func scenarioFailover(t *testing.T, c *Cluster, o failover) {
	placement, victim, rescue, drain := o.placement, o.victim, o.rescue, o.drain
	room, fault := "failover", "kill -9"
	if drain {
		room, fault = "drain", "SIGTERM"
	}
	names := []string{"A", "B", "C"}
	var clients []*Client
	var ws []*writer
	for i, n := range placement {
		cl := n.Dial(t, label(names[i], n), strings.ToLower(names[i])+"-user", AllRooms)
		cl.Join(room, nil)
		clients = append(clients, cl)
	}
	for _, cl := range clients {
		ws = append(ws, startWriter(room, writerLabel(cl), cl))
	}
	t.Cleanup(func() {
		for _, w := range ws {
			w.halt()
		}
	})
	waitWriters(t, 30*time.Second, "20 acknowledgements each before the "+fault, ws, func(w *writer) bool {
		acks, _ := w.snapshot()
		return len(acks) >= 20
	}, func(w *writer) string {
		if _, errs := w.snapshot(); len(errs) > 0 {
			return fmt.Sprintf("refused before any fault (%s): %s", summarizeErrs(errs), errs[0].msg)
		}
		return ""
	})

	faultAt := time.Now()
	if drain {
		victim.Term(t)
	} else {
		victim.Kill()
	}
	var victims, survivors []int
	for i, n := range placement {
		if n == victim {
			victims = append(victims, i)
		} else {
			survivors = append(survivors, i)
		}
	}
	for _, i := range victims {
		code, err := clients[i].WaitClosed(soon)
		if err != nil {
			t.Fatalf("after %s of %s: %v", fault, victim.ID, err)
		}
		if drain && code != CloseGoingAway {
			t.Errorf("%s on SIGTERM of %s: close code %d, want 1001", clients[i].Label, victim.ID, code)
		}
		ws[i].halt()
	}
	if code, ok := victim.WaitExit(20 * time.Second); !ok || (drain && code != 0) || (!drain && code != -1) {
		t.Errorf("%s after %s: exit code %d, exited %v (%s)", victim.ID, fault, code, ok, victim.ExitStatus())
	}
	if o.settle {
		if err := victim.WaitPostgresSessionsGone(soon); err != nil {
			t.Fatal(err)
		}
	}

	// The victim's clients reconnect elsewhere from the last version seen.
	var rescued []*Client
	for _, i := range victims {
		old := clients[i]
		since, acked := old.LastVersion(), ws[i].maxAck()
		nc := rescue.Dial(t, names[i]+"'@"+rescue.ID, old.UserID, AllRooms)
		st, err := nc.JoinE(room, map[string]any{"since_version": since})
		if err != nil {
			t.Fatal(err)
		}
		if st.Storage.Version < acked {
			t.Errorf("%s: rejoined at version %d, but %s was acknowledged version %d by %s before the %s",
				nc.Label, st.Storage.Version, old.Label, acked, victim.ID, fault)
		}
		if len(st.Storage.Updates) > 0 {
			var vs []int64
			for _, u := range st.Storage.Updates {
				vs = append(vs, u.Version)
			}
			if msg := checkSequence(vs, since+1, st.Storage.Version); msg != "" {
				t.Errorf("%s: catch-up from version %d: %s", nc.Label, since, msg)
			}
		}
		rescued = append(rescued, nc)
		ws = append(ws, startWriter(room, writerLabel(nc), nc))
	}

	// The others see the victim's clients leave within 15 s.
	var live []*Client
	var active []*writer
	for _, si := range survivors {
		live = append(live, clients[si])
		active = append(active, ws[si])
		for _, vi := range victims {
			f, err := clients[si].WaitForE(time.Until(faultAt.Add(deadAfter)),
				fmt.Sprintf("room:left for %s (%s of %s)", clients[vi].Label, fault, victim.ID), About(TypeLeft, clients[vi].ConnID))
			if err != nil {
				t.Error(err)
				continue
			}
			t.Logf("%s saw %s leave %v after the %s", clients[si].Label, clients[vi].Label, f.At.Sub(faultAt).Round(time.Millisecond), fault)
		}
	}
	live = append(live, rescued...)
	active = append(active, ws[len(placement):]...)

	// Writes go on everywhere.
	waitWriters(t, 30*time.Second, "10 acknowledgements for batches sent after the "+fault, active, func(w *writer) bool {
		return w.acksSince(faultAt) >= 10
	}, nil)
	for _, w := range active {
		w.halt()
		acks, errs := w.snapshot()
		var worst time.Duration // the longest wait for an acknowledgement after the fault
		prev := faultAt
		for _, a := range acks {
			if a.at.After(faultAt) {
				worst = max(worst, a.at.Sub(prev))
				prev = a.at
			}
		}
		t.Logf("%s: failover time (longest wait for an acknowledgement after the %s) %v; refusals: %s",
			w.label, fault, worst.Round(time.Millisecond), summarizeErrs(errs))
		if !drain {
			continue
		}
		for _, e := range errs {
			if e.code == CodeInternal && e.at.After(faultAt.Add(drainRetryWindow)) {
				t.Errorf("%s: `internal` %v after the SIGTERM (retry window %v): %s", w.label, e.at.Sub(faultAt).Round(time.Millisecond), drainRetryWindow, e.msg)
				break
			}
			if e.code != CodeInternal {
				t.Errorf("%s: refused %v after the SIGTERM: %s", w.label, e.at.Sub(faultAt).Round(time.Millisecond), e.msg)
				break
			}
		}
	}
	converge(t, c, room, ws, live, append(clients, rescued...))
}

func writerLabel(c *Client) string { return strings.NewReplacer("@", "_", "'", "2").Replace(c.Label) }

// converge stops the writers, then requires the same version and document
// on every running node, every acknowledged batch in it, each live client
// told that version, and a sound version stream for every client.
func converge(t *testing.T, c *Cluster, room string, ws []*writer, live []*Client, all []*Client) {
	t.Helper()
	for _, w := range ws {
		w.halt()
	}
	var refV int64 = -1
	var refDoc map[string]any
	var ref string
	for _, n := range c.Nodes {
		if !n.Running() {
			continue
		}
		v, doc := n.Storage(t, room)
		if refV >= 0 && (v != refV || !reflect.DeepEqual(doc, refDoc)) {
			t.Fatalf("nodes disagree: %s serves version %d (%d keys), %s version %d (%d keys)", ref, refV, len(refDoc), n.ID, v, len(doc))
		}
		refV, refDoc, ref = v, doc, n.ID
		checkAcked(t, "GET storage on "+n.ID, doc, ws...)
	}
	t.Logf("final: version %d, %d keys", refV, len(refDoc))
	for _, cl := range live {
		if err := cl.WaitUntilE(soon, fmt.Sprintf("version %d", refV), func(fs []Frame) bool {
			for i := len(fs) - 1; i >= 0; i-- {
				if v := fs[i].Version(); v >= 0 {
					return v >= refV
				}
			}
			return false
		}); err != nil {
			t.Error(err)
		}
		if v := cl.LastVersion(); v > refV {
			t.Errorf("%s was told version %d, beyond the stored %d", cl.Label, v, refV)
		}
	}
	for _, cl := range all {
		if p := checkVersionStream(cl); len(p) > 0 {
			t.Errorf("%s: version stream:\n  %s", cl.Label, strings.Join(p, "\n  "))
		}
	}
}
