package dicom

import (
	"bufio"
	"cmp"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"io"
	"slices"

	"github.com/medgate/medgate/proxy/mask"
)

// Implementation identity written into the file meta information of
// masked files.
const (
	ImplementationClassUID = "2.25.183254229547113229189251228839848006967"
	ImplementationVersion  = "MEDGATE"
	maxFileMeta            = 64 << 10
)

// MaskPart10 masks a DICOM file (PS3.10: preamble, "DICM", file meta
// information, data set), as DICOMweb and files carry objects, from src
// to dst, streaming like the network codec. The preamble is zeroed and
// the file meta information rewritten (PS3.15 E.1.1 item 7): Media
// Storage SOP Instance UID remapped as the data set's SOP Instance UID
// is, the implementation class UID and version naming this codec, the
// AE titles and private meta information dropped. The object reported
// has the SHA-256 of the whole file written; its Operation is left to the
// caller. A data set in a transfer syntax the codec cannot parse
// (deflated) is refused before anything of it is written.
func (m *Masker) MaskPart10(dst io.Writer, src io.Reader) (mask.Object, error) {
	obj := m.object("")
	r := bufio.NewReaderSize(src, decoderBufSize)
	pre := make([]byte, 132)
	if _, err := io.ReadFull(r, pre); err != nil {
		return obj, errorf(ReasonMalformedDataSet, "file shorter than its preamble")
	}
	if string(pre[128:]) != "DICM" {
		return obj, errorf(ReasonMalformedDataSet, "no DICM prefix")
	}
	d := &decoder{r: r}
	type metaElement struct {
		tag uint32
		vr  string
		v   []byte
	}
	var meta []metaElement
	ts := ""
	for size := 0; ; {
		g, err := r.Peek(2)
		if err != nil || binary.LittleEndian.Uint16(g) != 0x0002 {
			break
		}
		h, err := d.header(explicitLE)
		if err != nil {
			return obj, err
		}
		if h.length == undefinedLength || size+int(h.length) > maxFileMeta {
			return obj, errorf(ReasonMalformedDataSet, "file meta element %s of %d bytes", tagString(h.tag), h.length)
		}
		size += int(h.length)
		v, err := d.value(h)
		if err != nil {
			return obj, err
		}
		switch h.tag {
		case 0x00020000, 0x00020012, 0x00020013, 0x00020016, 0x00020017, 0x00020018, 0x00020100, 0x00020102:
			continue
		case 0x00020003:
			if m.ruleFor(h.tag, "UI", nil).act == actUID || m.remapsInstances() {
				v = pad("UI", []byte(m.keyer.UID(trimValue(v))))
			}
		case 0x00020010:
			ts = trimValue(v)
		}
		meta = append(meta, metaElement{h.tag, h.vr, v})
	}
	s, ok := syntaxOf(ts)
	if !ok {
		return obj, errorf(ReasonTransferSyntax, "transfer syntax %s cannot be masked", ts)
	}
	meta = append(meta,
		metaElement{0x00020012, "UI", pad("UI", []byte(ImplementationClassUID))},
		metaElement{0x00020013, "SH", pad("SH", []byte(ImplementationVersion))})
	slices.SortStableFunc(meta, func(a, b metaElement) int { return cmp.Compare(a.tag, b.tag) })
	var body []byte
	for _, e := range meta {
		body = explicitLE.appendHeader(body, e.tag, e.vr, uint32(len(e.v)))
		body = append(body, e.v...)
	}
	h := sha256.New()
	w := io.MultiWriter(dst, h)
	out := make([]byte, 128, 144+len(body))
	out = append(out, "DICM"...)
	out = explicitLE.appendHeader(out, 0x00020000, "UL", 4)
	out = binary.LittleEndian.AppendUint32(out, uint32(len(body)))
	out = append(out, body...)
	if _, err := w.Write(out); err != nil {
		return obj, err
	}
	if err := m.maskDataSet(w, r, s, false, true, &obj); err != nil {
		return obj, err
	}
	obj.SHA256 = hex.EncodeToString(h.Sum(nil))
	return obj, nil
}
