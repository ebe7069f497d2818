package store

import "errors"

// ErrSchemaTooNew is returned (wrapped) by the implementations' Open when the
// database was migrated by a newer Parley than this binary: its schema has
// versions this binary does not know, so it refuses to touch it.
var ErrSchemaTooNew = errors.New("store: database schema is newer than this binary")
