package main

import (
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
)

// section is the heading whose body the run replaces.
const section = "## Chaos harness"

func secs(v float64) string {
	if v < 0 {
		return "not seen"
	}
	return fmt.Sprintf("%.1f s", v)
}

// markdown renders the figures as the section body.
func (r *result) markdown() string {
	var b strings.Builder
	verdict := "PASS: nothing acknowledged was lost or duplicated"
	if !r.ok() {
		verdict = "FAIL: see the figures"
	}
	if rs, ns := r.stalls(); len(r.faults) < minFaults || rs == 0 || ns == 0 {
		verdict += fmt.Sprintf(" (a run must inject %d faults or more, stalls of Redis and NATS among them)", minFaults)
	}
	fmt.Fprintf(&b, "`scripts/chaos` (`make chaos`, after `make build`) runs the three binaries against a private\n")
	fmt.Fprintf(&b, "`redis-server` (AOF, `appendfsync everysec`) and a `nats-server` child process (JetStream on disk),\n")
	fmt.Fprintf(&b, "all on loopback, with two workers (concurrency 2) sharing one data dir. It keeps batches of\n")
	fmt.Fprintf(&b, "`builtin:tiny` rows (max_tokens %d, chunk size %d) queued while it injects the faults below: workers\n", r.maxTokens, r.chunkSize)
	fmt.Fprintf(&b, "SIGKILLed mid-chunk or SIGSTOPped past their lease, Redis and NATS SIGKILLed and restarted, and Redis and\n")
	fmt.Fprintf(&b, "NATS stalled (SIGSTOP for 5 to 15 s, then SIGCONT: clients time out, and go-redis sends a command again\n")
	fmt.Fprintf(&b, "that the resumed Redis then runs twice). Then it\n")
	fmt.Fprintf(&b, "reads every batch's output.jsonl and errors.jsonl and counts custom_ids. It exits non-zero when an\n")
	fmt.Fprintf(&b, "acknowledged row (or probe write, or feedback event) is lost or duplicated. Bounded: one overall\n")
	fmt.Fprintf(&b, "deadline (`--deadline`, default %v, then 90 s to read the results), a timeout on every wait,\n", defaultDeadline)
	fmt.Fprintf(&b, "every child killed at exit")
	fmt.Fprintf(&b, " (Ctrl-C included); `.tandem/chaos/` is removed after a passing run and kept after a failing one.\n\n")
	fmt.Fprintf(&b, "Last run: %s, `%s`, %.0f s in all on a %d-CPU machine shared with other work. %s.\n\n",
		r.date, r.command, r.seconds, runtime.NumCPU(), verdict)
	b.WriteString("| figure | value |\n|---|---|\n")
	row := func(k string, v any) { fmt.Fprintf(&b, "| %s | %v |\n", k, v) }
	row("batches acknowledged (`producer batch create` succeeded)", r.batches)
	row("rows accepted", r.rows)
	row("rows in output.jsonl + errors.jsonl", fmt.Sprintf("%d + %d = %d", r.outLines, r.errLines, r.outLines+r.errLines))
	row("custom_ids lost", r.lost)
	row("custom_ids duplicated", r.duplicated)
	row("custom_ids in the files that no input had", r.unknown)
	row("rows of batches still open at the deadline", r.unfinished)
	row("final batch statuses", r.statusList())
	row("request_counts disagreeing with the files", len(r.countMismatch))
	row("batch creates refused (not acknowledged)", len(r.refused))
	if r.probe.redisProbeDone {
		row("Redis SIGKILL: probe INCRs acknowledged / restored from AOF", fmt.Sprintf("%d / %d (lost %d)", r.probe.probeAcked, r.probe.probeRestored, max(0, r.probe.probeAcked-r.probe.probeRestored)))
		row("Redis SIGKILL: writes in the last second before the kill (the window `everysec` may lose on a machine crash)", fmt.Sprintf("~%d", r.probe.windowWrites))
		row("Redis SIGKILL: age of the last acknowledged batch at the kill", fmt.Sprintf("%.2f s", r.probe.lastBatchAge))
	}
	if r.fb != nil && r.fb.ran {
		row("feedback events published (acknowledged by JetStream) / applied by the scheduler", fmt.Sprintf("%d / %d", r.fb.published, r.fb.applied))
		row("feedback: lost / duplicated in the stream / dead-lettered / left pending", fmt.Sprintf("%d / %d / %d / %d", r.fb.lost, r.fb.duplicated, r.fb.deadLetters, r.fb.pending))
		row("feedback: publishes that needed a retry / never acknowledged / consumer redeliveries", fmt.Sprintf("%d / %d / %d", r.fb.retried, r.fb.refused, r.fb.redelivered))
	} else if r.fb != nil {
		row("feedback", "not run: "+r.fb.skipped)
	}
	redisStalls, natsStalls := r.stalls()
	stalled := 0.0
	for _, f := range r.faults {
		if f.stall {
			stalled += f.outage
		}
	}
	row(fmt.Sprintf("faults injected (a run needs %d)", minFaults), len(r.faults))
	row("of which stalls: Redis / NATS SIGSTOPped 5 to 15 s, then SIGCONT", fmt.Sprintf("%d / %d (%.0f s paused in all)", redisStalls, natsStalls, stalled))
	row("children that exited on their own (restarted)", len(r.crashes))
	b.WriteString("\n| # | at | fault | what happened | progress resumed after | orphaned chunks completed after |\n|---|---|---|---|---|---|\n")
	for i, f := range r.faults {
		f.mu.Lock()
		var oc []string
		for _, s := range f.orphanOK {
			oc = append(oc, secs(s))
		}
		f.mu.Unlock()
		orph := strings.Join(oc, ", ")
		if orph == "" {
			orph = "none held"
		}
		what := f.detail
		if f.err != "" {
			what += "; error: " + f.err
		}
		fmt.Fprintf(&b, "| %d | +%.0f s | %s | %s | %s | %s |\n", i+1, f.at, f.name, what, secs(f.recovery), orph)
	}
	var notes []string
	notes = append(notes, r.crashes...)
	notes = append(notes, r.countMismatch...)
	notes = append(notes, r.refused...)
	notes = append(notes, r.notes...)
	if r.fb != nil && r.fb.note != "" {
		notes = append(notes, "feedback: "+r.fb.note)
	}
	if len(notes) > 0 {
		b.WriteString("\nNotes from the run:\n\n")
		for _, n := range notes {
			fmt.Fprintf(&b, "- %s\n", strings.ReplaceAll(n, "\n", " "))
		}
	}
	b.WriteString("\nHow to read it: \"progress resumed\" is the time from the fault to the first `producer batch list`\n")
	b.WriteString("showing more rows done than at the fault. A SIGKILLed worker's chunk is re-run by asynq's recoverer\n")
	b.WriteString("only after its 30 s lease and a 30 s margin, which is what the orphan column measures (an orphan is a\n")
	b.WriteString("chunk that was active at the fault and still active 8 s later). The SIGSTOPped worker's chunks\n")
	b.WriteString("outlive its lease; in the runs so far they completed about a minute after SIGCONT, not at once,\n")
	b.WriteString("so asynq re-ran them through the recoverer rather than taking the late result; the chunk's\n")
	b.WriteString("atomic output and once-per-chunk counting keep a second run from showing up twice.\n")
	b.WriteString("A stall leaves every socket open: the workers' counts of finished chunks time out and go-redis\n")
	b.WriteString("sends them again, so the resumed Redis runs the count script twice for one call; the script\n")
	b.WriteString("recognises the call's own output key and answers \"counted\" again (issue 22, finding 1).\n")
	b.WriteString("Feedback \"applied\" means stored in the FEEDBACK stream and acknowledged by the scheduler's\n")
	b.WriteString("`recsys` consumer without a dead letter (it acknowledges after the recommender took the event);\n")
	b.WriteString("ids are read back from the stream to count losses and duplicates. Redis is\n")
	b.WriteString("SIGKILLed, not crashed with the machine: the kernel keeps what Redis wrote to the AOF, so a process\n")
	b.WriteString("kill loses nothing; the writes of the last second are what `appendfsync everysec` could lose if the\n")
	b.WriteString("machine itself went down, which this harness cannot provoke.\n")
	return b.String()
}

func (r *result) print(w io.Writer) {
	fmt.Fprintln(w, "\n=== chaos figures ===")
	fmt.Fprint(w, r.markdown())
}

// writeReport replaces the body of the "Chaos harness" section of path,
// keeping the rest of the file; the section is appended when absent.
func writeReport(path string, r *result) error {
	old, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	s := string(old)
	body := "\n" + r.markdown()
	i := strings.Index(s, "\n"+section+"\n")
	if i < 0 {
		s = strings.TrimRight(s, "\n") + "\n\n" + section + "\n" + body
	} else {
		start := i + len(section) + 2
		end := len(s)
		if j := strings.Index(s[start:], "\n## "); j >= 0 {
			end = start + j + 1
			body += "\n"
		}
		s = s[:start] + body + s[end:]
	}
	tmp := path + ".chaos-tmp"
	if err := os.WriteFile(tmp, []byte(s), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
