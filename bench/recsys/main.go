// Command recsys benchmarks Tandem's similarity rebuild against a SciPy peer
// on the same synthetic data, and measures the incremental update latency.
//
//	go run ./bench/recsys                  # 100k users x 20k items x 2M events
//	go run ./bench/recsys -users 20000 -items 5000 -events 400000   # quicker
//	go run ./bench/recsys -live-memory     # the scheduler's live model: memory
//
// It writes the data with recsys's generator to a temporary CSV that both
// sides read, times our rebuild (per side, all cores and one core), runs
// bench/recsys/peer.py under /usr/bin/python3 (Debian's, with numpy and
// scipy), checks the two agree, prints the ratio, and then times feedback
// events from Apply to refreshed recommendations (p50/p99). With
// -live-memory it instead measures the memory of the scheduler's live model
// on the same data (livemem.go).
package main

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"flag"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"syscall"
	"time"

	"github.com/tandem-ai/tandem/recsys"
)

type options struct {
	users, items, events, groups, k, workers, latencyEvents int
	noise, skew                                             float64
	seed                                                    uint64
	weighting, python, peer, keep, measureLive              string
	skipPeer, freeze, liveMemory                            bool
}

func main() {
	var o options
	flag.IntVar(&o.users, "users", 100_000, "users")
	flag.IntVar(&o.items, "items", 20_000, "items")
	flag.IntVar(&o.events, "events", 2_000_000, "interactions")
	flag.IntVar(&o.groups, "groups", 20, "planted taste groups")
	flag.Float64Var(&o.noise, "noise", 0.1, "fraction of interactions outside the group's block")
	flag.Float64Var(&o.skew, "skew", 1.5, "popularity skew inside a block (1 = uniform)")
	flag.Uint64Var(&o.seed, "seed", 1, "generator seed")
	flag.IntVar(&o.k, "k", 50, "neighbours per row")
	flag.StringVar(&o.weighting, "weighting", "idf", "feature weighting: none, idf, bm25")
	flag.IntVar(&o.workers, "workers", 0, "rebuild goroutines (0: GOMAXPROCS)")
	flag.IntVar(&o.latencyEvents, "latency-events", 2000, "feedback events to time (0: skip)")
	flag.StringVar(&o.python, "python", "/usr/bin/python3", "Python with numpy and scipy")
	flag.StringVar(&o.peer, "peer", "bench/recsys/peer.py", "the SciPy peer script")
	flag.StringVar(&o.keep, "keep", "", "write the data here instead of a temporary directory")
	flag.BoolVar(&o.skipPeer, "skip-peer", false, "do not run the SciPy peer")
	flag.BoolVar(&o.freeze, "freeze", false, "freeze IDF weights during incremental updates (SimConfig.FreezeWeights)")
	flag.BoolVar(&o.liveMemory, "live-memory", false, "measure the memory of the scheduler's live model instead (K, data flags apply)")
	flag.StringVar(&o.measureLive, "measure-live", "", "internal: the -live-memory child, on this CSV")
	flag.Parse()
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "bench/recsys:", err)
		os.Exit(1)
	}
}

