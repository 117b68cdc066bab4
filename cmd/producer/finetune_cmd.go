package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/hibiken/asynq"

	"github.com/tandem-ai/tandem/jobs"
	"github.com/tandem-ai/tandem/pipeline"
)

// cmdFinetune enqueues a finetune job on the finetune queue and, with
// --wait, follows it with a progress bar showing the running loss.
func cmdFinetune(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, cfg := clientFlags("finetune", stderr)
	var a jobs.FinetuneArgs
	initConfig := jobs.BindFinetuneFlags(fs, &a)
	wait := fs.Bool("wait", false, "follow the job with a progress bar until it ends")
	device := fs.String("device", "", "cuda: train on a GPU worker (the gpu queue); cpu or empty: the finetune queue")
	taskID := fs.String("task-id", "", "task id; a second enqueue with the same id is refused")
	if _, err := pipeline.ParseArgs(fs, args); err != nil {
		return err
	}
	if err := a.ApplyInitConfig(*initConfig); err != nil {
		return err
	}
	queue, err := pipeline.QueueForDevice(*device, "")
	if err != nil {
		return fmt.Errorf("--device: %w", err)
	}
	client, info, err := enqueueArgs(ctx, *cfg, a, queue, *taskID)
	if err != nil {
		return err
	}
	defer client.Close()
	if !*wait {
		return printJSON(stdout, taskView(info))
	}
	fmt.Fprintf(stderr, "finetune job %s on queue %s\n", info.ID, info.Queue)
	final, err := followFinetune(ctx, client.Inspector(), info.Queue, info.ID, stderr)
	if err != nil {
		return err
	}
	return printJSON(stdout, final)
}

// followFinetune polls the job until it completes or is archived, drawing
// the progress the worker writes into the task's result.
func followFinetune(ctx context.Context, insp *asynq.Inspector, queue, id string, w io.Writer) (TaskView, error) {
	lastLine := ""
	for {
		info, err := insp.GetTaskInfo(queue, id)
		if err != nil {
			return TaskView{}, err
		}
		var st jobs.FinetuneStatus
		if len(info.Result) > 0 && json.Unmarshal(info.Result, &st) == nil && st.TotalSteps > 0 {
			if line := progressLine(st); line != lastLine {
				fmt.Fprintf(w, "\r%s", line)
				lastLine = line
			}
		}
		switch info.State {
		case asynq.TaskStateCompleted:
			fmt.Fprintln(w)
			if st.LossCurve != "" {
				fmt.Fprintf(w, "loss curve: %s\n", st.LossCurve)
			}
			return taskView(info), nil
		case asynq.TaskStateArchived:
			fmt.Fprintln(w)
			return taskView(info), fmt.Errorf("finetune job %s failed: %s", id, info.LastErr)
		}
		select {
		case <-ctx.Done():
			return TaskView{}, ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// progressLine draws "[#####.....]  45% step 12/36 epoch 1 loss 3.412".
func progressLine(st jobs.FinetuneStatus) string {
	const width = 30
	frac := float64(st.Step) / float64(st.TotalSteps)
	if st.State == "done" {
		frac = 1
	}
	frac = min(max(frac, 0), 1)
	n := int(frac * width)
	bar := strings.Repeat("#", n) + strings.Repeat(".", width-n)
	s := fmt.Sprintf("[%s] %3.0f%% step %d/%d epoch %d loss %.4f lr %.2e %.0f tok/s",
		bar, frac*100, st.Step, st.TotalSteps, st.Epoch, st.Loss, st.LR, st.TokensPerSec)
	if k := len(st.Epochs); k > 0 {
		s += fmt.Sprintf(" | dev loss %.4f", st.Epochs[k-1].DevLoss)
	}
	return s
}
