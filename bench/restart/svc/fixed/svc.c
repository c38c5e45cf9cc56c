/* svc: a small TCP service on 127.0.0.1 for the restart-versus-hotpatch
 * comparison. usage: svc PORT. One thread per connection; each request line
 * gets one reply line from handle(), the function the fix changes. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static unsigned long served;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

__attribute__((noinline)) int handle(const char *req, char *out, size_t n)
{
	pthread_mutex_lock(&lock);
	unsigned long k = ++served;
	pthread_mutex_unlock(&lock);
	if (strlen(req) > 200)
		return snprintf(out, n, "too long\n");
	return snprintf(out, n, "ok %lu %zu\n", k, strlen(req));
}

static void *conn(void *arg)
{
	int fd = (int)(long)arg;
	FILE *in = fdopen(fd, "r");
	char line[256], out[256];
	while (in && fgets(line, sizeof line, in)) {
		int m = handle(line, out, sizeof out);
		if (write(fd, out, (size_t)m) != m)
			break;
	}
	if (in)
		fclose(in);
	return NULL;
}

int main(int argc, char **argv)
{
	int s = socket(AF_INET, SOCK_STREAM, 0), one = 1;
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(atoi(argc > 1 ? argv[1] : "0"))};
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	if (bind(s, (struct sockaddr *)&a, sizeof a) != 0 || listen(s, 128) != 0)
		return 1;
	for (;;) {
		int c = accept(s, NULL, NULL);
		if (c < 0)
			continue;
		pthread_t t;
		pthread_create(&t, NULL, conn, (void *)(long)c);
		pthread_detach(t);
	}
}
