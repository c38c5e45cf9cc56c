/* main -> a -> b -> c, and c blocks reading stdin until it is closed. */
#include <unistd.h>

#define NOINLINE __attribute__((noipa))

volatile int sink;

NOINLINE int c(int x)
{
	char ch;
	int r = read(0, &ch, 1);
	sink += r;
	return r + x;
}

NOINLINE int b(int x)
{
	int r = c(x + 1);
	sink += r;
	return r;
}

NOINLINE int a(int x)
{
	int r = b(x + 1);
	sink += r;
	return r;
}

int main(void)
{
	int r = a(1);
	sink += r;
	return 0;
}
