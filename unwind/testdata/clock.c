/* main calls clock_loop, which calls clock_gettime (in the vdso) until a
 * second thread sees the end of stdin. */
#include <pthread.h>
#include <time.h>
#include <unistd.h>

#define NOINLINE __attribute__((noipa))

volatile int stop;
volatile long sink;

NOINLINE void *reader(void *arg)
{
	char ch;
	while (read(0, &ch, 1) > 0)
		;
	stop = 1;
	return arg;
}

NOINLINE void clock_loop(void)
{
	struct timespec ts;
	while (!stop) {
		clock_gettime(CLOCK_MONOTONIC, &ts);
		sink += ts.tv_nsec;
	}
}

int main(void)
{
	pthread_t t;
	if (pthread_create(&t, NULL, reader, NULL) != 0)
		return 1;
	clock_loop();
	pthread_join(t, NULL);
	return 0;
}
