package main

import (
	"io"

	benchpkg "github.com/parleyhq/parley/internal/bench"
)

func bench(args []string, stdout, stderr io.Writer) int {
	return benchpkg.Main(args, stdout, stderr)
}
