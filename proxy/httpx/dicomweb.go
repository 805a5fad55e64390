package httpx

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/url"
	"strings"

	"github.com/medgate/medgate/proxy/dicom"
	"github.com/medgate/medgate/proxy/mask"
)

// DICOMweb (PS3.18) bodies the codec masks with the profile's DICOM
// rules: application/dicom (a PS3.10 file, as WADO-URI returns it),
// application/dicom+json (QIDO-RS results, WADO-RS metadata, STOW-RS
// answers), and multipart/related bodies of those (WADO-RS responses,
// STOW-RS requests). A part of any other type (rendered frames, bulk
// data) cannot be masked and fails the message.
const (
	typeDICOM     = "application/dicom"
	typeDICOMJSON = "application/dicom+json"
	typeMultipart = "multipart/related"
)

func dicomMediaType(mt string) bool {
	return mt == typeDICOM || mt == typeDICOMJSON || mt == typeMultipart
}

// maskDICOM masks one DICOMweb body of media type mt (with params) from
// in to out. objs receives the object of each masked file or JSON body,
// as it is done.
func (c *Codec) maskDICOM(out io.Writer, in io.Reader, mt string, params map[string]string, objs *[]mask.Object) error {
	switch mt {
	case typeDICOM:
		o, err := c.dm.MaskPart10(out, in)
		if err != nil {
			return err
		}
		*objs = append(*objs, o)
		return nil
	case typeDICOMJSON:
		o, err := c.dm.MaskJSON(out, in)
		if err != nil {
			return err
		}
		*objs = append(*objs, o)
		return nil
	}
	boundary := params["boundary"]
	mr := newMultipartReader(in, boundary, c.maxHead)
	def := params["type"]
	n := 0
	for {
		fields, part, err := mr.next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		ph := &head{fields: fields}
		if cte := strings.ToLower(ph.get("Content-Transfer-Encoding")); cte != "" && cte != "binary" && cte != "8bit" && cte != "7bit" {
			return fmt.Errorf("%w: part %d in Content-Transfer-Encoding %s", ErrContentType, n, tokenOnly("x/"+cte))
		}
		ct := ph.get("Content-Type")
		if ct == "" {
			ct = def
		}
		pmt, pparams, err := mime.ParseMediaType(ct)
		if err != nil || (pmt != typeDICOM && pmt != typeDICOMJSON) {
			return fmt.Errorf("%w: part %d of type %s", ErrContentType, n, tokenOnly(ct))
		}
		// Only the part's type goes on: other fields (Content-Location,
		// Content-Description, Content-ID) may name what was masked.
		keep := map[string]string{}
		if ts, ok := pparams["transfer-syntax"]; ok && uidChars(ts) {
			keep["transfer-syntax"] = ts
		}
		delim := "\r\n--"
		if n == 0 {
			delim = "--"
		}
		if _, err := fmt.Fprintf(out, "%s%s\r\nContent-Type: %s\r\n\r\n", delim, boundary, mime.FormatMediaType(pmt, keep)); err != nil {
			return err
		}
		if err := c.maskDICOM(newGuardWriter(out, boundary), part, pmt, nil, objs); err != nil {
			return err
		}
		n++
	}
	delim := "\r\n--"
	if n == 0 {
		delim = "--"
	}
	_, err := fmt.Fprintf(out, "%s%s--\r\n", delim, boundary)
	return err
}

// dicomContentType checks a DICOMweb Content-Type and returns it as it
// goes on: a multipart one keeps its boundary and type, nothing else.
func dicomContentType(ct string) (mt string, params map[string]string, out string, err error) {
	mt, params, err = mime.ParseMediaType(ct)
	if err != nil {
		return "", nil, "", fmt.Errorf("%w: unreadable Content-Type", ErrContentType)
	}
	if mt != typeMultipart {
		keep := map[string]string{}
		if ts, ok := params["transfer-syntax"]; ok && uidChars(ts) {
			keep["transfer-syntax"] = ts
		}
		if cs, ok := params["charset"]; ok && token(cs) {
			keep["charset"] = cs
		}
		return mt, params, mime.FormatMediaType(mt, keep), nil
	}
	b := params["boundary"]
	if !validBoundary(b) {
		return "", nil, "", fmt.Errorf("%w: multipart without a valid boundary", ErrMalformed)
	}
	keep := map[string]string{"boundary": b}
	if t := params["type"]; t != "" {
		tmt, tparams, err := mime.ParseMediaType(t)
		if err != nil {
			return "", nil, "", fmt.Errorf("%w: unreadable multipart type", ErrContentType)
		}
		tkeep := map[string]string{}
		if ts, ok := tparams["transfer-syntax"]; ok && uidChars(ts) {
			tkeep["transfer-syntax"] = ts
		}
		keep["type"] = mime.FormatMediaType(tmt, tkeep)
	}
	return mt, params, mime.FormatMediaType(mt, keep), nil
}

