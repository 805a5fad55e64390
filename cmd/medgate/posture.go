package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/medgate/medgate/crypto/keys"
	"github.com/medgate/medgate/posture"
)

const postureUsage = `Usage: medgate posture collect [--edr NAMES] [--root DIR]
       medgate posture issuer-init --dir DIR [--name NAME]
       medgate posture issue --dir DIR --svid SVID.pem --out TOKEN [--ttl 10m] [--signals FILE] [--refresh]

Device posture. 'collect' reads this Linux host's signals (os-release,
kernel, dm-crypt under the root file system, firewall rules, last package
change, an EDR process) and prints them as JSON. 'issuer-init' and 'issue'
are a development posture issuer: they sign tokens in the format real
issuers (MDM, EDR) produce, documented in posture/TOKEN.md. With --refresh,
'issue' keeps writing a fresh token at half its lifetime until stopped; point
the sidecar's MEDGATE_POSTURE_TOKEN_FILE at TOKEN.
`

func runPosture(ctx context.Context, args []string, _ map[string]string, stdout, stderr io.Writer) error {
	sub := ""
	if len(args) > 0 {
		sub, args = args[0], args[1:]
	}
	switch sub {
	case "collect":
		fs := newFlagSet("posture collect", "Prints this host's posture signals as JSON.", stdout)
		edr := fs.String("edr", "", "comma-separated EDR process names to look for (as /proc/PID/comm shows them)")
		root := fs.String("root", "/", "directory standing for / (for tests and containers)")
		if err := parseFlags(fs, args); err != nil {
			return err
		}
		sig, err := posture.Collect(ctx, posture.CollectConfig{Root: *root, EDRProcesses: splitList(*edr)})
		if err != nil {
			return err
		}
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(sig)
	case "issuer-init":
		fs := newFlagSet("posture issuer-init", "Creates a development posture issuer: DIR/issuer.key (P-256, mode 0600) and DIR/jwks.json for the policy's PostureProfile.", stdout)
		dir := fs.String("dir", "", "directory for the issuer (required)")
		name := fs.String("name", "medgate-dev-issuer", "issuer name (the tokens' iss; the policy lists it)")
		if err := parseFlags(fs, args); err != nil {
			return err
		}
		if *dir == "" {
			return usageError{"posture issuer-init: --dir is required"}
		}
		return issuerInit(*dir, *name, stdout)
	case "issue":
		fs := newFlagSet("posture issue", "Signs a posture token for the SVID in --svid with the issuer in --dir.", stdout)
		dir := fs.String("dir", "", "issuer directory from issuer-init (required)")
		svidPath := fs.String("svid", "", "PEM file of the holder's X.509-SVID (required): the token is bound to its key")
		out := fs.String("out", "", "file to write the token to, replaced atomically (required)")
		ttl := fs.Duration("ttl", 10*time.Minute, "token lifetime")
		signals := fs.String("signals", "", "JSON file of signals as 'posture collect' prints them; default: collect from this host")
		edr := fs.String("edr", "", "EDR process names to look for when collecting")
		refresh := fs.Bool("refresh", false, "keep issuing a fresh token at half its lifetime until stopped")
		if err := parseFlags(fs, args); err != nil {
			return err
		}
		if *dir == "" || *svidPath == "" || *out == "" {
			return usageError{"posture issue: --dir, --svid and --out are required"}
		}
		if *ttl <= 0 {
			return usageError{"posture issue: --ttl must be positive"}
		}
		issue := func() (time.Time, error) {
			return issueToken(ctx, *dir, *svidPath, *out, *ttl, *signals, splitList(*edr))
		}
		exp, err := issue()
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "wrote %s, expires %s\n", *out, exp.UTC().Format(time.RFC3339))
		for *refresh {
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(*ttl / 2):
			}
			if exp, err = issue(); err != nil {
				fmt.Fprintf(stderr, "medgate: posture issue: %v\n", err)
				continue
			}
			fmt.Fprintf(stdout, "wrote %s, expires %s\n", *out, exp.UTC().Format(time.RFC3339))
		}
		return nil
	case "", "-h", "--help", "help":
		fmt.Fprint(stdout, postureUsage)
		if sub == "" {
			return usageError{"posture: collect, issuer-init or issue?"}
		}
		return nil
	}
	return usageError{fmt.Sprintf("posture: unknown subcommand %q", sub)}
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

type issuerFile struct {
	Name string `json:"name"`
	KID  string `json:"kid"`
}

