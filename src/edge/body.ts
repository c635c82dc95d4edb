/**
 * Request bodies are received whole at the edge before the origin is asked, as nginx does with
 * proxy_request_buffering: a visitor who uploads slowly (on purpose or not) then holds an edge
 * buffer, never an origin connection, and the origin gets the body at once with a Content-Length.
 *
 * Up to edge.limits.bodyMemory (16 KiB, nginx's client_body_buffer_size) the body stays in
 * memory; past it, it goes to a temporary file in edge.limits.bodyTempDir, up to
 * edge.limits.maxBodySize. The file is created 0600 under a random name and unlinked at once:
 * only its descriptor refers to it, so it disappears when the exchange ends (or aborts), and even
 * when the process is killed nothing is left behind. Memory per upload is bounded by bodyMemory
 * plus one chunk: while a chunk is being written the request is paused (backpressure).
 *
 * A pause between two reads longer than edge.limits.bodyReadTimeout (nginx's client_body_timeout)
 * ends the upload with 408.
 */
import { randomBytes } from 'node:crypto';
import { accessSync, constants as fsConstants, statSync } from 'node:fs';
import { type FileHandle, open, unlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { Readable } from 'node:stream';
import type { ResolvedConfig } from '../config/load.js';
import type { ErrorCode } from '../core/errors.js';

/** What receiveBody() needs from edge.limits. */
export interface BodyLimits {
  /** bytes kept in memory before spilling to a file */
  memory: number;
  /** largest body accepted (413 past it) */
  max: number;
  /** longest pause between two reads, ms (408 past it); 0: none */
  readTimeout: number;
  /** directory for spilled bodies */
  dir: string;
}

const limitsOf = new WeakMap<ResolvedConfig, BodyLimits>();

/** The body limits of a config (bodyTempDir resolved against the config file's directory). */
export function bodyLimits(cfg: ResolvedConfig): BodyLimits {
  let out = limitsOf.get(cfg);
  if (!out) {
    const l = cfg.edge.limits;
    out = {
      memory: l.bodyMemory,
      max: l.maxBodySize,
      readTimeout: l.bodyReadTimeout,
      dir: l.bodyTempDir ? resolve(cfg.baseDir, l.bodyTempDir) : tmpdir(),
    };
    limitsOf.set(cfg, out);
  }
  return out;
}

/**
 * Check at start and on reload that bodies can spill where the config says: a directory the edge
 * can write to. Throws an error naming the setting, so a bad value never replaces a working one.
 */
export function checkBodyTempDir(cfg: ResolvedConfig): void {
  const dir = bodyLimits(cfg).dir;
  try {
    if (!statSync(dir).isDirectory()) throw Object.assign(new Error('not a directory'), { code: 'ENOTDIR' });
    accessSync(dir, fsConstants.W_OK | fsConstants.X_OK);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code ?? 'error';
    throw new Error(
      `edge.limits.bodyTempDir: ${dir} is not a writable directory (${code}); create it, make it writable for the user Verge runs as, or remove the setting to use the system's temporary directory`,
    );
  }
}

/** A body received whole. */
export interface ReceivedBody {
  /** its length in bytes (sent to the origin as Content-Length) */
  length: number;
  /** whether it went to a temporary file */
  spilled: boolean;
  /** the body, readable once */
  stream(): Readable;
  /** release it (close the file); safe to call more than once, also before or after stream() */
  dispose(): void;
}

/** Why a body could not be received. CLIENT_ABORTED: the visitor went away (nothing to answer). */
export interface BodyFailure {
  code: ErrorCode;
  reason: string;
  nodeCode?: string | undefined;
}

/** What a visitor request is for receiveBody(): a Readable with the request events. */
type BodySource = Readable & { complete?: boolean };

/**
 * Receive `req`'s whole body, then call `done` once: with the body, or with why not. Runs in the
 * origin phase of every request with a body that goes to the origin. Every listener it adds is
 * removed when it is done, and a file it opened is closed on every failure path.
 */
export function receiveBody(
  req: BodySource,
  limits: BodyLimits,
  done: (err: BodyFailure | undefined, body?: ReceivedBody) => void,
): void {
  const chunks: Buffer[] = [];
  let size = 0;
  let file: FileHandle | undefined;
  /** the file write in progress (the request is paused meanwhile) */
  let writing: Promise<void> | undefined;
  let ended = false;
  let settled = false;
  let timer: NodeJS.Timeout | undefined;

  const arm = () => {
    clearTimeout(timer);
    if (limits.readTimeout > 0)
      timer = setTimeout(
        () =>
          finish({
            code: 'CLIENT_TIMEOUT',
            reason: `no request body bytes for edge.limits.bodyReadTimeout (${limits.readTimeout} ms)`,
          }),
        limits.readTimeout,
      );
  };

  const cleanup = () => {
    clearTimeout(timer);
    req.removeListener('data', onData);
    req.removeListener('end', onEnd);
    req.removeListener('error', onAbort);
    req.removeListener('aborted', onAbort);
    req.removeListener('close', onClose);
  };

  const finish = (err: BodyFailure | undefined) => {
    if (settled) return;
    settled = true;
    cleanup();
    if (err) {
      // Keep reading and discarding what the visitor still sends (the edge answers with an
      // error); the handle is closed once no write uses it any more.
      req.resume();
      // close the file once the write chain is done (it may still be opening it)
      void (writing ?? Promise.resolve())
        .catch(() => undefined)
        .finally(() => file?.close().catch(() => undefined));
      done(err);
      return;
    }
    done(undefined, result());
  };

  const result = (): ReceivedBody => {
    const f = file;
    let stream: Readable | undefined;
    let disposed = false;
    return {
      length: size,
      spilled: f !== undefined,
      stream() {
        if (stream) return stream;
        if (f) {
          stream = f.createReadStream({ start: 0, autoClose: true });
          // an error reading the file reaches whoever consumes the stream; never the process
          stream.on('error', () => undefined);
        } else {
          const whole = chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, size);
          stream = Readable.from(size > 0 ? [whole] : [], { objectMode: false });
        }
        return stream;
      },
      dispose() {
        if (disposed) return;
        disposed = true;
        if (stream && !stream.destroyed) stream.destroy();
        // closing twice is harmless (FileHandle.close() returns the same promise)
        f?.close().catch(() => undefined);
      },
    };
  };

  /** Spill to a new temporary file: created 0600 under a random name, unlinked at once. */
  const openFile = async (): Promise<FileHandle> => {
    const path = join(limits.dir, `verge-body-${process.pid}-${randomBytes(8).toString('hex')}`);
    const h = await open(path, 'wx+', 0o600);
    await unlink(path).catch(() => undefined);
    return h;
  };

  const writeAll = async (h: FileHandle, bufs: Buffer[]): Promise<void> => {
    for (const b of bufs) {
      let off = 0;
      while (off < b.length) {
        const { bytesWritten } = await h.write(b, off, b.length - off);
        off += bytesWritten;
      }
    }
  };

  const onData = (chunk: Buffer) => {
    if (settled) return;
    size += chunk.length;
    if (size > limits.max) {
      finish({
        code: 'CLIENT_BODY_TOO_LARGE',
        reason: `request body exceeds edge.limits.maxBodySize (${limits.max} bytes)`,
      });
      return;
    }
    if (!file && !writing && size <= limits.memory) {
      chunks.push(chunk);
      arm();
      return;
    }
    // to the file: pause the visitor until this chunk is written (bounded memory); writes are
    // chained, so a chunk that still arrives while paused is written after the one before it
    req.pause();
    clearTimeout(timer);
    const pending = [...chunks.splice(0), chunk];
    const write = (writing ?? Promise.resolve()).then(async () => {
      if (settled) return; // failed meanwhile: nothing more to write
      file ??= await openFile();
      await writeAll(file, pending);
    });
    writing = write;
    write.then(
      () => {
        if (writing !== write) return; // a later chunk's write is still running
        writing = undefined;
        if (settled) return;
        if (ended) finish(undefined);
        else {
          arm();
          req.resume();
        }
      },
      (e: NodeJS.ErrnoException) => {
        if (writing === write) writing = undefined;
        finish({
          code: 'EDGE_REQUEST_BUFFER_FAILED',
          reason: `could not write the request body to ${limits.dir}: ${e.message}`,
          nodeCode: e.code,
        });
      },
    );
  };

  const onEnd = () => {
    ended = true;
    if (!writing) finish(undefined);
  };

  const onAbort = () => {
    finish({ code: 'CLIENT_ABORTED', reason: 'the visitor went away while sending the request body' });
  };

  const onClose = () => {
    if (!ended) onAbort();
  };

  req.on('data', onData);
  req.on('end', onEnd);
  req.on('error', onAbort);
  req.on('aborted', onAbort);
  req.on('close', onClose);
  arm();
}
