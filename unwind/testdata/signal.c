/* After reading the line "go", main installs a SIGUSR1 handler and calls
 * spin, which says "spinning" and loops. The handler blocks reading stdin;
 * at end of input it ends the loop and the program exits. */
#include <signal.h>
#include <string.h>
#include <unistd.h>

#define NOINLINE __attribute__((noipa))

volatile sig_atomic_t done;
volatile int sink;

NOINLINE void handler(int sig)
{
	char ch;
	int r = read(0, &ch, 1);
	sink += r + sig;
	done = 1;
}

NOINLINE void spin(void)
{
	if (write(1, "spinning\n", 9) != 9)
		return;
	while (!done)
		sink++;
}

int main(void)
{
	char ch = 0;
	while (ch != '\n')
		if (read(0, &ch, 1) != 1)
			return 1;
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = handler;
	if (sigaction(SIGUSR1, &sa, NULL) != 0)
		return 1;
	spin();
	return 0;
}
