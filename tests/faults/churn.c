/*
 * churn.c - libpq load helper for pg_warden's load tests (compiled by the
 * test with `cc -O2 churn.c -lpq -lpthread`).
 *
 *   churn hold CONNINFO N THREADS APPS       open N connections (application
 *        "<APPS-prefix>-<i % count>"), print "ready <opened> <failed>", wait
 *        for a line on stdin, close them all, print "closed".
 *   churn cycle CONNINFO CLIENTS CYCLES APPS  CLIENTS threads each connect and
 *        disconnect CYCLES times; print "ok <n> refused <n> failed <n>".
 *
 * APPS is "prefix:count". A refusal is a FATAL with "too many connections".
 */
#include <libpq-fe.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *conninfo;
static char app_prefix[64];
static int app_count = 1;
static int per_thread;
static int total;
static atomic_int next_index;
static atomic_int n_ok, n_refused, n_failed;
static PGconn **held;

static PGconn *open_one(int i) {
  char app[96];
  snprintf(app, sizeof(app), "%s-%d", app_prefix, i % app_count);
  const char *keys[] = {"dbname", "application_name", NULL};
  const char *vals[] = {conninfo, app, NULL};
  PGconn *c = PQconnectdbParams(keys, vals, 1);
  if (PQstatus(c) == CONNECTION_OK) {
    atomic_fetch_add(&n_ok, 1);
    return c;
  }
  if (strstr(PQerrorMessage(c), "too many connections"))
    atomic_fetch_add(&n_refused, 1);
  else {
    if (atomic_fetch_add(&n_failed, 1) < 3) fprintf(stderr, "connect: %s", PQerrorMessage(c));
  }
  PQfinish(c);
  return NULL;
}

static void *hold_thread(void *arg) {
  (void)arg;
  for (;;) {
    int i = atomic_fetch_add(&next_index, 1);
    if (i >= total) return NULL;
    held[i] = open_one(i);
  }
}

static void *cycle_thread(void *arg) {
  int t = (int)(long)arg;
  for (int n = 0; n < per_thread; n++) {
    PGconn *c = open_one(t * per_thread + n);
    if (c) PQfinish(c);
  }
  return NULL;
}

static void parse_apps(const char *s) {
  const char *colon = strchr(s, ':');
  size_t len = colon ? (size_t)(colon - s) : strlen(s);
  if (len >= sizeof(app_prefix)) len = sizeof(app_prefix) - 1;
  memcpy(app_prefix, s, len);
  app_prefix[len] = '\0';
  app_count = colon ? atoi(colon + 1) : 1;
  if (app_count < 1) app_count = 1;
}

int main(int argc, char **argv) {
  if (argc != 6) {
    fprintf(stderr, "usage: churn hold|cycle CONNINFO N THREADS|CYCLES PREFIX:COUNT\n");
    return 2;
  }
  conninfo = argv[2];
  parse_apps(argv[5]);
  if (strcmp(argv[1], "hold") == 0) {
    total = atoi(argv[3]);
    int threads = atoi(argv[4]);
    held = calloc((size_t)total, sizeof(PGconn *));
    pthread_t tid[64];
    if (threads > 64) threads = 64;
    for (int t = 0; t < threads; t++) pthread_create(&tid[t], NULL, hold_thread, NULL);
    for (int t = 0; t < threads; t++) pthread_join(tid[t], NULL);
    printf("ready %d %d\n", atomic_load(&n_ok), atomic_load(&n_refused) + atomic_load(&n_failed));
    fflush(stdout);
    char line[16];
    if (fgets(line, sizeof(line), stdin) == NULL) { /* EOF: close as well */
    }
    for (int i = 0; i < total; i++)
      if (held[i]) PQfinish(held[i]);
    printf("closed\n");
    return 0;
  }
  if (strcmp(argv[1], "cycle") == 0) {
    int clients = atoi(argv[3]);
    per_thread = atoi(argv[4]);
    pthread_t *tid = calloc((size_t)clients, sizeof(pthread_t));
    for (int t = 0; t < clients; t++) pthread_create(&tid[t], NULL, cycle_thread, (void *)(long)t);
    for (int t = 0; t < clients; t++) pthread_join(tid[t], NULL);
    printf("ok %d refused %d failed %d\n", atomic_load(&n_ok), atomic_load(&n_refused),
           atomic_load(&n_failed));
    return atomic_load(&n_failed) ? 1 : 0;
  }
  fprintf(stderr, "unknown mode %s\n", argv[1]);
  return 2;
}
