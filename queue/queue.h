/*
 * queue.h - tern's Redis queue: schema, scripts, and the two ways to talk
 * to it (sans-I/O command builders for the engine, blocking calls for the
 * CLI).
 *
 * DESCRIPTION
 *   The full schema is in docs/queue.md. In short, with P partitions and a
 *   key prefix (default "tern"), partition p owns keys with the hash tag
 *   {p} so every multi-key script touches one Redis Cluster slot:
 *
 *     <pfx>:{p}:m:<id>     HASH  from, rcpts ("\n"-joined), domain, data,
 *                                attempts, created (ms), last (last reply)
 *     <pfx>:{p}:ready      LIST  ids ready now (RPUSH in, LPOP out)
 *     <pfx>:{p}:leased     ZSET  id -> lease expiry (ms); taken, in flight
 *     <pfx>:{p}:sched      ZSET  id -> next attempt (ms); deferred
 *     <pfx>:{p}:bad        SET   malformed entries set aside (hash has
 *                                bad_reason)
 *     <pfx>:{p}:events     STREAM one entry per outcome (see docs/queue.md)
 *     <pfx>:{p}:stats      HASH  counters: enqueued, delivered, deferred,
 *                                failed, expired, returned, bad, deleted
 *
 *   A message's recipients all belong to one destination domain; enqueue
 *   splits a multi-domain message into one queue entry per domain, and the
 *   partition is queue_partition_of(domain). All state changes that span
 *   keys are Lua scripts loaded once (SCRIPT LOAD) and called by SHA.
 *
 *   enqueue: QUEUE_ENQUEUE_CMDS commands per entry: HSETNX of the body
 *          (the data field), then an EVALSHA that checks the id is not
 *          queued yet (no `from` field), writes the other fields, RPUSHes
 *          the id to ready, counts it and writes a `queued` event. The body
 *          never passes through Lua, which hashes every byte of every
 *          string it holds (~5 us for 4 KiB). HSETNX never overwrites, so
 *          a duplicate id leaves the queued message as it was, and an
 *          enqueue resent after NOSCRIPT finds its own body in place.
 *   take:  moves due entries from sched and expired leases back to ready,
 *          then pops up to N ids from ready and leases them (now +
 *          lease_ms), all in one EVALSHA. Entries without a body or with
 *          one over max_message_size are moved to the bad set instead. The
 *          reply is the lease's expiry and the ready list's length left
 *          (QUEUE_TAKE_HEADER), then QUEUE_TAKE_FIELDS elements per
 *          message: id, data length. Each message's metadata and body
 *          follow with one plain HMGET (queue_cmd_take_data): fields read
 *          inside Lua cost Redis ~3.5 us per message more.
 *   ack:   one EVALSHA per batch of outcomes for one partition: delivered,
 *          failed and expired delete the message, bad sets it aside, deferred reschedules it (and may
 *          shrink its recipient list to those still pending), returned puts
 *          it back on ready without counting an attempt. Each outcome
 *          appends one event. An ack for an id that is no longer leased is
 *          ignored; with queue_outcome.lease_until_ms set, so is an ack for
 *          an id leased again by someone else after this lease expired.
 *
 * ENGINE SIDE (sans-I/O)
 *   queue_cmd_* append one RESP command to a struct buf (queue_cmd_enqueue
 *   QUEUE_ENQUEUE_CMDS of them); the caller writes the buffer to its Redis
 *   socket and feeds what comes back into a hiredis redisReader. Each
 *   command produces exactly one reply, in order. queue_parse_* interpret
 *   those replies.
 *
 * CLI SIDE (blocking)
 *   queue_open() connects with hiredis' blocking API and loads the
 *   scripts; queue_enqueue() and queue_generate() add messages;
 *   queue_stats() reads counts. Against a Redis Cluster it holds one
 *   connection per master and routes each partition's commands to its
 *   slot's node, following MOVED and ASK (queue_conn_command_argv,
 *   queue_batch_run); against a standalone Redis, one connection.
 *
 * ERRORS
 *   Functions returning int return 1 on success and 0 on failure, with a
 *   description in the caller's err buffer where one is taken.
 *
 * OWNERSHIP
 *   struct queue_msg is allocated by queue_parse_take() and freed by
 *   queue_msg_free(); queue_take_data() grows that allocation to hold the
 *   metadata's strings too, and attaches the body (data_buf).
 */
