/* resp_pool.c - recycled hiredis reply objects; see resp_pool.h. */
#include "engine/resp_pool.h"

#include "queue/queue.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

struct resp_pool {
    struct pooled *free;   /* recycled objects */
    size_t nfree;
    struct resp_splice splice;   /* long bulk strings bypass the reader */
    char *stash;                 /* a taken payload for the next string */
    size_t stash_len;
};

struct pooled {
    struct resp_pool *pool;   /* owner, for freeObject, which gets no context */
    struct pooled *next;      /* free list */
    redisReply r;
    redisReply *elems[RESP_POOL_ELEMS];   /* a short array's element list */
    char small[RESP_POOL_INLINE];         /* a short string's bytes */
};

/* A caller may take over only a malloc'd string (resp_pool.h). */
_Static_assert(RESP_POOL_INLINE <= QUEUE_TAKE_OVER_MIN,
               "queue_take_data copies the bodies a pool reader keeps inline");

static struct pooled *pooled_of(redisReply *r)
{
    return (struct pooled *)(void *)((char *)r - offsetof(struct pooled, r));
}

/* obj_get: a zeroed reply of type from the pool of the task's reader. */
static redisReply *obj_get(const redisReadTask *task, int type)
{
    struct resp_pool *p = task->privdata;
    struct pooled *o = p->free;
    if (o != NULL) {
        p->free = o->next;
        p->nfree--;
    } else {
        o = malloc(sizeof(*o));
        if (o == NULL)
            return NULL;
        o->pool = p;
    }
    memset(&o->r, 0, sizeof(o->r));
    o->r.type = type;
    return &o->r;
}

static void obj_put(redisReply *r)
{
    struct pooled *o = pooled_of(r);
    struct resp_pool *p = o->pool;
    if (p->nfree >= RESP_POOL_KEEP) {
        free(o);
        return;
    }
    o->next = p->free;
    p->free = o;
    p->nfree++;
}

static void free_object(void *reply)
{
    redisReply *r = reply;
    if (r == NULL)
        return;
    if (r->type == REDIS_REPLY_ARRAY) {
        for (size_t i = 0; i < r->elements; i++)
            free_object(r->element[i]);
        if (r->element != pooled_of(r)->elems)
            free(r->element);
    } else if (r->str != pooled_of(r)->small) {
        free(r->str);   /* NULL when a caller took it over */
    }
    obj_put(r);
}

/* attach: r becomes its parent's element (hiredis fills arrays this way). */
static void *attach(const redisReadTask *task, redisReply *r)
{
    if (task->parent != NULL) {
        redisReply *parent = task->parent->obj;
        parent->element[task->idx] = r;
    }
    return r;
}

static void *create_string(const redisReadTask *task, char *str, size_t len)
{
    struct resp_pool *p = task->privdata;
    if (p->stash != NULL && (len != 0 || task->type != REDIS_REPLY_STRING))
        return NULL;   /* the stand-in for a taken payload must come next */
    redisReply *r = obj_get(task, task->type);
    if (r == NULL)
        return NULL;
    char *s;
    if (p->stash != NULL) {
        /* The zero-length stand-in for a taken payload (resp_pool_stash). */
        s = p->stash;
        len = p->stash_len;
        p->stash = NULL;
    } else {
        s = len < RESP_POOL_INLINE ? pooled_of(r)->small : malloc(len + 1);
        if (s == NULL) {
            obj_put(r);
            return NULL;
        }
        memcpy(s, str, len);
        s[len] = '\0';
    }
    r->str = s;
    r->len = len;
    return attach(task, r);
}

static void *create_array(const redisReadTask *task, int elements)
{
    redisReply *r = obj_get(task, REDIS_REPLY_ARRAY);
    if (r == NULL)
        return NULL;
    if (elements > 0) {
        if (elements <= RESP_POOL_ELEMS) {
            r->element = pooled_of(r)->elems;
            memset(r->element, 0, sizeof(redisReply *) * (size_t)elements);
        } else {
            r->element = calloc((size_t)elements, sizeof(redisReply *));
            if (r->element == NULL) {
                obj_put(r);
                return NULL;
            }
        }
    }
    r->elements = elements > 0 ? (size_t)elements : 0;
    return attach(task, r);
}

static void *create_integer(const redisReadTask *task, long long value)
{
    redisReply *r = obj_get(task, REDIS_REPLY_INTEGER);
    if (r == NULL)
        return NULL;
    r->integer = value;
    return attach(task, r);
}

static void *create_nil(const redisReadTask *task)
{
    redisReply *r = obj_get(task, REDIS_REPLY_NIL);
    return r ? attach(task, r) : NULL;
}

/* hiredis keeps a non-const pointer to the table; nothing writes it. */
static redisReplyObjectFunctions pool_functions = {
    create_string, create_array, create_integer, create_nil, free_object,
};

redisReader *resp_pool_reader_new(void)
{
    struct resp_pool *p = calloc(1, sizeof(*p));
    if (p == NULL)
        return NULL;
    redisReader *r = redisReaderCreateWithFunctions(&pool_functions);
    if (r == NULL) {
        free(p);
        return NULL;
    }
    resp_splice_init(&p->splice, RESP_SPLICE_MIN_TAKE);
    r->privdata = p;
    return r;
}

/* A reader is ours when it calls our functions: only then is its privdata
 * a struct resp_pool. */
static struct resp_pool *pool_of(redisReader *r)
{
    return r != NULL && r->fn == &pool_functions ? r->privdata : NULL;
}

struct resp_splice *resp_pool_splice(redisReader *r)
{
    struct resp_pool *p = pool_of(r);
    return p ? &p->splice : NULL;
}

void resp_pool_stash(redisReader *r, char *payload, size_t len)
{
    struct resp_pool *p = pool_of(r);
    free(p->stash);
    p->stash = payload;
    p->stash_len = len;
}

void resp_pool_reader_free(redisReader *r)
{
    if (r == NULL)
        return;
    struct resp_pool *p = r->privdata;
    redisReaderFree(r);   /* a partial reply goes back to the pool first */
    if (p == NULL)
        return;
    resp_splice_reset(&p->splice);
    free(p->stash);
    for (struct pooled *o = p->free, *n; o != NULL; o = n) {
        n = o->next;
        free(o);
    }
    free(p);
}

void resp_reply_free(redisReader *r, void *reply)
{
    if (r->fn != NULL && r->fn->freeObject != NULL)
        r->fn->freeObject(reply);
}