func issuerInit(dir, name string, stdout io.Writer) error {
	if _, err := os.Stat(filepath.Join(dir, "issuer.key")); err == nil {
		return fmt.Errorf("posture issuer-init: %s already holds an issuer", dir)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return err
	}
	var kidBytes [8]byte
	rand.Read(kidBytes[:])
	kid := fmt.Sprintf("dev-%x", kidBytes)
	signer, err := posture.NewSigner(key, kid)
	if err != nil {
		return err
	}
	jwks, err := json.MarshalIndent(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{signer.PublicJWK()}}, "", "  ")
	if err != nil {
		return err
	}
	meta, _ := json.Marshal(issuerFile{Name: name, KID: kid})
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	for _, f := range []struct {
		name string
		data []byte
		mode os.FileMode
	}{
		{"issuer.key", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600},
		{"jwks.json", append(jwks, '\n'), 0o644},
		{"issuer.json", append(meta, '\n'), 0o644},
	} {
		if err := keys.WriteFileAtomic(filepath.Join(dir, f.name), f.data, f.mode); err != nil {
			return err
		}
	}
	compact, _ := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{signer.PublicJWK()}})
	fmt.Fprintf(stdout, "created posture issuer %q (key %s) in %s\nlist it in a PostureProfile:\n  issuers:\n    - name: %s\n      jwks: '%s'\n", name, kid, dir, name, compact)
	return nil
}

func issueToken(ctx context.Context, dir, svidPath, out string, ttl time.Duration, signalsPath string, edr []string) (time.Time, error) {
	var meta issuerFile
	b, err := os.ReadFile(filepath.Join(dir, "issuer.json"))
	if err == nil {
		err = json.Unmarshal(b, &meta)
	}
	if err != nil {
		return time.Time{}, fmt.Errorf("posture issue: %s: %w (run 'medgate posture issuer-init')", dir, err)
	}
	keyPEM, err := os.ReadFile(filepath.Join(dir, "issuer.key"))
	if err != nil {
		return time.Time{}, err
	}
	block, _ := pem.Decode(keyPEM)
	if block == nil {
		return time.Time{}, errors.New("posture issue: issuer.key is not PEM")
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return time.Time{}, fmt.Errorf("posture issue: issuer.key: %w", err)
	}
	ek, ok := k.(*ecdsa.PrivateKey)
	if !ok {
		return time.Time{}, errors.New("posture issue: issuer.key is not an ECDSA key")
	}
	signer, err := posture.NewSigner(ek, meta.KID)
	if err != nil {
		return time.Time{}, err
	}
	certs, err := os.ReadFile(svidPath)
	if err != nil {
		return time.Time{}, err
	}
	cb, _ := pem.Decode(certs)
	if cb == nil {
		return time.Time{}, fmt.Errorf("posture issue: %s is not PEM", svidPath)
	}
	leaf, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		return time.Time{}, fmt.Errorf("posture issue: %s: %w", svidPath, err)
	}
	holder, err := x509svid.IDFromCert(leaf)
	if err != nil {
		return time.Time{}, fmt.Errorf("posture issue: %s: %w", svidPath, err)
	}
	var sig posture.Signals
	if signalsPath != "" {
		b, err := os.ReadFile(signalsPath)
		if err != nil {
			return time.Time{}, err
		}
		if err := json.Unmarshal(b, &sig); err != nil {
			return time.Time{}, fmt.Errorf("posture issue: %s: %w", signalsPath, err)
		}
	} else if sig, err = posture.Collect(ctx, posture.CollectConfig{EDRProcesses: edr}); err != nil {
		return time.Time{}, err
	}
	now := time.Now()
	claims := sig.Claims(meta.Name, holder, posture.SPKIHash(leaf), now, ttl)
	token, err := posture.Issue(signer, claims)
	if err != nil {
		return time.Time{}, err
	}
	return claims.Expiry, keys.WriteFileAtomic(out, token, 0o600)
}

// tokenFileProvider reads the posture token from path at every call, so an
// issuer that rewrites the file is followed without a restart.
func tokenFileProvider(path string) func() ([]byte, time.Time, error) {
	return func() ([]byte, time.Time, error) {
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, time.Time{}, err
		}
		token := []byte(strings.TrimSpace(string(b)))
		exp, err := posture.PeekExpiry(token)
		if err != nil {
			return nil, time.Time{}, fmt.Errorf("posture token in %s: %w", path, err)
		}
		return token, exp, nil
	}
}
