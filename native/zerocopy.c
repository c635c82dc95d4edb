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
  napi_value f;
  napi_create_function(env, "alloc", NAPI_AUTO_LENGTH, alloc, NULL, &f);
  napi_set_named_property(env, exports, "alloc", f);
  napi_create_function(env, "send", NAPI_AUTO_LENGTH, send_head_file, NULL, &f);
  napi_set_named_property(env, exports, "send", f);
  napi_create_function(env, "live", NAPI_AUTO_LENGTH, live_count, NULL, &f);
  napi_set_named_property(env, exports, "live", f);
  napi_create_function(env, "descriptors", NAPI_AUTO_LENGTH, descriptors, NULL, &f);
  napi_set_named_property(env, exports, "descriptors", f);
  return exports;
}
