// Package loop joins interactive generation, feedback and the recommender
// into one loop: it keeps a record of every interactive or personalised
// generation (who asked, with which template or topic and model, what came
// out), so that feedback naming a generation id can be turned into a
// recommender event and a fine-tune sample, and so that the loop's metrics
// and dashboard can list recent generations with what people did with them.
package loop
