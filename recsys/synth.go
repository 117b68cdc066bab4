package recsys

import (
	"bufio"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"strconv"
	"time"
)

// SynthConfig describes synthetic behaviour with planted taste groups, for
// tests and benchmarks (no downloaded data sets). User u belongs to group
// u mod Groups; items are cut into Groups contiguous blocks and group g
// prefers block g. Each interaction picks an item from the user's block
// (popular items first, by Skew) or, with probability Noise, any item.
type SynthConfig struct {
	Users, Items, Interactions int
	// Groups is the number of taste groups, at least 1 and at most Items.
	Groups int
	// Noise is the fraction of interactions outside the user's block, in [0, 1).
	Noise float64
	// Skew shapes popularity inside a block: the item at relative position
	// r^Skew (r uniform) is picked, so 1 is uniform and larger values favour
	// the head of the block. Zero means 1.
	Skew float64
	// Rejections is the fraction of noise interactions that are rejections
	// (negative weight), in [0, 1].
	Rejections float64
	// Kinds, when set, gives item i the kind Kinds[i mod len(Kinds)].
	Kinds []string
	// Start and Span spread timestamps uniformly over [Start, Start+Span);
	// a zero Start leaves events without time.
	Start time.Time
	Span  time.Duration
	Seed  uint64
}

func (c SynthConfig) validate() error {
	switch {
	case c.Users < 1 || c.Items < 1 || c.Interactions < 0:
		return fmt.Errorf("recsys: synth: want Users, Items >= 1 and Interactions >= 0")
	case c.Groups < 1 || c.Groups > c.Items:
		return fmt.Errorf("recsys: synth: Groups %d out of range [1, Items=%d]", c.Groups, c.Items)
	case c.Noise < 0 || c.Noise >= 1:
		return fmt.Errorf("recsys: synth: Noise %g out of range [0, 1)", c.Noise)
	case c.Skew < 0:
		return fmt.Errorf("recsys: synth: Skew %g is negative", c.Skew)
	case c.Rejections < 0 || c.Rejections > 1:
		return fmt.Errorf("recsys: synth: Rejections %g out of range [0, 1]", c.Rejections)
	}
	return nil
}

// SynthUser and SynthItem name the u-th user and i-th item.
func SynthUser(u int) string { return "u" + strconv.Itoa(u) }

// SynthItem names the i-th synthetic item.
func SynthItem(i int) string { return "i" + strconv.Itoa(i) }

// UserGroup is the planted group of user index u.
func (c SynthConfig) UserGroup(u int) int { return u % c.Groups }

// ItemGroup is the planted group (block) of item index i.
func (c SynthConfig) ItemGroup(i int) int { return i * c.Groups / c.Items }

// GroupOf returns the planted group of a synthetic user ("u12") or item
// ("i7") name.
func (c SynthConfig) GroupOf(id string) (int, bool) {
	if len(id) < 2 {
		return 0, false
	}
	n, err := strconv.Atoi(id[1:])
	if err != nil || n < 0 {
		return 0, false
	}
	switch {
	case id[0] == 'u' && n < c.Users:
		return c.UserGroup(n), true
	case id[0] == 'i' && n < c.Items:
		return c.ItemGroup(n), true
	}
	return 0, false
}

// Synthesize generates the events, user by user, and calls fn with each.
// The same config always yields the same events.
func Synthesize(c SynthConfig, fn func(Event) error) error {
	if err := c.validate(); err != nil {
		return err
	}
	skew := c.Skew
	if skew == 0 {
		skew = 1
	}
	rng := rand.New(rand.NewPCG(c.Seed, c.Seed^0x9e3779b97f4a7c15))
	counts := make([]int32, c.Users)
	for range c.Interactions {
		counts[rng.IntN(c.Users)]++
	}
	for u, n := range counts {
		g := c.UserGroup(u)
		lo, hi := blockOf(g, c.Groups, c.Items)
		for range n {
			ev := Event{User: SynthUser(u), Value: 1}
			noise := rng.Float64() < c.Noise
			var i int
			if noise {
				i = rng.IntN(c.Items)
			} else {
				i = lo + int(float64(hi-lo)*math.Pow(rng.Float64(), skew))
			}
			ev.Item = SynthItem(i)
			switch x := rng.Float64(); {
			case noise && rng.Float64() < c.Rejections:
				ev.Type = EventRejected
			case x < 0.6:
				ev.Type = EventView
			case x < 0.85:
				ev.Type = EventClick
			case x < 0.9:
				ev.Type = EventPurchase
			default:
				ev.Type = EventRating
				if noise {
					ev.Value = float64(1 + rng.IntN(3))
				} else {
					ev.Value = float64(4 + rng.IntN(2))
				}
			}
			if len(c.Kinds) > 0 {
				ev.ItemKind = c.Kinds[i%len(c.Kinds)]
			}
			if !c.Start.IsZero() {
				ev.Time = c.Start.Add(time.Duration(rng.Int64N(max(int64(c.Span), 1)))).Truncate(time.Second)
			}
			if err := fn(ev); err != nil {
				return err
			}
		}
	}
	return nil
}

// blockOf is the item range [lo, hi) group g prefers.
func blockOf(g, groups, items int) (int, int) {
	lo := (g*items + groups - 1) / groups
	hi := ((g+1)*items + groups - 1) / groups
	return lo, hi
}

// SynthEvents collects Synthesize's events in a slice.
func SynthEvents(c SynthConfig) ([]Event, error) {
	out := make([]Event, 0, c.Interactions)
	err := Synthesize(c, func(ev Event) error {
		out = append(out, ev)
		return nil
	})
	return out, err
}

// WriteSynthCSV writes the synthetic events as an interactions CSV with the
// header user,item,event,value,ts,kind (ts in Unix seconds, empty without
// Start).
func WriteSynthCSV(w io.Writer, c SynthConfig) error {
	bw := bufio.NewWriterSize(w, 1<<20)
	bw.WriteString("user,item,event,value,ts,kind\n")
	var line []byte
	err := Synthesize(c, func(ev Event) error {
		line = append(line[:0], ev.User...)
		line = append(line, ',')
		line = append(line, ev.Item...)
		line = append(line, ',')
		line = append(line, ev.Type...)
		line = append(line, ',')
		line = strconv.AppendFloat(line, ev.Value, 'g', -1, 64)
		line = append(line, ',')
		if !ev.Time.IsZero() {
			line = strconv.AppendInt(line, ev.Time.Unix(), 10)
		}
		line = append(line, ',')
		line = append(line, ev.ItemKind...)
		line = append(line, '\n')
		_, err := bw.Write(line)
		return err
	})
	if err != nil {
		return err
	}
	return bw.Flush()
}
