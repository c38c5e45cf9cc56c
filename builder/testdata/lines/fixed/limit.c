/* A limit passed next to __FILE__ and __LINE__ is not a line number: the
 * fix changes LIMIT, and limited() must be in the patch. */
#include <stdio.h>

#define LIMIT 50

__attribute__((noipa)) void report(const char *file, int line, int limit, long n)
{
	printf("%s:%d: %ld over %d\n", file, line, n, limit);
}

__attribute__((noinline)) long limited(long n)
{
	if (n > LIMIT)
		report(__FILE__, __LINE__, LIMIT, n);
	return n;
}

int main(int argc, char **argv)
{
	(void)argv;
	return (int)limited(argc * 1000);
}
