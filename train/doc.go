// Package train is a small pure-Go trainer (an MLP on a deterministic
// synthetic task) used by `ringmesh demo` and the tests.
package train
