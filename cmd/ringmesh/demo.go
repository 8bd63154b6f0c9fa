package main

import (
	"fmt"
	"io"
)

func cmdDemo(args []string, stdout, stderr io.Writer) int {
	fmt.Fprintln(stderr, "ringmesh demo: not yet")
	return 1
}
