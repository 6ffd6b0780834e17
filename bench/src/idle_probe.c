/*
 * idle_probe — measures when idle sessions are terminated by the server.
 *
 *   idle_probe -d CONNINFO -n COUNT -t TIMEOUT_MS [-a APP] [-k NAPPS] [-s SQL] [-w WAIT_MS]
 *              [-p PARALLEL] [-g SPREAD_MS] [-A APP2]
 *
 * Opens COUNT connections (application_name APP or APP-NN, NN = i % NAPPS),
 * runs SQL (default `SELECT 1`; e.g. `SET idle_session_timeout = '2s'; SELECT 1`)
 * on every one (spread evenly over SPREAD_MS, default 0: all at once, so that
 * the sessions go idle, and expire, at different moments), and notes for each
 * the moment its result arrived. With -A, sessions log in as APP and take
 * the application_name APP2 (APP2-NN) in that statement, so that the time
 * they wait, idle, for their turn does not count against an idle policy on
 * APP2%; NAPPS then applies to APP2: the start of
 * its idle time as the client sees it (the server went idle a few microseconds
 * earlier). Then it waits, without sending anything, until each socket becomes
 * readable — the server's FATAL message or end of file, i.e. the termination —
 * or until WAIT_MS (default TIMEOUT_MS + 5000) have passed.
 *
 * Output, one line each: `idle` once every session is idle (the caller may
 * then read the server's own idle start, pg_stat_activity.state_change, of
 * each pid); `L <ms>` per terminated session, its termination time minus
 * (idle start as the client stamped it + TIMEOUT_MS); `G <pid> <epoch ms>`
 * per terminated session, the wall-clock time its socket became readable;
 * then `summary terminated=<n> alive=<n> failed=<n>`. With many sessions the
 * client's stamp lags the server's idle start (it handles one result at a
 * time), so `L` can look early: judge with `G` and state_change.
 */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <libpq-fe.h>

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static double epoch_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static void usage(void) {
  fprintf(stderr,
          "usage: idle_probe -d CONNINFO -n COUNT -t TIMEOUT_MS [-a APP] [-k NAPPS] [-s SQL]"
          " [-w WAIT_MS] [-p PARALLEL] [-g SPREAD_MS] [-A APP2]\n");
  exit(2);
}

enum { CONNECTING, QUERYING, IDLE, GONE, FAILED };

typedef struct {
  PGconn *conn;
  PostgresPollingStatusType poll_status;
  int state, sent;
  double idle_at, gone_at, gone_epoch;
} Session;