#ifndef TERN_QUEUE_QUEUE_H
#define TERN_QUEUE_QUEUE_H

#include <stddef.h>
#include <stdint.h>

#include <hiredis/hiredis.h>

#include "engine/buf.h"
#include "queue/queue_cluster.h"

#define QUEUE_PREFIX_MAX      32
#define QUEUE_ID_MAX          40
#define QUEUE_PARTITIONS_MAX  1024
#define QUEUE_TAKE_MAX        1024   /* ids per take */
#define QUEUE_RCPTS_MAX       1000   /* recipients per message */
#define QUEUE_ADDR_MAX        512
#define QUEUE_EVENTS_MAXLEN   1000000 /* default approximate cap per partition stream */
#define QUEUE_EVENTS_MAXLEN_MIN 1000
#define QUEUE_ACK_MAX         4096   /* outcomes per ack call */
#define QUEUE_MOVE_MAX        1000   /* sched/leased entries moved per take */
#define QUEUE_MOVES_EVERY_MS  100    /* the engine's takes move them this often */
#define QUEUE_TAKE_HEADER     2      /* a take's reply: lease expiry, ready left */
#define QUEUE_TAKE_FIELDS     2      /* reply elements per message in a take,
                                        after the header */
#define QUEUE_TAKE_DATA_FIELDS 7     /* fields of queue_cmd_take_data's HMGET */
#define QUEUE_TAKE_OVER_MIN   64     /* bodies this long or longer are taken over
                                        from the reply; shorter ones are copied */
#define QUEUE_MSG_ROOM        192    /* bytes a taken message is allocated for
                                        its sender, recipients and domain */
#define QUEUE_FIELDS_MAX      64     /* event field strings per outcome */
#define QUEUE_ENQUEUE_CMDS    2      /* commands (and replies) per queue_cmd_enqueue:
                                        HSETNX of the body, EVALSHA enqueue */
#define QUEUE_REPORT_CMDS     1      /* per queue_cmd_enqueue_report: EVALSHA report */

#define QUEUE_STR_(x) #x
#define QUEUE_STR(x) QUEUE_STR_(x)
#define QUEUE_EVENTS_MAXLEN_STR QUEUE_STR(QUEUE_EVENTS_MAXLEN)
#define QUEUE_MOVE_MAX_STR QUEUE_STR(QUEUE_MOVE_MAX)

struct queue_config {
    char prefix[QUEUE_PREFIX_MAX];  /* key prefix, default "tern" */
    int partitions;                 /* 1..QUEUE_PARTITIONS_MAX, default 16 */
    int lease_ms;                   /* default 300000 */
    int64_t max_message_size;       /* bytes, default 32 MiB */
    int events_maxlen;              /* each events stream: XADD MAXLEN ~ this,
                                       default QUEUE_EVENTS_MAXLEN */
    int events_queued;              /* enqueue writes a `queued` event (default 1) */
};

/* SHA1 hex digests of the loaded scripts. */
struct queue_scripts {
    char enqueue[41];
    char take[41];
    char ack[41];
    char report[41];
};

