/* rec calls itself until it is 50 frames deep, then blocks reading stdin. */
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

NOINLINE int rec(int n)
{
	int r = n > 1 ? rec(n - 1) : block();
	sink += r;
	return r;
}

int main(void)
{
	int r = rec(50);
	sink += r;
	return 0;
}
