package batch

import (
	"context"
	"strings"
	"testing"
	"time"
)

// A batch of embeddings lines (endpoint /v1/embeddings): each line's output
// body is OpenAI's embeddings response, and an input longer than the
// model's context is an error line naming it.
func TestBatchAnswersEmbeddingsLines(t *testing.T) {
	e := newTestEnv(t, envOptions{nats: true, workers: 1})
	input := strings.Join([]string{
		`{"custom_id":"e1","method":"POST","url":"/v1/embeddings","body":{"model":"builtin:tiny","input":["a new item","another"]}}`,
		`{"custom_id":"e2","method":"POST","url":"/v1/embeddings","body":{"input":"one","encoding_format":"base64"}}`,
		`{"custom_id":"e3","method":"POST","url":"/v1/embeddings","body":{"input":["fine","` + strings.Repeat("many words ", 200) + `"]}}`,
	}, "\n")
	b, rep, err := e.svc.Create(context.Background(), strings.NewReader(input), CreateOptions{Model: "builtin:tiny", ChunkSize: 2, Endpoint: "/v1/embeddings"})
	if err != nil || rep.Valid != 3 {
		t.Fatalf("create: %v, report %+v", err, rep)
	}
	end := e.waitTerminal(t, b.ID, 2*time.Minute)
	if end.Status != StatusCompleted {
		t.Fatalf("ended %+v", end)
	}
	out, errs := e.results(t, b.ID)
	checkExactlyOnce(t, []string{"e1", "e2", "e3"}, out, errs)
	got := map[string]int{}
	for _, l := range out {
		r := l.Response
		switch l.CustomID {
		case "e1", "e2":
			if r.Embeddings == nil || r.Embeddings.Object != "list" || r.Embeddings.Model != "builtin:tiny" || len(r.Embeddings.Data[0].Embedding.Values) != 64 {
				t.Fatalf("%s: %+v", l.CustomID, r)
			}
			got[l.CustomID] = len(r.Embeddings.Data)
			if base64 := r.Embeddings.Data[0].Embedding.Base64; base64 != (l.CustomID == "e2") {
				t.Fatalf("%s: base64 %v", l.CustomID, base64)
			}
		}
	}
	if got["e1"] != 2 || got["e2"] != 1 {
		t.Fatalf("vectors per line: %v", got)
	}
	if len(errs) != 1 || errs[0].CustomID != "e3" || errs[0].Error.Code != "context_length_exceeded" || !strings.HasPrefix(errs[0].Error.Message, "body.input[1]: ") {
		t.Fatalf("errors: %+v", errs)
	}
}

// An embeddings line that names another model than the batch's is
// invalid, as a completion line is.
func TestPlanRefusesEmbeddingsLinesOfAnotherModel(t *testing.T) {
	in := `{"custom_id":"e1","url":"/v1/embeddings","body":{"model":"builtin:small","input":"x"}}` + "\n" +
		`{"custom_id":"e2","url":"/v1/embeddings","body":{"model":"builtin:tiny","input":"x"}}` + "\n"
	p, err := PlanInput(strings.NewReader(in), Input{Model: "builtin:tiny", Endpoint: "/v1/embeddings"})
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Rows) != 1 || p.Rows[0].Request.CustomID != "e2" || len(p.Invalid) != 1 || p.Invalid[0].Code != "model_mismatch" || p.Invalid[0].Line != 1 {
		t.Fatalf("plan: rows %+v, invalid %+v", p.Rows, p.Invalid)
	}
}
