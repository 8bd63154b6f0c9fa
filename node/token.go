package node

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"

	"github.com/ringmesh/ringmesh/mesh"
	"github.com/ringmesh/ringmesh/node/credentials"
)

// JoinToken builds the join token of the node running on dataDir: its
// mesh, its secret, and up to 4 addresses (explicit ones first, then the
// node's own and its alive members'). An open mesh has no token.
func JoinToken(ctx context.Context, dataDir string, explicit []string) (credentials.Token, error) {
	st, err := ReadStatus(ctx, dataDir)
	if err != nil {
		return credentials.Token{}, err
	}
	if !st.Private {
		return credentials.Token{}, fmt.Errorf("this node runs an open mesh (--insecure-open-mesh): there is no secret to share; join it with a member address")
	}
	secret, err := credentials.ReadSecret(st.SecretFile)
	if err != nil {
		return credentials.Token{}, err
	}
	cands := append([]string{}, st.Self.Addrs...)
	for _, m := range st.Members {
		if m.State != mesh.Alive {
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
// tokens must be of one mesh).
func ApplyJoin(cfg *Config, join []string, meshSet bool) (*credentials.Token, error) {
	var tok *credentials.Token
	cfg.Mesh.Join = nil
	for _, j := range join {
		if !credentials.IsToken(j) {
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
func SetupSecret(cfg *Config, tok *credentials.Token, open bool, logger *slog.Logger) error {
	err := setupSecret(cfg, tok, open, logger)
	if err == nil && cfg.Mesh.PSKFile != "" && slices.Equal(cfg.Mesh.Listen, mesh.DefaultConfig().Listen) {
		cfg.Mesh.Listen = slices.DeleteFunc(slices.Clone(cfg.Mesh.Listen), func(a string) bool { return !strings.Contains(a, "/tcp/") })
	}
	return err
}

func setupSecret(cfg *Config, tok *credentials.Token, open bool, logger *slog.Logger) error {
	switch {
	case open && (tok != nil || cfg.Mesh.PSKFile != ""):
		return fmt.Errorf("--insecure-open-mesh cannot be combined with --psk or a join token")
	case open:
		logger.Warn("OPEN MESH (--insecure-open-mesh): no mesh secret; any peer that reaches this node can join, read the model and add gradients")
		return nil
	case cfg.Mesh.PSKFile != "" && tok != nil:
		return fmt.Errorf("--psk cannot be combined with a join token (the token carries the mesh secret)")
	case cfg.Mesh.PSKFile != "":
		return nil
	}
	var from []byte
	if tok != nil {
		from = tok.Secret
	}
	path, created, err := credentials.Ensure(cfg.DataDir, from)
	if err != nil {
		return err
	}
	cfg.Mesh.PSKFile = path
	if created && tok == nil {
		logger.Info("new private mesh: created its secret; print a join token for other hosts with 'ringmesh token --data-dir "+cfg.DataDir+"'", "secret", path)
	}
	return nil
}
