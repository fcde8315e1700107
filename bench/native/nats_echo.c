/*
 * Benchmark child of bench/broker.ts: NATS request-reply through the C
 * client (cnats, Debian's libnats-dev), so the NATS rows can show what a
 * native client costs beside @nats-io/transport-node on Deno's Node layer.
 *
 *   nats_echo respond <url> <subject>
 *     answers every request with its own payload; prints "READY <cnats
 *     version>" once subscribed and exits when stdin closes.
 *   nats_echo request <url> <subject> <in flight> <warm-up ms> <measure ms> <payload bytes>
 *     keeps <in flight> requests outstanding (each reply sends the next one
 *     on its slot's inbox), measures after the warm-up and prints
 *     RESULT {"count","seconds","p50Ms","p99Ms","cpuSeconds"}.
 *
 * Build: cc -O2 -o nats_echo nats_echo.c -lnats
 */
#include <nats/nats.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#define MAX_SAMPLES 2000000
#define MAX_IN_FLIGHT 4096

static int64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static double cpu_seconds(void) {
  struct rusage usage;
  getrusage(RUSAGE_SELF, &usage);
  return usage.ru_utime.tv_sec + usage.ru_utime.tv_usec / 1e6 + usage.ru_stime.tv_sec +
         usage.ru_stime.tv_usec / 1e6;
}

static void fail(const char *what, natsStatus s) {
  fprintf(stderr, "nats_echo: %s: %s\n", what, natsStatus_GetText(s));
  exit(1);
}

/* ------------------------------------------------------------------------ */

static void on_request(natsConnection *nc, natsSubscription *sub, natsMsg *msg, void *closure) {
  (void)sub;
  (void)closure;
  const char *reply = natsMsg_GetReply(msg);
  if (reply != NULL) {
    natsConnection_Publish(nc, reply, natsMsg_GetData(msg), natsMsg_GetDataLength(msg));
  }
  natsMsg_Destroy(msg);
}

static int respond(natsConnection *nc, const char *subject) {
  natsSubscription *sub = NULL;
  natsStatus s = natsConnection_Subscribe(&sub, nc, subject, on_request, NULL);
  if (s == NATS_OK) s = natsSubscription_SetPendingLimits(sub, -1, -1);
  if (s == NATS_OK) s = natsConnection_Flush(nc);
  if (s != NATS_OK) fail("subscribe", s);
  printf("READY cnats %s\n", nats_GetVersion());
  fflush(stdout);
  char buffer[256];
  while (read(0, buffer, sizeof buffer) > 0) {
    /* the parent writes nothing; EOF means it is done with us */
  }
  natsSubscription_Destroy(sub);
  return 0;
}

/* ------------------------------------------------------------------------ */

static const char *request_subject;
static char inbox_prefix[64];
static char (*inboxes)[96];
static int64_t *sent_at;
static const char *payload;
static int payload_len;
static double *samples;
static atomic_int measuring;
static atomic_int stopping;
static atomic_long count;

static void on_reply(natsConnection *nc, natsSubscription *sub, natsMsg *msg, void *closure) {
  (void)sub;
  (void)closure;
  const char *subject = natsMsg_GetSubject(msg);
  int slot = atoi(subject + strlen(inbox_prefix));
  natsMsg_Destroy(msg);
  int64_t now = now_ns();
  if (atomic_load(&measuring) && !atomic_load(&stopping)) {
    long n = atomic_fetch_add(&count, 1);
    if (n < MAX_SAMPLES) samples[n] = (now - sent_at[slot]) / 1e6;
  }
  if (atomic_load(&stopping)) return;
  sent_at[slot] = now_ns();
  natsConnection_PublishRequest(nc, request_subject, inboxes[slot], payload, payload_len);
}

