// Command ringmesh is the one binary of a ringmesh host: node, status, bench,
// demo and checkpoint subcommands. It only turns flags into package configs.
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "ringmesh: not yet")
	os.Exit(2)
}
