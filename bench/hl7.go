package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

const benchADT = "MSH|^~\\&|RIS|EU-HOSPITAL|EHR|US-CLINIC|20261122091500||ADT^A01|MSG%06d|P|2.5\r" +
	"EVN|A01|20261122091500\r" +
	"PID|1||4711^^^EUH^MR~SSN-1234^^^SSA^SS||DOE^JANE^Q||19700101|F|||12 Rue Exemple^^Lyon^^69001^FR||+33-4-5555-0101|||M\r" +
	"NK1|1|DOE^JOHN|SPO|12 Rue Exemple^^Lyon^^69001^FR|+33-4-5555-0102\r" +
	"PV1|1|I|WARD^101^1|||||REF^ROBIN|||||||||||V0001|||||||||||||||||||||||||20261122091500\r"

// hl7Sink acknowledges every MLLP message.
func hl7Sink() (net.Listener, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				r := bufio.NewReaderSize(c, 64<<10)
				for {
					if _, err := r.ReadBytes(0x1c); err != nil {
						return
					}
					r.ReadByte()
					io.WriteString(c, "\x0bMSH|^~\\&|EHR|US|RIS|EU|20261122||ACK|A1|P|2.5\rMSA|AA|1\r\x1c\x0d")
				}
			}()
		}
	}()
	return ln, nil
}

// hl7Rate sends messages over conns connections, each waiting for its ACK
// before the next, for d, and returns messages per second.
func hl7Rate(entry string, conns int, d time.Duration) (float64, error) {
	var wg sync.WaitGroup
	var mu sync.Mutex
	total := 0
	errs := make(chan error, conns)
	deadline := time.Now().Add(d)
	start := time.Now()
	for i := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := net.DialTimeout("tcp", entry, 5*time.Second)
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			c.SetDeadline(deadline.Add(10 * time.Second))
			r := bufio.NewReader(c)
			n := 0
			for time.Now().Before(deadline) {
				if _, err := fmt.Fprintf(c, "\x0b"+benchADT+"\x1c\x0d", i*1000000+n); err != nil {
					errs <- err
					return
				}
				ack, err := r.ReadBytes(0x1c)
				if err != nil {
					errs <- fmt.Errorf("no ACK: %w", err)
					return
				}
				r.ReadByte()
				if !strings.Contains(string(ack), "MSA|AA") {
					errs <- fmt.Errorf("negative ACK: %q", ack)
					return
				}
				n++
			}
			mu.Lock()
			total += n
			mu.Unlock()
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		return 0, err
	}
	return float64(total) / time.Since(start).Seconds(), nil
}

// hl7Figures measures ADT^A01 messages per second through a medgate pair,
// masked with hipaa-safe-harbor against unmasked.
func hl7Figures(ctx context.Context, o options, pki *benchPKI, work string, res *Results, stdout io.Writer) error {
	sink, err := hl7Sink()
	if err != nil {
		return err
	}
	defer sink.Close()
	policy := filepath.Join(work, "hl7-policy.yaml")
	if err := os.WriteFile(policy, []byte(strings.ReplaceAll(strings.ReplaceAll(benchDICOMPolicy, "imaging", "records"), "base: dicom-basic", "base: hipaa-safe-harbor")), 0o600); err != nil {
		return err
	}
	rates := map[string][]float64{}
	for round := 1; round <= o.dicomRounds; round++ {
		for _, mode := range []string{"unmasked", "masked"} {
			outEnv := []string{"MEDGATE_INNER_LAYER=off", "MEDGATE_LOG_LEVEL=warn"}
			if mode == "masked" {
				outEnv = append(outEnv, "MEDGATE_OUTBOUND_PROTOCOL=hl7", "MEDGATE_POLICY_FILE="+policy, "MEDGATE_KEYRING="+pki.keyring)
			}
			c, err := startMedgatePair(ctx, o.bin, "hl7-"+mode, sink.Addr().String(), pki, work,
				[]string{"MEDGATE_INNER_LAYER=off", "MEDGATE_LOG_LEVEL=warn", "MEDGATE_INBOUND_ALLOW=spiffe://bench.example/client"}, outEnv)
			if err != nil {
				return err
			}
			time.Sleep(300 * time.Millisecond)
			rate, err := hl7Rate(c.entry, 8, 3*time.Second)
			c.stop()
			if err != nil {
				return fmt.Errorf("%s: %w", mode, err)
			}
			rates[mode] = append(rates[mode], rate)
			fmt.Fprintf(stdout, "hl7    round %d %-8s %.0f ADT^A01 messages/s (8 connections, each awaiting its ACK)\n", round, mode, rate)
		}
	}
	res.Figures["hl7_messages_per_s"] = []Figure{summarize("unmasked", "messages/s", rates["unmasked"]), summarize("masked", "messages/s", rates["masked"])}
	return nil
}
