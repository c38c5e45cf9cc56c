/* The corpus driver harness: a small loopback server that calls a library.
 *
 * It listens on 127.0.0.1 (an ephemeral port, printed as "port N" on stdout),
 * serves each connection in its own thread, and answers one line per request
 * line:
 *
 *   B ARG   run the operation in the serving thread (the load: it must not
 *           crash on either build) and answer its result;
 *   P ARG   run the operation in a forked child and answer its result, or
 *           "crash:SIGNAL" if the child died: the probe of a vulnerable path,
 *           which may crash the original build without taking the server down.
 *
 * The operation itself is corpus_handle(), defined by each project's driver.
 * Every thread of the server keeps calling the library, so a patch applied
 * while the load runs is applied to a process that is busy in it. */
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

int corpus_handle(const char *arg, char *out, size_t outsz);

static void probe(const char *arg, char *out, size_t outsz) {
  int fds[2];
  if (pipe(fds) != 0) {
    snprintf(out, outsz, "error:pipe");
    return;
  }
  pid_t pid = fork();
  if (pid < 0) {
    snprintf(out, outsz, "error:fork");
    close(fds[0]);
    close(fds[1]);
    return;
  }
  if (pid == 0) {
    char res[512];
    close(fds[0]);
    alarm(10);
    res[0] = 0;
    corpus_handle(arg, res, sizeof res);
    if (write(fds[1], res, strlen(res)) < 0)
      _exit(3);
    _exit(0);
  }
  close(fds[1]);
  size_t n = 0;
  for (;;) {
    ssize_t r = read(fds[0], out + n, outsz - 1 - n);
    if (r < 0 && errno == EINTR)
      continue;
    if (r <= 0)
      break;
    n += (size_t)r;
    if (n == outsz - 1)
      break;
  }
  out[n] = 0;
  close(fds[0]);
  int st;
  while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
    ;
  if (WIFSIGNALED(st))
    snprintf(out, outsz, "crash:%s", strsignal(WTERMSIG(st)));
}

static void *serve(void *p) {
  int fd = (int)(long)p;
  FILE *in = fdopen(fd, "r");
  char line[8192], res[1024], reply[1100];
  while (in && fgets(line, sizeof line, in)) {
    line[strcspn(line, "\r\n")] = 0;
    res[0] = 0;
    if (line[0] == 'B' && line[1] == ' ')
      corpus_handle(line + 2, res, sizeof res);
    else if (line[0] == 'P' && line[1] == ' ')
      probe(line + 2, res, sizeof res);
    else
      snprintf(res, sizeof res, "error:bad request");
    int n = snprintf(reply, sizeof reply, "%s\n", res);
    if (write(fd, reply, (size_t)n) != n)
      break;
  }
  if (in)
    fclose(in);
  else
    close(fd);
  return NULL;
}

int main(void) {
  signal(SIGPIPE, SIG_IGN);
  int ls = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t al = sizeof a;
  if (ls < 0 || bind(ls, (struct sockaddr *)&a, sizeof a) != 0 || listen(ls, 64) != 0 ||
      getsockname(ls, (struct sockaddr *)&a, &al) != 0) {
    perror("listen");
    return 1;
  }
  printf("port %d\n", ntohs(a.sin_port));
  fflush(stdout);
  for (;;) {
    int c = accept(ls, NULL, NULL);
    if (c < 0) {
      if (errno == EINTR)
        continue;
      perror("accept");
      return 1;
    }
    pthread_t t;
    if (pthread_create(&t, NULL, serve, (void *)(long)c) != 0) {
      close(c);
      continue;
    }
    pthread_detach(t);
  }
}
