/*
 * storm_client — the two clients of the connection-storm benchmark.
 *
 *   storm_client leak     -d CONNINFO -a APP -r PER_SECOND -T SECONDS -H HOLD_SECONDS
 *   storm_client critical -d CONNINFO -a APP -i INTERVAL_MS -T SECONDS
 *
 * leak: opens PER_SECOND new connections a second for SECONDS and never closes
 * them (an application leaking idle connections), then keeps what is left
 * open for HOLD_SECONDS more. Prints `t=<s> ok` or `t=<s> refused <SQLSTATE>`
 * per attempt, then `summary opened=<n> refused=<n>`.
 *
 * critical: every INTERVAL_MS, logs in, runs `SELECT 1` and logs out (an
 * application that must always get in). Same output format.
 *
 * Times are seconds since the client started (CLOCK_MONOTONIC).
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <libpq-fe.h>

static double t0;

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void sleep_until(double t) {
  double d = t - now_s();
  if (d <= 0) return;
  struct timespec ts = {(time_t)d, (long)((d - (double)(time_t)d) * 1e9)};
  nanosleep(&ts, NULL);
}

static void usage(void) {
  fprintf(stderr,
          "usage: storm_client leak -d CONNINFO -a APP -r PER_SECOND -T SECONDS -H HOLD_SECONDS\n"
          "       storm_client critical -d CONNINFO -a APP -i INTERVAL_MS -T SECONDS\n");
  exit(2);
}

/* One login; returns the connection or NULL (and prints the refusal). */
static PGconn *login(const char *conninfo, const char *app, double at) {
  const char *keys[] = {"dbname", "application_name", NULL};
  const char *vals[] = {conninfo, app, NULL};
  PGconn *c = PQconnectdbParams(keys, vals, 1);
  if (PQstatus(c) == CONNECTION_OK) {
    printf("t=%.3f ok\n", at - t0);
    return c;
  }
  /* libpq does not expose the SQLSTATE of a failed login: classify the message. */
  const char *msg = PQerrorMessage(c);
  const char *kind = strstr(msg, "too many") || strstr(msg, "remaining connection slots") ? "53300"
                     : strstr(msg, "terminat")                                            ? "57P01"
                                                                                          : "other";
  printf("t=%.3f refused %s\n", at - t0, kind);
  PQfinish(c);
  return NULL;
}

int main(int argc, char **argv) {
  if (argc < 2) usage();
  const char *mode = argv[1];
  const char *conninfo = NULL, *app = "storm";
  double rate = 10, seconds = 10, hold = 0, interval_ms = 100;
  int opt;
  optind = 2;
  while ((opt = getopt(argc, argv, "d:a:r:T:H:i:")) != -1) {
    switch (opt) {
      case 'd':
        conninfo = optarg;
        break;
      case 'a':
        app = optarg;
        break;
      case 'r':
        rate = atof(optarg);
        break;
      case 'T':
        seconds = atof(optarg);
        break;
      case 'H':
        hold = atof(optarg);
        break;
      case 'i':
        interval_ms = atof(optarg);
        break;
      default:
        usage();
    }
  }
  if (!conninfo || rate <= 0 || seconds <= 0 || interval_ms <= 0) usage();
  prctl(PR_SET_PDEATHSIG, SIGTERM);
  signal(SIGPIPE, SIG_IGN);
  setvbuf(stdout, NULL, _IOLBF, 0);
  t0 = now_s();
  long ok = 0, refused = 0;

  if (strcmp(mode, "leak") == 0) {
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
      rl.rlim_cur = rl.rlim_max;
      setrlimit(RLIMIT_NOFILE, &rl);
    }
    long max = (long)(rate * seconds) + 1;
    PGconn **held = calloc((size_t)max, sizeof(PGconn *));
    for (long i = 0; i < max; i++) {
      double at = t0 + (double)i / rate;
      if (at - t0 >= seconds) break;
      sleep_until(at);
      held[i] = login(conninfo, app, now_s());
      if (held[i])
        ok++;
      else
        refused++;
    }
    sleep_until(t0 + seconds + hold);
    for (long i = 0; i < max; i++)
      if (held[i]) PQfinish(held[i]);
  } else if (strcmp(mode, "critical") == 0) {
    for (long i = 0;; i++) {
      double at = t0 + (double)i * interval_ms / 1000.0;
      if (at - t0 >= seconds) break;
      sleep_until(at);
      PGconn *c = login(conninfo, app, now_s());
      if (!c) {
        refused++;
        continue;
      }
      PGresult *r = PQexec(c, "SELECT 1");
      PQclear(r);
      PQfinish(c);
      ok++;
    }
  } else {
    usage();
  }
  printf("summary opened=%ld refused=%ld\n", ok, refused);
  return 0;
}
