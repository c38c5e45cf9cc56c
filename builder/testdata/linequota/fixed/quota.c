/*
 * quota's limit is written as the number of its own line, by chance; the
 * fix adds lines above it and raises the limit by as many: in the binary,
 * exactly what a moved __LINE__ looks like. The source says otherwise.
 */
#include <stdio.h>
#include <stdlib.h>

__attribute__((noipa)) static long clamp(long n, long limit)
{
	return n > limit ? limit : n;
}

__attribute__((noinline)) static int check(long n)
{
	if (n == 0)
		return 0;
	/* 0 is no amount */
	return n >= 0;
}

__attribute__((noinline)) static long quota(long n)
{
	return clamp(n, 24);
}

int main(int argc, char **argv)
{
	long n = argc > 1 ? atol(argv[1]) : 0;
	printf("%d %ld\n", check(n), quota(n));
	return 0;
}
