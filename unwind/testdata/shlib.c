/* main -> lib_fn (in libunwlib.so) -> callback (here) -> read. */
#include <unistd.h>

#define NOINLINE __attribute__((noipa))

int lib_fn(int (*cb)(int), int x);

volatile int sink;

NOINLINE int callback(int x)
{
	char ch;
	int r = read(0, &ch, 1);
	sink += r;
	return r + x;
}

int main(void)
{
	int r = lib_fn(callback, 1);
	sink += r;
	return 0;
}
