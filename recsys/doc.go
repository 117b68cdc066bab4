// Package recsys is Tandem's collaborative-filtering engine: it turns
// behaviour (views, ratings, accepted or rejected generations) into similar
// users, similar items and recommended templates and topics per user.
//
// # Place in the pipeline
//
// The nightly rebuild (jobs' recs:rebuild-* kinds) loads a snapshot of the
// interactions into a Store on every worker, computes a row range of a
// similarity table on each (BuildShard), and one worker joins them (Merge,
// NewModel) and publishes every user's list to Redis (RedisStore.Publish),
// which swaps the new generation in atomically; recs-rebuild does the same
// in one process (Build). Between rebuilds, the scheduler's feedback
// consumer appends each event to the InteractionLog, a Redis stream that
// gives events one order and drops repeated IDs; every live model follows
// that log with Model.Apply, and a coalesced update task recomputes the
// user's list with Model.Recommend and stores it with
// RedisStore.UpdateUser. Readers (the producer's recommendations endpoint)
// call RedisStore.Get.
//
// # Data
//
// An interaction is (user, item, event type, value, time), read from JSONL or
// CSV (ReadEvents) or received as a feedback event. H[u][i] sums weight(type)
// * (value - previous) * 2^((t - anchor)/half-life) over u's events on i
// (StoreConfig); previous is 0 except in a revision, an event that replaces
// an earlier value (a re-rating), so a rating and its revisions add up to
// the latest rating alone. H is linear in its events and nothing downstream
// reads them one by one: the weights count cells (n_t, the users with any
// event on t, which a revision of an existing cell does not change) and
// popularity counts positive cells, both functions of H alone.
// Users and items get int32 indices in first-seen order; the matrix is kept
// twice, by user and by item (the inverted index), as per-row sorted int32
// index and float32 value slices, compacted into contiguous arenas before a
// rebuild. Values are summed in float64 and stored as float32, through one
// code path for files and events, so a rebuild and an incremental replay of
// the same events hold the same bits. Every input is checked against Limits;
// a bad line gives an *InputError naming the line and field (errors.Is
// ErrBadInput).
//
// # Similarity
//
//	sim(x, y) = sum_t a_t x[t] y[t] / (|x|_a |y|_a),   |x|_a = sqrt(sum_t a_t x[t]^2)
//
// Norms are weighted, so sim(x, x) = 1. User-user similarity compares rows of
// H (features are items); item-item compares columns (features are users).
// The weights a_t are 1, IDF ln(1 + N/n_t), BM25's IDF, or given (Weighting).
// Optional shrinkage multiplies by n/(n + lambda), n the co-rated count; pairs
// under MinOverlap co-ratings or at or under MinSimilarity are dropped.
//
// The full rebuild computes one row of the sparse product (X diag(a)) X^T at
// a time into a dense float64 accumulator, then selects the row's best
// K+Slack with a similarity histogram and a sort of the few candidates at the
// top, on one goroutine per CPU over chunks of rows. Rows are first relabelled so that
// rows sharing their most popular feature are adjacent, which keeps each
// row's accumulations in a cache-sized band. Lists are ordered by similarity,
// ties to the lower index, so every build orders equal similarities alike.
//
// # Incremental updates
//
// Model.Apply adds one event and updates the norms, both tables and the
// popularity counts exactly: the rows whose norm changed are recomputed with
// the rebuild's own kernel and their new similarities pushed into the other
// rows' lists. Lists keep Slack entries beyond K, so a neighbour that drops
// out is replaced from the slack rather than by recomputing the row; the
// pushes are screened by a per-row summary (a Bloom signature and the last
// entry) before a list is read. After any sequence of events the state
// equals a rebuild on the same interactions to 1e-6 (the tests check this,
// with redelivered IDs, new users and items, negative values and decay).
//
// IDF weights move when an item gains a user. Exactly: the IDF base N is
// fixed at build (Model.IDFBase; the nightly rebuild refreshes it), and a new
// (user, item) pair recomputes every row that has the item, in parallel over
// Config.Workers. Cheaply: SimConfig.FreezeWeights keeps a_t as built, and a
// rebuild given Model.FeatureWeights reproduces that state.
//
// Apply ignores an event whose ID is among the last Config.DedupeCap IDs
// (a FIFO-bounded set); de-duplication over longer windows is the consumer's
// (JetStream's Nats-Msg-Id window).
//
// # Recommendations and evaluation
//
// Recommend scores unseen items from the user's neighbours (UserKNN) or from
// the neighbours of the user's items (ItemKNN), filters by item kind or a
// predicate, and falls back to the most popular unseen items for cold-start
// users. HoldoutSplit and Evaluate give precision, recall, nDCG and MAP at k
// and catalogue coverage. Synthesize generates seeded behaviour with planted
// taste groups for tests and benchmarks.
//
// # Serving store
//
// RedisStore keeps generation N as one hash (KeyServeGenPrefix + N, user ->
// JSON list) and the served generation's number in KeyServeCurrent. Publish
// writes a whole generation, then swaps the pointer in a WATCH/MULTI
// transaction and gives the old hash a grace TTL, so readers see the old or
// the new complete set. All keys start with KeyPrefix.
//
// Benchmarks against a SciPy peer and of the update latency are in
// bench/recsys and bench_test.go.
package recsys
