package client

import (
	"errors"
	"fmt"
	"testing"

	"github.com/ringmesh/ringmesh/node/localapi"
)

func TestRejoinable(t *testing.T) {
	wrap := func(code string) error { return fmt.Errorf("all-reduce: %w", &APIError{Code: code}) }
	for _, code := range []string{localapi.CodeWaiting, localapi.CodeExcluded, localapi.CodeNotMember} {
		if !Rejoinable(wrap(code)) {
			t.Errorf("%s: not rejoinable", code)
		}
	}
	for _, err := range []error{nil, errors.New("connection reset"), wrap(localapi.CodeBadRequest), wrap(localapi.CodeStepMismatch), wrap(localapi.CodeBusy)} {
		if Rejoinable(err) {
			t.Errorf("%v: rejoinable", err)
		}
	}
}
