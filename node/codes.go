package node

import (
	"github.com/ringmesh/ringmesh/node/localapi"
	"github.com/ringmesh/ringmesh/node/rounds"
)

// reasonCodes is the local API error code of each reason the rounds
// machine fails a trainer's call for: the one place the two meet.
var reasonCodes = map[rounds.Reason]string{
	rounds.ReasonNotMember:        localapi.CodeNotMember,
	rounds.ReasonWaiting:          localapi.CodeWaiting,
	rounds.ReasonExcluded:         localapi.CodeExcluded,
	rounds.ReasonStepMismatch:     localapi.CodeStepMismatch,
	rounds.ReasonBusy:             localapi.CodeBusy,
	rounds.ReasonSettingsMismatch: localapi.CodeSettingsMismatch,
}

// reasonCode returns r's local API error code; internal for a reason
// without one (TestReasonCodes keeps that from happening).
func reasonCode(r rounds.Reason) string {
	if c, ok := reasonCodes[r]; ok {
		return c
	}
	return localapi.CodeInternal
}
