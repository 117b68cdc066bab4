package pipeline

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzParseQueues: any string either parses into 1..MaxQueues-free valid
// queues with weights in range, or is refused; FormatQueues round-trips.
func FuzzParseQueues(f *testing.F) {
	for _, s := range []string{
		"interactive=6,default=3,finetune=1", " a = 1 , b=2 ", "a=1,a=2", "a", "=1", "a=0",
		"a=1001", "a=-1", ",,,", "", "a=1,,b=2", "a b=1", "a=1\x00", "ü=1", "a=99999999999999999999",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		q, err := ParseQueues(s)
		if err != nil {
			if q != nil {
				t.Fatalf("error %v with a non-nil result", err)
			}
			return
		}
		if len(q) == 0 || len(q) > strings.Count(s, "=") {
			t.Fatalf("%q parsed into %d queues", s, len(q))
		}
		for name, w := range q {
			if err := ValidateQueueName(name); err != nil {
				t.Fatalf("accepted bad queue name %q: %v", name, err)
			}
			if w < 1 || w > MaxQueueWeight {
				t.Fatalf("accepted weight %d for %q", w, name)
			}
		}
		back, err := ParseQueues(FormatQueues(q))
		if err != nil || len(back) != len(q) {
			t.Fatalf("FormatQueues(%v) does not parse back: %v %v", q, back, err)
		}
		for n, w := range q {
			if back[n] != w {
				t.Fatalf("round trip changed %q: %d -> %d", n, w, back[n])
			}
		}
	})
}

// FuzzApplyEnv sets one TANDEM_* variable (chosen by the fuzzer) to an
// arbitrary value. ApplyEnv must not panic, must name the variable in its
// error, and Validate must never panic on whatever ApplyEnv left behind.
func FuzzApplyEnv(f *testing.F) {
	f.Add(uint8(0), "rediss://u:p@127.0.0.1:6380/1")
	f.Add(uint8(0), "redis://[::1")
	f.Add(uint8(4), "maybe")
	f.Add(uint8(13), "a=1,b=x")
	f.Add(uint8(14), "-5")
	f.Add(uint8(15), "1h1h1h")
	f.Add(uint8(15), "-1ns")
	f.Add(uint8(5), "nats://a:4222,ftp://b")
	f.Add(uint8(19), "   ")
	f.Fuzz(func(t *testing.T, which uint8, value string) {
		s := settings[int(which)%len(settings)]
		c := DefaultConfig()
		err := c.ApplyEnv(func(k string) (string, bool) {
			if k == s.env {
				return value, true
			}
			return "", false
		})
		if err != nil && !strings.Contains(err.Error(), s.env) {
			t.Fatalf("error for %s does not name it: %v", s.env, err)
		}
		// File settings would hit the disk; keep Validate to parsing.
		c.RedisTLSCA, c.RedisTLSCert, c.RedisTLSKey = "", "", ""
		c.NATSCreds, c.NATSNKeyFile, c.NATSTLSCA, c.NATSTLSCert, c.NATSTLSKey = "", "", "", "", ""
		verr := c.Validate()
		if verr == nil {
			if len(c.Queues) > MaxQueues || c.Concurrency > MaxConcurrency || c.ShutdownTimeout > MaxShutdownTimeout {
				t.Fatalf("Validate accepted out-of-range config: %+v", c)
			}
			if _, err := c.redisOptions(); err != nil {
				t.Fatalf("Validate passed but redisOptions fails: %v", err)
			}
		}
		_ = RedactURL(c.RedisURL) // must not panic either
	})
}

// FuzzParseSchedule: schedules come from files operators write. Errors must
// carry the name (file:line); accepted schedules are within the limits and
// every entry passes the same check the scheduler runs before enqueueing.
func FuzzParseSchedule(f *testing.F) {
	for _, s := range []string{
		`[{"name":"nightly","spec":"0 3 * * *","kind":"ping","payload":{"sleep_ms":1}}]`,
		`[{"name":"a","spec":"@every 1m","kind":"ping"},{"name":"b","spec":"@daily","kind":"ping","queue":"default"}]`,
		`[{"name":"a","spec":"CRON_TZ=Europe/Paris 0 3 * * *","kind":"ping"}]`,
		`[{"name":"a","spec":"@every 0s","kind":"ping"}]`,
		`[{"name":"a","spec":"61 * * * *","kind":"ping"}]`,
		`[{"name":"a","spec":"@every 1m","kind":"ping"},{"name":"a","spec":"@every 1m","kind":"ping"}]`,
		`[{"name":"a b","spec":"@hourly","kind":"ping","extra":1}]`,
		`{}`, `[`, `[1]`, `[] []`, ``, "[\n{\"name\":\"x\",\n\"spec\":5}]",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		entries, err := ParseSchedule("fuzz.json", data)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "fuzz.json:") {
				t.Fatalf("error does not start with file:line: %v", err)
			}
			return
		}
		if len(entries) > MaxScheduleEntries {
			t.Fatalf("accepted %d entries", len(entries))
		}
		seen := map[string]bool{}
		for _, e := range entries {
			if _, _, err := checkEntry(e); err != nil {
				t.Fatalf("accepted entry %q fails checkEntry: %v", e.Name, err)
			}
			if len(e.Name) > MaxEntryNameLen || seen[e.Name] {
				t.Fatalf("accepted name %q (long or repeated)", e.Name)
			}
			seen[e.Name] = true
		}
	})
}

// TestLoadScheduleLimit checks the file-size bound of LoadSchedule, which
// the fuzzer's in-memory inputs do not reach.
func TestLoadScheduleLimit(t *testing.T) {
	p := filepath.Join(t.TempDir(), "big.json")
	if err := os.WriteFile(p, []byte("["+strings.Repeat(" ", MaxScheduleBytes)+"]"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadSchedule(p); err == nil || !strings.Contains(err.Error(), "over the limit") {
		t.Fatalf("LoadSchedule of an oversized file: %v", err)
	}
}
