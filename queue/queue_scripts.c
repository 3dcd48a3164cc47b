/*
 * queue_scripts.c - the four Lua scripts that change queue state.
 *
 * DESCRIPTION
 *   Every state change that spans keys runs inside one of these scripts so
 *   it is atomic, and each script handles a whole batch so single-threaded
 *   Redis pays the script-call overhead once per batch, not per message
 *   (docs/performance-physics.md, section 1). docs/queue.md walks through
 *   each script step by step; keep the two in sync.
 *
 *   All keys a script touches are in KEYS, except message hashes, whose
 *   names are built from a prefix passed in ARGV ("<pfx>:{p}:m:"). Those
 *   share the partition's hash tag {p}, so on Redis Cluster they live in
 *   the same slot as the KEYS; the script stays correct there.
 *
 *   Message bodies never pass through a script: Lua interns every string
 *   it holds, hashing each byte. The body is written by a plain HSETNX
 *   sent just before the enqueue script and read, with the metadata, by a
 *   plain HMGET after the take script (queue_cmd_enqueue,
 *   queue_cmd_take_data); each touches one
 *   key. An enqueue whose script does not run after its HSETNX leaves at
 *   most a hash holding only `data`, in no list: a resend of the same
 *   enqueue adopts it, queue_cmd_enqueue_undo removes it.
 *
 *   Numbers travel as decimal strings. Times are milliseconds since the
 *   epoch; they fit a Lua double exactly (< 2^53).
 */
#include "queue/queue.h"

/*
 * enqueue
 *   KEYS[1] message hash  KEYS[2] ready  KEYS[3] stats  [KEYS[4] events]
 *   ARGV    id, from, rcpts ("\n"-joined), domain, now_ms,
 *           [events_maxlen, default QUEUE_EVENTS_MAXLEN]
 *   Reply   1, or an error if the id is already queued.
 *
 * The body is not an argument: queue_cmd_enqueue stores it just before,
 * with `HSETNX KEYS[1] data <body>`, because every string that passes
 * through Lua is interned, which hashes each of its bytes (~5 us for
 * 4 KiB, ~130 us for 100 KiB). So the hash exists already when this runs;
 * a queued message is recognised by its `from` field, which every entry
 * has. HSETNX never overwrites: a duplicate id keeps its own body.
 */
#define ENQUEUE_LUA \
    "if redis.call('HEXISTS', KEYS[1], 'from') == 1 then\n" \
    "  return redis.error_reply('EXISTS message id already queued')\n" \
    "end\n" \
    "redis.call('HSET', KEYS[1], 'from', ARGV[2], 'rcpts', ARGV[3],\n" \
    "  'domain', ARGV[4], 'attempts', '0', 'created', ARGV[5])\n" \
    "if redis.call('RPUSH', KEYS[2], ARGV[1]) == 1 then\n" \
    "  redis.call('PUBLISH', KEYS[2], '')\n" \
    "end\n" \
    "redis.call('HINCRBY', KEYS[3], 'enqueued', 1)\n" \
    "if KEYS[4] then\n" \
    "  redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[6] or '" QUEUE_EVENTS_MAXLEN_STR "',\n" \
    "    '*', 'id', ARGV[1], 'status', 'queued', 'domain', ARGV[4], 'rcpts', ARGV[3])\n" \
    "end\n" \
    "return 1\n"

static const char enqueue_src[] = ENQUEUE_LUA;

/*
 * report: the enqueue above for the bounces and delay reports the engine
 * writes, with the body as the last ARGV (stored by HSETNX here, never
 * over an existing one), flagged to run at maxmemory.
 *
 * Why: with maxmemory-policy noeviction, Redis at maxmemory refuses every
 * write that may grow memory: new mail, rightly, but also the take and
 * the ack, which free more than they write, so the queue could never
 * drain and delivered messages came back when their leases ran out. The
 * take and the ack carry `allow-oom`. A report is sent just before the
 * ack that removes its message; refused while that ack went through, it
 * would be lost, so it carries the flag too, and the body passes through
 * Lua (interned and copied: a few us for 4 KiB, for the rare report).
 * Flags need Redis 7.0.
 */
