package main

import (
	"cmp"
	"context"
	"encoding/hex"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/medgate/medgate/controlplane/store"
	"github.com/medgate/medgate/crypto/pseudonym"
)

const auditUsage = `Usage: medgate audit verify|query|report [flags]

Reads the control plane's audit store directly (read-only; it may be open
by a running control plane).

  verify            walk the hash chain and the signed checkpoints; report every
                    edited, inserted or deleted event; exit status 1 if any
  query [filters]   the events that match, oldest first
  report --since D  what a breach response needs: who accessed what, from which
                    jurisdiction and device, under which policy version

Patients are found by keyed pseudonym: --patient takes the real patient ID and
computes its pseudonym with the key derived from MEDGATE_KEYRING (the same
keyring the sidecars mask with), so the store never holds the ID itself.

Flags:
`

func runAudit(ctx context.Context, args []string, environ map[string]string, stdout, _ io.Writer) error {
	sub := ""
	if len(args) > 0 {
		sub, args = args[0], args[1:]
	}
	fs := newFlagSet("audit "+sub, "", stdout)
	fs.Usage = func() {
		fmt.Fprint(stdout, auditUsage)
		fs.SetOutput(stdout)
		fs.PrintDefaults()
		fs.SetOutput(io.Discard)
	}
	url := fs.String("store", cmp.Or(environ["MEDGATE_CP_STORE"], "/var/lib/medgate/controlplane"), "audit store: directory or postgres://...")
	var keyFile, format, peer, route, verdict, juris, study, patient, source, since, until string
	var limit int
	switch sub {
	case "verify":
		fs.StringVar(&keyFile, "key", cmp.Or(environ["MEDGATE_CP_AUDIT_KEY"], "/var/lib/medgate/audit-signing.key")+".pub", "public key of the checkpoint signer")
	case "query", "report":
		fs.StringVar(&format, "format", "table", "table, json or csv")
		fs.StringVar(&since, "since", "", "only events at or after: a duration back from now (72h) or an RFC 3339 time")
		fs.StringVar(&until, "until", "", "only events before: a duration back from now or an RFC 3339 time")
		if sub == "query" {
			fs.StringVar(&peer, "peer", "", "peer SPIFFE ID")
			fs.StringVar(&route, "route", "", "route name")
			fs.StringVar(&verdict, "verdict", "", "allow, deny or deidentify")
			fs.StringVar(&juris, "jurisdiction", "", "local or peer jurisdiction code")
			fs.StringVar(&study, "study", "", "study instance UID as it crossed (remapped)")
			fs.StringVar(&patient, "patient", "", "real patient ID; its keyed pseudonym is searched for")
			fs.StringVar(&source, "source", "", "SPIFFE ID of the sidecar that reported the event")
			fs.IntVar(&limit, "limit", 0, "at most this many events (0: all)")
		}
	case "", "-h", "--help", "help":
		fs.Usage()
		if sub == "" {
			return usageError{"audit: verify, query or report?"}
		}
		return nil
	default:
		return usageError{fmt.Sprintf("audit: unknown subcommand %q", sub)}
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if sub == "report" && since == "" {
		return usageError{"audit report: say how far back with --since (72h for a breach notification)"}
	}
	now := time.Now()
	var f store.Filter
	var err error
	if f.Since, err = parseWhen(since, now); err != nil {
		return usageError{"--since: " + err.Error()}
	}
	if f.Until, err = parseWhen(until, now); err != nil {
		return usageError{"--until: " + err.Error()}
	}
	f.Peer, f.Route, f.Verdict, f.Jurisdiction, f.StudyUID, f.Source, f.Limit = peer, route, verdict, juris, study, source, limit
	if patient != "" {
		if f.Patient, err = patientPseudonym(patient, environ); err != nil {
			return err
		}
	}
	st, err := store.Open(ctx, *url, nil)
	if err != nil {
		return err
	}
	defer st.Close()
	switch sub {
	case "verify":
		pub, err := store.LoadPublicKey(keyFile)
		if err != nil {
			return err
		}
		rep, err := store.Verify(ctx, st, pub)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "events: %d, head %d (%s)\ncheckpoints: %d, signed up to event %d, %d after the last one\n",
			rep.Entries, rep.Head, shortHex(rep.HeadHash), rep.Checkpoints, rep.Signed, rep.Unsigned())
		if rep.OK() {
			fmt.Fprintln(stdout, "OK: the chain and every checkpoint verify")
			return nil
		}
		for _, p := range rep.Problems {
			fmt.Fprintf(stdout, "TAMPERED: %s\n", p)
		}
		return fmt.Errorf("audit store %s: %d problems found", storeName(*url), len(rep.Problems))
	default:
		entries, err := st.Query(ctx, f)
		if err != nil {
			return err
		}
		return store.WriteReport(stdout, format, entries)
	}
}

// patientPseudonym is the token the masking codecs put in events for a
// patient ID, under the key derived from the keyring.
func patientPseudonym(id string, environ map[string]string) (string, error) {
	kr, err := openKeyring(environ["MEDGATE_KEYRING"], environ)
	if err != nil {
		return "", fmt.Errorf("--patient needs the pseudonym key: MEDGATE_KEYRING: %w", err)
	}
	me, err := maskEnv(kr)
	if err != nil {
		return "", fmt.Errorf("--patient: %w", err)
	}
	return me.Keyer.Token(pseudonym.KindPatientID, strings.TrimSpace(id)), nil
}

// parseWhen reads "72h" (back from now) or an RFC 3339 time; "" is zero.
func parseWhen(s string, now time.Time) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if d, err := time.ParseDuration(s); err == nil {
		return now.Add(-d), nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("%q is neither a duration (72h) nor an RFC 3339 time", s)
	}
	return t, nil
}

func shortHex(b []byte) string {
	s := hex.EncodeToString(b)
	if len(s) > 16 {
		s = s[:16]
	}
	return s
}
