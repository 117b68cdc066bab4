package main

import (
	"fmt"
	"log/slog"
	"maps"

	"github.com/tandem-ai/tandem/gpu"
	"github.com/tandem-ai/tandem/pipeline"
)

// deviceSetup is where a worker runs its models, and the queues that
// follow from it.
type deviceSetup struct {
	dev    *gpu.Device // nil: the CPU
	queues map[string]int
}

// openDevice sets up the compute device named by name ("cpu", "cuda",
// "cuda:N"):
//
//   - cpu: the CPU, and the gpu queue is dropped from queues (a CPU worker
//     must never take the GPU's jobs);
//   - cuda:N: GPU N, and, unless the queues were set explicitly, the GPU
//     worker's queues (the gpu queue first, CPU work at lower weights);
//   - cuda:N on a binary built without -tags cuda or a machine without a
//     usable driver: a warning that says why, and the CPU as above.
//
// Only a malformed name is an error.
func openDevice(name string, prec gpu.Precision, queues map[string]int, explicitQueues bool, logger *slog.Logger) (deviceSetup, error) {
	ordinal, isCUDA, err := gpu.ParseDevice(name)
	if err != nil {
		return deviceSetup{}, fmt.Errorf("--device: %w", err)
	}
	if isCUDA {
		dev, err := gpu.Open(ordinal, gpu.Options{Precision: prec})
		if err == nil {
			q := queues
			if !explicitQueues {
				q = pipeline.GPUWorkerQueues()
			}
			logger.Info("models run on the GPU", "device", dev.String(), "precision", prec)
			return deviceSetup{dev: dev, queues: q}, nil
		}
		logger.Warn("no GPU: models run on the CPU and the gpu queue is left to GPU workers", "device", name, "reason", err)
	}
	return deviceSetup{queues: cpuQueues(queues, logger)}, nil
}

// cpuQueues is queues without the gpu queue, or the default CPU queues
// when nothing else is left.
func cpuQueues(queues map[string]int, logger *slog.Logger) map[string]int {
	if _, ok := queues[pipeline.QueueGPU]; !ok {
		return queues
	}
	q := maps.Clone(queues)
	delete(q, pipeline.QueueGPU)
	if len(q) == 0 {
		q = pipeline.DefaultConfig().Queues
	}
	logger.Warn("a CPU worker does not take the gpu queue", "queues", pipeline.FormatQueues(q))
	return q
}