struct queue_msg {
    char id[QUEUE_ID_MAX];
    int partition;
    /* from, rcpts, domain, attempts, created_ms and delay_warned are set
     * by queue_take_data; after queue_parse_take they are NULL / 0. */
    char *from;          /* "" for the null sender */
    char **rcpts;
    size_t nrcpts;
    char *domain;
    uint8_t *data;       /* NULL after queue_parse_take, until queue_take_data */
    size_t data_len;     /* after queue_parse_take: the size the take reported */
    uint8_t *data_buf;   /* owned allocation behind data, freed by
                            queue_msg_free (NULL when data points elsewhere) */
    int attempts;        /* attempts so far, before this one */
    int64_t created_ms;
    int64_t lease_until_ms; /* this lease's expiry; pass it back in the
                               outcome so a stale ack is recognised */
    int delay_warned;    /* the sender was told of the delay already */
    size_t room;         /* bytes allocated behind the struct for the
                            strings queue_take_data stores (0: none) */
    /* Non-NULL after queue_take_data: the entry is malformed (static
     * string: "bad recipient address", "bad number", "missing field
     * from", ...); only id, partition and lease_until_ms are set. The
     * engine acks it QUEUE_BAD with this reason. */
    const char *bad;
};

enum queue_outcome_kind {
    QUEUE_DELIVERED,     /* every remaining recipient got a final 2xx */
    QUEUE_DEFERRED,      /* retry later; rcpts may shrink */
    QUEUE_FAILED,        /* permanent failure; message removed (bounce
                            enqueued separately by the caller first) */
    QUEUE_EXPIRED,       /* like FAILED, for a message past its max age */
    QUEUE_RETURNED,      /* back to ready, no attempt counted */
    QUEUE_BAD,           /* malformed entry: set aside in <pfx>:{p}:bad with
                            bad_reason (the `reply` field), never retried */
};

struct queue_outcome {
    const char *id;
    enum queue_outcome_kind kind;
    /* DEFERRED: recipients still pending, "\n"-joined; NULL keeps them. */
    const char *remaining_rcpts;
    int64_t retry_at_ms;            /* DEFERRED */
    /* Event fields as name/value pairs appended to the stream entry after
     * the standard ones (id, status). e.g. {"reply","250 ok","tier",...} */
    const char *const *fields;
    size_t nfields;                 /* number of strings (pairs * 2) */
    /* More event fields, already RESP-encoded by queue_fields_encode and
     * appended after fields: raw_nfields strings in raw[0..raw_len). A
     * caller that writes the same fields for many outcomes (a
     * connection's session) encodes them once. NULL/0/0: none. */
    const uint8_t *raw;
    size_t raw_len, raw_nfields;
    /* The lease this outcome settles (queue_msg.lease_until_ms). 0 accepts
     * any current lease of the id; nonzero ignores the outcome unless the
     * id is still leased with exactly this expiry. */
    int64_t lease_until_ms;
};

/* queue_config_defaults fills the defaults listed above. */
void queue_config_defaults(struct queue_config *qc);

/* queue_config_check returns 1 if qc is usable: prefix 1..31 bytes of
 * [A-Za-z0-9_.:-] (no braces, so {p} is the key's hash tag), partitions
 * 1..QUEUE_PARTITIONS_MAX, lease_ms > 0, max_message_size > 0,
 * events_maxlen >= QUEUE_EVENTS_MAXLEN_MIN. Otherwise
 * returns 0 and sets *why to a static string. */
int queue_config_check(const struct queue_config *qc, const char **why);

/* queue_key writes "<pfx>:{p}:<name>" (name e.g. "ready", or "m:<id>")
 * into out[outlen]. Returns its length, or 0 if it does not fit. */
size_t queue_key(char *out, size_t outlen, const struct queue_config *qc,
                 int partition, const char *name);

/* queue_partition_of maps a domain (case-insensitive) to its partition. */
int queue_partition_of(const struct queue_config *qc, const char *domain, size_t len);

/* queue_new_id writes a fresh unique id into id[QUEUE_ID_MAX]: 16 hex
 * digits of the current time in ms then 16 hex digits from getrandom(),
 * NUL-terminated (32 characters). Ids sort by creation time. */
void queue_new_id(char id[QUEUE_ID_MAX]);

