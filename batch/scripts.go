package batch

import "github.com/redis/go-redis/v9"

// Every change to a batch's status or counts is one of these scripts, so
// that the check and the change happen atomically in Redis. KEYS[1] is the
// record hash and KEYS[2] the hash of counted chunks (chunk -> artifact key);
// both carry the batch id as a hash tag, so they live in one Redis Cluster
// slot.
//
// Each script may run more than once for one call: go-redis sends a command
// again after a read timeout (MaxRetries), and a Redis that was only slow
// (paused, swapping) then runs both. So every script answers a repeat of a
// call as it answered the call itself, recognising its own earlier run by a
// token the caller chose (a fresh output key, a random token) or by the
// state it leaves; none reports its own earlier run as someone else's.

// scriptCreate writes a new record, refusing an id already in use, unless
// this call's earlier run wrote it. ARGV[1]: the call's token, kept as
// field create_token; ARGV[2..]: field, value, field, value, ...
var scriptCreate = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 1 then
  if redis.call('HGET', KEYS[1], 'create_token') == ARGV[1] then return 1 end
  return 0
end
redis.call('HSET', KEYS[1], 'create_token', unpack(ARGV))
return 1
`)

// scriptTransition moves the status to ARGV[1] and stamps ARGV[1].."_at"
// with ARGV[2], when the current status is one of ARGV[4..]; ARGV[3] is the
// call's token, kept as field transition_token, so that a repeat of the
// call that made the move also answers "ok". It returns "" for a missing
// record, "ok" on success, else the current status.
var scriptTransition = redis.NewScript(`
local st = redis.call('HGET', KEYS[1], 'status')
if not st then return '' end
if st == ARGV[1] and redis.call('HGET', KEYS[1], 'transition_token') == ARGV[3] then return 'ok' end
for i = 4, #ARGV do
  if st == ARGV[i] then
    redis.call('HSET', KEYS[1], 'status', ARGV[1], ARGV[1] .. '_at', ARGV[2], 'transition_token', ARGV[3])
    return 'ok'
  end
end
return st
`)

// scriptChunkDone counts a finished chunk once. It records ARGV[2] (the
// chunk's output key, fresh for each run of the chunk) under chunk ARGV[1]
// only if the chunk is not yet recorded, and only then adds ARGV[3]
// completed and ARGV[4] failed rows. A chunk already recorded with ARGV[2]
// was counted by this very call (go-redis sent it again after a timeout):
// that answers "counted" again, whatever the status is now, and adds
// nothing. Otherwise it refuses while the batch is not in_progress or
// cancelling (sealed for finalisation, or gone). Returns {code, chunks done,
// chunks, completed, failed}; code -1 missing, 0 refused, 1 counted (by this
// call), 2 already counted (by another run).
var scriptChunkDone = redis.NewScript(`
local st = redis.call('HGET', KEYS[1], 'status')
if not st then return {-1, 0, 0, 0, 0} end
local code = 0
if redis.call('HGET', KEYS[2], ARGV[1]) == ARGV[2] then
  code = 1
elseif st == 'in_progress' or st == 'cancelling' then
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
// ARGV[1] == 'expire' or 'fail') or cancelling, it sets status finalizing and decides
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
elseif ARGV[1] == 'fail' and (st == 'in_progress' or st == 'validating') then
  final = 'failed'
else
  return {'not_ready', st}
end
redis.call('HSET', KEYS[1], 'status', 'finalizing', 'finalizing_at', ARGV[2], 'final_status', final)
return {'sealed', final}
`)

// scriptFinish ends a finalizing batch: status ARGV[1] stamped at ARGV[2],
// absolute counts ARGV[3] completed and ARGV[4] failed, output key ARGV[5],
// error key ARGV[6]. A batch that already ended exactly so (this call run
// again, or an identical finalisation) answers "ok" too. Returns "ok", or
// the current status when not finalizing.
var scriptFinish = redis.NewScript(`
local st = redis.call('HGET', KEYS[1], 'status')
if st == ARGV[1] then
  local f = redis.call('HMGET', KEYS[1], 'completed', 'failed', 'output_key', 'error_key')
  if f[1] == ARGV[3] and f[2] == ARGV[4] and f[3] == ARGV[5] and f[4] == ARGV[6] then return 'ok' end
end
if st ~= 'finalizing' then return st or '' end
redis.call('HSET', KEYS[1], 'status', ARGV[1], ARGV[1] .. '_at', ARGV[2], 'completed', ARGV[3], 'failed', ARGV[4],
  'output_key', ARGV[5], 'error_key', ARGV[6])
return 'ok'
`)

// scriptAnnounce marks the batch's lifecycle event as sent: it sets field
// announced to ARGV[1], a token of the call, unless set. Returns 1 when
// this call (or its earlier run) set it, else 0.
var scriptAnnounce = redis.NewScript(`
if redis.call('HSETNX', KEYS[1], 'announced', ARGV[1]) == 1 then return 1 end
if redis.call('HGET', KEYS[1], 'announced') == ARGV[1] then return 1 end
return 0
`)

// scriptMarkResultFiles sets field result_files of an existing record (a
// plain HSET would bring a record deleted by hand back as a stub).
var scriptMarkResultFiles = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('HSET', KEYS[1], 'result_files', '1') end
`)
