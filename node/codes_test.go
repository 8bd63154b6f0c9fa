package node

import (
	"context"
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"unicode"

	"github.com/ringmesh/ringmesh/node/localapi"
	"github.com/ringmesh/ringmesh/node/roundrun"
	"github.com/ringmesh/ringmesh/node/rounds"
)

// goCodes returns the local API error codes that node/localapi declares
// (its Code* string constants), by name without the prefix.
func goCodes(t *testing.T) map[string]string {
	files, err := filepath.Glob("localapi/*.go")
	if err != nil {
		t.Fatal(err)
	}
	codes := map[string]string{}
	fset := token.NewFileSet()
	for _, path := range files {
		if strings.HasSuffix(path, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, path, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range f.Decls {
			g, ok := d.(*ast.GenDecl)
			if !ok || g.Tok != token.CONST {
				continue
			}
			for _, spec := range g.Specs {
				v := spec.(*ast.ValueSpec)
				for i, name := range v.Names {
					if !strings.HasPrefix(name.Name, "Code") || i >= len(v.Values) {
						continue
					}
					lit, ok := v.Values[i].(*ast.BasicLit)
					if !ok || lit.Kind != token.STRING {
						continue
					}
					s, err := strconv.Unquote(lit.Value)
					if err != nil {
						t.Fatal(err)
					}
					codes[strings.TrimPrefix(name.Name, "Code")] = s
				}
			}
		}
	}
	if len(codes) == 0 {
		t.Fatal("no Code* constants in node/localapi")
	}
	return codes
}

// pythonCodes returns the error codes of the Python client's
// protocol.py (its CODE_* constants), by name without the prefix.
func pythonCodes(t *testing.T) map[string]string {
	b, err := os.ReadFile("../python/ringmesh/protocol.py")
	if err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile(`(?m)^CODE_([A-Z0-9_]+)\s*=\s*(?:"([^"]*)"|'([^']*)')\s*(?:#.*)?$`)
	codes := map[string]string{}
	for _, m := range re.FindAllStringSubmatch(string(b), -1) {
		codes[m[1]] = m[2] + m[3]
	}
	if len(codes) == 0 {
		t.Fatal("no CODE_* constants in python/ringmesh/protocol.py")
	}
	return codes
}

// upperSnake turns a Go name into a Python constant's: NotMember ->
// NOT_MEMBER.
func upperSnake(s string) string {
	var b strings.Builder
	for i, r := range s {
		if i > 0 && unicode.IsUpper(r) {
			b.WriteByte('_')
		}
		b.WriteRune(unicode.ToUpper(r))
	}
	return b.String()
}

// TestPythonCodes: the Python client knows every local API error code the
// node answers with, by the same name, and no other.
func TestPythonCodes(t *testing.T) {
	goc, pyc := goCodes(t), pythonCodes(t)
	for name, code := range goc {
		py, ok := pyc[upperSnake(name)]
		switch {
		case !ok:
			t.Errorf("localapi.Code%s = %q: protocol.py has no CODE_%s", name, code, upperSnake(name))
		case py != code:
			t.Errorf("CODE_%s = %q in protocol.py, localapi.Code%s = %q", upperSnake(name), py, name, code)
		}
	}
	want := map[string]bool{}
	for name := range goc {
		want[upperSnake(name)] = true
	}
	for name, code := range pyc {
		if !want[name] {
			t.Errorf("protocol.py's CODE_%s = %q: node/localapi has no such code", name, code)
		}
	}
}

// TestReasonCodes: every reason the rounds machine fails a call for has a
// local API error code, and the node answers it.
func TestReasonCodes(t *testing.T) {
	known := map[string]bool{}
	for _, c := range goCodes(t) {
		known[c] = true
	}
	for i := range 256 {
		r := rounds.Reason(i)
		code, mapped := reasonCodes[r]
		switch {
		case r.String() == "unknown" && mapped:
			t.Errorf("reasonCodes maps %d, not a reason, to %q", i, code)
		case r.String() != "unknown" && !mapped:
			t.Errorf("reason %d (%s) has no local API code in reasonCodes", i, r)
		case mapped && !known[code]:
			t.Errorf("reason %s maps to %q, not a code of node/localapi", r, code)
		}
	}
}

// TestErrorResponse: the local API's answer to each kind of failed round
// call keeps the driver's message and next step under the code the API
// gives it.
func TestErrorResponse(t *testing.T) {
	for _, c := range []struct {
		name string
		err  error
		want localapi.Response
	}{
		{"a machine's reason", &roundrun.Error{Reason: rounds.ReasonStepMismatch, Msg: "the mesh expects step 4, got 3", NextStep: 4},
			localapi.Response{Code: localapi.CodeStepMismatch, Error: "the mesh expects step 4, got 3", NextStep: 4}},
		{"the driver's own failure", &roundrun.Error{Msg: "step 9 was decided with a result of 2 elements", NextStep: 10},
			localapi.Response{Code: localapi.CodeInternal, Error: "step 9 was decided with a result of 2 elements", NextStep: 10}},
		{"a join not admitted in time", &roundrun.NotAdmittedError{State: rounds.StateForming, Reason: "2 of 3 forming"},
			localapi.Response{Code: localapi.CodeTimeout, Error: "not admitted yet: node is forming: 2 of 3 forming"}},
		{"a join not admitted, no reason", &roundrun.NotAdmittedError{State: rounds.StateJoining},
			localapi.Response{Code: localapi.CodeTimeout, Error: "not admitted yet: node is joining"}},
		{"the loop stopped", roundrun.ErrStopped, localapi.Response{Code: localapi.CodeShuttingDown, Error: "node shutting down"}},
		{"canceled", fmt.Errorf("fetch: %w", context.Canceled), localapi.Response{Code: localapi.CodeShuttingDown, Error: "node shutting down"}},
		{"anything else", errors.New("disk on fire"), localapi.Response{Code: localapi.CodeInternal, Error: "disk on fire"}},
	} {
		if got := errorResponse(c.err); !reflect.DeepEqual(got, c.want) {
			t.Errorf("%s: got %+v, want %+v", c.name, got, c.want)
		}
	}
}
