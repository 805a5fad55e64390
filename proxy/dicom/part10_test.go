package dicom

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/medgate/medgate/proxy/mask"
)

func TestMaskPart10(t *testing.T) {
	m := basicMasker(t, mask.DICOMOptions{})
	_, err := os.Stat("/usr/bin/dcmdump")
	haveDump := err == nil
	for _, f := range sampleFiles {
		if !f.store {
			continue
		}
		t.Run(f.name, func(t *testing.T) {
			raw, err := os.ReadFile(samplePath(f.name))
			if err != nil {
				t.Skip(err)
			}
			in, _ := splitPart10(raw)
			var out bytes.Buffer
			obj, err := m.MaskPart10(&out, bytes.NewReader(raw))
			if err != nil {
				t.Fatal(err)
			}
			got, err := splitPart10(out.Bytes())
			if err != nil {
				t.Fatal(err)
			}
			if got.ts != in.ts {
				t.Fatalf("transfer syntax %s, want %s", got.ts, in.ts)
			}
			s, _ := syntaxOf(in.ts)
			checkMasked(t, m, in.dataset, got.dataset, s, true)
			metaUID := trimValue(find(mustTree(t, in.meta[132:], explicitLE), 0x00020003).value)
			if !bytes.Contains(got.meta, []byte(m.keyer.UID(metaUID))) || bytes.Contains(got.meta, []byte(metaUID)) {
				t.Errorf("file meta does not carry the remapped media storage SOP instance UID")
			}
			before, _ := parseTree(in.dataset, s)
			if uid := trimValue(find(before, tagSOPInstance).value); bytes.Contains(out.Bytes(), []byte(uid)) {
				t.Errorf("original SOP instance UID left in the file")
			}
			sum := sha256.Sum256(out.Bytes())
			if obj.SHA256 != hex.EncodeToString(sum[:]) {
				t.Errorf("digest is not the file's")
			}
			if !haveDump {
				return
			}
			path := filepath.Join(t.TempDir(), "masked.dcm")
			os.WriteFile(path, out.Bytes(), 0o644)
			dump, err := runTool(t, "dcmdump", "-q", "+P", "MediaStorageSOPInstanceUID", "+P", "ImplementationVersionName", path)
			if err != nil || !strings.Contains(dump, m.keyer.UID(metaUID)) || !strings.Contains(dump, "MEDGATE") {
				t.Errorf("dcmdump: %v\n%s", err, dump)
			}
		})
	}
	t.Run("deflated", func(t *testing.T) {
		raw, err := os.ReadFile(samplePath("image_dfl.dcm"))
		if err != nil {
			t.Skip(err)
		}
		var out bytes.Buffer
		_, err = m.MaskPart10(&out, bytes.NewReader(raw))
		if e := asError(err); e == nil || e.Reason != ReasonTransferSyntax || out.Len() != 0 {
			t.Fatalf("error %v, %d bytes written", err, out.Len())
		}
	})
}

func mustTree(t *testing.T, b []byte, s syntax) []*node {
	t.Helper()
	n, err := parseTree(b, s)
	if err != nil {
		t.Fatal(err)
	}
	return n
}
