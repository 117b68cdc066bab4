package k8s

import (
	"fmt"
	"sync"
	"testing"

	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
)

// renderTargets are the kustomizations the tests build, each as
// `kubectl apply -k DIR` would: the two overlays, the example overlays (the
// fine-tune ScaledJob; HPAs instead of KEDA), and the file-shuttle tool.
var renderTargets = []string{
	"overlays/dev",
	"overlays/prod",
	"examples/prod-finetune-jobs",
	"examples/prod-without-keda",
	"tools/file-shuttle",
}

// rendered caches each target's objects as JSON: kustomize runs once per
// target and test binary, and every test decodes its own copy, so a test
// that mutates objects cannot disturb another.
var rendered struct {
	sync.Mutex
	byTarget map[string][][]byte
}

// renderJSON runs kustomize on target (a directory relative to this
// package) and returns its objects, one JSON document each, in kustomize's
// output order.
func renderJSON(target string) ([][]byte, error) {
	rendered.Lock()
	defer rendered.Unlock()
	if docs, ok := rendered.byTarget[target]; ok {
		return docs, nil
	}
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	m, err := k.Run(filesys.MakeFsOnDisk(), target)
	if err != nil {
		return nil, fmt.Errorf("kustomize build %s: %w", target, err)
	}
	var docs [][]byte
	for _, r := range m.Resources() {
		data, err := r.MarshalJSON()
		if err != nil {
			return nil, fmt.Errorf("kustomize build %s: %s: %w", target, r.CurId(), err)
		}
		docs = append(docs, data)
	}
	if rendered.byTarget == nil {
		rendered.byTarget = make(map[string][][]byte)
	}
	rendered.byTarget[target] = docs
	return docs, nil
}

// load renders target and decodes every object strictly; any failure
// fails the test at once, since no other check means much without it.
func load(t *testing.T, target string) *bundle {
	t.Helper()
	docs, err := renderJSON(target)
	if err != nil {
		t.Fatal(err)
	}
	b, err := decodeBundle(target, docs)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
