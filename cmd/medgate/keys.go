package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"

	"github.com/medgate/medgate/crypto/keys"
	"github.com/medgate/medgate/crypto/stream"
)

// keyring is a Keyring that can also be administered.
type keyring interface {
	keys.Keyring
	keys.Manager
}

const keyringHelp = `The keyring is MEDGATE_KEYRING (or --keyring): the path of a keyring file
(created by 'medgate keys init'; refused when group or others can read it),
or an HSM as pkcs11:module=/usr/lib/softhsm/libsofthsm2.so;token=LABEL with the
PIN in MEDGATE_KEYRING_PIN or a file named by MEDGATE_KEYRING_PIN_FILE
(binaries built with -tags pkcs11 and cgo only).`

// openKeyring opens the keyring spec names.
func openKeyring(spec string, environ map[string]string) (keyring, error) {
	if spec == "" {
		return nil, errors.New("no keyring: set MEDGATE_KEYRING or --keyring")
	}
	if rest, ok := strings.CutPrefix(spec, "pkcs11:"); ok {
		cfg := keys.PKCS11Config{PIN: environ["MEDGATE_KEYRING_PIN"], PINFile: environ["MEDGATE_KEYRING_PIN_FILE"]}
		for _, kv := range strings.Split(rest, ";") {
			k, v, _ := strings.Cut(kv, "=")
			switch strings.TrimSpace(k) {
			case "module":
				cfg.Module = v
			case "token":
				cfg.TokenLabel = v
			case "":
			default:
				return nil, fmt.Errorf("keyring %q: unknown attribute %q (want module and token)", spec, k)
			}
		}
		return keys.OpenPKCS11(cfg)
	}
	return keys.OpenFile(spec)
}

func runKeys(ctx context.Context, args []string, environ map[string]string, stdout, _ io.Writer) error {
	sub := ""
	if len(args) > 0 {
		sub, args = args[0], args[1:]
	}
	usage := "Usage: medgate keys init|rotate|list|retire ID [--keyring SPEC]\n\n" +
		"Key-encryption keys of the envelope keyring. 'init' creates a keyring file with one\n" +
		"current key; 'rotate' makes a new key current (older ones keep opening what they\n" +
		"protected); 'retire ID' destroys a key, after which what it protected can never be\n" +
		"read again (crypto-shredding).\n\n" + keyringHelp + "\n"
	fs := newFlagSet("keys "+sub, usage, stdout)
	spec := fs.String("keyring", environ["MEDGATE_KEYRING"], "keyring file, or pkcs11:module=...;token=...")
	var id string
	if sub == "retire" && len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		id, args = args[0], args[1:]
	}
	switch sub {
	case "init", "rotate", "list", "retire":
	case "", "-h", "--help", "help":
		fmt.Fprint(stdout, usage)
		if sub == "" {
			return usageError{"keys: init, rotate, list or retire?"}
		}
		return nil
	default:
		return usageError{fmt.Sprintf("keys: unknown subcommand %q", sub)}
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if sub == "init" {
		if *spec == "" || strings.HasPrefix(*spec, "pkcs11:") {
			return usageError{"keys init: name a keyring file with --keyring or MEDGATE_KEYRING (an HSM token is set up with its own tools)"}
		}
		kr, err := keys.InitFile(*spec)
		if err != nil {
			return err
		}
		list, err := kr.List(ctx)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "created keyring %s with key %s\n", *spec, list[0].ID)
		return nil
	}
	kr, err := openKeyring(*spec, environ)
	if err != nil {
		return err
	}
	switch sub {
	case "rotate":
		info, err := kr.Rotate(ctx)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "new current key %s; older keys still open what they protected\n", info.ID)
	case "list":
		list, err := kr.List(ctx)
		if err != nil {
			return err
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tSTATE\tCREATED\tRETIRED")
		for _, k := range list {
			retired := ""
			if !k.Retired.IsZero() {
				retired = k.Retired.UTC().Format(time.RFC3339)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", k.ID, k.State, k.Created.UTC().Format(time.RFC3339), retired)
		}
		return tw.Flush()
	case "retire":
		if id == "" {
			return usageError{"keys retire: name the key ID"}
		}
		if err := kr.Retire(ctx, id); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "retired %s: its material is destroyed, and data it protected can no longer be read by anyone holding this keyring\n", id)
	}
	return nil
}

