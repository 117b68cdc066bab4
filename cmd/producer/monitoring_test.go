package main

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/tandem-ai/tandem/jobs"
)

// TestMonitoringHidesTheStreamKey: an interactive task's stream key seals
// its token stream; the monitoring UI shows the task's payload without it,
// as GET /v1/jobs does.
func TestMonitoringHidesTheStreamKey(t *testing.T) {
	e := newGenEnv(t, "")
	const admin = "admin-secret-01234567890"
	srv, _ := serveTestServer(t, e, admin+" ops admin\n")
	redisOpt, err := e.cfg.RedisConnOpt()
	if err != nil {
		t.Fatal(err)
	}
	queue := fmt.Sprintf("monitor-test-%d", time.Now().UnixNano())
	client := asynq.NewClient(redisOpt)
	defer client.Close()
	insp := asynq.NewInspector(redisOpt)
	defer insp.Close()
	t.Cleanup(func() { _ = insp.DeleteQueue(queue, true) })
	const key = "5ec2e7-stream-key-0123456789abcdef"
	payload := `{"id":"cmpl-monitor","stream_key":"` + key + `","body":{"model":"builtin:tiny","prompt":"hi"}}`
	if _, err := client.Enqueue(asynq.NewTask(jobs.KindInteractive, []byte(payload)), asynq.Queue(queue)); err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodGet, srv.URL+"/monitoring/api/queues/"+queue+"/pending_tasks", nil)
	req.Header.Set("Authorization", "Bearer "+admin)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "cmpl-monitor") {
		t.Fatalf("the monitoring API: %d %s", resp.StatusCode, body)
	}
	if strings.Contains(string(body), key) {
		t.Fatalf("the monitoring UI shows the stream key: %s", body)
	}
}
