package node

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/ringmesh/ringmesh/mesh"
	"github.com/ringmesh/ringmesh/node/credentials"
	"github.com/ringmesh/ringmesh/node/localapi"
)

// JoinToken builds the join token of the node whose status is st: its
// mesh, its secret, and up to 4 addresses (explicit ones first, then the
// node's own and its alive members'). An open mesh has no token.
func JoinToken(st localapi.Status, explicit []string) (credentials.Token, error) {
	if !st.Private {
		return credentials.Token{}, fmt.Errorf("this node runs an open mesh (--insecure-open-mesh): there is no secret to share; join it with a member address")
	}
	secret, err := credentials.ReadSecret(st.SecretFile)
	if err != nil {
		return credentials.Token{}, err
	}
	cands := append([]string{}, st.Self.Addrs...)
	for _, m := range st.Members {
		if m.State != mesh.Alive.String() {
			continue
		}
		for _, a := range m.Addrs {
			cands = append(cands, a+"/p2p/"+m.ID)
		}
	}
	t := credentials.Token{Mesh: st.Mesh, Secret: secret, Addrs: credentials.Addrs(explicit, cands, 4)}
	if len(t.Addrs) == 0 {
		return credentials.Token{}, fmt.Errorf("the node has no address to put in the token")
	}
	return t, nil
}

// ApplyJoin sets cfg.Mesh.Join from --join values: join tokens are
// replaced by their addresses and set the mesh name (meshSet: the operator
// named one, which must agree); it returns the token, nil when none (all
// tokens must be of one mesh). Every value is checked here, before the node
// writes anything to its data dir: a mistyped address must not leave a
// secret behind.
func ApplyJoin(cfg *Config, join []string, meshSet bool) (*credentials.Token, error) {
	var tok *credentials.Token
	cfg.Mesh.Join = nil
	for _, j := range join {
		if !credentials.IsToken(j) {
			if err := mesh.CheckJoinAddr(j); err != nil {
				return nil, fmt.Errorf("--join %q is neither a join token nor a member address: %w", j, err)
			}
			cfg.Mesh.Join = append(cfg.Mesh.Join, j)
			continue
		}
		t, err := credentials.ParseToken(j)
		if err != nil {
			return nil, fmt.Errorf("--join: %w", err)
		}
		if tok != nil && (tok.Mesh != t.Mesh || string(tok.Secret) != string(t.Secret)) {
			return nil, fmt.Errorf("--join: two tokens of different meshes")
		}
		tok = &t
		cfg.Mesh.Join = append(cfg.Mesh.Join, t.Addrs...)
	}
	if tok != nil {
		if meshSet && cfg.Mesh.Mesh != tok.Mesh {
			return nil, fmt.Errorf("--mesh %q, but the join token is for mesh %q", cfg.Mesh.Mesh, tok.Mesh)
		}
		cfg.Mesh.Mesh = tok.Mesh
	}
	return tok, nil
}

// SetupSecret decides how the node keeps outsiders out and sets
// cfg.Mesh.PSKFile: the --psk file, the data dir's secret (from the join
// token tok, or created for a fresh data dir), or, with open
// (--insecure-open-mesh) only, nothing, said loudly in the log. A private
// node on the default listen addresses drops their QUIC twin: private
// networks are TCP-only in libp2p.
//
// A fresh data dir told to --join member addresses without a token is
// refused: a secret of its own would make it a mesh of its own, which the
// members refuse, and would then refuse the right token.
//
// Call done once the node started (ok) or failed to (!ok): a secret that
// SetupSecret created is then announced, or removed, so that a failed
// first start leaves no secret that the right token would be refused for.
func SetupSecret(cfg *Config, tok *credentials.Token, open bool, logger *slog.Logger) (done func(ok bool), err error) {
	created, err := setupSecret(cfg, tok, open, logger)
	if err == nil && cfg.Mesh.PSKFile != "" && slices.Equal(cfg.Mesh.Listen, mesh.DefaultConfig().Listen) {
		cfg.Mesh.Listen = slices.DeleteFunc(slices.Clone(cfg.Mesh.Listen), func(a string) bool { return !strings.Contains(a, "/tcp/") })
	}
	dataDir := cfg.DataDir
	return func(ok bool) {
		switch {
		case created == "":
		case !ok:
			if err := os.Remove(created); err != nil && !errors.Is(err, os.ErrNotExist) {
				logger.Warn("could not remove the secret this failed start created", "secret", created, "err", err)
			}
		case tok == nil:
			logger.Info("new private mesh: created its secret; print a join token for other hosts with 'ringmesh token --data-dir "+dataDir+"'", "secret", created)
		}
	}, err
}

// setupSecret is SetupSecret; created is the secret file it wrote, if any.
func setupSecret(cfg *Config, tok *credentials.Token, open bool, logger *slog.Logger) (created string, err error) {
	switch {
	case open && (tok != nil || cfg.Mesh.PSKFile != ""):
		return "", fmt.Errorf("--insecure-open-mesh cannot be combined with --psk or a join token")
	case open:
		logger.Warn("OPEN MESH (--insecure-open-mesh): no mesh secret; any peer that reaches this node can join, read the model and add gradients")
		return "", nil
	case cfg.Mesh.PSKFile != "" && tok != nil:
		return "", fmt.Errorf("--psk cannot be combined with a join token (the token carries the mesh secret)")
	case cfg.Mesh.PSKFile != "":
		return "", nil
	}
	var from []byte
	if tok != nil {
		from = tok.Secret
	} else if len(cfg.Mesh.Join) > 0 {
		path := filepath.Join(cfg.DataDir, credentials.SecretFile)
		if _, err := credentials.ReadSecret(path); errors.Is(err, os.ErrNotExist) {
			return "", fmt.Errorf("--join %s: this data dir has no mesh secret yet, and a member address cannot give it one: "+
				"join with a token ('ringmesh token --data-dir DIR' on a member prints it), or give the mesh's secret with --psk FILE", cfg.Mesh.Join[0])
		}
	}
	path, made, err := credentials.Ensure(cfg.DataDir, from)
	if err != nil {
		return "", err
	}
	cfg.Mesh.PSKFile = path
	if made {
		created = path
	}
	return created, nil
}
