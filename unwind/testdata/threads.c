/* Four threads named depth1..depth4, each blocked reading stdin at that
 * many levels below thread_main; main blocks too, then joins them. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <unistd.h>

#define NOINLINE __attribute__((noipa))

volatile int sink;

NOINLINE int block(void)
{
	char ch;
	int r = read(0, &ch, 1);
	sink += r;
	return r;
}

NOINLINE int level4(int n)
{
	int r = block();
	sink += r + n;
	return r;
}

NOINLINE int level3(int n)
{
	int r = n > 3 ? level4(n) : block();
	sink += r;
	return r;
}

NOINLINE int level2(int n)
{
	int r = n > 2 ? level3(n) : block();
	sink += r;
	return r;
}

NOINLINE int level1(int n)
{
	int r = n > 1 ? level2(n) : block();
	sink += r;
	return r;
}

NOINLINE void *thread_main(void *arg)
{
	int n = (int)(long)arg;
	char name[16];
	snprintf(name, sizeof name, "depth%d", n);
	pthread_setname_np(pthread_self(), name);
	sink += level1(n);
	return NULL;
}

int main(void)
{
	pthread_t t[4];
	for (int i = 0; i < 4; i++)
		if (pthread_create(&t[i], NULL, thread_main, (void *)(long)(i + 1)) != 0)
			return 1;
	block();
	for (int i = 0; i < 4; i++)
		pthread_join(t[i], NULL);
	return 0;
}