/* queue_id_check returns 1 if id is 1..QUEUE_ID_MAX-1 bytes of printable
 * ASCII other than space (what the builders accept as an id). */
int queue_id_check(const char *id);

/* Script sources, for SCRIPT LOAD. */
const char *queue_script_enqueue_src(void);
const char *queue_script_take_src(void);
const char *queue_script_ack_src(void);
const char *queue_script_report_src(void);

/* --- engine side: command builders ---
 * Each appends exactly one RESP command to out (queue_cmd_enqueue:
 * QUEUE_ENQUEUE_CMDS) and returns 1, or returns 0
 * when out->err is (or becomes) set or an argument is invalid; on invalid
 * arguments nothing is appended. Strings are copied (binary-safe).
 *
 * queue_cmd_take: partition in [0, qc->partitions), max in
 *   [1, QUEUE_TAKE_MAX]. Leases until now_ms + qc->lease_ms. moves = 0
 *   skips moving due retries and expired leases to ready first (the
 *   engine moves them at most every QUEUE_MOVES_EVERY_MS per partition).
 * queue_cmd_ack: n in [1, QUEUE_ACK_MAX]; every id passes
 *   queue_id_check; nfields even and <= QUEUE_FIELDS_MAX; kind valid.
 * queue_cmd_enqueue: from is "" or a bare address, every rcpt a bare
 *   recipient (queue_addr_check, no angle brackets) whose domain equals
 *   `domain` ignoring case, nrcpts in [1, QUEUE_RCPTS_MAX], len <=
 *   qc->max_message_size. The domain is stored lower-cased. With
 *   qc->events_queued a `queued` event (id, domain, rcpts) is written too.
 *   Two commands: `HSETNX <pfx>:{p}:m:<id> data <body>` (reply 1, or 0
 *   when the hash has a body already), then the EVALSHA of the enqueue
 *   script with everything but the body (reply 1, or an error beginning
 *   "EXISTS" if the id is already queued; that message keeps its own
 *   body). Check the pair with queue_parse_enqueue. Resending both after
 *   NOSCRIPT is safe: the HSETNX finds the same body in place.
 */
int queue_cmd_script_load(struct buf *out, const char *src);
int queue_cmd_take(struct buf *out, const struct queue_config *qc,
                   const struct queue_scripts *s, int partition, int max,
                   int64_t now_ms, int moves);
int queue_cmd_ack(struct buf *out, const struct queue_config *qc,
                  const struct queue_scripts *s, int partition,
                  const struct queue_outcome *o, size_t n, int64_t now_ms);
/* queue_cmd_enqueue: one message whose recipients all belong to `domain`.
 * queue_cmd_enqueue_report: the same entry written by one EVALSHA of the
 * report script, body included, which Redis runs even at maxmemory (as
 * it does the take and the ack): the bounces and delay reports the engine
 * makes, sent just before the ack that removes their message, so that at
 * maxmemory the report goes in with the ack instead of being refused
 * while the ack goes through. Same arguments and checks; its reply is the
 * enqueue script's. */
int queue_cmd_enqueue(struct buf *out, const struct queue_config *qc,
                      const struct queue_scripts *s, const char *id,
                      const char *from, const char *const *rcpts, size_t nrcpts,
                      const char *domain, const uint8_t *data, size_t len,
                      int64_t now_ms);
int queue_cmd_enqueue_report(struct buf *out, const struct queue_config *qc,
                             const struct queue_scripts *s, const char *id,
                             const char *from, const char *const *rcpts, size_t nrcpts,
                             const char *domain, const uint8_t *data, size_t len,
                             int64_t now_ms);

/* queue_fields_encode appends nfields strings (even, <= QUEUE_FIELDS_MAX,
 * none NULL) to out as RESP bulk strings, the form queue_outcome.raw
 * holds. Returns 0 (appending nothing) on bad arguments, or with out->err
 * set when out of memory. */
int queue_fields_encode(struct buf *out, const char *const *fields, size_t nfields);