static int compare(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static double at(double *sorted, long n, double q) {
  if (n == 0) return 0;
  long i = (long)(q * n + 0.999999) - 1;
  if (i < 0) i = 0;
  if (i >= n) i = n - 1;
  return sorted[i];
}

static int request(natsConnection *nc, const char *subject, int in_flight, int warmup_ms,
                   int measure_ms, int bytes) {
  if (in_flight < 1 || in_flight > MAX_IN_FLIGHT) {
    fprintf(stderr, "nats_echo: in flight must be 1..%d\n", MAX_IN_FLIGHT);
    return 2;
  }
  request_subject = subject;
  snprintf(inbox_prefix, sizeof inbox_prefix, "_INBOX.bench%d.", (int)getpid());
  inboxes = calloc(in_flight, sizeof *inboxes);
  sent_at = calloc(in_flight, sizeof *sent_at);
  samples = calloc(MAX_SAMPLES, sizeof *samples);
  char *data = malloc(bytes > 0 ? bytes : 1);
  for (int i = 0; i < bytes; i++) data[i] = 'a' + i % 26;
  payload = data;
  payload_len = bytes;
  char wildcard[96];
  snprintf(wildcard, sizeof wildcard, "%s*", inbox_prefix);
  natsSubscription *sub = NULL;
  natsStatus s = natsConnection_Subscribe(&sub, nc, wildcard, on_reply, NULL);
  if (s == NATS_OK) s = natsSubscription_SetPendingLimits(sub, -1, -1);
  if (s == NATS_OK) s = natsConnection_Flush(nc);
  if (s != NATS_OK) fail("subscribe", s);
  for (int i = 0; i < in_flight; i++) {
    snprintf(inboxes[i], sizeof inboxes[i], "%s%d", inbox_prefix, i);
    sent_at[i] = now_ns();
    s = natsConnection_PublishRequest(nc, subject, inboxes[i], payload, payload_len);
    if (s != NATS_OK) fail("request", s);
  }
  usleep((useconds_t)warmup_ms * 1000);
  double cpu0 = cpu_seconds();
  int64_t t0 = now_ns();
  atomic_store(&measuring, 1);
  usleep((useconds_t)measure_ms * 1000);
  atomic_store(&stopping, 1);
  int64_t t1 = now_ns();
  double cpu = cpu_seconds() - cpu0;
  long n = atomic_load(&count);
  if (n > MAX_SAMPLES) n = MAX_SAMPLES;
  /* Let the delivery thread finish what it holds before the samples are read. */
  usleep(100 * 1000);
  natsSubscription_Unsubscribe(sub);
  qsort(samples, n, sizeof *samples, compare);
  printf("RESULT {\"count\":%ld,\"seconds\":%.6f,\"p50Ms\":%.6f,\"p99Ms\":%.6f,"
         "\"cpuSeconds\":%.6f}\n",
         n, (t1 - t0) / 1e9, at(samples, n, 0.5), at(samples, n, 0.99), cpu);
  fflush(stdout);
  natsSubscription_Destroy(sub);
  return 0;
}

int main(int argc, char **argv) {
  if (argc < 4) {
    fprintf(stderr, "usage: nats_echo respond|request <url> <subject> ...\n");
    return 2;
  }
  natsConnection *nc = NULL;
  natsOptions *opts = NULL;
  natsStatus s = natsOptions_Create(&opts);
  if (s == NATS_OK) s = natsOptions_SetURL(opts, argv[2]);
  /* Write each publish at once, as the client's own Request() does for requests and as its
     documentation advises for a replier (by default a flusher thread batches them). */
  if (s == NATS_OK) s = natsOptions_SetSendAsap(opts, true);
  if (s == NATS_OK) s = natsConnection_Connect(&nc, opts);
  if (s != NATS_OK) fail("connect", s);
  natsOptions_Destroy(opts);
  int code;
  if (strcmp(argv[1], "respond") == 0) code = respond(nc, argv[3]);
  else if (strcmp(argv[1], "request") == 0 && argc == 8) {
    code = request(nc, argv[3], atoi(argv[4]), atoi(argv[5]), atoi(argv[6]), atoi(argv[7]));
  } else {
    fprintf(stderr, "usage: nats_echo request <url> <subject> <in flight> <warm-up ms> "
                    "<measure ms> <payload bytes>\n");
    code = 2;
  }
  natsConnection_Destroy(nc);
  nats_Close();
  return code;
}
