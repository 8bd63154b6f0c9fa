// Package deploy holds no code: its tests check the deployment files in
// this directory against the schemas of their tools and against the
// binary's own flags.
package deploy

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/ringmesh/ringmesh/internal/systest"
)

// nodeFlags are the flags `ringmesh node --help` lists.
func nodeFlags(t *testing.T) map[string]bool {
	t.Helper()
	out, _ := exec.Command(systest.Binary(t), "node", "--help").CombinedOutput()
	flags := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^\s+--?([a-z0-9-]+)`).FindAllSubmatch(out, -1) {
		flags[string(m[1])] = true
	}
	if !flags["data-dir"] || !flags["join"] {
		t.Fatalf("ringmesh node --help lists no --data-dir or --join:\n%s", out)
	}
	return flags
}

// checkArgs fails for an argument that is not a flag of `ringmesh node`.
func checkArgs(t *testing.T, where string, args []string, flags map[string]bool) {
	t.Helper()
	if len(args) == 0 || args[0] != "node" {
		t.Errorf("%s: args %v do not start the node", where, args)
		return
	}
	for _, a := range args[1:] {
		name, _, _ := strings.Cut(strings.TrimPrefix(a, "--"), "=")
		if strings.HasPrefix(a, "--") && !flags[name] {
			t.Errorf("%s: %s is not a flag of ringmesh node", where, a)
		}
	}
}

// flagValue returns the value of --name=V in args.
func flagValue(args []string, name string) string {
	for _, a := range args {
		if v, ok := strings.CutPrefix(a, "--"+name+"="); ok {
			return v
		}
	}
	return ""
}

// workload is what the checks need of a StatefulSet or DaemonSet: its
// name, the Service it is reached through, its selector and pod template.
type workload struct {
	name, service string
	selector      map[string]string
	tpl           corev1.PodTemplateSpec
}

// TestKubernetesManifests decodes every manifest strictly into the
// Kubernetes API types (an unknown or misspelt field, or a wrong type, is
// an error; encoding/json matches field names regardless of case, so a
// field differing only in case is not) and checks what the types cannot: the workload's Service is
// headless and selects its pods, the node's arguments are flags the binary
// has, its data dir, secret and ports match the mounts and the Service, and
// it runs as non-root with a read-only root file system.
func TestKubernetesManifests(t *testing.T) {
	flags := nodeFlags(t)
	files, _ := filepath.Glob(filepath.Join("kubernetes", "*.yaml"))
	if len(files) < 2 {
		t.Fatalf("want a StatefulSet and a DaemonSet manifest in kubernetes/, found %v", files)
	}
	kinds := map[string]int{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		services := map[string]corev1.Service{}
		var pods []workload
		for _, doc := range bytes.Split(b, []byte("\n---\n")) {
			var meta struct{ Kind string }
			if err := yaml.Unmarshal(doc, &meta); err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			kinds[meta.Kind]++
			switch meta.Kind {
			case "Service":
				var s corev1.Service
				if err := yaml.UnmarshalStrict(doc, &s); err != nil {
					t.Fatalf("%s: Service: %v", f, err)
				}
				services[s.Name] = s
			case "StatefulSet":
				var s appsv1.StatefulSet
				if err := yaml.UnmarshalStrict(doc, &s); err != nil {
					t.Fatalf("%s: StatefulSet: %v", f, err)
				}
				pods = append(pods, workload{s.Name, s.Spec.ServiceName, s.Spec.Selector.MatchLabels, s.Spec.Template})
			case "DaemonSet":
				var d appsv1.DaemonSet
				if err := yaml.UnmarshalStrict(doc, &d); err != nil {
					t.Fatalf("%s: DaemonSet: %v", f, err)
				}
				pods = append(pods, workload{d.Name, d.Name, d.Spec.Selector.MatchLabels, d.Spec.Template})
			default:
				t.Fatalf("%s: unexpected kind %q", f, meta.Kind)
			}
		}
		for _, p := range pods {
			where := f + ": " + p.name
			svc, ok := services[p.service]
			if !ok || svc.Spec.ClusterIP != corev1.ClusterIPNone || !svc.Spec.PublishNotReadyAddresses {
				t.Errorf("%s: no headless Service %q publishing not-ready addresses in the file", where, p.service)
			}
			for k, v := range p.selector {
				if p.tpl.Labels[k] != v || svc.Spec.Selector[k] != v {
					t.Errorf("%s: selector %s=%s does not match the pod template (%v) and the Service (%v)", where, k, v, p.tpl.Labels, svc.Spec.Selector)
				}
			}
			ps := p.tpl.Spec
			if ps.SecurityContext == nil || ps.SecurityContext.RunAsNonRoot == nil || !*ps.SecurityContext.RunAsNonRoot {
				t.Errorf("%s: pod does not require runAsNonRoot", where)
			}
			var node *corev1.Container
			for i := range ps.Containers {
				if ps.Containers[i].Name == "node" {
					node = &ps.Containers[i]
				}
			}
			if node == nil {
				t.Errorf("%s: no container named node", where)
				continue
			}
			checkArgs(t, where, node.Args, flags)
			sc := node.SecurityContext
			if sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
				sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
				t.Errorf("%s: the node container must have a read-only root and no privilege escalation", where)
			}
			mounted := func(path string) string {
				for _, m := range node.VolumeMounts {
					if strings.HasPrefix(path, m.MountPath+"/") {
						return m.Name
					}
				}
				return ""
			}
			if dir := flagValue(node.Args, "data-dir"); dir == "" || mounted(dir) == "" {
				t.Errorf("%s: --data-dir %q is not on a volume", where, dir)
			}
			psk := flagValue(node.Args, "psk")
			vol := mounted(psk)
			if psk == "" || !slices.ContainsFunc(ps.Volumes, func(v corev1.Volume) bool { return v.Name == vol && v.Secret != nil }) {
				t.Errorf("%s: --psk %q is not on a Secret volume", where, psk)
			}
			if join := flagValue(node.Args, "join"); !strings.Contains(join, "/dns4/"+p.service+".") {
				t.Errorf("%s: --join %q does not name the Service %s", where, join, p.service)
			}
			if !strings.HasSuffix(flagValue(node.Args, "listen"), "/tcp/4001") {
				t.Errorf("%s: --listen %q is not TCP port 4001", where, flagValue(node.Args, "listen"))
			}
			for _, sp := range svc.Spec.Ports {
				if sp.Port == 4001 && !ps.HostNetwork && !slices.ContainsFunc(node.Ports, func(c corev1.ContainerPort) bool { return c.Name == sp.TargetPort.String() }) {
					t.Errorf("%s: the Service's target port %s is no container port", where, sp.TargetPort.String())
				}
			}
		}
	}
	if kinds["StatefulSet"] == 0 || kinds["DaemonSet"] == 0 {
		t.Errorf("kinds %v: want a StatefulSet and a DaemonSet", kinds)
	}
}

// TestDockerfile checks the container build: multi-stage, the binary built
// from ./cmd/ringmesh and copied from the build stage into a runtime stage
// that runs as a non-root user, and a default command whose flags the
// binary has. (No image is built here: that needs a container daemon.)
func TestDockerfile(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("container", "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	// Join continuation lines, drop comments.
	text := regexp.MustCompile(`\\\n\s*`).ReplaceAllString(string(b), " ")
	var stages [][]string
	for _, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if strings.HasPrefix(line, "FROM ") {
			stages = append(stages, nil)
		}
		if len(stages) == 0 {
			t.Fatalf("instruction before FROM: %s", line)
		}
		stages[len(stages)-1] = append(stages[len(stages)-1], line)
	}
	if len(stages) < 2 || !strings.HasSuffix(stages[0][0], " AS build") {
		t.Fatalf("want a build stage named build and a runtime stage; stages: %d", len(stages))
	}
	build := strings.Join(stages[0], "\n")
	if !strings.Contains(build, "go build") || !strings.Contains(build, "./cmd/ringmesh") {
		t.Errorf("the build stage does not build ./cmd/ringmesh:\n%s", build)
	}
	var user, entry, cmd, copied string
	for _, l := range stages[len(stages)-1] {
		switch {
		case strings.HasPrefix(l, "USER "):
			user = strings.TrimPrefix(l, "USER ")
		case strings.HasPrefix(l, "ENTRYPOINT "):
			entry = strings.TrimPrefix(l, "ENTRYPOINT ")
		case strings.HasPrefix(l, "CMD "):
			cmd = strings.TrimPrefix(l, "CMD ")
		case strings.HasPrefix(l, "COPY --from=build "):
			f := strings.Fields(l)
			copied = f[len(f)-1]
		}
	}
	if uid, _, _ := strings.Cut(user, ":"); user == "" || uid == "0" || uid == "root" {
		t.Errorf("the runtime stage runs as %q; want a non-root user", user)
	}
	var entryArgs, cmdArgs []string
	if err := yaml.Unmarshal([]byte(entry), &entryArgs); err != nil || len(entryArgs) != 1 || entryArgs[0] != copied {
		t.Errorf("ENTRYPOINT %s (%v) is not the binary copied from the build stage (%s)", entry, err, copied)
	}
	if err := yaml.Unmarshal([]byte(cmd), &cmdArgs); err != nil {
		t.Fatalf("CMD %s: %v", cmd, err)
	}
	checkArgs(t, "Dockerfile CMD", cmdArgs, nodeFlags(t))
}

// TestSystemdUnit runs systemd-analyze verify on the unit (with ExecStart
// pointed at the built binary), where systemd-analyze exists.
func TestSystemdUnit(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("systemd", "ringmesh.service"))
	if err != nil {
		t.Fatal(err)
	}
	exec1 := regexp.MustCompile(`(?m)^ExecStart=(\S+) (.*)$`).FindSubmatch(b)
	if exec1 == nil {
		t.Fatal("the unit has no ExecStart")
	}
	args := strings.Fields(string(exec1[2]))
	for i, a := range args {
		if strings.HasPrefix(a, "--") && !strings.Contains(a, "=") && i+1 < len(args) && !strings.HasPrefix(args[i+1], "--") {
			args[i] = a + "=" + args[i+1]
			args[i+1] = ""
		}
	}
	checkArgs(t, "systemd ExecStart", slices.DeleteFunc(args, func(s string) bool { return s == "" }), nodeFlags(t))
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze not installed: the unit's flags were checked, not the unit")
	}
	dir := t.TempDir()
	unit := bytes.Replace(b, append([]byte("ExecStart="), exec1[1]...), []byte("ExecStart="+systest.Binary(t)), 1)
	path := filepath.Join(dir, "ringmesh.service")
	if err := os.WriteFile(path, unit, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(analyze, "verify", path).CombinedOutput()
	// Warnings about the host (no such user on a build machine, or no
	// running systemd) are not the unit's; errors in it are.
	for _, line := range strings.Split(string(out), "\n") {
		if strings.Contains(line, "ringmesh.service:") && !strings.Contains(line, "User") && !strings.Contains(line, "Group") {
			t.Errorf("systemd-analyze verify: %s", line)
		}
	}
	t.Logf("systemd-analyze verify: %v\n%s", err, out)
}

// TestSlurmScript runs shellcheck on the batch script, where it exists.
func TestSlurmScript(t *testing.T) {
	sc, err := exec.LookPath("shellcheck")
	if err != nil {
		t.Skip("shellcheck not installed (apt-get install shellcheck)")
	}
	out, err := exec.Command(sc, "--shell=bash", filepath.Join("slurm", "ringmesh.sbatch")).CombinedOutput()
	if err != nil {
		t.Fatalf("shellcheck: %v\n%s", err, out)
	}
}