/* queue_cmd_event: an XADD of one entry (status, then nfields strings as
 * name/value pairs, nfields even and <= QUEUE_FIELDS_MAX) to partition's
 * events stream, capped like the outcome events. For entries that are
 * not a message outcome, e.g. status "dest-stats". Reply: the entry id. */
int queue_cmd_event(struct buf *out, const struct queue_config *qc, int partition,
                    const char *status, const char *const *fields, size_t nfields);

/* queue_parse_take turns the reply of a take into messages that hold
 * their id, partition, lease and the body's size (data_len) as the take
 * reported it; queue_take_data fills in the rest. On success *msgs is a
 * malloc'd array of *n pointers (free each with queue_msg_free and the
 * array with free), and *ready_left the entries the ready list held
 * right after the take (0: the take emptied it, so mail queued after it
 * comes with a ready notice; the taker need not take again to find out).
 * Returns 0 on a malformed or error reply, with *err set to a static
 * string; an error reply beginning with "NOSCRIPT" sets *err to
 * "NOSCRIPT" so the caller can reload the scripts. */
int queue_parse_take(const redisReply *r, int partition,
                     struct queue_msg ***msgs, size_t *n, long long *ready_left, const char **err);

/* A taken message's metadata and body are read with one plain command,
 * pipelined behind the take: fields read inside the take script would
 * pass through Lua, which interns (hashes) and copies every string it
 * holds.
 * queue_cmd_take_data appends `HMGET <pfx>:{p}:m:<id> from rcpts domain
 * attempts created warned data` (QUEUE_TAKE_DATA_FIELDS) for m (0 as the
 * other builders).
 * queue_take_data reads that reply into *mp: it grows the allocation
 * (*mp may move; the old pointer is then invalid) to hold the strings and
 * recipient array, and takes the body's string over from the reply
 * (that element's str is set to NULL) when it is QUEUE_TAKE_OVER_MIN
 * bytes or longer; a shorter body is copied (a reader may keep short
 * strings inside its reply objects: engine/resp_pool.h). Returns 1 with the message
 * complete, or with (*mp)->bad set when the entry is malformed (a field
 * missing, "no recipients", "bad number", the address checks
 * queue_cmd_enqueue applies): the caller sets it aside. Returns 0 with
 * *err set, *mp unchanged and still the caller's, for every field nil
 * (*err is then queue_err_deleted, "message deleted since its take": its
 * lease settles it, nothing to report), an error reply ("error reply") or
 * a reply of the wrong shape. */
int queue_cmd_take_data(struct buf *out, const struct queue_config *qc,
                        const struct queue_msg *m);
int queue_take_data(redisReply *r, struct queue_msg **mp, const char **err);
extern const char queue_err_deleted[];
/* queue_parse_simple checks an ack/enqueue reply: 1 for an integer or
 * status reply, 0 otherwise with *err "NOSCRIPT" (reload the scripts and
 * resend), "error reply" (text in r->str) or "unexpected reply type".
 * For an ack the integer is the number of outcomes applied. */
int queue_parse_simple(const redisReply *r, const char **err);
/* queue_reply_exists: r is the enqueue script's "EXISTS" error (the id is
 * queued already; that entry keeps its own body). */
int queue_reply_exists(const redisReply *r);

/* queue_parse_enqueue checks the QUEUE_ENQUEUE_CMDS replies of one
 * queue_cmd_enqueue, r[0] (HSETNX) then r[1] (the script): 1 when the
 * entry was made. Otherwise 0, with *err as queue_parse_simple sets it for
 * the script's reply ("NOSCRIPT": reload and resend both commands; "error
 * reply", e.g. for "EXISTS ..."), or "error reply" / "unexpected reply
 * type" for an HSETNX that failed or did not answer an integer; *text is
 * the error reply's text ("" if none; it lives as long as r). *wrote_body
 * is set to 1 when this HSETNX stored the body (reply 1), else 0: when the
 * entry was not made and will not be resent, queue_cmd_enqueue_undo
 * removes that body, which nothing else refers to. */
