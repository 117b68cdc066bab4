// Package finetune trains GPT-2 style models on a dataset: it reads and
// checks plain-text or prompt/completion JSONL data, splits it into
// train/dev/test with a seed, runs epochs of AdamW steps with gradient
// accumulation, clipping, a cosine schedule and early stopping on dev loss,
// and writes crash-safe checkpoints (weights, optimizer moments, data
// position and RNG state) so that a killed run resumes where it stopped and
// ends with the same weights as an uninterrupted one.
//
// It also draws the loss curve as a PNG with the standard library only, and
// collects accepted or edited generations into a feedback dataset.
package finetune
