package node

import "sync/atomic"

// metrics counts what status reports about rounds.
type metrics struct {
	rounds  atomic.Uint64 // rounds applied
	retries atomic.Uint64 // extra attempts
}

func (m *metrics) roundApplied(attempts int) {
	m.rounds.Add(1)
	m.retries.Add(uint64(attempts - 1))
}
