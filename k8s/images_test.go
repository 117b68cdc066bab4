package k8s

import (
	"fmt"
	"os"
	"path"
	"regexp"
	"strings"
	"testing"

	"sigs.k8s.io/kustomize/api/types"
	"sigs.k8s.io/yaml"
)

// imagesComponent is the single source of image names and the tag.
const imagesComponent = "components/images/kustomization.yaml"

// imageDockerfile maps each Tandem image to its Dockerfile under
// build/docker.
var imageDockerfile = map[string]string{
	"tandem-producer":    "producer.Dockerfile",
	"tandem-scheduler":   "scheduler.Dockerfile",
	"tandem-worker":      "worker.Dockerfile",
	"tandem-worker-cuda": "worker-cuda.Dockerfile",
}

// componentImage is the image each Tandem pod role must run.
var componentImage = map[string]string{
	"producer":     "tandem-producer",
	"scheduler":    "tandem-scheduler",
	"worker-cpu":   "tandem-worker",
	"worker-gpu":   "tandem-worker-cuda",
	"finetune-job": "tandem-worker-cuda",
}

func readKustomization(file string) (*types.Kustomization, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	var k types.Kustomization
	if err := yaml.UnmarshalStrict(data, &k); err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	return &k, nil
}

// sourceImages returns image name -> "registry/name:tag" from the images
// component.
func sourceImages() (map[string]string, error) {
	k, err := readKustomization(imagesComponent)
	if err != nil {
		return nil, err
	}
	out := make(map[string]string)
	for _, img := range k.Images {
		if img.NewName == "" || img.NewTag == "" || img.Digest != "" {
			return nil, fmt.Errorf("%s: image %s: want newName and newTag (and no digest)", imagesComponent, img.Name)
		}
		if path.Base(img.NewName) != img.Name {
			return nil, fmt.Errorf("%s: image %s: newName %s must end in /%s", imagesComponent, img.Name, img.NewName, img.Name)
		}
		out[img.Name] = img.NewName + ":" + img.NewTag
	}
	return out, nil
}

// splitImage returns an image's repository and tag ("" if none); a digest
// counts as a tag.
func splitImage(image string) (repo, tag string) {
	if i := strings.Index(image, "@"); i >= 0 {
		return image[:i], image[i+1:]
	}
	if i := strings.LastIndex(image, ":"); i > strings.LastIndex(image, "/") {
		return image[:i], image[i+1:]
	}
	return image, ""
}

// checkImages: Tandem's images are the images component's, all of one
// registry and tag, each pod role runs its own image, and every other image
// is pinned.
func checkImages(b *bundle) []error {
	want, err := sourceImages()
	if err != nil {
		return []error{err}
	}
	var errs []error
	tags := make(map[string]bool)
	for _, pt := range b.podTemplates() {
		for _, cr := range pt.containers() {
			img := cr.c.Image
			repo, tag := splitImage(img)
			if name, ok := tandemImage(img); ok {
				tags[path.Dir(repo)+" "+tag] = true
				if w, ok := want[name]; !ok || w != img {
					errs = append(errs, fmt.Errorf("%s: image %s, want %s from %s", cr.where, img, w, imagesComponent))
				}
				if role := pt.labels["app.kubernetes.io/component"]; componentImage[role] != "" && componentImage[role] != name {
					errs = append(errs, fmt.Errorf("%s: a %s pod runs %s, want %s", cr.where, role, name, componentImage[role]))
				}
				continue
			}
			if tag == "" || tag == "latest" {
				errs = append(errs, fmt.Errorf("%s: image %s is not pinned to a version", cr.where, img))
			}
		}
	}
	if len(tags) > 1 {
		errs = append(errs, fmt.Errorf("Tandem images come from more than one registry/tag: %v", tags))
	}
	return errs
}

// makefilePath is the Makefile whose images target and IMAGE_* defaults
// must agree with the images component.
var makefilePath = "../Makefile"

var makeVar = regexp.MustCompile(`(?m)^(IMAGE_REPO|IMAGE_TAG)\s*\??=\s*(\S+)\s*$`)

// TestImageSource: the images component, the Makefile's `images` target
// and the overlays agree on one registry and one tag.
func TestImageSource(t *testing.T) {
	want, err := sourceImages()
	if err != nil {
		t.Fatal(err)
	}
	repos, tags := make(map[string]bool), make(map[string]bool)
	for name := range imageDockerfile {
		ref, ok := want[name]
		if !ok {
			t.Errorf("%s: no entry for %s", imagesComponent, name)
			continue
		}
		repo, tag := splitImage(ref)
		repos[path.Dir(repo)], tags[tag] = true, true
	}
	if len(want) != len(imageDockerfile) {
		t.Errorf("%s: %d images, want %d (one per Dockerfile)", imagesComponent, len(want), len(imageDockerfile))
	}
	if len(repos) != 1 || len(tags) != 1 {
		t.Fatalf("%s: images must share one registry and one tag; have %v and %v", imagesComponent, repos, tags)
	}

	mk, err := os.ReadFile(makefilePath)
	if err != nil {
		t.Fatal(err)
	}
	vars := make(map[string]string)
	for _, m := range makeVar.FindAllStringSubmatch(string(mk), -1) {
		vars[m[1]] = m[2]
	}
	for k, set := range map[string]map[string]bool{"IMAGE_REPO": repos, "IMAGE_TAG": tags} {
		v, ok := vars[k]
		switch {
		case !ok:
			t.Errorf("Makefile: no %s ?= ... (the images target builds with it; docs/DEPLOY.md)", k)
		case !set[v]:
			t.Errorf("Makefile: %s is %s, but %s has %v", k, v, imagesComponent, set)
		}
	}
	for name, df := range imageDockerfile {
		if !strings.Contains(string(mk), "build/docker/"+df) {
			t.Errorf("Makefile: the images target does not build build/docker/%s", df)
		}
		if !strings.Contains(string(mk), "$(IMAGE_REPO)/"+name+":$(IMAGE_TAG)") {
			t.Errorf("Makefile: no image $(IMAGE_REPO)/%s:$(IMAGE_TAG)", name)
		}
	}

	// The images component must come last in each overlay, or images of
	// the components after it keep their placeholder names.
	for _, target := range renderTargets {
		k, err := readKustomization(target + "/kustomization.yaml")
		if err != nil {
			t.Fatal(err)
		}
		if len(k.Components) == 0 {
			continue
		}
		if last := k.Components[len(k.Components)-1]; path.Base(last) != "images" {
			t.Errorf("%s: components must end with ../../components/images, not %s", target, last)
		}
	}
}
