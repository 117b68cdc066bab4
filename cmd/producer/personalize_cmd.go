package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/hibiken/asynq"

	"github.com/tandem-ai/tandem/jobs"
	"github.com/tandem-ai/tandem/pipeline"
)

// cmdPersonalize enqueues a personalize job: each user's top recommended
// templates and topics, generated into a per-user batch output. With
// --wait it follows the job and prints its result.
func cmdPersonalize(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, cfg := clientFlags("personalize", stderr)
	a := jobs.BindPersonalizeFlags(fs)
	wait := fs.Bool("wait", false, "follow the job until it ends and print its result")
	taskID := fs.String("task-id", "", "task id; a second enqueue with the same id is refused")
	device := fs.String("device", "", "cuda: generate on a GPU worker (the gpu queue); cpu or empty: the default queue")
	if _, err := pipeline.ParseArgs(fs, args); err != nil {
		return err
	}
	queue, err := pipeline.QueueForDevice(*device, "")
	if err != nil {
		return fmt.Errorf("--device: %w", err)
	}
	client, info, err := enqueueArgs(ctx, *cfg, *a, queue, *taskID)
	if err != nil {
		return err
	}
	defer client.Close()
	if !*wait {
		return printJSON(stdout, taskView(info))
	}
	fmt.Fprintf(stderr, "personalize job %s on queue %s\n", info.ID, info.Queue)
	for {
		info, err = client.Inspector().GetTaskInfo(info.Queue, info.ID)
		if err != nil {
			return err
		}
		switch info.State {
		case asynq.TaskStateCompleted:
			return printJSON(stdout, taskView(info))
		case asynq.TaskStateArchived:
			_ = printJSON(stdout, taskView(info))
			return fmt.Errorf("personalize job %s failed: %s", info.ID, info.LastErr)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(300 * time.Millisecond):
		}
	}
}
