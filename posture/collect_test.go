package posture

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// fakeHost copies testdata/host/<name> to a temporary root and stamps the
// package databases with mtime.
func fakeHost(t *testing.T, name string, mtime time.Time) string {
	t.Helper()
	root := filepath.Join(t.TempDir(), name)
	if err := os.CopyFS(root, os.DirFS(filepath.Join("testdata", "host", name))); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{
		"var/log/dpkg.log", "var/lib/dpkg/info/openssl.list", "var/lib/rpm/rpmdb.sqlite",
		"usr/lib/sysimage/rpm/rpmdb.sqlite", "lib/apk/db/installed",
	} {
		if err := os.Chtimes(filepath.Join(root, p), mtime, mtime); err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Fatal(err)
		}
	}
	return root
}

func deviceIDOf(machineID string) string {
	m := hmac.New(sha256.New, []byte(machineID))
	m.Write([]byte("medgate posture device id"))
	return hex.EncodeToString(m.Sum(nil)[:16])
}

func nft(out string, err error) func(context.Context, string, ...string) ([]byte, error) {
	return func(_ context.Context, name string, args ...string) ([]byte, error) {
		if name != "nft" {
			return nil, errors.New("unexpected command " + name)
		}
		return []byte(out), err
	}
}

func TestCollect(t *testing.T) {
	patched := time.Date(2026, 10, 28, 6, 14, 2, 0, time.UTC)
	seen := testNow
	const ruleset = "table inet filter {\n\tchain input {\n\t\ttype filter hook input priority filter; policy drop;\n\t}\n}\n"
	tests := []struct {
		host string
		cfg  CollectConfig
		want Signals
	}{
		{
			host: "ubuntu-luks",
			cfg:  CollectConfig{EDRProcesses: []string{"falcon-sensor"}, RunCommand: nft(ruleset, nil)},
			want: Signals{
				DeviceID:      deviceIDOf("4f1c8e2a9b3d4e5f8a7b6c5d4e3f2a1b"),
				OS:            &OSInfo{Name: "ubuntu", Version: "24.04"},
				Kernel:        "6.8.0-45-generic",
				DiskEncrypted: ptr(true),
				Firewall:      ptr(true),
				EDR:           &EDRStatus{Running: true, Name: "falcon-sensor", LastHeartbeat: seen},
				LastPatch:     patched,
			},
		},
		{
			host: "ubuntu-luks",
			cfg:  CollectConfig{EDRProcesses: []string{"cbagentd", "SentinelAgentWorker"}, RunCommand: nft("", nil)},
			want: Signals{
				DeviceID:      deviceIDOf("4f1c8e2a9b3d4e5f8a7b6c5d4e3f2a1b"),
				OS:            &OSInfo{Name: "ubuntu", Version: "24.04"},
				Kernel:        "6.8.0-45-generic",
				DiskEncrypted: ptr(true),
				Firewall:      ptr(false),
				EDR:           &EDRStatus{Running: false, Name: "cbagentd"},
				LastPatch:     patched,
			},
		},
		{
			host: "rhel-plain",
			cfg:  CollectConfig{RunCommand: nft("", errors.New("exit status 1: Operation not permitted"))},
			want: Signals{
				DeviceID:      deviceIDOf("0a1b2c3d4e5f60718293a4b5c6d7e8f9"),
				OS:            &OSInfo{Name: "rhel", Version: "9.4"},
				Kernel:        "5.14.0-427.13.1.el9_4.x86_64",
				DiskEncrypted: ptr(false),
				Firewall:      ptr(true),
				LastPatch:     patched,
			},
		},
		{
			host: "fedora-btrfs",
			cfg:  CollectConfig{RunCommand: nft("", errNotInstalled)},
			want: Signals{
				DeviceID:      deviceIDOf("9f8e7d6c5b4a39281706f5e4d3c2b1a0"),
				OS:            &OSInfo{Name: "fedora", Version: "40"},
				Kernel:        "6.10.6-200.fc40.x86_64",
				DiskEncrypted: ptr(true),
				LastPatch:     patched,
				Notes:         []string{"firewall: neither nftables nor iptables readable"},
			},
		},
		{
			host: "container",
			cfg:  CollectConfig{EDRProcesses: []string{"falcon-sensor"}, RunCommand: nft("", errNotInstalled)},
			want: Signals{
				OS:        &OSInfo{Name: "alpine", Version: "3.20.3"},
				EDR:       &EDRStatus{Name: "falcon-sensor"},
				LastPatch: patched,
				Notes: []string{
					"device_id: /etc/machine-id unreadable",
					"kernel: /proc/sys/kernel/osrelease unreadable",
					"disk_encrypted: / is overlay on overlay, not a block device found in /sys/class/block",
					"firewall: neither nftables nor iptables readable",
				},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.host, func(t *testing.T) {
			cfg := tt.cfg
			cfg.Root = fakeHost(t, tt.host, patched)
			cfg.Now = func() time.Time { return seen }
			got, err := Collect(context.Background(), cfg)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("signals (-want +got):\n%s", diff)
			}
		})
	}
}

func TestCollectFailures(t *testing.T) {
	if _, err := Collect(context.Background(), CollectConfig{Root: filepath.Join(t.TempDir(), "missing")}); err == nil {
		t.Error("a missing root was accepted")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Collect(ctx, CollectConfig{Root: fakeHost(t, "rhel-plain", testNow), RunCommand: nft("", nil)}); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled collect: %v", err)
	}
}

// TestCollectThisHost reads the machine the test runs on: whatever it
// finds, it must not fail.
func TestCollectThisHost(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := Collect(ctx, CollectConfig{EDRProcesses: []string{"no-such-edr-agent"}})
	if err != nil {
		t.Fatal(err)
	}
	if s.Kernel == "" {
		t.Errorf("no kernel release on a Linux host: %+v", s)
	}
	if s.EDR == nil || s.EDR.Running {
		t.Errorf("EDR = %+v, want not running", s.EDR)
	}
}

func TestSignalsToToken(t *testing.T) {
	s, err := Collect(context.Background(), CollectConfig{
		Root:         fakeHost(t, "ubuntu-luks", testNow.Add(-48*time.Hour)),
		EDRProcesses: []string{"falcon-sensor"},
		RunCommand:   nft("table ip filter {\n}\n", nil),
		Now:          func() time.Time { return testNow },
	})
	if err != nil {
		t.Fatal(err)
	}
	const holder = "spiffe://jp.example/workstation-1"
	c := s.Claims(exampleIssuer, id(holder), spki(holder), testNow, 10*time.Minute)
	c.ScreenLock = ptr(true) // not collected on Linux servers; the strict profile wants it
	tok := issue(t, exampleSigner(t), c)
	e := newEngine(t, testPolicy(t))
	d := e.Decide(Request{Route: "pacs", PeerID: id(holder), PeerSPKIHash: spki(holder), PostureToken: tok, LocalID: id(localID), Now: testNow})
	if !d.Admitted() {
		t.Errorf("collected posture denied: %v", d.Reasons)
	}
}
