package batch

import "github.com/redis/go-redis/v9"

// Every change to a batch's status or counts is one of these scripts, so
// that the check and the change happen atomically in Redis. KEYS[1] is the
// record hash and KEYS[2] the hash of counted chunks (chunk -> artifact key);
// both carry the batch id as a hash tag, so they live in one Redis Cluster
// slot.

// scriptCreate writes a new record, refusing an id already in use.
// ARGV: field, value, field, value, ...
var scriptCreate = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV))
return 1
`)

// scriptTransition moves the status to ARGV[1] and stamps ARGV[1].."_at"
// with ARGV[2], when the current status is one of ARGV[3..]. It returns ""
// for a missing record, "ok" on success, else the current status.
var scriptTransition = redis.NewScript(`
local st = redis.call('HGET', KEYS[1], 'status')
if not st then return '' end
for i = 3, #ARGV do
  if st == ARGV[i] then
    redis.call('HSET', KEYS[1], 'status', ARGV[1], ARGV[1] .. '_at', ARGV[2])
    return 'ok'
  end
end
return st
`)

// scriptChunkDone counts a finished chunk once. It records ARGV[2] (the
// chunk's output key) under chunk ARGV[1] only if the chunk is not yet
// recorded, and only then adds ARGV[3] completed and ARGV[4] failed rows.
// It refuses while the batch is not in_progress or cancelling (sealed for
// finalisation, or gone). Returns {code, chunks done, chunks, completed,
// failed}; code -1 missing, 0 refused, 1 counted, 2 already counted.
var scriptChunkDone = redis.NewScript(`
local st = redis.call('HGET', KEYS[1], 'status')
if not st then return {-1, 0, 0, 0, 0} end
local code = 0
if st == 'in_progress' or st == 'cancelling' then
  if redis.call('HSETNX', KEYS[2], ARGV[1], ARGV[2]) == 1 then
    redis.call('HINCRBY', KEYS[1], 'completed', ARGV[3])
    redis.call('HINCRBY', KEYS[1], 'failed', ARGV[4])
    code = 1
  else
    code = 2
  end
end
return {code, redis.call('HLEN', KEYS[2]), tonumber(redis.call('HGET', KEYS[1], 'chunks') or '0'),
  tonumber(redis.call('HGET', KEYS[1], 'completed') or '0'), tonumber(redis.call('HGET', KEYS[1], 'failed') or '0')}
`)

// scriptSeal starts finalisation: from in_progress (every chunk counted, or
// ARGV[1] == 'expire') or cancelling, it sets status finalizing and decides
// the final status once. A batch already finalizing returns the decided
// status again, so a finalisation that crashed resumes. Returns {state,
// detail}: {"sealed", final status}, {"terminal", status}, {"missing", ""}
// or {"not_ready", status}.
var scriptSeal = redis.NewScript(`
local st = redis.call('HGET', KEYS[1], 'status')
if not st then return {'missing', ''} end
if st == 'completed' or st == 'failed' or st == 'expired' or st == 'cancelled' then return {'terminal', st} end
if st == 'finalizing' then return {'sealed', redis.call('HGET', KEYS[1], 'final_status') or 'completed'} end
local done = redis.call('HLEN', KEYS[2])
local chunks = tonumber(redis.call('HGET', KEYS[1], 'chunks') or '0')
local final
if st == 'cancelling' then
  final = 'cancelled'
elseif st == 'in_progress' and done >= chunks then
  final = 'completed'
elseif ARGV[1] == 'expire' and (st == 'in_progress' or st == 'validating') then
  final = 'expired'
else
  return {'not_ready', st}
end
redis.call('HSET', KEYS[1], 'status', 'finalizing', 'finalizing_at', ARGV[2], 'final_status', final)
return {'sealed', final}
`)

// scriptFinish ends a finalizing batch: status ARGV[1] stamped at ARGV[2],
// absolute counts ARGV[3] completed and ARGV[4] failed, output key ARGV[5],
// error key ARGV[6]. Returns "ok", or the current status when not finalizing.
var scriptFinish = redis.NewScript(`
local st = redis.call('HGET', KEYS[1], 'status')
if st ~= 'finalizing' then return st or '' end
redis.call('HSET', KEYS[1], 'status', ARGV[1], ARGV[1] .. '_at', ARGV[2], 'completed', ARGV[3], 'failed', ARGV[4],
  'output_key', ARGV[5], 'error_key', ARGV[6])
return 'ok'
`)
