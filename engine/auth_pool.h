/*
 * auth_pool.h - password checks off the event loop.
 *
 * DESCRIPTION
 *   A yescrypt check costs tens of milliseconds of CPU; run on the
 *   listener's io_uring thread it would stall every other session. The
 *   pool is one thread that takes (user, password, tag) jobs, runs
 *   auth_creds_check and queues (tag, ok) results; each result written
 *   also adds 1 to an eventfd the listener keeps a read armed on, so the
 *   listener learns of results through its ring.
 *
 *   Jobs are answered in order. Passwords are wiped from the job as soon
 *   as they are checked.
 *
 * OWNERSHIP
 *   auth_pool_new borrows creds (it must outlive the pool, or its
 *   replacement by auth_pool_set_creds). auth_pool_free
 *   stops and joins the thread; jobs not yet run are dropped.
 */
#ifndef TERN_ENGINE_AUTH_POOL_H
#define TERN_ENGINE_AUTH_POOL_H

#include <stdint.h>

#include "engine/auth.h"

#define AUTH_POOL_QUEUE_MAX 1024   /* jobs waiting; more are refused */

struct auth_pool;

struct auth_result {
    uint64_t tag;
    int ok;
};

/* Returns NULL on failure (thread, eventfd, memory). */
struct auth_pool *auth_pool_new(const struct auth_creds *creds);
/* auth_pool_set_creds: checks that start from now on use creds (a reload
 * of the credentials file). Returns once no check uses the old ones, so
 * the caller may free them: at most one check's time (tens of ms). Not
 * from the pool's thread. */
void auth_pool_set_creds(struct auth_pool *p, const struct auth_creds *creds);
/* auth_pool_fd: the eventfd that becomes readable when results wait. */
int auth_pool_fd(const struct auth_pool *p);
/* auth_pool_submit queues one check. Returns 0 when the queue is full or
 * the strings do not fit (the caller then answers the client itself). */
int auth_pool_submit(struct auth_pool *p, uint64_t tag, const char *user, const char *pass);
/* auth_pool_take moves up to max results into out; returns how many. */
size_t auth_pool_take(struct auth_pool *p, struct auth_result *out, size_t max);
void auth_pool_free(struct auth_pool *p);

#endif
