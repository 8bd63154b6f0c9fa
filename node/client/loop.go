package client

import (
	"context"
	"errors"
	"slices"
)

// Loop is the rejoin loop of a Go trainer, written once: it calls Step until
// Step reports done, and when Step fails with an answer that joining again
// fixes (Rejoinable, or one of RejoinCodes) it calls Rejoin and goes on.
// Any other error, or a failed Rejoin, ends the loop with that error. The
// first join is the caller's: Run starts with a Step.
type Loop struct {
	// Step runs one round (compute, all-reduce, apply) and reports whether
	// the trainer is done.
	Step func(ctx context.Context) (done bool, err error)
	// Rejoin joins the mesh again after Step failed with cause.
	Rejoin func(ctx context.Context, cause *APIError) error
	// RejoinCodes are local API codes that also mean "join again" for this
	// trainer (for example localapi.CodeStepMismatch for a trainer that
	// takes the mesh's state from a checkpoint on join).
	RejoinCodes []string
}

// Run runs the loop until Step is done, an error ends it or ctx ends.
func (l Loop) Run(ctx context.Context) error {
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		done, err := l.Step(ctx)
		var ae *APIError
		switch {
		case err == nil:
			if done {
				return nil
			}
		case errors.As(err, &ae) && (Rejoinable(err) || slices.Contains(l.RejoinCodes, ae.Code)):
			if err := l.Rejoin(ctx, ae); err != nil {
				return err
			}
		default:
			return err
		}
	}
}
