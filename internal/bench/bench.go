// Package bench is the load tool behind 'parley bench'.
package bench

import (
	"fmt"
	"io"
)

// Main runs the bench command line and returns the exit code.
func Main(args []string, stdout, stderr io.Writer) int {
	fmt.Fprintln(stderr, "parley bench: not available yet")
	return 2
}