static const char report_src[] =
    "#!lua flags=allow-oom\n"
    "local body = table.remove(ARGV)\n"
    "redis.call('HSETNX', KEYS[1], 'data', body)\n"
    ENQUEUE_LUA;

/*
 * take
 *   KEYS[1] ready  KEYS[2] leased  KEYS[3] sched  KEYS[4] bad
 *   KEYS[5] stats  KEYS[6] events
 *   ARGV    msg_prefix ("<pfx>:{p}:m:"), now_ms, lease_ms, max,
 *           max_message_size, events_maxlen, [moves: "0" skips moving
 *           due and expired entries to ready; default "1"]
 *   Reply   flat array: the lease's expiry (ms) and the length of ready
 *           after the pop (QUEUE_TAKE_HEADER), then QUEUE_TAKE_FIELDS
 *           strings per message: id, data length. Empty when ready was
 *           empty.
 *
 * The length left tells the engine whether to take again at once: a take
 * that emptied ready needs no second one to find that out (in a steady
 * stream every message would otherwise cost two takes, the second empty),
 * since mail queued after it publishes a ready notice. Popping fewer
 * than max is no proof: entries set aside as bad were popped too.
 *
 * Only ids are popped and leased here. Every string that passes through
 * Lua is interned, which hashes its bytes, and copied in and out: the
 * body (~5 us for 4 KiB) and, measured with a scripted client, even the
 * six metadata fields (~3.5 us of Redis per message: a take that read
 * them cost ~7 us per message, one that does not ~3.5, and the plain
 * HMGET that then reads them with the body ~0.4 more than an HGET of
 * the body alone). The engine reads each message, metadata and body,
 * with one plain HMGET pipelined behind the take (queue_cmd_take_data),
 * and sets aside what it finds malformed with an ack of kind `bad`.
 * HSTRLEN gives each body's size here without reading it, so the engine
 * can bound the bytes it asks for.
 *
 * What only the script can see is handled here: an id too long, a body
 * missing or over max_message_size, a key that is not a hash. Such an
 * entry is moved aside: its id goes to the bad set, the hash gets
 * bad_reason (a key of another type keeps its value), and a `bad` event
 * is written. A popped id without any key is dropped (it was deleted).
 */
