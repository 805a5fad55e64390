package main

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// writeReport writes latest.md with a table and an SVG bar chart per
// figure (median bar, min-max whisker).
func writeReport(res *Results, dir string) error {
	var b strings.Builder
	fmt.Fprintf(&b, "# medgate benchmarks\n\n%s on %s, %d interleaved rounds; medians with min-max.\n\n", res.Time.Format("2006-01-02 15:04 UTC"), res.Host, res.Rounds)
	names := make([]string, 0, len(res.Figures))
	for n := range res.Figures {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, name := range names {
		figs := res.Figures[name]
		if len(figs) == 0 {
			continue
		}
		svg := "latest-" + name + ".svg"
		if err := os.WriteFile(filepath.Join(dir, svg), []byte(barChart(name, figs)), 0o644); err != nil {
			return err
		}
		fmt.Fprintf(&b, "## %s (%s)\n\n![%s](%s)\n\n| configuration | median | min | max |\n|---|---:|---:|---:|\n", name, figs[0].Unit, name, svg)
		for _, f := range figs {
			fmt.Fprintf(&b, "| %s | %.1f | %.1f | %.1f |\n", f.Config, f.Median, f.Min, f.Max)
		}
		b.WriteString("\n")
	}
	b.WriteString("## Ratios\n\n| ratio | value | target | |\n|---|---:|---:|---|\n")
	for _, r := range res.Ratios {
		cmp, verdict := ">=", "ok"
		if !r.HigherOK {
			cmp = "<="
		}
		if !r.Pass {
			verdict = "below target"
		}
		if r.Target == 0 {
			fmt.Fprintf(&b, "| %s | %.2f | none | |\n", r.Name, r.Value)
			continue
		}
		fmt.Fprintf(&b, "| %s | %.2f | %s %.2f | %s |\n", r.Name, r.Value, cmp, r.Target, verdict)
	}
	for _, n := range res.Notes {
		fmt.Fprintf(&b, "\n- %s", n)
	}
	b.WriteString("\n")
	return os.WriteFile(filepath.Join(dir, "latest.md"), []byte(b.String()), 0o644)
}

func barChart(title string, figs []Figure) string {
	const w, rowH, left = 640, 28, 150
	h := 40 + rowH*len(figs)
	maxV := 0.0
	for _, f := range figs {
		maxV = max(maxV, f.Max)
	}
	if maxV == 0 {
		maxV = 1
	}
	scale := float64(w-left-80) / maxV
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="12">`, w, h)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="white"/><text x="10" y="20" font-weight="bold">%s (%s)</text>`, title, figs[0].Unit)
	for i, f := range figs {
		y := 32 + i*rowH
		fmt.Fprintf(&b, `<text x="10" y="%d">%s</text>`, y+14, f.Config)
		fmt.Fprintf(&b, `<rect x="%d" y="%d" width="%.1f" height="18" fill="#4a7ab5"/>`, left, y, f.Median*scale)
		fmt.Fprintf(&b, `<line x1="%.1f" x2="%.1f" y1="%d" y2="%d" stroke="black"/>`, left+f.Min*scale, left+f.Max*scale, y+9, y+9)
		fmt.Fprintf(&b, `<text x="%.1f" y="%d">%.1f</text>`, left+f.Max*scale+6, y+14, f.Median)
	}
	b.WriteString("</svg>\n")
	return b.String()
}
