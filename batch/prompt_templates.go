package batch

import "github.com/tandem-ai/tandem/jobs"

// PromptTemplates is the template language, with its bounds, of templated
// batches, for personalised generation (jobs.KindPersonalize) to fill the
// recommender's templates with: workers pass it as
// jobs.Deps.PromptTemplates, since jobs cannot import this package.
func PromptTemplates(name, src string) (jobs.PromptTemplate, error) {
	return ParseTemplate(name, src)
}