const sealUsage = `'seal' encrypts with medgate's record format (AES-256-GCM segments under a
fresh data key, wrapped by the keyring's current key and carried in the
header); 'open' decrypts and verifies every segment. Standard input and
output are used when --in or --out is omitted. 'open --out' writes a
temporary file and renames it only after the last segment verified: a
tampered or truncated input leaves no output and exits non-zero with the
reason. To standard output, plaintext is released segment by segment as
each verifies.

` + keyringHelp + "\n"

func runSeal(ctx context.Context, args []string, environ map[string]string, stdout, stderr io.Writer) error {
	return sealOrOpen(ctx, "seal", args, environ, stdout, stderr)
}

func runOpen(ctx context.Context, args []string, environ map[string]string, stdout, stderr io.Writer) error {
	return sealOrOpen(ctx, "open", args, environ, stdout, stderr)
}

func sealOrOpen(ctx context.Context, op string, args []string, environ map[string]string, stdout, stderr io.Writer) error {
	fs := newFlagSet(op, sealUsage, stdout)
	in := fs.String("in", "", "input file (default standard input)")
	out := fs.String("out", "", "output file (default standard output)")
	spec := fs.String("keyring", environ["MEDGATE_KEYRING"], "keyring file, or pkcs11:module=...;token=...")
	route := fs.String("route", "", "context recorded in the header: route name (seal)")
	jurisdiction := fs.String("jurisdiction", "", "context recorded in the header: where the data originates (seal)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	kr, err := openKeyring(*spec, environ)
	if err != nil {
		return err
	}
	src := io.Reader(os.Stdin)
	var size int64 = -1
	if *in != "" {
		f, err := os.Open(*in)
		if err != nil {
			return err
		}
		defer f.Close()
		if fi, err := f.Stat(); err == nil {
			size = fi.Size()
		}
		src = f
	}
	if *out != "" && stderrIsTerminal(stderr) && size > 64<<20 {
		bar := progressbar.DefaultBytes(size, op)
		src = io.TeeReader(src, bar)
		defer bar.Finish()
	}

	// Output: a temporary file beside --out, renamed only on success.
	var dst io.Writer = stdout
	var tmp *os.File
	if *out != "" {
		tmp, err = os.CreateTemp(filepath.Dir(*out), ".medgate-"+op+"-*")
		if err != nil {
			return err
		}
		defer func() {
			if tmp != nil {
				tmp.Close()
				os.Remove(tmp.Name())
			}
		}()
		dst = tmp
	}
	switch op {
	case "seal":
		dek, err := keys.NewDataKey()
		if err != nil {
			return err
		}
		defer clear(dek)
		id, wrapped, err := kr.Wrap(ctx, dek)
		if err != nil {
			return err
		}
		w, err := stream.NewWriter(dst, dek, stream.Header{KeyID: id, WrappedKey: wrapped, Route: *route, Jurisdiction: *jurisdiction})
		if err != nil {
			return err
		}
		if _, err := io.Copy(w, src); err != nil {
			return fmt.Errorf("seal: %w", err)
		}
		if err := w.Close(); err != nil {
			return fmt.Errorf("seal: %w", err)
		}
	case "open":
		r, err := stream.NewReader(src, func(h stream.Header) ([]byte, error) {
			if len(h.WrappedKey) == 0 {
				return nil, errors.New("the header carries no wrapped data key")
			}
			return kr.Unwrap(ctx, h.KeyID, h.WrappedKey)
		})
		if err != nil {
			return fmt.Errorf("open: refused: %w", err)
		}
		if _, err := io.Copy(dst, r); err != nil {
			return fmt.Errorf("open: refused: %w", err)
		}
	}
	if tmp != nil {
		if err := tmp.Sync(); err != nil {
			return err
		}
		if err := tmp.Close(); err != nil {
			return err
		}
		if err := os.Rename(tmp.Name(), *out); err != nil {
			return err
		}
		tmp = nil
	}
	return nil
}

func stderrIsTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}
