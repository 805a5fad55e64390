package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/medgate/medgate/proxy/dicom/dicomtest"
)

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
	if err := dicomtest.WriteLarge(obj, o.dicomMiB<<20); err != nil {
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
