package node

import (
	"context"
	"fmt"

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
