package client

import (
	"context"
	"errors"
	"testing"

	"github.com/ringmesh/ringmesh/node/localapi"
)

// TestLoopRejoinsOnlyOnRejoinableAnswers runs scripted step answers through
// Loop: rejoinable codes and RejoinCodes join again and go on, anything else
// (or a failed rejoin) ends the loop with that error.
func TestLoopRejoinsOnlyOnRejoinableAnswers(t *testing.T) {
	apiErr := func(code string) error { return &APIError{Op: localapi.OpAllReduce, Code: code} }
	boom := errors.New("boom")
	tests := []struct {
		name      string
		answers   []error // one per step; after the last, the step is done
		extra     []string
		rejoinErr error
		wantErr   error
		wantJoins []string
		wantSteps int
	}{
		{"done", []error{nil, nil}, nil, nil, nil, nil, 3},
		{"rejoinable codes", []error{apiErr(localapi.CodeExcluded), nil, apiErr(localapi.CodeWaiting), apiErr(localapi.CodeNotMember)}, nil, nil, nil,
			[]string{localapi.CodeExcluded, localapi.CodeWaiting, localapi.CodeNotMember}, 5},
		{"step mismatch ends by default", []error{apiErr(localapi.CodeStepMismatch), nil}, nil, nil, apiErr(localapi.CodeStepMismatch), nil, 1},
		{"step mismatch rejoins when asked", []error{apiErr(localapi.CodeStepMismatch)}, []string{localapi.CodeStepMismatch}, nil, nil,
			[]string{localapi.CodeStepMismatch}, 2},
		{"other error ends", []error{nil, boom, nil}, nil, nil, boom, nil, 2},
		{"failed rejoin ends", []error{apiErr(localapi.CodeExcluded), nil}, nil, boom, boom, []string{localapi.CodeExcluded}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var joins []string
			steps := 0
			err := Loop{
				Step: func(context.Context) (bool, error) {
					steps++
					if steps > len(tt.answers) {
						return true, nil
					}
					return false, tt.answers[steps-1]
				},
				Rejoin: func(_ context.Context, cause *APIError) error {
					joins = append(joins, cause.Code)
					return tt.rejoinErr
				},
				RejoinCodes: tt.extra,
			}.Run(context.Background())
			if tt.wantErr == nil && err != nil || tt.wantErr != nil && (err == nil || err.Error() != tt.wantErr.Error()) {
				t.Errorf("err %v, want %v", err, tt.wantErr)
			}
			if steps != tt.wantSteps || len(joins) != len(tt.wantJoins) {
				t.Fatalf("%d steps, joins %v; want %d steps, joins %v", steps, joins, tt.wantSteps, tt.wantJoins)
			}
			for i := range joins {
				if joins[i] != tt.wantJoins[i] {
					t.Errorf("join %d: cause %s, want %s", i, joins[i], tt.wantJoins[i])
				}
			}
		})
	}
}

// TestLoopStopsWithContext: a cancelled context ends the loop before the
// next step.
func TestLoopStopsWithContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	steps := 0
	err := Loop{Step: func(context.Context) (bool, error) { steps++; cancel(); return false, nil }}.Run(ctx)
	if !errors.Is(err, context.Canceled) || steps != 1 {
		t.Errorf("err %v after %d steps, want context.Canceled after 1", err, steps)
	}
}