func uidChars(s string) bool {
	for i := 0; i < len(s); i++ {
		if (s[i] < '0' || s[i] > '9') && s[i] != '.' && s[i] != '*' {
			return false
		}
	}
	return s != "" && len(s) <= 64
}

// dicomwebPath reports whether a request path is a DICOMweb resource: it
// has a studies, series or instances segment.
func dicomwebPath(path string) bool {
	for s := range strings.SplitSeq(path, "/") {
		if s == "studies" || s == "series" || s == "instances" {
			return true
		}
	}
	return false
}

// restoredKeys are the QIDO-RS and WADO-URI query keys whose values may
// be pseudonyms or remapped UIDs that the index translates back.
var restoredKeys = map[string]bool{
	"PatientID": true, "00100020": true,
	"StudyInstanceUID": true, "0020000D": true, "studyUID": true,
	"SeriesInstanceUID": true, "0020000E": true, "seriesUID": true,
	"SOPInstanceUID": true, "00080018": true, "objectUID": true,
}

// restoreTarget translates the pseudonyms and remapped UIDs of a request
// to the masked side's server back to what they stand for, where the
// index knows them: UIDs in DICOMweb paths, patient IDs and UIDs in
// query parameters. Unknown values stay as they are.
func (c *Codec) restoreTarget(target string) string {
	path, query, hasQuery := strings.Cut(target, "?")
	segs := strings.Split(path, "/")
	for i := 1; i < len(segs); i++ {
		switch segs[i-1] {
		case "studies", "series", "instances":
			if o, ok := c.ix.Original(segs[i]); ok {
				segs[i] = o
			}
		}
	}
	path = strings.Join(segs, "/")
	if !hasQuery {
		return path
	}
	params := strings.Split(query, "&")
	for i, p := range params {
		k, v, ok := strings.Cut(p, "=")
		if !ok {
			continue
		}
		key, err1 := url.QueryUnescape(k)
		val, err2 := url.QueryUnescape(v)
		if err1 != nil || err2 != nil || !restoredKeys[key] {
			continue
		}
		vals := strings.Split(val, ",")
		changed := false
		for j, x := range vals {
			if o, ok := c.ix.Original(x); ok {
				vals[j], changed = o, true
			}
		}
		if changed {
			params[i] = k + "=" + url.QueryEscape(strings.Join(vals, ","))
		}
	}
	return path + "?" + strings.Join(params, "&")
}

// queryNamesAttributes reports whether a DICOMweb query string matches on
// attributes (PatientID=..., 00100010=...): their values are not masked.
func queryNamesAttributes(query string) bool {
	for p := range strings.SplitSeq(query, "&") {
		k, _, _ := strings.Cut(p, "=")
		key, err := url.QueryUnescape(k)
		if err != nil {
			return true
		}
		if _, err := dicom.ParseTag(key); err == nil || restoredKeys[key] {
			return true
		}
	}
	return false
}

// maskDICOMMessage masks a message with a DICOMweb body and sends it
// with its head, or refuses it. Each file and JSON body masked is
// reported as an object of the message's operation; one that crossed
// before the message failed is reported too.
func (c *Codec) maskDICOMMessage(dst, back io.Writer, h *head, body io.Reader, info reqInfo, isReq bool, obj mask.Object, report func(mask.Object)) error {
	mt, params, ct, err := dicomContentType(h.get("Content-Type"))
	if err != nil {
		c.refuse(dst, back, isReq)
		return fmt.Errorf("%w (%w)", err, mask.ErrUnmaskable)
	}
	h.set("Content-Type", ct)
	h.del("Content-Length")
	h.del("Transfer-Encoding")
	h.del("Content-Encoding")
	out := &committer{dst: dst, h: h, chunked: h.vers != "HTTP/1.0" && info.vers != "HTTP/1.0", hash: sha256.New()}
	var objs []mask.Object
	err = c.maskDICOM(out, body, mt, params, &objs)
	if err == nil {
		_, err = io.Copy(io.Discard, body)
	}
	if err == nil {
		err = out.finish()
	}
	if err != nil && !out.committed {
		c.refuse(dst, back, isReq)
		objs = nil
	}
	if len(objs) == 0 && err == nil {
		obj.SHA256 = hex.EncodeToString(out.hash.Sum(nil))
		objs = append(objs, obj)
	}
	if report != nil {
		for _, o := range objs {
			o.Protocol, o.Operation = obj.Protocol, obj.Operation
			report(o)
		}
	}
	if err != nil && !errors.Is(err, mask.ErrUnmaskable) &&
		(errors.Is(err, ErrMalformed) || errors.Is(err, ErrContentType) || errors.Is(err, errBoundaryInPart) || errors.Is(err, errTooLargeBuffered)) {
		return fmt.Errorf("%w (%w)", err, mask.ErrUnmaskable)
	}
	return err
}