int main(int argc, char **argv) {
  const char *conninfo = NULL, *app = "idle-probe", *sql = "SELECT 1", *app2 = NULL;
  long count = -1;
  double timeout_ms = -1, wait_ms = -1, spread_ms = 0;
  int napps = 0, parallel = 16, opt;
  while ((opt = getopt(argc, argv, "d:n:t:a:k:s:w:p:g:A:")) != -1) {
    switch (opt) {
      case 'd':
        conninfo = optarg;
        break;
      case 'n':
        count = strtol(optarg, NULL, 10);
        break;
      case 't':
        timeout_ms = atof(optarg);
        break;
      case 'a':
        app = optarg;
        break;
      case 'k':
        napps = atoi(optarg);
        break;
      case 's':
        sql = optarg;
        break;
      case 'w':
        wait_ms = atof(optarg);
        break;
      case 'p':
        parallel = atoi(optarg);
        break;
      case 'g':
        spread_ms = atof(optarg);
        break;
      case 'A':
        app2 = optarg;
        break;
      default:
        usage();
    }
  }
  if (!conninfo || count < 1 || timeout_ms < 0 || parallel < 1) usage();
  if (wait_ms < 0) wait_ms = timeout_ms + 5000;
  prctl(PR_SET_PDEATHSIG, SIGTERM);
  signal(SIGPIPE, SIG_IGN);
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < (rlim_t)count + 64) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }

  Session *s = calloc((size_t)count, sizeof(Session));
  struct pollfd *pfds = calloc((size_t)count, sizeof(struct pollfd));
  long *idx = calloc((size_t)count, sizeof(long));
  if (!s || !pfds || !idx) return 1;

  /* Phase 1: connect, PARALLEL attempts in flight. */
  long next = 0, inflight = 0, failed = 0;
  char appname[128];
  while (next < count || inflight > 0) {
    while (next < count && inflight < parallel) {
      if (napps > 0)
        snprintf(appname, sizeof(appname), "%s-%02ld", app, next % napps);
      else
        snprintf(appname, sizeof(appname), "%s", app);
      const char *keys[] = {"dbname", "application_name", NULL};
      const char *vals[] = {conninfo, appname, NULL};
      s[next].conn = PQconnectStartParams(keys, vals, 1);
      s[next].poll_status = PGRES_POLLING_WRITING;
      if (!s[next].conn || PQstatus(s[next].conn) == CONNECTION_BAD) {
        s[next].state = FAILED;
        failed++;
      } else {
        s[next].state = CONNECTING;
        inflight++;
      }
      next++;
    }
    int n = 0;
    for (long i = 0; i < next; i++) {
      if (s[i].state != CONNECTING) continue;
      pfds[n].fd = PQsocket(s[i].conn);
      pfds[n].events = s[i].poll_status == PGRES_POLLING_READING ? POLLIN : POLLOUT;
      pfds[n].revents = 0;
      idx[n++] = i;
    }
    if (n == 0) continue;
    if (poll(pfds, (nfds_t)n, 1000) < 0 && errno != EINTR) return 1;
    for (int j = 0; j < n; j++) {
      if (!pfds[j].revents) continue;
      Session *x = &s[idx[j]];
      x->poll_status = PQconnectPoll(x->conn);
      if (x->poll_status == PGRES_POLLING_OK) {
        x->state = QUERYING;
        inflight--;
      } else if (x->poll_status == PGRES_POLLING_FAILED) {
        fprintf(stderr, "idle_probe: connection %ld: %s", idx[j], PQerrorMessage(x->conn));
        x->state = FAILED;
        failed++;
        inflight--;
      }
    }
  }

  /* Phase 2: run SQL everywhere (the k-th session at k * SPREAD_MS / COUNT); a
   * session is idle from the moment its results are in. */
  long querying = 0, next_send = 0;
  const double t_send0 = now_ms();
  while (querying > 0 || next_send < count) {
    while (next_send < count &&
           now_ms() >= t_send0 + (double)next_send * spread_ms / (double)count) {
      Session *x = &s[next_send++];
      if (x->state != QUERYING) continue;
      const char *q = sql;
      char qbuf[1024];
      if (app2) { /* take the measured application_name only now: idle until here was not "idle" */
        if (napps > 0)
          snprintf(qbuf, sizeof(qbuf), "SET application_name = '%s-%02ld'; %s", app2,
                   (next_send - 1) % napps, sql);
        else
          snprintf(qbuf, sizeof(qbuf), "SET application_name = '%s'; %s", app2, sql);
        q = qbuf;
      }
      if (!PQsendQuery(x->conn, q)) {
        fprintf(stderr, "idle_probe: %s", PQerrorMessage(x->conn));
        x->state = FAILED;
        failed++;
        continue;
      }
      x->sent = 1;
      querying++;
    }
    int n = 0;
    for (long i = 0; i < count; i++) {
      if (s[i].state != QUERYING || !s[i].sent) continue;
      pfds[n].fd = PQsocket(s[i].conn);
      pfds[n].events = POLLIN;
      pfds[n].revents = 0;
      idx[n++] = i;
    }
    if (poll(pfds, (nfds_t)n, next_send < count ? 1 : 1000) < 0 && errno != EINTR) return 1;
    for (int j = 0; j < n; j++) {
      if (!pfds[j].revents) continue;
      Session *x = &s[idx[j]];
      if (!PQconsumeInput(x->conn)) {
        x->state = FAILED;
        failed++;
        querying--;
        continue;
      }
      int bad = 0;
      while (!PQisBusy(x->conn)) {
        PGresult *r = PQgetResult(x->conn);
        if (!r) break;
        if (PQresultStatus(r) != PGRES_TUPLES_OK && PQresultStatus(r) != PGRES_COMMAND_OK) {
          fprintf(stderr, "idle_probe: %s", PQresultErrorMessage(r));
          bad = 1;
        }
        PQclear(r);
      }
      if (PQisBusy(x->conn)) continue;
      x->idle_at = now_ms();
      x->state = bad ? FAILED : IDLE;
      failed += bad;
      querying--;
    }
  }
  fprintf(stderr, "idle_probe: %ld sessions idle, %ld failed\n", count - failed, failed);
  printf("idle\n");
  fflush(stdout);

  /* Phase 3: wait for terminations, sending nothing. */
  double deadline = now_ms() + wait_ms;
  long idle = 0;
  for (long i = 0; i < count; i++) idle += (s[i].state == IDLE);
  while (idle > 0) {
    double left = deadline - now_ms();
    if (left <= 0) break;
    int n = 0;
    for (long i = 0; i < count; i++) {
      if (s[i].state != IDLE) continue;
      pfds[n].fd = PQsocket(s[i].conn);
      pfds[n].events = POLLIN;
      pfds[n].revents = 0;
      idx[n++] = i;
    }
    int rc = poll(pfds, (nfds_t)n, left > 100 ? 100 : (int)left + 1);
    double t = now_ms(), te = epoch_ms();
    if (rc < 0 && errno != EINTR) return 1;
    for (int j = 0; j < n && rc > 0; j++) {
      if (!pfds[j].revents) continue;
      s[idx[j]].state = GONE;
      s[idx[j]].gone_at = t;
      s[idx[j]].gone_epoch = te;
      idle--;
    }
  }

  long gone = 0;
  for (long i = 0; i < count; i++) {
    if (s[i].state != GONE) continue;
    gone++;
    printf("L %.3f\n", s[i].gone_at - s[i].idle_at - timeout_ms);
    printf("G %d %.3f\n", PQbackendPID(s[i].conn), s[i].gone_epoch);
  }
  printf("summary terminated=%ld alive=%ld failed=%ld\n", gone, idle, failed);
  fflush(stdout);
  for (long i = 0; i < count; i++)
    if (s[i].conn) PQfinish(s[i].conn);
  return 0;
}
