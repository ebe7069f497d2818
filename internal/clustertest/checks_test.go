package clustertest

import (
	"encoding/json"
	"fmt"
	"testing"
)

// The checkers the cluster tests rely on, against made-up logs (no
// cluster needed): they must flag what they are meant to flag.
func TestCheckers(t *testing.T) {
	if msg := checkSequence([]int64{1, 2, 3}, 1, 3); msg != "" {
		t.Fatalf("good sequence flagged: %s", msg)
	}
	for _, bad := range [][]int64{{1, 3}, {1, 2, 2, 3}, {2, 1, 3}, {1, 2}} {
		if checkSequence(bad, 1, 3) == "" {
			t.Fatalf("%v not flagged", bad)
		}
	}
	frame := func(typ, id string, v int64) Frame {
		if typ == TypeState {
			return Frame{Type: typ, ID: id, Data: json.RawMessage(fmt.Sprintf(`{"storage":{"version":%d}}`, v))}
		}
		return Frame{Type: typ, ID: id, Data: json.RawMessage(fmt.Sprintf(`{"version":%d}`, v))}
	}
	client := func(fs ...Frame) *Client {
		for i := range fs {
			fs[i].Seq = i
		}
		return &Client{Label: "X", frames: fs}
	}
	good := client(frame(TypeState, "j", 3), frame(TypeStorage, "", 4), frame(TypeStorage, "w1", 5), frame(TypeState, "j2", 9), frame(TypeStorage, "", 10))
	if p := checkVersionStream(good); len(p) > 0 {
		t.Fatalf("good stream flagged: %v", p)
	}
	bad := map[string]*Client{
		"gap":                  client(frame(TypeState, "j", 0), frame(TypeStorage, "", 2)),
		"repeat":               client(frame(TypeState, "j", 0), frame(TypeStorage, "", 1), frame(TypeStorage, "", 1)),
		"state goes back":      client(frame(TypeState, "j", 5), frame(TypeState, "j2", 4)),
		"older than acked":     client(frame(TypeState, "j", 0), frame(TypeStorage, "w", 1), frame(TypeState, "j2", 0)),
		"update before state":  client(frame(TypeStorage, "", 1)),
		"older after catch-up": client(frame(TypeState, "j", 7), frame(TypeStorage, "", 6)),
	}
	for name, c := range bad {
		if p := checkVersionStream(c); len(p) == 0 {
			t.Errorf("%s: not flagged", name)
		}
	}
}
