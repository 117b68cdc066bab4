package pipeline

import "testing"

func TestQueueForDevice(t *testing.T) {
	for _, c := range []struct {
		device, queue, want string
		bad                 bool
	}{
		{device: "", queue: "", want: ""},
		{device: "cpu", queue: "interactive", want: "interactive"},
		{device: "cuda", queue: "", want: QueueGPU},
		{device: "cuda:3", queue: "gpu", want: QueueGPU},
		{device: "cuda:0", queue: "default", bad: true},
		{device: "cpu", queue: "gpu", bad: true},
		{device: "cuda:", bad: true},
		{device: "cuda:x", bad: true},
		{device: "tpu", bad: true},
	} {
		got, err := QueueForDevice(c.device, c.queue)
		if (err != nil) != c.bad || got != c.want {
			t.Errorf("QueueForDevice(%q, %q) = %q, %v", c.device, c.queue, got, err)
		}
	}
	if q := GPUWorkerQueues(); q[QueueGPU] <= q[QueueInteractive] || q[QueueDefault] == 0 {
		t.Errorf("GPU worker queues %v: the gpu queue must lead and CPU queues stay", q)
	}
}
