/* pause: the target of the pause benchmark, shaped like a small service.
 * Eight threads: main answers lines on stdin; four workers wait on a
 * condition variable for jobs (as a thread pool does); two sleep and wake
 * every millisecond to do a little work (timers, housekeeping); one blocks
 * in poll() on a pipe (an I/O thread). Three functions change in the fix:
 * parse_amount, check_limit and format_reply.
 *   "req N"  -> the reply for amount N, computed by a pool worker
 *   "ticks"  -> how many times the timer threads woke */
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define NOINLINE __attribute__((noinline))

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t ready = PTHREAD_COND_INITIALIZER;
static pthread_cond_t done = PTHREAD_COND_INITIALIZER;
static char job[64], reply[128];
static int have_job, have_reply;
static volatile unsigned long ticks;
static int pipefd[2];

NOINLINE long parse_amount(const char *s)
{
	long v = strtol(s, NULL, 10);
	return v < 0 ? 0 : v;
}

NOINLINE int check_limit(long amount)
{
	return amount >= 0 && amount < 1000;
}

NOINLINE void format_reply(char *out, size_t n, long amount, int ok)
{
	snprintf(out, n, "amount=%ld ok=%d fixed", amount, ok);
}

static void *worker(void *arg)
{
	(void)arg;
	for (;;) {
		pthread_mutex_lock(&lock);
		while (!have_job)
			pthread_cond_wait(&ready, &lock);
		have_job = 0;
		long a = parse_amount(job);
		format_reply(reply, sizeof reply, a, check_limit(a));
		have_reply = 1;
		pthread_cond_signal(&done);
		pthread_mutex_unlock(&lock);
	}
	return NULL;
}

static void *timer(void *arg)
{
	(void)arg;
	for (;;) {
		struct timespec ts = {0, 1000000};
		nanosleep(&ts, NULL);
		__atomic_add_fetch(&ticks, 1, __ATOMIC_RELAXED);
		(void)check_limit((long)ticks);
	}
	return NULL;
}

static void *io(void *arg)
{
	(void)arg;
	struct pollfd p = {.fd = pipefd[0], .events = POLLIN};
	for (;;)
		poll(&p, 1, -1);
	return NULL;
}

int main(void)
{
	pthread_t t;
	char line[64];
	if (pipe(pipefd) != 0)
		return 1;
	for (int i = 0; i < 4; i++)
		pthread_create(&t, NULL, worker, NULL);
	for (int i = 0; i < 2; i++)
		pthread_create(&t, NULL, timer, NULL);
	pthread_create(&t, NULL, io, NULL);
	while (fgets(line, sizeof line, stdin)) {
		if (strncmp(line, "req ", 4) == 0) {
			pthread_mutex_lock(&lock);
			snprintf(job, sizeof job, "%s", line + 4);
			have_job = 1;
			have_reply = 0;
			pthread_cond_signal(&ready);
			while (!have_reply)
				pthread_cond_wait(&done, &lock);
			printf("%s\n", reply);
			pthread_mutex_unlock(&lock);
		} else {
			printf("ticks %lu\n", ticks);
		}
		fflush(stdout);
	}
	return 0;
}
