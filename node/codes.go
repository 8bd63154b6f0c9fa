package node

import (
	"context"
	"errors"

	"github.com/ringmesh/ringmesh/node/localapi"
	"github.com/ringmesh/ringmesh/node/roundrun"
	"github.com/ringmesh/ringmesh/node/rounds"
)

// The local API's error codes of failed round calls are decided here and
// nowhere else: the round driver's errors (node/roundrun) name the
// machine's reasons or their own kind, and the API answers with codes.

// reasonCodes is the local API error code of each reason the rounds
// machine fails a trainer's call for.
var reasonCodes = map[rounds.Reason]string{
	rounds.ReasonNotMember:        localapi.CodeNotMember,
	rounds.ReasonWaiting:          localapi.CodeWaiting,
	rounds.ReasonExcluded:         localapi.CodeExcluded,
	rounds.ReasonStepMismatch:     localapi.CodeStepMismatch,
	rounds.ReasonBusy:             localapi.CodeBusy,
	rounds.ReasonSettingsMismatch: localapi.CodeSettingsMismatch,
}

// reasonCode returns r's local API error code; internal for reason zero
// (a driver failure of its own) and for a reason without one
// (TestReasonCodes keeps that from happening).
func reasonCode(r rounds.Reason) string {
	if c, ok := reasonCodes[r]; ok {
		return c
	}
	return localapi.CodeInternal
}

// errorResponse answers a failed round call: a machine's reason with its
// code; a driver failure of its own (reason zero) as internal; a join
// that timed out before admission as timeout; a call the stopping node
// did not answer as shutting down.
func errorResponse(err error) localapi.Response {
	var re *roundrun.Error
	var na *roundrun.NotAdmittedError
	switch {
	case errors.As(err, &re):
		return localapi.Response{Code: reasonCode(re.Reason), Error: re.Msg, NextStep: re.NextStep}
	case errors.As(err, &na):
		return apiErr(localapi.CodeTimeout, "%s", na.Error())
	case errors.Is(err, roundrun.ErrStopped), errors.Is(err, context.Canceled):
		return apiErr(localapi.CodeShuttingDown, "node shutting down")
	}
	return apiErr(localapi.CodeInternal, "%v", err)
}
