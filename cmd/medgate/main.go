// Command medgate is a sidecar that carries an unchanged medical app's
// traffic to other sites over SPIFFE mTLS, admitting only peers that policy
// allows. Run "medgate help" for its subcommands.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
)

// version is stamped at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	// quic-go prints its own unstructured warning about UDP buffers; the
	// sidecar logs a structured one with the fix instead.
	os.Setenv("QUIC_GO_DISABLE_RECEIVE_BUFFER_WARNING", "true")
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	env := map[string]string{}
	for _, kv := range os.Environ() {
		if k, v, ok := strings.Cut(kv, "="); ok {
			env[k] = v
		}
	}
	if err := run(ctx, os.Args[1:], env, os.Stdout, os.Stderr); err != nil {
		if !errors.Is(err, errReported) {
			fmt.Fprintf(os.Stderr, "medgate: %v\n", err)
		}
		os.Exit(exitCode(err))
	}
}

// errReported marks an error whose message has been written already.
var errReported = errors.New("reported")

// usageError is a command-line mistake: exit status 2.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func exitCode(err error) int {
	var ue usageError
	if errors.As(err, &ue) {
		return 2
	}
	return 1
}

// command is one subcommand.
type command struct {
	summary string
	run     func(ctx context.Context, args []string, env map[string]string, stdout, stderr io.Writer) error
}

func commands() map[string]command {
	return map[string]command{
		"sidecar":       {"run inbound and outbound routes (settings from MEDGATE_* variables)", runSidecar},
		"dev-ca":        {"create a development CA and issue X.509-SVIDs without SPIRE", runDevCA},
		"posture":       {"collect device posture; a development posture issuer", runPosture},
		"keys":          {"create, rotate, list and retire the envelope keyring's keys", runKeys},
		"seal":          {"encrypt a file at rest in medgate's record format", runSeal},
		"open":          {"decrypt and verify a sealed file", runOpen},
		"control-plane": {"run the control plane: policy over xDS, access events, audit store", runControlPlane},
		"policy":        {"apply, diff, get, roll back policy; see which sidecars run which version", runPolicy},
		"audit":         {"verify the audit trail's hash chain; query it; breach-response report", runAudit},
		"demo":          {"run sidecars, a PACS, an HL7 feed across a border and refused peers here, and report", runDemo},
		"version": {"print the version", func(_ context.Context, _ []string, _ map[string]string, stdout, _ io.Writer) error {
			fmt.Fprintf(stdout, "medgate %s\n", version)
			return nil
		}},
	}
}

func run(ctx context.Context, args []string, env map[string]string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" || args[0] == "-help" {
		if len(args) > 1 {
			return run(ctx, []string{args[1], "--help"}, env, stdout, stderr)
		}
		usage(stdout)
		if len(args) == 0 {
			return usageError{"no command given"}
		}
		return nil
	}
	cmd, ok := commands()[args[0]]
	if !ok {
		usage(stderr)
		return usageError{fmt.Sprintf("unknown command %q", args[0])}
	}
	if err := cmd.run(ctx, args[1:], env, stdout, stderr); !errors.Is(err, errHelp) {
		return err
	}
	return nil
}

func usage(w io.Writer) {
	fmt.Fprint(w, `medgate moves medical data between sites over SPIFFE mTLS, admitting only
the peers that policy allows, beside apps that never change.

Usage: medgate COMMAND [flags]

Commands:
`)
	cmds := commands()
	names := make([]string, 0, len(cmds))
	for n := range cmds {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-14s %s\n", n, cmds[n].summary)
	}
	fmt.Fprint(w, "\nRun 'medgate COMMAND --help' for a command's flags and settings.\n")
}

// newFlagSet returns a flag set that reports errors as usage errors and
// prints its usage to stdout on --help.
func newFlagSet(name, synopsis string, stdout io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {
		fmt.Fprintf(stdout, "Usage: medgate %s\n\n%s\n", name, synopsis)
		var n int
		fs.VisitAll(func(*flag.Flag) { n++ })
		if n > 0 {
			fmt.Fprint(stdout, "\nFlags:\n")
			fs.SetOutput(stdout)
			fs.PrintDefaults()
			fs.SetOutput(io.Discard)
		}
	}
	return fs
}

// parseFlags parses args; --help prints usage and yields errHelp.
func parseFlags(fs *flag.FlagSet, args []string) error {
	err := fs.Parse(args)
	switch {
	case errors.Is(err, flag.ErrHelp):
		return errHelp // the flag package has printed the usage
	case err != nil:
		return usageError{fmt.Sprintf("%s: %v", fs.Name(), err)}
	case fs.NArg() > 0:
		return usageError{fmt.Sprintf("%s: unexpected argument %q", fs.Name(), fs.Arg(0))}
	}
	return nil
}

// errHelp ends a command successfully after its usage was printed.
var errHelp = errors.New("help shown")
