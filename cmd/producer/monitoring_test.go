package main

import (
	"fmt"
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
	code, body := callAs(t, srv.URL, admin, http.MethodGet, "/monitoring/api/queues/"+queue+"/pending_tasks", "")
	if code != http.StatusOK || !strings.Contains(body, "cmpl-monitor") {
		t.Fatalf("the monitoring API: %d %s", code, body)
	}
	if strings.Contains(body, key) {
		t.Fatalf("the monitoring UI shows the stream key: %s", body)
	}
}
