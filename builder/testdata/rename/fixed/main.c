#include <stdio.h>

long bump_a(long n);
long bump_b(long n);

int main(int argc, char **argv)
{
	(void)argv;
	printf("%ld %ld\n", bump_a(argc), bump_b(argc));
	return 0;
}
