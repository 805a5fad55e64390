package main

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// writeLargeDICOM writes a CT-like Part 10 object with pixelBytes of
// native pixel data, in explicit VR little endian, without holding it in
// memory.
func writeLargeDICOM(path string, pixelBytes int64) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	w := bufio.NewWriterSize(f, 1<<20)
	elem := func(b []byte, group, elem uint16, vr, value string) []byte {
		if len(value)%2 == 1 {
			pad := " "
			if vr == "UI" {
				pad = "\x00"
			}
			value += pad
		}
		b = binary.LittleEndian.AppendUint16(b, group)
		b = binary.LittleEndian.AppendUint16(b, elem)
		b = append(b, vr...)
		b = binary.LittleEndian.AppendUint16(b, uint16(len(value)))
		return append(b, value...)
	}
	us := func(b []byte, group, el uint16, v uint16) []byte {
		b = binary.LittleEndian.AppendUint16(b, group)
		b = binary.LittleEndian.AppendUint16(b, el)
		b = append(b, "US"...)
		b = binary.LittleEndian.AppendUint16(b, 2)
		return binary.LittleEndian.AppendUint16(b, v)
	}
	const sopClass, sopInst = "1.2.840.10008.5.1.4.1.1.2", "1.2.826.0.1.3680043.2.1125.9.1"
	var meta []byte
	meta = append(meta, 0x02, 0, 0x01, 0, 'O', 'B', 0, 0, 2, 0, 0, 0, 0, 1)
	meta = elem(meta, 0x0002, 0x0002, "UI", sopClass)
	meta = elem(meta, 0x0002, 0x0003, "UI", sopInst)
	meta = elem(meta, 0x0002, 0x0010, "UI", "1.2.840.10008.1.2.1")
	meta = elem(meta, 0x0002, 0x0012, "UI", "1.2.826.0.1.3680043.2.1125.1")
	var head []byte
	head = append(head, make([]byte, 128)...)
	head = append(head, "DICM"...)
	gl := []byte{0x02, 0, 0, 0, 'U', 'L', 4, 0}
	gl = binary.LittleEndian.AppendUint32(gl, uint32(len(meta)))
	head = append(head, gl...)
	head = append(head, meta...)
	var ds []byte
	ds = elem(ds, 0x0008, 0x0016, "UI", sopClass)
	ds = elem(ds, 0x0008, 0x0018, "UI", sopInst)
	ds = elem(ds, 0x0008, 0x0020, "DA", "20261122")
	ds = elem(ds, 0x0008, 0x0060, "CS", "CT")
	ds = elem(ds, 0x0008, 0x0090, "PN", "REFERRER^ROBIN")
	ds = elem(ds, 0x0010, 0x0010, "PN", "BENCH^PATIENT")
	ds = elem(ds, 0x0010, 0x0020, "LO", "BENCH-4711")
	ds = elem(ds, 0x0010, 0x0030, "DA", "19700101")
	ds = elem(ds, 0x0020, 0x000D, "UI", "1.2.826.0.1.3680043.2.1125.9.2")
	ds = elem(ds, 0x0020, 0x000E, "UI", "1.2.826.0.1.3680043.2.1125.9.3")
	ds = us(ds, 0x0028, 0x0002, 1)
	ds = elem(ds, 0x0028, 0x0004, "CS", "MONOCHROME2")
	side := uint16(4096)
	frames := pixelBytes / (int64(side) * int64(side) * 2)
	ds = elem(ds, 0x0028, 0x0008, "IS", strconv.FormatInt(max(frames, 1), 10))
	ds = us(ds, 0x0028, 0x0010, side)
	ds = us(ds, 0x0028, 0x0011, side)
	ds = us(ds, 0x0028, 0x0100, 16)
	ds = us(ds, 0x0028, 0x0101, 16)
	ds = us(ds, 0x0028, 0x0102, 15)
	ds = us(ds, 0x0028, 0x0103, 0)
	n := max(frames, 1) * int64(side) * int64(side) * 2
	px := []byte{0xE0, 0x7F, 0x10, 0x00, 'O', 'W', 0, 0}
	px = binary.LittleEndian.AppendUint32(px, uint32(n))
	if _, err := w.Write(append(append(head, ds...), px...)); err != nil {
		return err
	}
	chunk := make([]byte, 1<<20)
	for i := range chunk {
		chunk[i] = byte(i * 31)
	}
	for left := n; left > 0; {
		k := min(left, int64(len(chunk)))
		if _, err := w.Write(chunk[:k]); err != nil {
			return err
		}
		left -= k
	}
	return w.Flush()
}