int queue_parse_enqueue(const redisReply *const *r, int *wrote_body, const char **err,
                        const char **text);

/* queue_cmd_enqueue_undo appends `HDEL <pfx>:{p}:m:<id> data`, p being
 * the enqueue's partition (queue_partition_of its domain): for an enqueue
 * whose HSETNX stored the body while its script made no entry
 * (queue_parse_enqueue). Removing the last field removes the hash.
 * Returns 1, or 0 as the other builders. */
int queue_cmd_enqueue_undo(struct buf *out, const struct queue_config *qc, int partition,
                           const char *id);

/* queue_parse_script_load checks a SCRIPT LOAD reply and copies the SHA1
 * (40 hex digits) into sha[41]. 0 with *err set otherwise. */
int queue_parse_script_load(const redisReply *r, char sha[41], const char **err);

/* queue_outcome_kind_name: "delivered", "deferred", "failed", "returned",
 * or NULL for an invalid kind. These are the event stream's status values. */
const char *queue_outcome_kind_name(enum queue_outcome_kind k);

void queue_msg_free(struct queue_msg *m);

/* --- address and input checks (shared by inject and the listener) --- */

/* queue_addr_check: 1 if `a` (len bytes) is acceptable as an envelope
 * address: no CR, LF, NUL, space or control characters, balanced angle
 * brackets (at most one pair, enclosing the whole), at most
 * QUEUE_ADDR_MAX bytes, recipient needs "@domain". On failure *why is set. */
int queue_addr_check(const char *a, size_t len, int is_recipient, const char **why);
/* queue_addr_domain returns a pointer to the domain part (after the last
 * '@') of a bare address, or NULL if there is no '@' or nothing after it. */
const char *queue_addr_domain(const char *addr);

/* queue_addr_bare checks `a` like queue_addr_check and, on success, sets
 * *bare and *bare_len to the address without its enclosing angle brackets
 * (pointing into a; "<>" and "" give length 0, the null reverse path).
 * Reasons in *why (static strings): "empty recipient", "too long",
 * "NUL byte", "CR or LF", "space", "control character",
 * "unbalanced angle bracket", "misplaced angle bracket", "no @domain",
 * "empty local part", "empty domain", "bad domain character". */
int queue_addr_bare(const char *a, size_t len, int is_recipient,
                    const char **bare, size_t *bare_len, const char **why);

/* --- CLI side: blocking --- */

/*
 * A queue_conn talks to a standalone Redis over one connection (rc), or
 * to a Redis Cluster over one connection per master (nodes[], by the
 * index of the node in *map), routing each partition's commands to the
 * node serving its slot (queue_cluster.h). queue_open tells the two apart
 * by CLUSTER SLOTS. Every command tern sends names keys of one partition
 * only, so a command goes to exactly one node.
 *
 * OWNERSHIP: queue_open allocates map and opens the contexts; queue_close
 * frees them all. rc stays "the connection queue_open made" (to the
 * address it was given) in both cases, for commands that belong to no
 * partition (INFO, CONFIG GET); in a cluster nothing per partition goes
 * there.
 */
struct queue_conn {
    redisContext *rc;
    struct queue_config qc;
    struct queue_scripts scripts;
    struct queue_cluster_map *map;   /* NULL: standalone */
    /* Cluster: the context of map node i, opened by queue_open for every
     * master and later for a node a MOVED or ASK names (NULL until then). */
    redisContext *nodes[QUEUE_CLUSTER_NODES_MAX];
    char host[QUEUE_CLUSTER_HOST_MAX]; /* the host queue_open connected to
                                        ("" for a unix socket): CLUSTER
                                        SLOTS' stand-in for a node that
                                        announces no address */
};