static const char take_src[] =
    "#!lua flags=allow-oom\n"   /* see report, above */
    "local pfx = ARGV[1]\n"
    "local now = tonumber(ARGV[2])\n"
    "local lease = tonumber(ARGV[3])\n"
    "local max = tonumber(ARGV[4])\n"
    "local maxsize = tonumber(ARGV[5])\n"
    "if not now or not lease or not max or max < 1 or not maxsize then\n"
    "  return redis.error_reply('ERR take: bad arguments')\n"
    "end\n"
    /* 1. deferred entries that are due go to the back of ready. Steps 1
     *    and 2 are skipped when ARGV[7] is "0": they cost two range
     *    queries per call, which a take of one or two messages notices. */
    "if ARGV[7] ~= '0' then\n"
    "  local due = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', ARGV[2],\n"
    "    'LIMIT', 0, " QUEUE_MOVE_MAX_STR ")\n"
    "  for _, id in ipairs(due) do\n"
    "    redis.call('ZREM', KEYS[3], id)\n"
    "    redis.call('RPUSH', KEYS[1], id)\n"
    "  end\n"
    /* 2. expired leases (their engine died or stalled) go to the front:
     *    they have waited longest. No attempt is counted. */
    "  local exp = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[2],\n"
    "    'LIMIT', 0, " QUEUE_MOVE_MAX_STR ")\n"
    "  for _, id in ipairs(exp) do\n"
    "    redis.call('ZREM', KEYS[2], id)\n"
    "    redis.call('LPUSH', KEYS[1], id)\n"
    "  end\n"
    "end\n"
    /* 3. pop and lease up to max messages. */
    "local ids = redis.call('LPOP', KEYS[1], max)\n"
    "if not ids then return {} end\n"
    "local until_s = string.format('%.0f', now + lease)\n"
    "local out = {until_s, 0}\n"
    "local leases = {}\n"
    "local moving = nil\n"
    "for k, id in ipairs(ids) do\n"
    "  local key = pfx .. id\n"
    /* pcall: a key of another type (a producer's mistake) is set
     * aside, not an error that would fail every take of the partition. */
    "  local dlen = redis.pcall('HSTRLEN', key, 'data')\n"
    "  local why = nil\n"
    /* Redis Cluster, slot being migrated: this message's hash is on the
     * other master already and cannot be read here. Its id and the ones
     * after it go back to the front of ready, in order, and the take
     * ends; the lost ids of an aborted script would be lost mail. */
    "  if type(dlen) == 'table' and dlen.err and not string.find(dlen.err, 'WRONGTYPE', 1, true) then\n"
    "    moving = k\n"
    "    break\n"
    "  end\n"
    "  if type(dlen) ~= 'number' then why = 'not a hash'; dlen = 0\n"
    "  elseif #id >= " QUEUE_STR(QUEUE_ID_MAX) " then why = 'id too long'\n"
    "  elseif dlen > maxsize then why = 'oversized data'\n"
    "  elseif dlen == 0 and redis.call('HEXISTS', key, 'data') == 0 then\n"
    "    why = 'missing field data'\n"
    "  end\n"
    "  if why and redis.call('EXISTS', key) == 1 then\n"
    "    redis.call('SADD', KEYS[4], id)\n"
    "    if why ~= 'not a hash' then redis.call('HSET', key, 'bad_reason', why) end\n"
    "    redis.call('HINCRBY', KEYS[5], 'bad', 1)\n"
    "    redis.call('XADD', KEYS[6], 'MAXLEN', '~', ARGV[6],\n"
    "      '*', 'id', id, 'status', 'bad', 'reply', why)\n"
    "  elseif not why then\n"
    "    leases[#leases+1] = until_s\n"
    "    leases[#leases+1] = id\n"
    "    out[#out+1] = id\n"
    "    out[#out+1] = dlen\n"
    "  end\n"
    "end\n"
    /* One ZADD for the batch: a command dispatch per message saved. */
    "if #leases > 0 then redis.call('ZADD', KEYS[2], unpack(leases)) end\n"
    /* Put back what could not be read, last first; report ready empty so
     * the engine waits a poll interval instead of taking it again at
     * once while the migration goes on. */
    "if moving then\n"
    "  for k = #ids, moving, -1 do redis.call('LPUSH', KEYS[1], ids[k]) end\n"
    "  out[2] = 0\n"
    "else\n"
    "  out[2] = redis.call('LLEN', KEYS[1])\n"
    "end\n"
    "return out\n";

/*
 * ack
 *   KEYS[1] leased  KEYS[2] sched  KEYS[3] ready  KEYS[4] stats
 *   KEYS[5] events  KEYS[6] bad
 *   ARGV    msg_prefix, now_ms, events_maxlen, n, then n outcomes, each:
 *           id, kind, lease_until ("0": any), remaining_rcpts ("": keep),
 *           retry_at_ms, nfields, fields...
 *   Reply   number of outcomes applied (stale ones are skipped).
 *
 * The arguments are validated in a first pass so a malformed batch
 * changes nothing (a Lua error after writes would leave them applied).
 */
