/* auth_pool.c - password checks on their own thread; see auth_pool.h. */
#include "engine/auth_pool.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

struct auth_job {
    uint64_t tag;
    char user[AUTH_USER_MAX + 1];
    char pass[AUTH_PASS_MAX + 1];
};

struct auth_pool {
    const struct auth_creds *creds;
    const struct auth_creds *checking;   /* the creds a check is running with (NULL: none) */
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_cond_t idle;        /* a check ended (auth_pool_set_creds waits for it) */
    int stop;
    int efd;
    /* jobs: a ring of AUTH_POOL_QUEUE_MAX */
    struct auth_job *jobs;
    size_t jhead, jlen;
    /* results: a ring of the same size (a result needs a job first) */
    struct auth_result *res;
    size_t rhead, rlen;
};

static void *pool_main(void *arg)
{
    struct auth_pool *p = arg;
    struct auth_job job;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (!p->stop && p->jlen == 0)
            pthread_cond_wait(&p->cv, &p->mu);
        if (p->stop)
            break;
        job = p->jobs[p->jhead];
        explicit_bzero(p->jobs[p->jhead].pass, sizeof(job.pass));
        p->jhead = (p->jhead + 1) % AUTH_POOL_QUEUE_MAX;
        p->jlen--;
        const struct auth_creds *c = p->checking = p->creds;
        pthread_mutex_unlock(&p->mu);
        int ok = auth_creds_check(c, job.user, job.pass);
        explicit_bzero(job.pass, sizeof(job.pass));
        pthread_mutex_lock(&p->mu);
        p->checking = NULL;
        pthread_cond_broadcast(&p->idle);
        /* rlen < QUEUE_MAX: every result had a queued job, and jobs +
         * results never exceed the queue (submit checks both). */
        p->res[(p->rhead + p->rlen) % AUTH_POOL_QUEUE_MAX] = (struct auth_result){job.tag, ok};
        p->rlen++;
        uint64_t one = 1;
        if (write(p->efd, &one, sizeof(one)) < 0)
            perror("tern: auth pool: eventfd");
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

/* Release what auth_pool_new made, once the thread is gone (or was never
 * started); efd may be -1 and the arrays NULL. */
static void pool_release(struct auth_pool *p)
{
    if (p->efd >= 0)
        close(p->efd);
    free(p->jobs);
    free(p->res);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
    pthread_cond_destroy(&p->idle);
    free(p);
}

struct auth_pool *auth_pool_new(const struct auth_creds *creds)
{
    struct auth_pool *p = calloc(1, sizeof(*p));
    if (p == NULL)
        return NULL;
    p->creds = creds;
    p->efd = eventfd(0, EFD_CLOEXEC);
    p->jobs = calloc(AUTH_POOL_QUEUE_MAX, sizeof(*p->jobs));
    p->res = calloc(AUTH_POOL_QUEUE_MAX, sizeof(*p->res));
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    pthread_cond_init(&p->idle, NULL);
    if (p->efd < 0 || p->jobs == NULL || p->res == NULL ||
        pthread_create(&p->thread, NULL, pool_main, p) != 0) {
        pool_release(p);
        return NULL;
    }
    return p;
}

void auth_pool_set_creds(struct auth_pool *p, const struct auth_creds *creds)
{
    pthread_mutex_lock(&p->mu);
    p->creds = creds;
    while (p->checking != NULL && p->checking != creds)
        pthread_cond_wait(&p->idle, &p->mu);
    pthread_mutex_unlock(&p->mu);
}

int auth_pool_fd(const struct auth_pool *p)
{
    return p->efd;
}

int auth_pool_submit(struct auth_pool *p, uint64_t tag, const char *user, const char *pass)
{
    size_t ul = strlen(user), pl = strlen(pass);
    if (ul > AUTH_USER_MAX || pl > AUTH_PASS_MAX)
        return 0;
    pthread_mutex_lock(&p->mu);
    int ok = p->jlen + p->rlen < AUTH_POOL_QUEUE_MAX;
    if (ok) {
        struct auth_job *j = &p->jobs[(p->jhead + p->jlen) % AUTH_POOL_QUEUE_MAX];
        j->tag = tag;
        memcpy(j->user, user, ul + 1);
        memcpy(j->pass, pass, pl + 1);
        p->jlen++;
        pthread_cond_signal(&p->cv);
    }
    pthread_mutex_unlock(&p->mu);
    return ok;
}

size_t auth_pool_take(struct auth_pool *p, struct auth_result *out, size_t max)
{
    size_t n = 0;
    pthread_mutex_lock(&p->mu);
    while (n < max && p->rlen > 0) {
        out[n++] = p->res[p->rhead];
        p->rhead = (p->rhead + 1) % AUTH_POOL_QUEUE_MAX;
        p->rlen--;
    }
    pthread_mutex_unlock(&p->mu);
    return n;
}

void auth_pool_free(struct auth_pool *p)
{
    if (p == NULL)
        return;
    pthread_mutex_lock(&p->mu);
    p->stop = 1;
    pthread_cond_signal(&p->cv);
    pthread_mutex_unlock(&p->mu);
    pthread_join(p->thread, NULL);
    for (size_t i = 0; i < AUTH_POOL_QUEUE_MAX; i++)
        explicit_bzero(p->jobs[i].pass, sizeof(p->jobs[i].pass));
    pool_release(p);
}
