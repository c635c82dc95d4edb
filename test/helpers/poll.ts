// Polling for a state that real processes reach in their own time (a node reporting, a change
// applied): `until` calls `f` every `everyMs` (200 ms) until it yields a value, and fails naming
// what it waited for and the last error when the bound passes. Generous bounds: the machine is
// shared.

/** The first value `f` yields (not undefined) within `timeoutMs`; a throw counts as "not yet". */
export async function until<T>(
  what: string,
  f: () => Promise<T | undefined>,
  timeoutMs = 30_000,
  everyMs = 200,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await f();
      if (v !== undefined) return v;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs} ms (${String(last ?? '')})`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}