static const char ack_src[] =
    "#!lua flags=allow-oom\n"   /* see report, above */
    "local pfx = ARGV[1]\n"
    "local maxlen = ARGV[3]\n"
    "local n = tonumber(ARGV[4])\n"
    "if not n or n < 0 or not tonumber(maxlen) then return redis.error_reply('ERR ack: bad n') end\n"
    "local kinds = {delivered=true, failed=true, expired=true, deferred=true, returned=true,\n"
    "  bad=true}\n"
    "local i = 5\n"
    "for k = 1, n do\n"
    "  local nf = tonumber(ARGV[i+5])\n"
    "  if not ARGV[i] or not kinds[ARGV[i+1]] or not tonumber(ARGV[i+2])\n"
    "     or not tonumber(ARGV[i+4]) or not nf or nf < 0 or nf % 2 ~= 0\n"
    "     or i + 5 + nf > #ARGV then\n"
    "    return redis.error_reply('ERR ack: malformed outcome ' .. k)\n"
    "  end\n"
    "  i = i + 6 + nf\n"
    "end\n"
    "if i ~= #ARGV + 1 then return redis.error_reply('ERR ack: extra arguments') end\n"
    /* Every lease in one call, not a ZSCORE per outcome. */
    "local ids = {}\n"
    "i = 5\n"
    "for k = 1, n do\n"
    "  ids[k] = ARGV[i]\n"
    "  i = i + 6 + tonumber(ARGV[i+5])\n"
    "end\n"
    "local scores = n > 0 and redis.call('ZMSCORE', KEYS[1], unpack(ids)) or {}\n"
    "local done = 0\n"
    "local counts = {}\n"
    "local unleased, gone = {}, {}\n"
    "i = 5\n"
    "for k = 1, n do\n"
    "  local id, kind, lease = ARGV[i], ARGV[i+1], ARGV[i+2]\n"
    "  local rem, retry, nf = ARGV[i+3], ARGV[i+4], tonumber(ARGV[i+5])\n"
    "  local fstart = i + 6\n"
    "  i = i + 6 + nf\n"
    "  local score = scores[k]\n"
    /* Stale: not leased any more, or leased again under another lease. */
    "  local key = pfx .. id\n"
    "  local fin = kind == 'delivered' or kind == 'failed' or kind == 'expired'\n"
    /* Redis Cluster, slot being migrated: a message hash already on the
     * other master cannot be touched here (an error that would abort the
     * script halfway). Such an outcome is skipped whole: it stays leased
     * and comes back with its lease. */
    "  local ex = 0\n"
    "  if score and not fin then ex = redis.pcall('EXISTS', key) end\n"
    "  if type(ex) ~= 'number' then score = nil end\n"
    "  if score and (lease == '0' or tonumber(score) == tonumber(lease)) then\n"
    "    unleased[#unleased+1] = id\n"
    "    if fin then\n"
    "      gone[#gone+1] = key\n"
    "    elseif ex == 1 then\n"
    "      if kind == 'deferred' or kind == 'bad' then\n"
    "        local rf = kind == 'bad' and 'bad_reason' or 'last'\n"
    "        for j = fstart, fstart + nf - 2, 2 do\n"
    "          if ARGV[j] == 'reply' then\n"
    "            redis.call('HSET', key, rf, ARGV[j+1])\n"
    "          elseif ARGV[j] == 'warned' then\n"
    "            redis.call('HSET', key, 'warned', ARGV[j+1])\n"
    "          end\n"
    "        end\n"
    "      end\n"
    "      if kind == 'bad' then\n"
    "        redis.call('SADD', KEYS[6], id)\n"
    "      elseif kind == 'deferred' then\n"
    "        redis.call('HINCRBY', key, 'attempts', 1)\n"
    "        if rem ~= '' then redis.call('HSET', key, 'rcpts', rem) end\n"
    "        redis.call('ZADD', KEYS[2], retry, id)\n"
    "      else\n"
    "        if redis.call('RPUSH', KEYS[3], id) == 1 then redis.call('PUBLISH', KEYS[3], '') end\n"
    "      end\n"
    "    end\n"
    "    counts[kind] = (counts[kind] or 0) + 1\n"
    /* The event's fields straight from ARGV: no table copied per event. */
    "    redis.call('XADD', KEYS[5], 'MAXLEN', '~', maxlen,\n"
    "      '*', 'id', id, 'status', kind, unpack(ARGV, fstart, fstart + nf - 1))\n"
    "    done = done + 1\n"
    "  end\n"
    "end\n"
    /* Leases and finished messages go in one call each, and the
     * counters once per kind: not a command per outcome. An id appears
     * once per batch (the engine acks a lease once). */
    "if #unleased > 0 then redis.call('ZREM', KEYS[1], unpack(unleased)) end\n"
    /* A DEL refused because a hash moved to another master (a slot
     * being migrated) is done key by key: those still here go; one
     * already moved stays there, delivered, in no list. */
    "if #gone > 0 and type(redis.pcall('DEL', unpack(gone))) == 'table' then\n"
    "  for _, g in ipairs(gone) do redis.pcall('DEL', g) end\n"
    "end\n"
    "for kind, c in pairs(counts) do redis.call('HINCRBY', KEYS[4], kind, c) end\n"
    "return done\n";

const char *queue_script_enqueue_src(void) { return enqueue_src; }
const char *queue_script_take_src(void) { return take_src; }
const char *queue_script_ack_src(void) { return ack_src; }
const char *queue_script_report_src(void) { return report_src; }
