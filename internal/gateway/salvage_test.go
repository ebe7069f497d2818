package gateway_test

import (
	"strings"
	"testing"
)

// A malformed message whose id can be read gets its error with that id,
// over a real connection: a data value too deep for encoding/json and
// trailing garbage (before: the error carried no id).
func TestMalformedErrorKeepsID(t *testing.T) {
	e := start(t, defaultOpts())
	c := e.dial("u1")
	c.send(`{"type":"test:echo","id":"n1","data":{"room_id":"r","event":` + strings.Repeat("[", 20000) + strings.Repeat("]", 20000) + `}}`)
	c.expectError("bad_request", "n1")
	c.send(`{"id":"j2","type":"ping" xx`)
	c.expectError("bad_request", "j2")
	c.send(`{"type":"ping" xx, "id":"late"}`)
	c.expectError("bad_request", "")
	c.send(`{"type":"ping","id":"p"}`)
	c.expect("pong")
}