/* queue_open connects to "host:port", "host" (port 6379), "[v6]:port" or
 * "unix:/path" with a 10 s connect/IO timeout, checks qc
 * (queue_config_check), asks CLUSTER SLOTS, and loads the four scripts
 * (SCRIPT LOAD), storing their SHAs in q->scripts. CLUSTER SLOTS answered
 * by an error (a standalone Redis, "cluster support disabled", or CLUSTER
 * renamed away) keeps the one connection; answered by the slot map, every
 * master is connected (same timeouts) and given the scripts, and every
 * partition's slot must be served. On failure returns 0 with err set and
 * leaves nothing open. */
int queue_open(struct queue_conn *q, const struct queue_config *qc,
               const char *redis_addr, char *err, size_t errlen);
/* queue_close closes every connection and frees the map; safe on a
 * zeroed or closed conn. */
void queue_close(struct queue_conn *q);
/* queue_reload_scripts runs SCRIPT LOAD again (after NOSCRIPT, e.g. a
 * Redis restart or SCRIPT FLUSH), on every open node of a cluster.
 * Returns 1, or 0 with err set. */
int queue_reload_scripts(struct queue_conn *q, char *err, size_t errlen);

/* queue_conn_rc: the context serving partition (q->rc when standalone).
 * Never NULL on an open conn: queue_open checks that every partition's
 * slot is served, and a MOVED only ever points it at an open node. For
 * callers that pipeline their own commands to one partition; they must
 * follow no redirection themselves (use the calls below for that). */
redisContext *queue_conn_rc(struct queue_conn *q, int partition);

/* queue_conn_nnodes / queue_conn_node: the connections a per-server check
 * (INFO, CONFIG GET) should ask: 1 standalone (q->rc, addr ""), else every
 * open master with its "host:port" in addr (QUEUE_CLUSTER_ADDR_MAX). */
int queue_conn_nnodes(const struct queue_conn *q);
redisContext *queue_conn_node(struct queue_conn *q, int i, char *addr, size_t addrlen);

/* queue_conn_command_argv sends one command (argv/lens as hiredis takes
 * them; lens NULL: strlen) for partition to the node serving it and
 * returns its reply (the caller frees it; it may be an error reply:
 * "EXISTS ...", "TRYAGAIN ...", "CLUSTERDOWN ..." are for the caller to
 * report). In a cluster a MOVED reply updates the map, opens the new node
 * if needed (scripts loaded there) and the command is sent there once; an
 * ASK reply sends ASKING and the command to the node named, once, the map
 * unchanged. A second redirection is returned as the error it is. A
 * redirected command did not run, so nothing runs twice. NULL with err
 * set on a connection error or when the node named cannot be reached. */
redisReply *queue_conn_command_argv(struct queue_conn *q, int partition, int argc,
                                    const char **argv, const size_t *lens, char *err,
                                    size_t errlen);

/* queue_conn_unit: the same for k RESP-formatted commands cmd[0..len)
 * (arrays of bulk strings, as the builders write) to one partition, sent
 * together; their k replies go to r[0..k) (the caller frees each). Each
 * command whose reply is a redirection is resent alone, in order, where
 * it points, as above; the others' replies are kept (during a slot's
 * migration a unit's commands may be answered by two nodes). 1, or 0
 * with err set and r[] empty. */
int queue_conn_unit(struct queue_conn *q, int partition, const char *cmd, size_t len,
                    size_t k, redisReply **r, char *err, size_t errlen);

/* queue_reply_redirect: r is a MOVED or ASK error. */
int queue_reply_redirect(const redisReply *r);

/*
 * A pipelined batch: units of commands, each unit k commands for one
 * partition, built into cmds (the queue_cmd_* builders append there,
 * queue_batch_append_argv too) and closed with queue_batch_add.
 * queue_batch_run hands each unit to its partition's connection, writes
 * every connection's commands before reading any reply (the nodes of a
 * cluster work at once), then reads each unit's replies from its node:
 * replies come back in order per connection, and units are read in the
 * order added. Then each command answered MOVED or ASK is resent alone,
 * synchronously, where the reply points (as queue_conn_unit does; a
 * redirected command did not run).
 *
 * OWNERSHIP: the batch owns cmds, its unit table and, after a run, the
 * replies (queue_batch_reply; valid until the next reset or free).
 */
