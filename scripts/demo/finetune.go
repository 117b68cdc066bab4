package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/tandem-ai/tandem/finetune"
	"github.com/tandem-ai/tandem/jobs"
	"github.com/tandem-ai/tandem/model"
)

// demoModelName is the registry name the demo trains and promotes.
const demoModelName = "demo-writer"

// demoFinetune trains a small model from scratch on a generated corpus
// through the finetune queue (about a minute on a laptop CPU), shows the
// progress bar and the loss curve's path, registers and promotes the result,
// and generates with the new version by its registry name.
func demoFinetune(ctx context.Context, d *demo) error {
	step("fine-tuning through the queue (producer finetune --wait)")
	corpus := filepath.Join(d.files, "finetune-corpus.jsonl")
	if err := finetune.WriteSyntheticCorpus(corpus, finetune.FormatJSONL, 600, 1); err != nil {
		return err
	}
	cfg, err := model.MarshalConfig(model.Config{NLayer: 2, NHead: 2, NEmbd: 64, NPositions: 64, VocabSize: 50257, LayerNormEpsilon: 1e-5})
	if err != nil {
		return err
	}
	cfgPath := filepath.Join(d.dir, "finetune-config.json")
	if err := os.WriteFile(cfgPath, cfg, 0o644); err != nil {
		return err
	}
	fmt.Printf("   corpus: %s (600 templated prompt/completion pairs; only completions count in the loss)\n", corpus)
	fmt.Println("   model:  2 layers, 64 wide, GPT-2 vocabulary, trained from scratch")
	cmd := exec.CommandContext(ctx, filepath.Join(d.bin, "producer"), "finetune",
		"--init-config", cfgPath, "--data", corpus, "--epochs", "3", "--batch", "8", "--seq", "32", "--lr", "3e-3",
		"--seed", "1", "--checkpoint-every", "20", "--gen-eval", "20", "--register", demoModelName, "--promote", "--wait")
	cmd.Env = d.envFor("producer")
	cmd.Stderr = os.Stdout // the progress bar
	out, err := cmd.Output()
	if err != nil {
		return fmt.Errorf("producer finetune: %w", err)
	}
	var view struct {
		ID     string               `json:"id"`
		Result *jobs.FinetuneStatus `json:"result"`
	}
	if err := json.Unmarshal(out, &view); err != nil || view.Result == nil || view.Result.Result == nil {
		return fmt.Errorf("producer finetune: unexpected output %s", out)
	}
	st, res := view.Result, view.Result.Result
	for _, e := range res.Epochs {
		fmt.Printf("   epoch %d: train loss %.3f, dev loss %.3f, dev perplexity %.1f\n", e.Epoch, e.TrainLoss, e.DevLoss, e.DevPPL)
	}
	fmt.Printf("   test loss %.3f, test perplexity %.1f (a random model starts near %.0f)\n", res.TestLoss, res.TestPPL, 50257.0)
	if res.BLEU != nil {
		fmt.Printf("   generations on held-out prompts: BLEU %.3f, ROUGE-L %.3f\n", *res.BLEU, *res.ROUGEL)
	}
	fmt.Printf("   loss curve: %s (also GET /v1/finetunes/%s/loss.png on producer serve)\n", st.LossCurve, view.ID)
	fmt.Printf("   registered and promoted: %s\n", st.Version)

	models, err := d.output(ctx, "producer", "models", "show", demoModelName)
	if err != nil {
		return err
	}
	fmt.Print(indent(models))

	step("generation with the fine-tuned model, by its registry name")
	prompts := filepath.Join(d.files, "finetune-prompts.jsonl")
	if err := writeFinetunePrompts(prompts); err != nil {
		return err
	}
	genOut := filepath.Join(d.files, "finetune-results.jsonl")
	genID, err := d.enqueue(ctx, "generate", map[string]any{"model": demoModelName, "input": prompts, "output": genOut, "batch_size": 4})
	if err != nil {
		return err
	}
	if err := d.follow(ctx, genID); err != nil {
		return err
	}
	return showCompletions(genOut)
}

func writeFinetunePrompts(path string) error {
	var b strings.Builder
	for i, p := range []string{"the happy farmer finds the old farmer", "the small robot helps the quiet dog", "the red bird visits the bright teacher"} {
		line, err := json.Marshal(map[string]any{"custom_id": fmt.Sprintf("ft-%d", i+1), "method": "POST", "url": "/v1/completions",
			"body": map[string]any{"prompt": p, "max_tokens": 8, "temperature": 0}})
		if err != nil {
			return err
		}
		b.Write(line)
		b.WriteByte('\n')
	}
	return os.WriteFile(path, []byte(b.String()), 0o644)
}

func showCompletions(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var l struct {
			CustomID string `json:"custom_id"`
			Response *struct {
				Body struct {
					Choices []struct {
						Text string `json:"text"`
					} `json:"choices"`
				} `json:"body"`
			} `json:"response"`
		}
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			return err
		}
		if l.Response != nil && len(l.Response.Body.Choices) > 0 {
			fmt.Printf("   %-5s -> %q\n", l.CustomID, l.Response.Body.Choices[0].Text)
		}
	}
	fmt.Println("   (the trained model completes the template it learned: \" near the <place>.\")")
	return sc.Err()
}
