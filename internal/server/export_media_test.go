package server

import (
	"log/slog"

	"github.com/parleyhq/parley/internal/media"
)

// SetNewSFUForTest replaces media.New in wireMedia until restore is called
// (server tests do not run in parallel).
func SetNewSFUForTest(f func(media.Config, media.Sender, media.Events, *slog.Logger) (*media.SFU, error)) (restore func()) {
	old := newSFU
	newSFU = f
	return func() { newSFU = old }
}
