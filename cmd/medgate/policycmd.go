package main

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/caarlos0/env/v11"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/medgate/medgate/controlplane/agent"
	"github.com/medgate/medgate/controlplane/api"
	"github.com/medgate/medgate/controlplane/policyset"
	"github.com/medgate/medgate/identity"
	"github.com/medgate/medgate/posture"
)

// ControlPlaneClient says which control plane to talk to; the sidecar
// and the policy commands read the same variables.
type ControlPlaneClient struct {
	ControlPlane   string `env:"CONTROL_PLANE" help:"host:port of the control plane (gRPC over SPIFFE mTLS); several replicas comma-separated, tried in order"`
	ControlPlaneID string `env:"CONTROL_PLANE_ID" help:"SPIFFE ID (or pattern) the control plane must present"`
}

func (e ControlPlaneClient) check(bad func(name, format string, args ...any)) identity.Patterns {
	if e.ControlPlane == "" {
		return nil
	}
	for _, a := range strings.Split(e.ControlPlane, ",") {
		if _, _, err := net.SplitHostPort(strings.TrimSpace(a)); err != nil {
			bad("CONTROL_PLANE", "%v", err)
		}
	}
	if e.ControlPlaneID == "" {
		bad("CONTROL_PLANE_ID", "required with MEDGATE_CONTROL_PLANE: the SPIFFE ID the control plane must present")
		return nil
	}
	ps, err := identity.ParsePatterns(e.ControlPlaneID)
	if err != nil {
		bad("CONTROL_PLANE_ID", "%v", err)
	}
	return ps
}

// policyEnv is what the policy commands read.
type policyEnv struct {
	SVIDSettings
	ControlPlaneClient
}

const policyUsage = `Usage: medgate policy apply|diff|get|history|rollback|status [flags]

Changes and inspects the policy a control plane serves its sidecars. The
caller authenticates with its own SVID and must be named in the control
plane's MEDGATE_CP_ADMINS.

  apply -f FILE|DIR [-m COMMENT]  validate the documents and make them the policy in force
  diff -f FILE|DIR                what apply would change, document by document
  get [--version V] [-o DIR]      print (or write into DIR) the documents of a version
  history                         every version: when, who, apply or rollback
  rollback VERSION                make an earlier version the policy in force again
  status                          which sidecars run which version, and which refused one and why

Settings:
`