// dicomFigures sends one large object with storescu through a medgate
// pair to storescp --ignore, unmasked (protocol tcp) and masked (dicom,
// dicom-basic), and records the time and the outbound sidecar's peak RSS.
func dicomFigures(ctx context.Context, o options, pki *benchPKI, work string, res *Results, stdout io.Writer) error {
	for _, tool := range []string{"storescu", "storescp"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%s not installed (apt-get install dcmtk)", tool)
		}
	}
	obj := filepath.Join(work, "large.dcm")
	if err := writeLargeDICOM(obj, o.dicomMiB<<20); err != nil {
		return err
	}
	defer os.Remove(obj)
	scpPort, err := freePort()
	if err != nil {
		return err
	}
	_, port, _ := strings.Cut(scpPort, ":")
	scp, err := startProc(ctx, filepath.Join(work, "storescp.log"), "storescp", nil, "--ignore", "-aet", "STORESCP", port)
	if err != nil {
		return err
	}
	defer stopAll(scp)()
	policy := filepath.Join(work, "dicom-policy.yaml")
	if err := os.WriteFile(policy, []byte(benchDICOMPolicy), 0o600); err != nil {
		return err
	}
	times := map[string][]float64{}
	peaks := map[string][]float64{}
	for round := 1; round <= o.dicomRounds; round++ {
		for _, mode := range []string{"unmasked", "masked"} {
			outEnv := []string{"MEDGATE_INNER_LAYER=off"}
			if mode == "masked" {
				outEnv = append(outEnv, "MEDGATE_OUTBOUND_PROTOCOL=dicom", "MEDGATE_POLICY_FILE="+policy, "MEDGATE_KEYRING="+pki.keyring)
			}
			c, err := startMedgatePair(ctx, o.bin, "dicom-"+mode, scpPort, pki, work,
				[]string{"MEDGATE_INNER_LAYER=off", "MEDGATE_INBOUND_ALLOW=spiffe://bench.example/client"}, outEnv)
			if err != nil {
				return err
			}
			host, p, _ := strings.Cut(c.entry, ":")
			deadline := time.Now().Add(20 * time.Second)
			for exec.Command("echoscu", "-aec", "STORESCP", host, p).Run() != nil && time.Now().Before(deadline) {
				time.Sleep(100 * time.Millisecond)
			}
			start := time.Now()
			out, err := exec.CommandContext(ctx, "storescu", "-aec", "STORESCP", "-xe", host, p, obj).CombinedOutput()
			secs := time.Since(start).Seconds()
			peak := peakRSSKiB(c.pids[1]) // the outbound sidecar
			c.stop()
			if err != nil {
				logs, _ := os.ReadFile(filepath.Join(work, "dicom-"+mode+"-out.log"))
				return fmt.Errorf("storescu %s: %v\n%s\n%s", mode, err, out, logs[max(0, len(logs)-1500):])
			}
			times[mode] = append(times[mode], float64(o.dicomMiB)*1.048576/secs)
			peaks[mode] = append(peaks[mode], float64(peak)/1024)
			fmt.Fprintf(stdout, "dicom  round %d %-8s %d MiB C-STORE in %.2f s, outbound sidecar peak RSS %.0f MiB\n", round, mode, o.dicomMiB, secs, float64(peak)/1024)
		}
	}
	res.Figures["dicom_cstore_mbps"] = []Figure{summarize("unmasked", "MB/s", times["unmasked"]), summarize("masked", "MB/s", times["masked"])}
	res.Figures["dicom_peak_rss_mib"] = []Figure{summarize("unmasked", "MiB", peaks["unmasked"]), summarize("masked", "MiB", peaks["masked"])}
	return nil
}

const benchDICOMPolicy = `apiVersion: medgate.io/v1
kind: Jurisdictions
metadata: {name: bench}
spec:
  codes: [EU, CN]
  bindings:
    - {id: "spiffe://bench.example/client", jurisdiction: EU}
    - {id: "spiffe://bench.example/server", jurisdiction: CN}
---
apiVersion: medgate.io/v1
kind: MaskingProfile
metadata: {name: imaging-out}
spec: {base: dicom-basic}
---
apiVersion: medgate.io/v1
kind: ResidencyRules
metadata: {name: bench}
spec:
  rules: [{dataClass: imaging, from: EU, to: CN, action: deidentify, maskingProfile: imaging-out}]
---
apiVersion: medgate.io/v1
kind: AccessPolicy
metadata: {name: default}
spec: {direction: outbound, dataClass: imaging, allow: ["spiffe://bench.example/server"]}
`

// peakRSSKiB reads a process's peak resident set (VmHWM).
func peakRSSKiB(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			k, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return k
		}
	}
	return 0
}