func run(o options) error {
	if o.measureLive != "" {
		return measureLive(o.measureLive, o.k)
	}
	ctx := context.Background()
	w, err := recsys.ParseWeighting(o.weighting)
	if err != nil {
		return err
	}
	dir := o.keep
	if dir == "" {
		if dir, err = os.MkdirTemp("", "tandem-recsys-bench-"); err != nil {
			return err
		}
		defer os.RemoveAll(dir)
	}
	gen := recsys.SynthConfig{Users: o.users, Items: o.items, Interactions: o.events, Groups: o.groups,
		Noise: o.noise, Skew: o.skew, Seed: o.seed, Kinds: []string{"template", "topic"},
		Start: time.Unix(1_700_000_000, 0), Span: 30 * 24 * time.Hour}
	csvPath := filepath.Join(dir, "interactions.csv")
	t := time.Now()
	if err := writeCSV(csvPath, gen); err != nil {
		return err
	}
	fmt.Printf("data: %d users x %d items, %d events, %d groups -> %s (%.1fs)\n",
		o.users, o.items, o.events, o.groups, csvPath, time.Since(t).Seconds())
	if o.liveMemory {
		return liveMemory(csvPath, o)
	}

	st, err := recsys.NewStore(recsys.StoreConfig{})
	if err != nil {
		return err
	}
	t = time.Now()
	if err := st.LoadFile(csvPath); err != nil {
		return err
	}
	loadS := time.Since(t).Seconds()
	fmt.Printf("ours: load %.2fs: %d users, %d items, %d pairs\n", loadS, st.Users(), st.Items(), st.Cells())

	sim := recsys.SimConfig{K: o.k, Weighting: w, FreezeWeights: o.freeze}
	cfg := recsys.Config{Users: sim, Items: sim, Workers: o.workers}
	workers := o.workers
	if workers == 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	var shards [2]*recsys.Shard
	var secs, cpus [2]float64
	for _, side := range []recsys.Side{recsys.SideUsers, recsys.SideItems} {
		n := st.Users()
		if side == recsys.SideItems {
			n = st.Items()
		}
		t, c := time.Now(), processCPU()
		sh, err := recsys.BuildShard(ctx, st, cfg, side, 0, n)
		if err != nil {
			return err
		}
		shards[side], secs[side], cpus[side] = sh, time.Since(t).Seconds(), processCPU()-c
		fmt.Printf("ours: %v-%v top-%d (%v weighting), %d goroutines: %.2fs wall, %.2fs CPU\n", side, side, o.k, w, workers, secs[side], cpus[side])
	}
	one := cfg
	one.Workers = 1
	t = time.Now()
	if _, err := recsys.BuildShard(ctx, st, one, recsys.SideUsers, 0, st.Users()); err != nil {
		return err
	}
	oneCore := time.Since(t).Seconds()
	fmt.Printf("ours: users-users on 1 goroutine: %.2fs\n", oneCore)

	if !o.skipPeer {
		if err := comparePeer(o, csvPath, dir, shards[recsys.SideUsers], secs, cpus, oneCore); err != nil {
			return err
		}
	}

	if o.latencyEvents > 0 {
		users, err := recsys.Merge(shards[recsys.SideUsers])
		if err != nil {
			return err
		}
		items, err := recsys.Merge(shards[recsys.SideItems])
		if err != nil {
			return err
		}
		m, err := recsys.NewModel(st, cfg, users, items)
		if err != nil {
			return err
		}
		return latency(m, gen, o, w)
	}
	return nil
}

// processCPU is this process's CPU time in seconds, all threads.
func processCPU() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}

func writeCSV(path string, gen recsys.SynthConfig) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := recsys.WriteSynthCSV(f, gen); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

type peerResult struct {
	LoadS     float64 `json:"load_s"`
	UsersS    float64 `json:"users_s"`
	ItemsS    float64 `json:"items_s"`
	UsersCPUS float64 `json:"users_cpu_s"`
	ItemsCPUS float64 `json:"items_cpu_s"`
	Users     int     `json:"users"`
	NNZ       int     `json:"nnz"`
	K         int     `json:"k"`
}

func comparePeer(o options, csvPath, dir string, users *recsys.Shard, ours, ourCPU [2]float64, oneCore float64) error {
	weights, err := json.Marshal(recsys.DefaultEventWeights())
	if err != nil {
		return err
	}
	simsPath := filepath.Join(dir, "peer-user-sims.f32")
	cmd := exec.Command(o.python, o.peer, "--csv", csvPath, "--k", fmt.Sprint(o.k),
		"--weighting", o.weighting, "--weights", string(weights), "--out", simsPath)
	cmd.Stderr = os.Stderr
	// One BLAS/OpenMP thread: SciPy's sparse product and argpartition are
	// single-threaded anyway; this keeps numpy from oversubscribing.
	cmd.Env = append(os.Environ(), "OMP_NUM_THREADS=1", "OPENBLAS_NUM_THREADS=1")
	fmt.Printf("peer: %s %s ...\n", o.python, o.peer)
	out, err := cmd.Output()
	if err != nil {
		return fmt.Errorf("peer: %w", err)
	}
	var p peerResult
	if err := json.Unmarshal(out, &p); err != nil {
		return fmt.Errorf("peer output %q: %w", out, err)
	}
	fmt.Printf("peer: load %.2fs, users-users %.2fs, items-items %.2fs (nnz %d)\n", p.LoadS, p.UsersS, p.ItemsS, p.NNZ)
	agree, rows, err := agreement(simsPath, users, p)
	if err != nil {
		return err
	}
	fmt.Printf("check: users' top-%d similarities agree with the peer (to 1e-4) on %d of %d rows\n", p.K, agree, rows)
	row := func(name string, ours, peer float64) {
		fmt.Printf("%-32s %9.2fs %9.2fs %7.1fx\n", name, ours, peer, peer/ours)
	}
	fmt.Printf("\n%-32s %10s %10s %8s\n", "", "ours", "scipy", "ratio")
	row("users-users, wall", ours[0], p.UsersS)
	row("items-items, wall", ours[1], p.ItemsS)
	row("full rebuild (both), wall", ours[0]+ours[1], p.UsersS+p.ItemsS)
	row("users-users, 1 goroutine, wall", oneCore, p.UsersS)
	row("full rebuild (both), CPU", ourCPU[0]+ourCPU[1], p.UsersCPUS+p.ItemsCPUS)
	return nil
}

