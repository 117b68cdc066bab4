package pipeline

// SubjectFinetuneProgressAll matches the progress of every fine-tuning run
// (core NATS, outside every stream like the batch progress subjects).
const SubjectFinetuneProgressAll = "tandem.finetune.*.progress"

// FinetuneProgressSubject is the core-NATS subject carrying a fine-tuning
// run's step and epoch events. It returns "" when runID fails ValidateID.
func FinetuneProgressSubject(runID string) string {
	if ValidateID(runID) != nil {
		return ""
	}
	return "tandem.finetune." + runID + ".progress"
}
