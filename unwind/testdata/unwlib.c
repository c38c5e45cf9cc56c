/* The shared library of shlib.c: calls back into the program. */
#define NOINLINE __attribute__((noipa))

volatile int lib_sink;

NOINLINE int lib_fn(int (*cb)(int), int x)
{
	int r = cb(x + 1);
	lib_sink += r;
	return r;
}