// agreement compares our users' top-K similarity values with the peer's, row
// by row (values, not IDs: equal similarities may order differently).
func agreement(path string, users *recsys.Shard, p peerResult) (int, int, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return 0, 0, err
	}
	if len(raw) != p.Users*p.K*4 || p.Users != len(users.Lists) {
		return 0, 0, fmt.Errorf("peer wrote %d bytes for %d users x %d, we have %d users", len(raw), p.Users, p.K, len(users.Lists))
	}
	agree := 0
	for r, l := range users.Lists {
		l = l[:min(len(l), p.K)] // shards carry K+Slack entries; the top K is the result
		var peer []float64
		for j := range p.K {
			v := math.Float32frombits(binary.LittleEndian.Uint32(raw[4*(r*p.K+j):]))
			if !math.IsNaN(float64(v)) {
				peer = append(peer, float64(v))
			}
		}
		ok := len(peer) == len(l)
		for j := 0; ok && j < len(l); j++ {
			ok = math.Abs(peer[j]-float64(l[j].Sim)) <= 1e-4
		}
		if ok {
			agree++
		}
	}
	return agree, len(users.Lists), nil
}

// latency applies feedback events like the ones the consumer sees (a user
// acting on an item of their taste, sometimes on any item, sometimes a new
// user) and times each from Apply to the user's refreshed recommendations.
func latency(m *recsys.Model, gen recsys.SynthConfig, o options, w recsys.Weighting) error {
	rng := rand.New(rand.NewPCG(o.seed, 77))
	types := []string{recsys.EventView, recsys.EventClick, recsys.EventAccepted, recsys.EventEdited, recsys.EventRejected, recsys.EventRating}
	var d, cpu []time.Duration
	var changed int
	for k := range o.latencyEvents {
		u := rng.IntN(gen.Users)
		user := recsys.SynthUser(u)
		if k%50 == 0 {
			user = fmt.Sprintf("new%d", k)
		}
		item := rng.IntN(gen.Items)
		if rng.Float64() > gen.Noise {
			g := gen.UserGroup(u)
			lo, hi := g*gen.Items/gen.Groups, (g+1)*gen.Items/gen.Groups
			item = lo + rng.IntN(hi-lo)
		}
		ev := recsys.Event{ID: fmt.Sprintf("lat-%d", k), User: user, Item: recsys.SynthItem(item),
			Type: types[rng.IntN(len(types))], Value: float64(1 + rng.IntN(5))}
		t, c := time.Now(), processCPU()
		up, err := m.Apply(ev)
		if err != nil {
			return err
		}
		if _, err := m.Recommend(user, recsys.RecOptions{N: 20}); err != nil {
			return err
		}
		d = append(d, time.Since(t))
		cpu = append(cpu, time.Duration((processCPU()-c)*1e9))
		changed += len(up.ChangedUsers)
	}
	fmt.Printf("\nincremental (%v weighting, frozen %v, %d workers): %d events, Apply + Recommend(N=20); %.0f user lists changed per event\n",
		w, o.freeze, m.Config().Workers, len(d), float64(changed)/float64(len(d)))
	for _, x := range []struct {
		name string
		ds   []time.Duration
	}{{"wall", d}, {"CPU", cpu}} {
		slices.Sort(x.ds)
		q := func(p float64) time.Duration {
			return x.ds[min(len(x.ds)-1, int(p*float64(len(x.ds))))].Round(time.Microsecond)
		}
		fmt.Printf("  %-4s p50 %v, p90 %v, p99 %v, max %v\n", x.name, q(0.5), q(0.9), q(0.99), x.ds[len(x.ds)-1].Round(time.Microsecond))
	}
	return nil
}
