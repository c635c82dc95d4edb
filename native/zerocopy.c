/*
 * Verge's optional zero-copy send (docs/decisions.md, "Zero-copy sends of large hits").
 *
 * Large bodies in the memory tier live in memfd-backed shared mappings (alloc()): a Buffer to
 * JavaScript, a file to the kernel. A plain-HTTP hit then writes its head with send(2) and its
 * body with sendfile(2) from that file (send()): the kernel takes the pages by reference instead
 * of copying the body into the socket's buffer, as nginx does with `sendfile on`.
 *
 * Both calls are non-blocking and return what they wrote; the caller writes the rest through
 * the socket's stream. Nothing here keeps state between calls beyond the count of live mappings.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <node_api.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

static atomic_long live = 0;

typedef struct {
  int fd;
  size_t size;
} Region;

/* The Buffer was collected: unmap and close. Pages that a socket still holds (sent but not yet
 * delivered) keep their own references, so this never pulls data from under the kernel. */
static void release(napi_env env, void *data, void *hint) {
  (void)env;
  Region *r = hint;
  munmap(data, r->size);
  close(r->fd);
  free(r);
  atomic_fetch_sub(&live, 1);
}

static napi_value undefined(napi_env env) {
  napi_value u;
  napi_get_undefined(env, &u);
  return u;
}

/* alloc(size) -> [fd, Buffer] sharing one zero-filled memfd mapping, or undefined when the
 * kernel refuses (no memfd, out of descriptors or mappings): the caller keeps a plain Buffer. */
static napi_value alloc(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  int64_t size = 0;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1 ||
      napi_get_value_int64(env, argv[0], &size) != napi_ok || size <= 0)
    return undefined(env);
  int fd = memfd_create("verge-body", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (fd < 0) return undefined(env);
  if (ftruncate(fd, (off_t)size) != 0) {
    close(fd);
    return undefined(env);
  }
  /* the size is fixed from here: sendfile() can never meet a shorter file than it was told */
  fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW);
  void *p = mmap(NULL, (size_t)size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) {
    close(fd);
    return undefined(env);
  }
  Region *r = malloc(sizeof *r);
  napi_value buf, fdv, pair;
  if (r == NULL) goto fail;
  r->fd = fd;
  r->size = (size_t)size;
  if (napi_create_external_buffer(env, (size_t)size, p, release, r, &buf) != napi_ok) goto fail;
  atomic_fetch_add(&live, 1);
  napi_create_int32(env, fd, &fdv);
  napi_create_array_with_length(env, 2, &pair);
  napi_set_element(env, pair, 0, fdv);
  napi_set_element(env, pair, 1, buf);
  return pair;
fail:
  free(r);
  munmap(p, (size_t)size);
  close(fd);
  return undefined(env);
}

/* send(socketFd, head, fileFd, length) -> bytes written: head first, then the file from offset
 * 0, until done, the socket is full (EAGAIN) or fails; the caller writes the rest, and a failure
 * comes back to it from that write. */
static napi_value send_head_file(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4], out;
  int32_t sock = -1, file = -1;
  int64_t length = 0;
  void *head = NULL;
  size_t headLength = 0;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 4 ||
      napi_get_value_int32(env, argv[0], &sock) != napi_ok ||
      napi_get_buffer_info(env, argv[1], &head, &headLength) != napi_ok ||
      napi_get_value_int32(env, argv[2], &file) != napi_ok ||
      napi_get_value_int64(env, argv[3], &length) != napi_ok) {
    napi_create_int64(env, 0, &out);
    return out;
  }
  size_t sent = 0;
  while (sent < headLength) {
    /* MSG_MORE: the head waits for the body's first pages rather than leaving in a packet of
     * its own; the last sendfile() chunk pushes both */
    ssize_t n = send(sock, (char *)head + sent, headLength - sent, MSG_MORE | MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n > 0) sent += (size_t)n;
    else if (n < 0 && errno == EINTR) continue;
    else break;
  }
  off_t offset = 0;
  if (sent == headLength) {
    while (offset < length) {
      ssize_t n = sendfile(sock, file, &offset, (size_t)(length - offset));
      if (n > 0) continue;
      if (n < 0 && errno == EINTR) continue;
      break;
    }
  }
  napi_create_int64(env, (int64_t)sent + (int64_t)offset, &out);
  return out;
}

static napi_value live_count(napi_env env, napi_callback_info info) {
  (void)info;
  napi_value out;
  napi_create_int64(env, atomic_load(&live), &out);
  return out;
}

/* An asynchronous sendfile(2) of a file's byte range to a socket: startSend() sends what the
 * socket takes at once and, when that is not all, watches a duplicate of the socket's descriptor
 * for writability (a uv_poll on the duplicate: epoll keeps it apart from node:net's own watch of
 * the original) and goes on from there. The callback gets (errno or 0, bytes sent) once, when the
 * range is sent, the socket fails, or abortSend() stopped it; the duplicate is closed before. */
typedef struct {
  napi_env env;
  napi_ref callback;
  napi_ref self;
  napi_async_context context;
  uv_poll_t poll;
  int sock;
  int file;
  off_t offset;
  int64_t left;
  int64_t sent;
  int error;
  int closing;
} SendJob;

