package main

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/medgate/medgate/identity/devca"
)

func runDevCA(ctx context.Context, args []string, _ map[string]string, stdout, _ io.Writer) error {
	sub := ""
	if len(args) > 0 {
		sub, args = args[0], args[1:]
	}
	switch sub {
	case "init":
		fs := newFlagSet("dev-ca init", "Creates a development CA for one trust domain in DIR (ca.pem, ca.key).\nFor development and tests only: its key sits in a plain file.", stdout)
		dir := fs.String("dir", "", "directory for the CA (required)")
		td := fs.String("trust-domain", "", "trust domain, e.g. hospital.example (required)")
		if err := parseFlags(fs, args); err != nil {
			return err
		}
		if *dir == "" || *td == "" {
			return usageError{"dev-ca init: --dir and --trust-domain are required"}
		}
		trust, err := spiffeid.TrustDomainFromString(*td)
		if err != nil {
			return usageError{fmt.Sprintf("dev-ca init: --trust-domain %q: %v", *td, err)}
		}
		if _, err := devca.Init(*dir, trust); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "created CA for trust domain %s in %s\n", trust, *dir)
		return nil
	case "issue":
		fs := newFlagSet("dev-ca issue", "Issues an X.509-SVID from the CA in DIR and writes OUT/svid.pem, OUT/svid.key and OUT/bundle.pem.", stdout)
		dir := fs.String("dir", "", "directory of the CA (required)")
		id := fs.String("spiffe-id", "", "SPIFFE ID of the workload, e.g. spiffe://hospital.example/pacs (required)")
		out := fs.String("out", "", "output directory (required)")
		ttl := fs.Duration("ttl", devca.DefaultTTL, "lifetime of the SVID")
		if err := parseFlags(fs, args); err != nil {
			return err
		}
		if *dir == "" || *id == "" || *out == "" {
			return usageError{"dev-ca issue: --dir, --spiffe-id and --out are required"}
		}
		sid, err := spiffeid.FromString(*id)
		if err != nil {
			return usageError{fmt.Sprintf("dev-ca issue: --spiffe-id %q: %v", *id, err)}
		}
		ca, err := devca.Load(*dir)
		if err != nil {
			return err
		}
		svid, err := ca.Issue(sid, *ttl)
		if err != nil {
			return err
		}
		if err := ca.WriteSVID(svid, *out); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "issued %s, valid until %s, in %s\n", sid, svid.Certificates[0].NotAfter.UTC().Format(time.RFC3339), filepath.Clean(*out))
		return nil
	case "", "-h", "--help", "help":
		fmt.Fprint(stdout, `Usage: medgate dev-ca init --dir DIR --trust-domain TD
       medgate dev-ca issue --dir DIR --spiffe-id ID --out OUT [--ttl 24h]

A development CA, so medgate runs without SPIRE. Not for production.
`)
		if sub == "" {
			return usageError{"dev-ca: init or issue?"}
		}
		return nil
	}
	return usageError{fmt.Sprintf("dev-ca: unknown subcommand %q (want init or issue)", sub)}
}
