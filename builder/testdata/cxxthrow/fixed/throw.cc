// check throws on bad input; the fix changes the value it throws.
// check has no handler of its own (no LSDA), but the runtime must unwind
// through it from __cxa_throw.
#include <cstdio>

__attribute__((noinline)) void check(int i)
{
	if (i < 0)
		throw i - 2;
}

int main(int argc, char **)
{
	try {
		check(argc - 2);
	} catch (int e) {
		std::printf("%d\n", e);
	}
	return 0;
}
