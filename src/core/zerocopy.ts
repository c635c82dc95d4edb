/**
 * Zero-copy sends of large hits (docs/decisions.md, "Zero-copy sends of large hits").
 *
 * A body of ZERO_COPY_MIN bytes or more that the memory tier keeps is held in a memfd-backed
 * shared mapping (native/zerocopy.c): a Buffer to JavaScript, a file to the kernel. A plain-HTTP
 * hit of such a body is then written with send(2) for its head and sendfile(2) for its body, so
 * the kernel takes the body's pages by reference instead of copying them into the socket's
 * buffer (what nginx's `sendfile on` saves). Whatever the socket cannot take at once goes through
 * the socket's stream as usual, so backpressure, errors and ordering stay node:net's.
 *
 * The native module is optional: `npm ci` builds it when a C compiler is there
 * (scripts/build-native.sh). Without it, or with `edge.zeroCopy: false`, bodies are plain Buffers
 * and written with one writev, as before.
 */
import { createRequire } from 'node:module';
import type net from 'node:net';
import { constants } from 'node:os';
import type { Readable } from 'node:stream';

/** Bodies smaller than this are copied: below it the second syscall costs more than the copy. */
export const ZERO_COPY_MIN = 32 * 1024;

/** A job of Native.startSend(): opaque to JavaScript. */
type SendJob = object;

interface Native {
  alloc(size: number): [number, Buffer] | undefined;
  send(socketFd: number, head: Buffer, fileFd: number, length: number): number;
  startSend(
    socketFd: number,
    fileFd: number,
    offset: number,
    length: number,
    done: (errno: number, sent: number) => void,
  ): SendJob | undefined;
  abortSend(job: SendJob): void;
  sent(job: SendJob): number;
  live(): number;
  descriptors(): number;
}

/** Why the native module is not in use, when it is not. */
let unavailable = '';

function load(): Native | undefined {
  if (process.platform !== 'linux') {
    unavailable = `sendfile from memory needs Linux (this is ${process.platform})`;
    return undefined;
  }
  try {
    const require = createRequire(import.meta.url);
    // dist/src/core/zerocopy.js -> native/build/Release (the checkout's root)
    return require('../../../native/build/Release/zerocopy.node') as Native;
  } catch (e) {
    unavailable = `the native module was not built (${(e as Error).message.split('\n')[0]}); run \`npm run build:native\`, which needs python3, make and a C compiler`;
    return undefined;
  }
}

const native = load();
/**
 * Each live mapping holds a descriptor: at most a quarter of the process's limit (and of the
 * kernel's default 65,530 mappings per process) go to bodies; past that, bodies are plain Buffers.
 */
const LIVE_MAX = native ? Math.min(16_384, Math.floor(native.descriptors() / 4)) : 0;
/** The descriptor of each shared body, by the Buffer the memory tier keeps. */
const fds = new WeakMap<Buffer, number>();
let enabled = true;
let sentBytes = 0;

/** edge.zeroCopy: applied at start and on every reload. */
export function useZeroCopy(on: boolean): void {
  enabled = on;
}

/** What /metrics and the start-up log say about zero-copy sends in this process. */
export function zeroCopyState(): { active: boolean; reason: string; bytes: number; bodies: number } {
  const active = native !== undefined && enabled;
  const reason = native === undefined ? unavailable : enabled ? '' : 'edge.zeroCopy is false';
  return { active, reason, bytes: sentBytes, bodies: native ? native.live() : 0 };
}

/**
 * A zero-filled buffer of `size` bytes for a body the memory tier is about to keep: shared (and
 * sendable without a copy) when zero-copy is on and the body is large enough, else undefined
 * (the caller allocates as usual).
 */
export function sharedBuffer(size: number): Buffer | undefined {
  if (native === undefined || !enabled || size < ZERO_COPY_MIN || native.live() >= LIVE_MAX) return undefined;
  const pair = native.alloc(size);
  if (pair === undefined) return undefined;
  fds.set(pair[1], pair[0]);
  return pair[1];
}

