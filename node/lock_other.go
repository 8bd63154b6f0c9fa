//go:build !(linux || darwin || freebsd || netbsd || openbsd || dragonfly)

package node

import "os"

// flock: advisory locking is implemented on Unix systems only.
func flock(*os.File) (held bool, err error) { return false, nil }
