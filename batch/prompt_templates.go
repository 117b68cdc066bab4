package batch

import "github.com/tandem-ai/tandem/jobs"

// Personalised generation (jobs.KindPersonalize) fills the recommender's
// templates with the same template language, and the same bounds, as
// templated batches; jobs cannot import this package, so it is handed the
// parser here.
func init() {
	jobs.SetPromptTemplateParser(func(name, src string) (jobs.PromptTemplate, error) {
		return ParseTemplate(name, src)
	})
}
