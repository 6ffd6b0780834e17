/*
 * hold_connections — opens N libpq connections and holds them idle.
 *
 *   hold_connections -d CONNINFO -n COUNT [-a APP] [-k NAPPS] [-p PARALLEL] [-f]
 *
 * Connection i gets application_name APP (or APP-NN with NN = i % NAPPS when
 * NAPPS > 0). Up to PARALLEL connection attempts are in flight at once
 * (non-blocking PQconnectStartParams/PQconnectPoll), so opening 2,000
 * connections is bounded by the postmaster's fork rate, not by round trips.
 *
 * When all attempts are done it prints one line `ready OK FAILED` on stdout
 * and holds the open connections idle until SIGTERM, SIGINT or SIGHUP, or
 * until its parent dies. Without -f any failed attempt is fatal (exit 1 after
 * printing the first error); with -f failures are counted and reported.
 *
 * RLIMIT_NOFILE is raised to what COUNT needs (soft to hard, and hard too
 * when allowed).
 */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <libpq-fe.h>

static volatile sig_atomic_t stop_requested = 0;

static void on_signal(int sig) {
  (void)sig;
  stop_requested = 1;
}

static void usage(void) {
  fprintf(stderr,
          "usage: hold_connections -d CONNINFO -n COUNT [-a APP] [-k NAPPS] [-p PARALLEL] [-f]\n");
  exit(2);
}

static void raise_nofile(long need) {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return;
  rlim_t want = (rlim_t)need + 64;
  if (rl.rlim_cur >= want) return;
  if (rl.rlim_max < want) {
    struct rlimit hard = {want, want};
    if (setrlimit(RLIMIT_NOFILE, &hard) == 0) return;
  }
  rl.rlim_cur = rl.rlim_max;
  setrlimit(RLIMIT_NOFILE, &rl);
  getrlimit(RLIMIT_NOFILE, &rl);
  if (rl.rlim_cur < want)
    fprintf(stderr,
            "hold_connections: open-files limit %lu is below %lu, some connections will fail\n",
            (unsigned long)rl.rlim_cur, (unsigned long)want);
}

typedef struct {
  PGconn *conn;
  PostgresPollingStatusType status; /* last PQconnectPoll result */
  int done;                         /* 1 = open, -1 = failed */
} Slot;

int main(int argc, char **argv) {
  const char *conninfo = NULL, *app = "bench";
  long count = -1;
  int napps = 0, parallel = 16, keep_going = 0, opt;
  while ((opt = getopt(argc, argv, "d:n:a:k:p:f")) != -1) {
    switch (opt) {
      case 'd':
        conninfo = optarg;
        break;
      case 'n':
        count = strtol(optarg, NULL, 10);
        break;
      case 'a':
        app = optarg;
        break;
      case 'k':
        napps = atoi(optarg);
        break;
      case 'p':
        parallel = atoi(optarg);
        break;
      case 'f':
        keep_going = 1;
        break;
      default:
        usage();
    }
  }
  if (!conninfo || count < 0 || parallel < 1 || napps < 0) usage();

  prctl(PR_SET_PDEATHSIG, SIGTERM);
  struct sigaction sa;
  memset(&sa, 0, sizeof(sa));
  sa.sa_handler = on_signal;
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGHUP, &sa, NULL);
  signal(SIGPIPE, SIG_IGN);
  raise_nofile(count);

  Slot *slots = calloc((size_t)(count > 0 ? count : 1), sizeof(Slot));
  struct pollfd *pfds = calloc((size_t)parallel, sizeof(struct pollfd));
  long *pidx = calloc((size_t)parallel, sizeof(long));
  if (!slots || !pfds || !pidx) {
    fprintf(stderr, "hold_connections: out of memory\n");
    return 1;
  }

  long next = 0, ok = 0, failed = 0, inflight = 0;
  char appname[128];
  while ((next < count || inflight > 0) && !stop_requested) {
    /* Start new attempts up to the parallelism. */
    while (next < count && inflight < parallel) {
      if (napps > 0)
        snprintf(appname, sizeof(appname), "%s-%02ld", app, next % napps);
      else
        snprintf(appname, sizeof(appname), "%s", app);
      const char *keys[] = {"dbname", "application_name", NULL};
      const char *vals[] = {conninfo, appname, NULL};
      Slot *s = &slots[next];
      s->conn = PQconnectStartParams(keys, vals, 1);
      s->status = PGRES_POLLING_WRITING;
      if (s->conn == NULL || PQstatus(s->conn) == CONNECTION_BAD) {
        s->done = -1;
        failed++;
        if (!keep_going) {
          fprintf(stderr, "hold_connections: connection %ld: %s", next,
                  s->conn ? PQerrorMessage(s->conn) : "out of memory\n");
          return 1;
        }
      } else {
        inflight++;
      }
      next++;
    }
    /* Poll every attempt in flight. */
    int n = 0;
    for (long i = 0; i < next; i++) {
      if (slots[i].done || slots[i].conn == NULL) continue;
      pfds[n].fd = PQsocket(slots[i].conn);
      pfds[n].events = slots[i].status == PGRES_POLLING_READING ? POLLIN : POLLOUT;
      pfds[n].revents = 0;
      pidx[n] = i;
      if (++n == parallel) break;
    }
    if (n == 0) continue;
    if (poll(pfds, (nfds_t)n, 1000) < 0 && errno != EINTR) {
      perror("poll");
      return 1;
    }
    for (int j = 0; j < n; j++) {
      if (pfds[j].revents == 0) continue;
      Slot *s = &slots[pidx[j]];
      s->status = PQconnectPoll(s->conn);
      if (s->status == PGRES_POLLING_OK) {
        s->done = 1;
        ok++;
        inflight--;
      } else if (s->status == PGRES_POLLING_FAILED) {
        s->done = -1;
        failed++;
        inflight--;
        if (!keep_going) {
          fprintf(stderr, "hold_connections: connection %ld: %s", pidx[j], PQerrorMessage(s->conn));
          return 1;
        }
        PQfinish(s->conn);
        s->conn = NULL;
      }
    }
  }

  printf("ready %ld %ld\n", ok, failed);
  fflush(stdout);
  while (!stop_requested) pause();

  for (long i = 0; i < count; i++)
    if (slots[i].conn) PQfinish(slots[i].conn);
  return 0;
}
