package main

import (
	"fmt"
	"io"
)

func cmdBench(args []string, stdout, stderr io.Writer) int {
	fmt.Fprintln(stderr, "ringmesh bench: not yet")
	return 1
}