func runPolicy(ctx context.Context, args []string, environ map[string]string, stdout, stderr io.Writer) error {
	sub := ""
	if len(args) > 0 {
		sub, args = args[0], args[1:]
	}
	help := func(w io.Writer) {
		fmt.Fprint(w, policyUsage)
		envHelp(w, policyEnv{})
	}
	fs := newFlagSet("policy "+sub, "", stdout)
	fs.Usage = func() { help(stdout) }
	var files, comment, ver, outDir string
	switch sub {
	case "apply", "diff":
		fs.StringVar(&files, "f", "", "policy file or directory of *.yaml files")
		if sub == "apply" {
			fs.StringVar(&comment, "m", "", "comment recorded with the change")
		}
	case "get":
		fs.StringVar(&ver, "version", "", "version to print (default: the one in force)")
		fs.StringVar(&outDir, "o", "", "directory to write the documents into")
	case "history", "status":
	case "rollback":
		if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
			ver, args = args[0], args[1:]
		}
	case "", "-h", "--help", "help":
		help(stdout)
		if sub == "" {
			return usageError{"policy: apply, diff, get, history, rollback or status?"}
		}
		return nil
	default:
		return usageError{fmt.Sprintf("policy: unknown subcommand %q", sub)}
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Sprintf("policy %s: unexpected argument %q", sub, fs.Arg(0))}
	}
	var docs []*api.Document
	if sub == "apply" || sub == "diff" {
		if files == "" {
			return usageError{fmt.Sprintf("policy %s: name the policy with -f FILE|DIR", sub)}
		}
		var err error
		if docs, err = readDocuments(files); err != nil {
			return err
		}
		// Catch mistakes here, with the same compiler the control plane
		// and the sidecars use.
		if _, err := policyset.Compile(docs); err != nil {
			return fmt.Errorf("policy refused:\n%w", err)
		}
	}
	if sub == "rollback" && ver == "" {
		return usageError{"policy rollback: name the VERSION to go back to (see 'medgate policy history')"}
	}
	conn, done, err := dialControlPlane(ctx, environ, stderr)
	if err != nil {
		return err
	}
	defer done()
	pc := api.NewPolicyAdminClient(conn)
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	switch sub {
	case "apply":
		r, err := pc.Apply(ctx, &api.ApplyRequest{Documents: docs, Comment: comment})
		if err != nil {
			return rpcErr(err)
		}
		if r.GetUnchanged() {
			fmt.Fprintf(stdout, "unchanged: version %s is in force\n", r.GetVersion())
		} else {
			fmt.Fprintf(stdout, "applied version %s\n", r.GetVersion())
		}
	case "diff":
		cur, err := pc.Get(ctx, &api.GetRequest{})
		if err != nil && status.Code(err) != codes.NotFound {
			return rpcErr(err)
		}
		if !writeDiff(stdout, cur.GetDocuments(), docs) {
			fmt.Fprintln(stdout, "no changes")
		}
	case "get":
		v, err := pc.Get(ctx, &api.GetRequest{Version: ver})
		if err != nil {
			return rpcErr(err)
		}
		if outDir != "" {
			return writeDocuments(outDir, v.GetDocuments(), stdout)
		}
		for _, d := range v.GetDocuments() {
			fmt.Fprintf(stdout, "# %s (version %s)\n", d.GetName(), v.GetVersion())
			stdout.Write(d.GetYaml())
			if !bytes.HasSuffix(d.GetYaml(), []byte("\n")) {
				fmt.Fprintln(stdout)
			}
			fmt.Fprintln(stdout, "---")
		}
	case "history":
		h, err := pc.History(ctx, &api.HistoryRequest{})
		if err != nil {
			return rpcErr(err)
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "VERSION\tTIME\tAUTHOR\tACTION\tCOMMENT")
		for _, v := range h.GetVersions() {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", v.GetVersion(), v.GetTime().AsTime().UTC().Format(time.RFC3339), v.GetAuthor(), v.GetAction(), v.GetComment())
		}
		tw.Flush()
	case "rollback":
		r, err := pc.Rollback(ctx, &api.RollbackRequest{Version: ver})
		if err != nil {
			return rpcErr(err)
		}
		if r.GetUnchanged() {
			fmt.Fprintf(stdout, "unchanged: version %s is in force\n", r.GetVersion())
		} else {
			fmt.Fprintf(stdout, "rolled back to version %s\n", r.GetVersion())
		}
	case "status":
		st, err := pc.Status(ctx, &api.StatusRequest{})
		if err != nil {
			return rpcErr(err)
		}
		fmt.Fprintf(stdout, "policy in force: %s\n\n", cmp.Or(st.GetCurrentVersion(), "(none)"))
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "SIDECAR\tREPLICA\tCONNECTED\tRUNS\tSERVED\tSTATE")
		for _, s := range st.GetSidecars() {
			state := "in step"
			switch {
			case s.GetNacked() != "":
				state = "refused " + s.GetNacked() + ": " + oneLine(s.GetNackReason())
			case s.GetExpected() != "" && s.GetAcked() != s.GetExpected():
				state = "pending"
			}
			fmt.Fprintf(tw, "%s\t%s\t%t\t%s\t%s\t%s\n", s.GetNode(), s.GetReplica(), s.GetConnected(), cmp.Or(s.GetAcked(), "-"), cmp.Or(s.GetExpected(), "-"), state)
		}
		tw.Flush()
	}
	return nil
}

// dialControlPlane connects to the control plane named by the environment
// with the caller's SVID.
func dialControlPlane(ctx context.Context, environ map[string]string, stderr io.Writer) (*grpc.ClientConn, func(), error) {
	e, err := env.ParseAsWithOptions[policyEnv](env.Options{Environment: environ, Prefix: envPrefix})
	errs, _ := parseErrors(err, policyEnv{})
	bad := func(name, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s%s: %s", envPrefix, name, fmt.Sprintf(format, args...)))
	}
	workloadAPI := e.SVIDSettings.check(environ, bad)
	if e.ControlPlane == "" {
		bad("CONTROL_PLANE", "required: host:port of the control plane")
	}
	cpID := e.ControlPlaneClient.check(bad)
	if len(errs) > 0 {
		return nil, nil, fmt.Errorf("configuration:\n%w", joinLines(errs))
	}
	ctx, cancel := context.WithCancel(ctx)
	g, gctx := errgroup.WithContext(ctx)
	src, closeSrc, err := e.SVIDSettings.open(gctx, g, workloadAPI, time.Hour, newLogger(stderr, "warn", ""))
	if err != nil {
		cancel()
		return nil, nil, err
	}
	conn, err := agent.Dial(e.ControlPlane, src, identity.AllowPatterns(cpID))
	if err != nil {
		cancel()
		closeSrc()
		return nil, nil, err
	}
	return conn, func() {
		conn.Close()
		closeSrc()
		cancel()
		g.Wait()
	}, nil
}

