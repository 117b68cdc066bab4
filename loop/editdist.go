package loop

import "strings"

// MaxEditWords bounds the words EditDistance compares on each side, so one
// call costs at most MaxEditWords² cell updates (4 million) and two rows of
// memory, whatever the texts.
const MaxEditWords = 2000

// EditDistance measures how much a person changed a generation: the
// word-level Levenshtein distance between the generated text a and the
// edited text b (insertions, deletions and substitutions of whole words,
// split on white space), divided by the longer word count. 0 means
// unchanged, 1 nothing in common. Texts longer than MaxEditWords words are
// compared on their first MaxEditWords words.
func EditDistance(a, b string) float64 {
	wa, wb := words(a), words(b)
	n := max(len(wa), len(wb))
	if n == 0 {
		return 0
	}
	// Words become small integers so the inner loop compares ints.
	ids := map[string]int32{}
	intern := func(ws []string) []int32 {
		out := make([]int32, len(ws))
		for i, w := range ws {
			id, ok := ids[w]
			if !ok {
				id = int32(len(ids))
				ids[w] = id
			}
			out[i] = id
		}
		return out
	}
	x, y := intern(wa), intern(wb)
	prev := make([]int32, len(y)+1)
	cur := make([]int32, len(y)+1)
	for j := range prev {
		prev[j] = int32(j)
	}
	for i := 1; i <= len(x); i++ {
		cur[0] = int32(i)
		for j := 1; j <= len(y); j++ {
			sub := prev[j-1]
			if x[i-1] != y[j-1] {
				sub++
			}
			cur[j] = min(sub, prev[j]+1, cur[j-1]+1)
		}
		prev, cur = cur, prev
	}
	return float64(prev[len(y)]) / float64(n)
}

// words splits s on white space, keeping at most MaxEditWords words.
func words(s string) []string {
	var out []string
	for w := range strings.FieldsSeq(s) {
		if len(out) == MaxEditWords {
			break
		}
		out = append(out, w)
	}
	return out
}
