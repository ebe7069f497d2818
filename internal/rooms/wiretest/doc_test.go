// Package wiretest_test tests internal/rooms over the wire: real WebSocket
// clients against a real server (servertest) with a real SQLite file. It is
// a directory of its own so that the rooms package's fuzz targets build
// without the whole server.
package wiretest_test
