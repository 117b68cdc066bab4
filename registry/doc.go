// Package registry keeps named, versioned models: metadata in Redis (name
// -> versions, each with its parent, dataset digest, hyper-parameters,
// metrics and artifact location, plus the promoted version) and the model
// files on disk under an artifact root, one directory per version in the
// layout model.LoadDir reads.
//
// Generation jobs refer to "name" (the promoted version) or "name@N".
package registry
