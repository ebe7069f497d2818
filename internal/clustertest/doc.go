// Package clustertest is the black-box cluster suite for issue 10 ("one room
// is one room on any number of nodes", PROTOCOL.md §3 and §9).
//
// Each test starts real `parley serve` processes (the binary is built once
// per `go test` run, in TestMain) on free 127.0.0.1 ports, in cluster mode:
// a private NATS server with JetStream embedded in the test process
// (restartable on the same port), and PostgreSQL from
// PARLEY_TEST_POSTGRES_URL with a fresh schema per test (search_path in the
// URL, dropped at the end). Clients are real WebSocket connections
// (gorilla/websocket) and REST calls over HTTP; nothing inside the server is
// reached into.
//
// Run it:
//
//	export PARLEY_TEST_POSTGRES_URL='postgres://postgres@127.0.0.1:5432/test?sslmode=disable'
//	go test -count=1 ./internal/clustertest/                     # whole suite
//	go test -count=1 -run TestClusterSingleNodeSanity -v ./internal/clustertest/
//
// Without PARLEY_TEST_POSTGRES_URL every test skips with a message.
// PARLEY_CLUSTERTEST_BINARY=/path/to/parley tests that binary instead of
// building ./cmd/parley. Each node's stdout and stderr go to a file in the
// test's temp dir; on failure the last lines of every node's log are logged.
//
// Until rooms are distributed (issue 10), only TestClusterSingleNodeSanity,
// TestClusterCatchUp, TestClusterHealthzPostgresDown and TestCheckers pass;
// the others fail with a message naming what a client did not get.
//
// Every wait has a deadline and no sleep is used as synchronisation: waits
// are on frames (by request id or by predicate), on process exit, or on
// polling /healthz. TestClusterSingleNodeSanity runs the same scenarios as
// the cluster tests with every client on one node; it passes on a binary
// without cross-node rooms and so checks the harness and the assertions.
package clustertest