// rpcErr turns a gRPC error into the control plane's message.
func rpcErr(err error) error {
	if s, ok := status.FromError(err); ok {
		return fmt.Errorf("control plane: %s (%s)", s.Message(), s.Code())
	}
	return err
}

// readDocuments reads a policy file, or a directory's *.yaml and *.yml
// files, naming each document by its base name.
func readDocuments(path string) ([]*api.Document, error) {
	files, err := posture.ReadFiles(path)
	if err != nil {
		return nil, err
	}
	docs := make([]*api.Document, len(files))
	for i, f := range files {
		docs[i] = &api.Document{Name: filepath.Base(f.Name), Yaml: f.Data}
	}
	return docs, nil
}

// writeDocuments writes docs into dir, refusing names that leave it.
func writeDocuments(dir string, docs []*api.Document, stdout io.Writer) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for _, d := range docs {
		n := d.GetName()
		if n != filepath.Base(n) || n == "." || n == ".." || strings.HasPrefix(n, ".") {
			return fmt.Errorf("document name %q is not a plain file name", n)
		}
		if err := os.WriteFile(filepath.Join(dir, n), d.GetYaml(), 0o644); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "wrote %s\n", filepath.Join(dir, n))
	}
	return nil
}

// writeDiff prints, document by document, how to turns into from; it
// reports whether anything differs.
func writeDiff(w io.Writer, from, to []*api.Document) bool {
	old := map[string][]byte{}
	for _, d := range from {
		old[d.GetName()] = d.GetYaml()
	}
	nu := map[string][]byte{}
	for _, d := range to {
		nu[d.GetName()] = d.GetYaml()
	}
	var names []string
	for n := range old {
		names = append(names, n)
	}
	for n := range nu {
		if _, ok := old[n]; !ok {
			names = append(names, n)
		}
	}
	slices.Sort(names)
	changed := false
	for _, n := range names {
		a, inOld := old[n]
		b, inNew := nu[n]
		if inOld && inNew && bytes.Equal(a, b) {
			continue
		}
		changed = true
		fmt.Fprintf(w, "--- %s (in force)\n+++ %s (given)\n", n, n)
		lineDiff(w, splitLines(a), splitLines(b))
	}
	return changed
}

func splitLines(b []byte) []string {
	if len(b) == 0 {
		return nil
	}
	return strings.SplitAfter(strings.TrimSuffix(string(b), "\n"), "\n")
}

// lineDiff prints a minimal line diff (longest common subsequence), with
// removed lines marked "-" and added ones "+". Policy files are small.
func lineDiff(w io.Writer, a, b []string) {
	if len(a)*len(b) > 4<<20 {
		for _, l := range a {
			fmt.Fprintf(w, "-%s\n", strings.TrimSuffix(l, "\n"))
		}
		for _, l := range b {
			fmt.Fprintf(w, "+%s\n", strings.TrimSuffix(l, "\n"))
		}
		return
	}
	lcs := make([][]int, len(a)+1)
	for i := range lcs {
		lcs[i] = make([]int, len(b)+1)
	}
	for i := len(a) - 1; i >= 0; i-- {
		for j := len(b) - 1; j >= 0; j-- {
			if a[i] == b[j] {
				lcs[i][j] = lcs[i+1][j+1] + 1
			} else {
				lcs[i][j] = max(lcs[i+1][j], lcs[i][j+1])
			}
		}
	}
	i, j := 0, 0
	for i < len(a) || j < len(b) {
		switch {
		case i < len(a) && j < len(b) && a[i] == b[j]:
			i++
			j++
		case j < len(b) && (i == len(a) || lcs[i][j+1] >= lcs[i+1][j]):
			fmt.Fprintf(w, "+%s\n", strings.TrimSuffix(b[j], "\n"))
			j++
		default:
			fmt.Fprintf(w, "-%s\n", strings.TrimSuffix(a[i], "\n"))
			i++
		}
	}
}

func oneLine(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 160 {
		s = s[:157] + "..."
	}
	return s
}
