package finetune

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
)

// Word lists of the synthetic corpus: small enough that a tiny model learns
// the templates within a minute, varied enough that it has to.
var (
	synAdj   = []string{"red", "quiet", "happy", "old", "bright", "small"}
	synNoun  = []string{"cat", "dog", "bird", "farmer", "teacher", "robot"}
	synVerb  = []string{"sees", "likes", "follows", "helps", "finds", "visits"}
	synPlace = []string{"park", "river", "market", "garden", "school", "harbor"}
)

// SyntheticSentence is the i-th sentence of a seeded templated corpus.
func SyntheticSentence(rng *rand.Rand) string {
	pick := func(w []string) string { return w[rng.IntN(len(w))] }
	return fmt.Sprintf("the %s %s %s the %s %s near the %s.", pick(synAdj), pick(synNoun), pick(synVerb), pick(synAdj), pick(synNoun), pick(synPlace))
}

// WriteSyntheticCorpus writes n templated sentences, one per line (format
// text), or n prompt/completion pairs (format jsonl) whose completion
// finishes the prompt's sentence. Demos and tests train on it.
func WriteSyntheticCorpus(path, format string, n int, seed uint64) error {
	rng := rand.New(rand.NewPCG(seed, 0x636f72707573))
	var b strings.Builder
	for i := 0; i < n; i++ {
		s := SyntheticSentence(rng)
		if format == FormatJSONL {
			cut := strings.Index(s, " near ")
			line, err := json.Marshal(map[string]string{"prompt": s[:cut], "completion": s[cut:]})
			if err != nil {
				return err
			}
			b.Write(line)
		} else {
			b.WriteString(s)
		}
		b.WriteByte('\n')
	}
	return os.WriteFile(path, []byte(b.String()), 0o644)
}
