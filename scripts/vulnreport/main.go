// Command vulnreport reads `govulncheck -format json` output on stdin and
// prints one line per vulnerability the code reaches. It exits 1 when a
// reachable vulnerability lies in a module other than the standard library,
// and 0 otherwise: standard-library findings are reported with the Go
// release that fixes them, since the fix is a toolchain upgrade.
// scripts/govulncheck.sh runs it.
package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"
)

// message is one object of govulncheck's JSON stream; only the parts used
// here are declared.
type message struct {
	Config *struct {
		ScannerVersion string `json:"scanner_version"`
		DB             string `json:"db"`
		DBLastModified string `json:"db_last_modified"`
		GoVersion      string `json:"go_version"`
	} `json:"config"`
	OSV *struct {
		ID      string `json:"id"`
		Summary string `json:"summary"`
	} `json:"osv"`
	Finding *struct {
		OSV          string  `json:"osv"`
		FixedVersion string  `json:"fixed_version"`
		Trace        []frame `json:"trace"`
	} `json:"finding"`
}

type frame struct {
	Module   string `json:"module"`
	Version  string `json:"version"`
	Package  string `json:"package"`
	Function string `json:"function"`
	Receiver string `json:"receiver"`
}

// vuln gathers the findings of one OSV entry.
type vuln struct {
	id, summary, module, version, fixed string
	reachable                           bool   // a called function is vulnerable
	symbol                              string // the first vulnerable symbol reached
	via                                 string // where the code reaches it from
	imported                            bool   // a vulnerable package is imported
}

func main() {
	code, err := run(os.Stdin, os.Stdout)
	if err != nil {
		fmt.Fprintln(os.Stderr, "vulnreport:", err)
		os.Exit(2)
	}
	os.Exit(code)
}

func run(in io.Reader, out io.Writer) (int, error) {
	dec := json.NewDecoder(in)
	summaries := map[string]string{}
	vulns := map[string]*vuln{}
	goVersion := ""
	for {
		var m message
		if err := dec.Decode(&m); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			return 0, fmt.Errorf("reading govulncheck JSON: %w", err)
		}
		switch {
		case m.Config != nil:
			goVersion = m.Config.GoVersion
			fmt.Fprintf(out, "govulncheck %s, %s, database modified %s\n", m.Config.ScannerVersion, m.Config.GoVersion, m.Config.DBLastModified)
		case m.OSV != nil:
			summaries[m.OSV.ID] = m.OSV.Summary
		case m.Finding != nil && len(m.Finding.Trace) > 0:
			f := m.Finding
			v := vulns[f.OSV]
			if v == nil {
				v = &vuln{id: f.OSV, module: f.Trace[0].Module, version: f.Trace[0].Version, fixed: f.FixedVersion}
				vulns[f.OSV] = v
			}
			top := f.Trace[0]
			if top.Package != "" {
				v.imported = true
			}
			if top.Function != "" && !v.reachable {
				v.reachable = true
				v.symbol = top.Package + "." + top.Function
				if top.Receiver != "" {
					v.symbol = top.Package + "." + strings.TrimPrefix(top.Receiver, "*") + "." + top.Function
				}
				if last := f.Trace[len(f.Trace)-1]; len(f.Trace) > 1 {
					v.via = last.Package + "." + last.Function
				}
			}
		}
	}

	ids := make([]string, 0, len(vulns))
	for id := range vulns {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	failing, stdlib, unreached := 0, 0, 0
	newestFix := ""
	for _, id := range ids {
		v := vulns[id]
		v.summary = summaries[id]
		if !v.reachable {
			unreached++
			continue
		}
		fixed := v.fixed
		if fixed == "" {
			fixed = "no fix yet"
		}
		reached := v.symbol
		if v.via != "" {
			reached += " via " + v.via
		}
		if isStdlib(v.module) {
			stdlib++
			if v.fixed != "" && (newestFix == "" || versionLess(newestFix, v.fixed)) {
				newestFix = v.fixed
			}
			fmt.Fprintf(out, "STDLIB  %s  %s %s, fixed in go%s: %s (reached: %s)\n",
				id, v.module, v.version, strings.TrimPrefix(fixed, "v"), v.summary, reached)
			continue
		}
		failing++
		fmt.Fprintf(out, "MODULE  %s  %s@%s, fixed in %s: %s (reached: %s)\n", id, v.module, v.version, fixed, v.summary, reached)
	}
	fmt.Fprintf(out, "%d reachable in modules (fail), %d reachable in the standard library (%s; report only), %d imported or required but not reached\n",
		failing, stdlib, goVersion, unreached)
	if stdlib > 0 {
		fmt.Fprintf(out, "standard-library fixes come with a newer toolchain: go%s or later fixes all of them (GOTOOLCHAIN=go1.27.3 is the approved one here)\n",
			strings.TrimPrefix(newestFix, "v"))
	}
	if failing > 0 {
		fmt.Fprintln(out, "upgrade the modules above (go get module@fixed-version) or show why the reached call is safe")
		return 1, nil
	}
	return 0, nil
}

// versionLess compares dotted versions such as v1.26.9 and v1.26.10
// numerically, part by part.
func versionLess(a, b string) bool {
	pa := strings.Split(strings.TrimPrefix(a, "v"), ".")
	pb := strings.Split(strings.TrimPrefix(b, "v"), ".")
	for i := 0; i < len(pa) && i < len(pb); i++ {
		na, ea := strconv.Atoi(pa[i])
		nb, eb := strconv.Atoi(pb[i])
		if ea != nil || eb != nil {
			if pa[i] != pb[i] {
				return pa[i] < pb[i]
			}
			continue
		}
		if na != nb {
			return na < nb
		}
	}
	return len(pa) < len(pb)
}

func isStdlib(module string) bool { return module == "stdlib" || module == "toolchain" }