struct queue_batch_unit {
    size_t off, len;      /* its commands: cmds bytes [off, off + len) */
    size_t first;         /* its first reply's index in r */
    int partition;
    int node;             /* where it was sent */
    unsigned k;           /* commands (and replies) */
};

struct queue_batch {
    struct buf cmds;
    struct queue_batch_unit *u;
    size_t n, cap;
    redisReply **r;       /* after queue_batch_run: every reply, in order */
    size_t nr, rcap;
    size_t closed;        /* bytes of cmds in units already */
    int oom;              /* the unit table could not grow */
};

void queue_batch_init(struct queue_batch *b);
/* queue_batch_add closes a unit: the commands appended to cmds since the
 * last add (k of them) are for partition. 0 when out of memory (run then
 * fails too). */
int queue_batch_add(struct queue_batch *b, int partition, unsigned k);
/* queue_batch_append_argv appends one RESP command (lens NULL: strlen)
 * to cmds; queue_batch_add_argv appends it and adds it as a unit of 1. */
int queue_batch_append_argv(struct queue_batch *b, int argc, const char **argv,
                            const size_t *lens);
int queue_batch_add_argv(struct queue_batch *b, int partition, int argc, const char **argv,
                         const size_t *lens);
/* queue_batch_run: as above. 1 with every reply read, or 0 with err set
 * (out of memory, a connection error: the conn is then out of step, close
 * it). */
int queue_batch_run(struct queue_conn *q, struct queue_batch *b, char *err, size_t errlen);
/* queue_batch_reply: reply j of unit i after a run (the batch keeps it;
 * queue_batch_take hands it over to the caller, leaving NULL). */
redisReply *queue_batch_reply(const struct queue_batch *b, size_t i, size_t j);
redisReply *queue_batch_take(struct queue_batch *b, size_t i, size_t j);
/* queue_batch_reset frees the replies and empties the batch, keeping its
 * allocations; queue_batch_free frees everything. */
void queue_batch_reset(struct queue_batch *b);
void queue_batch_free(struct queue_batch *b);

/* queue_enqueue stores one message for rcpts (split by domain), atomically
 * per domain entry; every address is checked first, so bad input leaves
 * nothing behind. Returns the number of queue entries made, or -1 with
 * err set. */
int queue_enqueue(struct queue_conn *q, const char *from,
                  const char *const *rcpts, size_t nrcpts,
                  const uint8_t *data, size_t len, char *err, size_t errlen);

/* queue_generate enqueues n synthetic messages of about `size` bytes
 * (Date, From, To, Subject, Message-ID headers; body of 76-character
 * printable lines), round-robin over domains (recipient user<i>@domain,
 * sender generator@tern.test), pipelined in windows of 512 enqueues or
 * 8 MiB. Domains and size are checked first. Returns the number enqueued,
 * or -1 with err set (some may have been stored if Redis refused midway). */
long queue_generate(struct queue_conn *q, long n, const char *const *domains,
                    size_t ndomains, size_t size, char *err, size_t errlen);
/* queue_generate_from: the same with envelope sender `from` (checked like
 * queue_enqueue's; "<>" or "" is the null sender; NULL is the generator's
 * address). The From: header carries the sender too (the generator's for
 * the null sender). */
long queue_generate_from(struct queue_conn *q, const char *from, long n,
                         const char *const *domains, size_t ndomains, size_t size,
                         char *err, size_t errlen);

struct queue_stats {
    long long ready, leased, scheduled;
    long long enqueued, delivered, deferred, failed, returned;
    long long expired, deleted;   /* past max_age; removed by tern queue delete */
};
int queue_stats(struct queue_conn *q, struct queue_stats *st, char *err, size_t errlen);

#endif