/** `body` as the memory tier should keep it: itself, or its copy in a shared buffer. */
export function keepable(body: Buffer): Buffer {
  if (body.length < ZERO_COPY_MIN || fds.has(body)) return body;
  const shared = sharedBuffer(body.length);
  if (shared === undefined) return body;
  body.copy(shared);
  return shared;
}

interface HandleFd {
  _handle?: { fd?: number } | null;
}

/**
 * The descriptor of a plain TCP socket, which node:net keeps on its handle (Unix only);
 * undefined for a TLS socket (it encrypts in user space: nothing to hand the kernel by reference)
 * and for a socket that has let its handle go.
 */
export function plainFd(socket: net.Socket): number | undefined {
  if ((socket as net.Socket & { encrypted?: boolean }).encrypted) return undefined;
  const fd = (socket as unknown as HandleFd)._handle?.fd;
  return fd === undefined || fd < 0 ? undefined : fd;
}

/**
 * Write `head` then `body` to a plain TCP socket with send(2) and sendfile(2) when `body` is
 * shared and nothing is queued or corked on the socket (the kernel's order is then the stream's);
 * the rest, if the socket's buffer filled, through the stream. False when it wrote nothing (the
 * caller writes both as usual).
 */
export function sendShared(socket: net.Socket, head: Buffer, body: Buffer): boolean {
  if (native === undefined || !enabled) return false;
  const file = fds.get(body);
  if (file === undefined || socket.writableLength !== 0 || socket.writableCorked !== 0) return false;
  const fd = plainFd(socket);
  if (fd === undefined) return false;
  const n = native.send(fd, head, file, body.length);
  const total = head.length + body.length;
  if (n > head.length) sentBytes += n - head.length;
  if (n === total) return true;
  // the socket's buffer is full (or it failed: the stream's write meets that error and reports
  // it as for any other write)
  if (n < head.length) {
    socket.cork();
    socket.write(n === 0 ? head : head.subarray(n));
    socket.write(body);
    socket.uncork();
  } else socket.write(body.subarray(n - head.length));
  return true;
}

/** Where a body's bytes are in an open file: a disk-tier entry checked whole before. */
export interface FileRange {
  fd: number;
  offset: number;
  length: number;
}

const fileBodies = new WeakMap<Readable, FileRange>();

/** Say that `body` (a stream of the disk tier) is `range` of an open file, sendable unread. */
export function markFileBody(body: Readable, range: FileRange): void {
  fileBodies.set(body, range);
}

/** The file range behind `body` when it may be sent with sendfile(2) now, else undefined. */
export function fileBodyOf(body: Readable): FileRange | undefined {
  return native !== undefined && enabled ? fileBodies.get(body) : undefined;
}

/** A transfer of sendFile(): how much went out so far, and a way to stop it. */
export interface FileSend {
  sent(): number;
  abort(): void;
}

/**
 * Send `range` to a plain TCP socket with sendfile(2), waiting for the socket to take more as it
 * drains (a slow visitor holds no buffer in this process). Nothing may be queued on the socket's
 * stream (the caller checks). `done(errno, sent)` runs once, later: errno 0 when every byte went
 * out, ECANCELED after abort(), another errno when the socket failed. Undefined when it could
 * not start (the caller streams the body instead).
 */
export function sendFile(
  socket: net.Socket,
  range: FileRange,
  done: (errno: number, sent: number) => void,
): FileSend | undefined {
  if (native === undefined || !enabled) return undefined;
  const fd = plainFd(socket);
  if (fd === undefined) return undefined;
  const n = native;
  const job = n.startSend(fd, range.fd, range.offset, range.length, (errno, sent) => {
    sentBytes += sent;
    done(errno, sent);
  });
  if (job === undefined) return undefined;
  return { sent: () => n.sent(job), abort: () => n.abortSend(job) };
}

/** What sendFile()'s callback reports after abort(). */
export const ECANCELED = constants.errno.ECANCELED;
