package main

import (
	"bufio"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tandem-ai/tandem/batch"
)

// BenchmarkUploadBatchFile measures POST /v1/files with a batch input of
// batch.MaxFileRequests (50,000) request lines of about 2 KB, some 100 MB,
// against a peer on the same bytes in the same run. Ours: a real multipart
// upload (streamed from disk by the client) to the producer's handler on a
// real Redis with the local artifact store, which streams the part to a
// temporary file, checks every line (batch.CheckFile) and keeps the file in
// the store. The peer: the same bytes as a plain body over HTTP to a
// handler that only copies them to a file (io.Copy), the floor for moving
// them through HTTP onto disk. The two alternate each round; the medians,
// their ratio and, for ours, the peak heap in use above the heap before the
// upload (runtime.MemStats.HeapInuse, sampled every 5 ms) and the bytes
// allocated per upload are reported. A peak far below the file's size
// shows that memory does not grow with the file.
//
// go test -run '^$' -bench UploadBatchFile -benchtime 3x ./cmd/producer/
func BenchmarkUploadBatchFile(b *testing.B) {
	e := newBatchEnv(b)
	api := e.startAPI(b)
	input := filepath.Join(b.TempDir(), "requests.jsonl")
	size := writeBatchFile(b, input, batch.MaxFileRequests)

	sink := filepath.Join(b.TempDir(), "copied.jsonl")
	peer := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f, err := os.Create(sink)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		defer f.Close()
		if _, err := io.Copy(f, r.Body); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
		}
	}))
	b.Cleanup(peer.Close)

	upload := func() {
		pr, pw := io.Pipe()
		mw := multipart.NewWriter(pw)
		go func() {
			pw.CloseWithError(writeUploadForm(mw, input))
		}()
		resp, err := http.Post(api.URL+"/v1/files", mw.FormDataContentType(), pr)
		pr.CloseWithError(io.ErrClosedPipe) // unblocks the writer if the answer came early
		if err != nil {
			b.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), fmt.Sprintf(`"bytes":%d`, size)) {
			b.Fatalf("upload: HTTP %d %s", resp.StatusCode, body)
		}
	}
	copyPlain := func() {
		f, err := os.Open(input)
		if err != nil {
			b.Fatal(err)
		}
		defer f.Close()
		resp, err := http.Post(peer.URL, "application/octet-stream", f)
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			b.Fatalf("plain copy: HTTP %d", resp.StatusCode)
		}
	}
	// measure runs fn once and returns its time, the peak heap in use above
	// the heap in use before it, and the bytes it allocated.
	measure := func(fn func()) (time.Duration, uint64, uint64) {
		runtime.GC()
		var before runtime.MemStats
		runtime.ReadMemStats(&before)
		var peak atomic.Uint64
		peak.Store(before.HeapInuse)
		stop := make(chan struct{})
		var wg sync.WaitGroup
		wg.Go(func() {
			t := time.NewTicker(5 * time.Millisecond)
			defer t.Stop()
			var m runtime.MemStats
			for {
				select {
				case <-stop:
					return
				case <-t.C:
					runtime.ReadMemStats(&m)
					if m.HeapInuse > peak.Load() {
						peak.Store(m.HeapInuse)
					}
				}
			}
		})
		start := time.Now()
		fn()
		took := time.Since(start)
		close(stop)
		wg.Wait()
		var after runtime.MemStats
		runtime.ReadMemStats(&after)
		return took, peak.Load() - before.HeapInuse, after.TotalAlloc - before.TotalAlloc
	}

	upload() // warm up: connections, Redis scripts, the page cache
	copyPlain()
	var ours, theirs []float64 // seconds
	var peakHeap, alloc uint64
	b.ResetTimer()
	for i := range b.N {
		// Alternate the order so drift in machine load hits both alike.
		runOurs := func() {
			took, peak, allocated := measure(upload)
			ours = append(ours, took.Seconds())
			peakHeap, alloc = max(peakHeap, peak), max(alloc, allocated)
		}
		runPeer := func() {
			took, _, _ := measure(copyPlain)
			theirs = append(theirs, took.Seconds())
		}
		if i%2 == 0 {
			runOurs()
			runPeer()
		} else {
			runPeer()
			runOurs()
		}
	}
	b.StopTimer()
	o, p := percentile(ours, 50), percentile(theirs, 50)
	b.ReportMetric(o, "upload_s")
	b.ReportMetric(p, "plain_copy_s")
	b.ReportMetric(o/p, "ratio")
	b.ReportMetric(float64(peakHeap)/(1<<20), "peak_heap_MiB")
	b.ReportMetric(float64(alloc)/(1<<20), "alloc_MiB")
	fmt.Printf("upload of %d lines, %.1f MB: POST /v1/files %.2f s, plain io.Copy over HTTP %.2f s, ratio %.2f; upload peak heap +%.1f MiB, %.0f MiB allocated (file %.0f MiB)\n",
		batch.MaxFileRequests, float64(size)/1e6, o, p, o/p,
		float64(peakHeap)/(1<<20), float64(alloc)/(1<<20), float64(size)/(1<<20))
}

// writeBatchFile writes n valid request lines of about 2 KB to path and
// returns its size.
func writeBatchFile(b *testing.B, path string, n int) int64 {
	b.Helper()
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	w := bufio.NewWriter(f)
	prompt := strings.Repeat("a b ", 500)
	for i := range n {
		fmt.Fprintf(w, `{"custom_id":"req-%d","method":"POST","url":"/v1/completions","body":{"model":"builtin:tiny","max_tokens":16,"prompt":"%s"}}`+"\n", i, prompt)
	}
	if err := w.Flush(); err != nil {
		b.Fatal(err)
	}
	info, err := f.Stat()
	if err != nil {
		b.Fatal(err)
	}
	return info.Size()
}

// writeUploadForm writes the form of POST /v1/files, purpose batch and the
// file at path, streaming the file.
func writeUploadForm(mw *multipart.Writer, path string) error {
	if err := mw.WriteField("purpose", "batch"); err != nil {
		return err
	}
	part, err := mw.CreateFormFile("file", filepath.Base(path))
	if err != nil {
		return err
	}
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := io.Copy(part, f); err != nil {
		return err
	}
	return mw.Close()
}