/* sendfile() until done, EAGAIN (0) or a failure (errno) */
static int pump(SendJob *j) {
  while (j->left > 0) {
    ssize_t n = sendfile(j->sock, j->file, &j->offset, (size_t)j->left);
    if (n > 0) {
      j->left -= n;
      j->sent += n;
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return 0;
    return n == 0 ? EPIPE : errno;
  }
  return 0;
}

static void job_closed(uv_handle_t *h) {
  SendJob *j = h->data;
  close(j->sock);
  napi_env env = j->env;
  napi_handle_scope scope;
  napi_open_handle_scope(env, &scope);
  napi_value cb, recv, argv[2], result;
  napi_get_reference_value(env, j->callback, &cb);
  /* napi_make_callback() wants an object as the receiver */
  napi_get_global(env, &recv);
  napi_create_int32(env, j->error, &argv[0]);
  napi_create_int64(env, j->sent, &argv[1]);
  napi_make_callback(env, j->context, recv, cb, 2, argv, &result);
  napi_async_destroy(env, j->context);
  napi_delete_reference(env, j->callback);
  napi_delete_reference(env, j->self);
  napi_close_handle_scope(env, scope);
}

static void job_finish(SendJob *j, int error) {
  if (j->closing) return;
  j->closing = 1;
  j->error = error;
  uv_poll_stop(&j->poll);
  uv_close((uv_handle_t *)&j->poll, job_closed);
}

static void job_writable(uv_poll_t *h, int status, int events) {
  (void)events;
  SendJob *j = h->data;
  if (status < 0) {
    job_finish(j, EIO);
    return;
  }
  int e = pump(j);
  if (e != 0 || j->left == 0) job_finish(j, e);
}

/* the job object's memory: freed when JavaScript lets go of it, after its callback ran */
static void job_free(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  free(data);
}

/* startSend(socketFd, fileFd, offset, length, callback(errno, sent)) -> job, or undefined when
 * the descriptor cannot be duplicated (the caller sends another way) */
static napi_value start_send(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5], job, name;
  int32_t sock = -1, file = -1;
  int64_t offset = 0, length = 0;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 5 ||
      napi_get_value_int32(env, argv[0], &sock) != napi_ok ||
      napi_get_value_int32(env, argv[1], &file) != napi_ok ||
      napi_get_value_int64(env, argv[2], &offset) != napi_ok ||
      napi_get_value_int64(env, argv[3], &length) != napi_ok)
    return undefined(env);
  uv_loop_t *loop;
  if (napi_get_uv_event_loop(env, &loop) != napi_ok) return undefined(env);
  int dup_fd = fcntl(sock, F_DUPFD_CLOEXEC, 0);
  if (dup_fd < 0) return undefined(env);
  SendJob *j = calloc(1, sizeof *j);
  if (j == NULL) {
    close(dup_fd);
    return undefined(env);
  }
  j->env = env;
  j->sock = dup_fd;
  j->file = file;
  j->offset = (off_t)offset;
  j->left = length;
  if (uv_poll_init(loop, &j->poll, dup_fd) != 0) {
    close(dup_fd);
    free(j);
    return undefined(env);
  }
  j->poll.data = j;
  napi_create_external(env, j, job_free, NULL, &job);
  napi_create_reference(env, argv[4], 1, &j->callback);
  /* the job object stays alive until its callback ran, whatever JavaScript keeps */
  napi_create_reference(env, job, 1, &j->self);
  napi_create_string_utf8(env, "verge:sendfile", NAPI_AUTO_LENGTH, &name);
  napi_async_init(env, NULL, name, &j->context);
  int e = pump(j);
  if (e != 0 || j->left == 0) job_finish(j, e);
  else uv_poll_start(&j->poll, UV_WRITABLE, job_writable);
  return job;
}

/* abortSend(job): stop; the callback still runs once, with ECANCELED unless it already ended */
static napi_value abort_send(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  void *data = NULL;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) == napi_ok && argc == 1 &&
      napi_get_value_external(env, argv[0], &data) == napi_ok && data != NULL)
    job_finish(data, ECANCELED);
  return undefined(env);
}

/* sent(job) -> bytes sent so far */
static napi_value job_sent(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1], out;
  void *data = NULL;
  int64_t n = 0;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) == napi_ok && argc == 1 &&
      napi_get_value_external(env, argv[0], &data) == napi_ok && data != NULL)
    n = ((SendJob *)data)->sent;
  napi_create_int64(env, n, &out);
  return out;
}

/* descriptors() -> this process's soft limit on open files (each live mapping holds one) */
static napi_value descriptors(napi_env env, napi_callback_info info) {
  (void)info;
  struct rlimit rl;
  napi_value out;
  int64_t n = getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY ? (int64_t)rl.rlim_cur : 1048576;
  napi_create_int64(env, n, &out);
  return out;
}

NAPI_MODULE_INIT() {
  napi_property_descriptor fns[] = {
      {"alloc", NULL, alloc, NULL, NULL, NULL, napi_default, NULL},
      {"send", NULL, send_head_file, NULL, NULL, NULL, napi_default, NULL},
      {"live", NULL, live_count, NULL, NULL, NULL, napi_default, NULL},
      {"startSend", NULL, start_send, NULL, NULL, NULL, napi_default, NULL},
      {"abortSend", NULL, abort_send, NULL, NULL, NULL, napi_default, NULL},
      {"sent", NULL, job_sent, NULL, NULL, NULL, napi_default, NULL},
      {"descriptors", NULL, descriptors, NULL, NULL, NULL, napi_default, NULL},
  };
  napi_define_properties(env, exports, sizeof fns / sizeof fns[0], fns);
  return exports;
}
