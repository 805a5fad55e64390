package posture

import (
	"bufio"
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// CollectConfig says where and what Collect reads. The zero value reads
// the running host and looks for no EDR agent.
type CollectConfig struct {
	// Root is the directory standing for "/" (for /etc, /proc, /sys, /var);
	// empty means "/". Tests point it at a fake tree.
	Root string
	// EDRProcesses names the EDR agent's processes as /proc/<pid>/comm
	// shows them (at most 15 bytes; longer names are cut to match). Empty
	// means the EDR is not looked for and Signals.EDR stays nil.
	EDRProcesses []string
	// RunCommand runs a program and returns its standard output; Collect
	// uses it for "nft list ruleset". Nil runs the program from PATH, or
	// skips it when it is not installed. It is not run under Root.
	RunCommand func(ctx context.Context, name string, args ...string) ([]byte, error)
	// Now gives the EDR heartbeat time; nil means time.Now.
	Now func() time.Time
}

// Signals is what Collect found on a host. Pointer fields are nil when the
// signal could not be read; Notes says why.
type Signals struct {
	// DeviceID is derived from /etc/machine-id (an HMAC under a fixed
	// label, so the raw machine ID never leaves the host).
	DeviceID      string     `json:"device_id,omitempty"`
	OS            *OSInfo    `json:"os,omitempty"`
	Kernel        string     `json:"kernel,omitempty"`
	DiskEncrypted *bool      `json:"disk_encrypted"`
	Firewall      *bool      `json:"firewall"`
	EDR           *EDRStatus `json:"edr,omitempty"`
	// LastPatch is the newest package database change; zero when unknown.
	LastPatch time.Time `json:"last_patch,omitzero"`
	// Notes explains each signal that is unknown, for the operator.
	Notes []string `json:"notes,omitempty"`
}

// Claims returns the signals as token claims for holder, issued at iat
// and living for ttl.
func (s Signals) Claims(issuer string, holder spiffeid.ID, spkiHash [32]byte, iat time.Time, ttl time.Duration) Claims {
	return Claims{
		Issuer:        issuer,
		Subject:       holder,
		DeviceID:      s.DeviceID,
		OS:            s.OS,
		Kernel:        s.Kernel,
		DiskEncrypted: s.DiskEncrypted,
		EDR:           s.EDR,
		Firewall:      s.Firewall,
		LastPatch:     s.LastPatch,
		IssuedAt:      iat,
		Expiry:        iat.Add(ttl),
		SPKIHash:      spkiHash,
	}
}

// Collect reads posture signals from a Linux host: os-release, the kernel
// release, whether the root file system sits on dm-crypt (LUKS), whether
// firewall rules are loaded, when packages last changed and whether the
// EDR agent runs. It is lenient: a signal it cannot read is left unknown
// with a note, never guessed. It fails only when ctx ends or Root is not
// a directory. Collect needs no privileges, except that "nft list
// ruleset" reports only as root; without it the firewall falls back to
// /proc/net/ip_tables_names. It is safe to call concurrently.
func Collect(ctx context.Context, cfg CollectConfig) (Signals, error) {
	root := cfg.Root
	if root == "" {
		root = "/"
	}
	if fi, err := os.Stat(root); err != nil || !fi.IsDir() {
		return Signals{}, fmt.Errorf("posture: collect: root %q is not a directory", root)
	}
	now := time.Now
	if cfg.Now != nil {
		now = cfg.Now
	}
	c := collector{root: root}
	var s Signals
	s.DeviceID = c.deviceID()
	s.OS = c.osRelease()
	s.Kernel = c.kernel()
	s.DiskEncrypted = c.rootEncrypted()
	if err := ctx.Err(); err != nil {
		return Signals{}, fmt.Errorf("posture: collect: %w", err)
	}
	s.Firewall = c.firewall(ctx, cfg.RunCommand)
	if err := ctx.Err(); err != nil {
		return Signals{}, fmt.Errorf("posture: collect: %w", err)
	}
	s.LastPatch = c.lastPatch()
	if len(cfg.EDRProcesses) > 0 {
		s.EDR = c.edr(cfg.EDRProcesses, now())
	}
	s.Notes = c.notes
	return s, nil
}

type collector struct {
	root  string
	notes []string
}

func (c *collector) path(p string) string { return filepath.Join(c.root, filepath.FromSlash(p)) }

func (c *collector) read(p string) ([]byte, error) {
	f, err := os.Open(c.path(p))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(io.LimitReader(f, 1<<20))
}

func (c *collector) note(format string, args ...any) {
	c.notes = append(c.notes, fmt.Sprintf(format, args...))
}

func (c *collector) deviceID() string {
	b, err := c.read("/etc/machine-id")
	id := strings.TrimSpace(string(b))
	if err != nil || id == "" {
		c.note("device_id: /etc/machine-id unreadable")
		return ""
	}
	m := hmac.New(sha256.New, []byte(id))
	m.Write([]byte("medgate posture device id"))
	return hex.EncodeToString(m.Sum(nil)[:16])
}

// osRelease reads ID and VERSION_ID from os-release(5).
func (c *collector) osRelease() *OSInfo {
	var b []byte
	var err error
	for _, p := range []string{"/etc/os-release", "/usr/lib/os-release"} {
		if b, err = c.read(p); err == nil {
			break
		}
	}
	if err != nil {
		c.note("os: no os-release")
		return nil
	}
	vals := parseOSRelease(b)
	info := &OSInfo{Name: strings.ToLower(vals["ID"]), Version: vals["VERSION_ID"]}
	if info.Name == "" {
		info.Name = "linux"
	}
	if info.Version == "" {
		// rolling releases (Arch) have no VERSION_ID
		c.note("os: os-release has no VERSION_ID")
		return nil
	}
	return info
}

func parseOSRelease(b []byte) map[string]string {
	out := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			continue
		}
		if len(v) >= 2 && (v[0] == '"' || v[0] == '\'') && v[len(v)-1] == v[0] {
			q := v[0]
			v = v[1 : len(v)-1]
			if q == '"' {
				r := strings.NewReplacer(`\"`, `"`, `\\`, `\`, `\$`, `$`, "\\`", "`")
				v = r.Replace(v)
			}
		}
		out[k] = v
	}
	return out
}

func (c *collector) kernel() string {
	b, err := c.read("/proc/sys/kernel/osrelease")
	if err != nil {
		c.note("kernel: /proc/sys/kernel/osrelease unreadable")
		return ""
	}
	return strings.TrimSpace(string(b))
}

// rootEncrypted finds the block device under "/" in mountinfo and walks
// its device-mapper stack for a CRYPT- target.
func (c *collector) rootEncrypted() *bool {
	b, err := c.read("/proc/self/mountinfo")
	if err != nil {
		c.note("disk_encrypted: /proc/self/mountinfo unreadable")
		return nil
	}
	var devNum, source, fstype string
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		// 36 35 253:1 / / rw,relatime shared:1 - ext4 /dev/mapper/vg-root rw
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		if !ok {
			continue
		}
		f := strings.Fields(pre)
		g := strings.Fields(post)
		if len(f) < 5 || len(g) < 2 || f[4] != "/" {
			continue
		}
		devNum, fstype, source = f[2], g[0], g[1] // the last mount on "/" wins
	}
	if devNum == "" {
		c.note("disk_encrypted: no mount on /")
		return nil
	}
	name := ""
	if !strings.HasPrefix(devNum, "0:") {
		name = c.blockByDev(devNum)
	}
	if name == "" {
		name = c.blockBySource(source)
	}
	if name == "" {
		c.note("disk_encrypted: / is %s on %s, not a block device found in /sys/class/block", fstype, source)
		return nil
	}
	enc := c.onCrypt(name, 0)
	return &enc
}

func (c *collector) blockByDev(devNum string) string {
	entries, err := os.ReadDir(c.path("/sys/class/block"))
	if err != nil {
		return ""
	}
	for _, e := range entries {
		b, err := c.read("/sys/class/block/" + e.Name() + "/dev")
		if err == nil && strings.TrimSpace(string(b)) == devNum {
			return e.Name()
		}
	}
	return ""
}

func (c *collector) blockBySource(source string) string {
	if mapped, ok := strings.CutPrefix(source, "/dev/mapper/"); ok {
		entries, err := os.ReadDir(c.path("/sys/class/block"))
		if err != nil {
			return ""
		}
		for _, e := range entries {
			b, err := c.read("/sys/class/block/" + e.Name() + "/dm/name")
			if err == nil && strings.TrimSpace(string(b)) == mapped {
				return e.Name()
			}
		}
		return ""
	}
	if dev, ok := strings.CutPrefix(source, "/dev/"); ok && !strings.Contains(dev, "/") {
		if _, err := os.Stat(c.path("/sys/class/block/" + dev)); err == nil {
			return dev
		}
	}
	return ""
}

// onCrypt reports whether block device name is, or is stacked on, a
// dm-crypt target.
func (c *collector) onCrypt(name string, depth int) bool {
	if depth > 16 || name == "" || strings.ContainsAny(name, "/\\") || name == ".." {
		return false
	}
	if b, err := c.read("/sys/class/block/" + name + "/dm/uuid"); err == nil && strings.HasPrefix(string(b), "CRYPT-") {
		return true
	}
	slaves, err := os.ReadDir(c.path("/sys/class/block/" + name + "/slaves"))
	if err != nil {
		return false
	}
	for _, s := range slaves {
		if c.onCrypt(s.Name(), depth+1) {
			return true
		}
	}
	return false
}

// firewall reports rules present in nftables, or iptables tables loaded.
func (c *collector) firewall(ctx context.Context, run func(context.Context, string, ...string) ([]byte, error)) *bool {
	yes, no := true, false
	nftEmpty := false
	if run == nil {
		run = runCommand
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	out, err := run(ctx, "nft", "list", "ruleset")
	cancel()
	if err == nil {
		for line := range strings.Lines(string(out)) {
			if strings.HasPrefix(strings.TrimSpace(line), "table ") {
				return &yes
			}
		}
		nftEmpty = true
	}
	legacyRead := false
	for _, p := range []string{"/proc/net/ip_tables_names", "/proc/net/ip6_tables_names"} {
		b, err := c.read(p)
		if err != nil {
			continue
		}
		legacyRead = true
		if strings.TrimSpace(string(b)) != "" {
			return &yes
		}
	}
	if nftEmpty {
		return &no
	}
	if legacyRead {
		c.note("firewall: no iptables tables; nftables not readable (needs root)")
	} else {
		c.note("firewall: neither nftables nor iptables readable")
	}
	return nil
}

var errNotInstalled = errors.New("not installed")

func runCommand(ctx context.Context, name string, args ...string) ([]byte, error) {
	path, err := exec.LookPath(name)
	if err != nil {
		return nil, errNotInstalled
	}
	return exec.CommandContext(ctx, path, args...).Output()
}

// lastPatch returns the newest change among the package databases that
// exist: dpkg's log and info directory, rpm's database, apk's and
// pacman's.
func (c *collector) lastPatch() time.Time {
	var newest time.Time
	consider := func(t time.Time) {
		if t.After(newest) {
			newest = t
		}
	}
	for _, p := range []string{
		"/var/log/dpkg.log", "/var/lib/dpkg/status",
		"/var/lib/rpm/rpmdb.sqlite", "/var/lib/rpm/Packages", "/usr/lib/sysimage/rpm/rpmdb.sqlite",
		"/lib/apk/db/installed", "/var/lib/pacman/local",
	} {
		if fi, err := os.Stat(c.path(p)); err == nil {
			consider(fi.ModTime())
		}
	}
	if entries, err := os.ReadDir(c.path("/var/lib/dpkg/info")); err == nil {
		for _, e := range entries {
			if !strings.HasSuffix(e.Name(), ".list") {
				continue
			}
			if fi, err := e.Info(); err == nil {
				consider(fi.ModTime())
			}
		}
	}
	if newest.IsZero() {
		c.note("last_patch: no package database found")
		return newest
	}
	return newest.UTC().Truncate(time.Second)
}

// edr looks for a process whose comm is one of names. A running agent's
// heartbeat is the time it was seen.
func (c *collector) edr(names []string, now time.Time) *EDRStatus {
	entries, err := os.ReadDir(c.path("/proc"))
	if err != nil {
		c.note("edr: /proc unreadable")
		return nil
	}
	want := make(map[string]string, len(names))
	for _, n := range names {
		comm := n
		if len(comm) > 15 {
			comm = comm[:15]
		}
		want[comm] = n
	}
	for _, e := range entries {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		b, err := c.read("/proc/" + e.Name() + "/comm")
		if err != nil {
			continue // the process ended, or is not ours to read
		}
		if name, ok := want[strings.TrimSpace(string(b))]; ok {
			return &EDRStatus{Running: true, Name: name, LastHeartbeat: now.UTC().Truncate(time.Second)}
		}
	}
	return &EDRStatus{Running: false, Name: names[0]}
}
