/**
 * Traffic charts over the statistics API (docs/stats.md): GET /api/v1/sites/:name/stats and
 * GET /api/v1/stats with ?from&to&step. A Verge without statistics answers 404: the panel says so
 * instead of drawing empty axes. Every chart has its numbers in a table under it (keyboard and
 * screen-reader users read the table; the chart is a picture of it).
 */
import { useEffect, useRef, useState } from 'preact/hooks';
import uPlot from 'uplot';
import { type ApiError, api } from './api';
import { asApiError, fmtBytes, fmtPct } from './ui';

export interface StatsPoint {
  t: string;
  requests: number;
  status: Record<string, number>;
  cache: Record<string, number>;
  bytes: number;
  hitRatio: number | null;
  errors: Record<string, number>;
  originErrors: number;
  origin: { count: number; p50: number | null; p95: number | null; p99: number | null };
}
export interface StatsResult {
  from: string;
  to: string;
  step: '1m' | '1h';
  series: StatsPoint[];
  totals: Omit<StatsPoint, 't'> & { byteHitRatio?: number | null };
  now?: {
    requestsPerSecond: number;
    bitsPerSecond: number;
    hitRatio: number | null;
    errors: Record<string, number>;
  };
}

const SPANS = { '1h': 3_600_000, '24h': 86_400_000, '7d': 7 * 86_400_000, '30d': 30 * 86_400_000 } as const;
type Span = keyof typeof SPANS;
const SPAN_LABEL: Record<Span, string> = {
  '1h': '1 hour',
  '24h': '24 hours',
  '7d': '7 days',
  '30d': '30 days',
};

/**
 * `path`: the stats route; `top`: a site's top-list route (GET /api/v1/sites/:name/top), shown under
 * the charts for the same range.
 */
export function StatsPanel(props: { path: string; top?: string; span?: Span; compact?: boolean }) {
  const [span, setSpan] = useState<Span>(props.span ?? '1h');
  const [state, setState] = useState<{ data?: StatsResult; error?: ApiError; missing?: boolean }>({});
  // one range for the charts and the top lists (both read the same instant)
  const [range, setRange] = useState<{ from: number; to: number }>();
  useEffect(() => {
    let live = true;
    const to = Date.now();
    const from = to - SPANS[span];
    setRange({ from, to });
    const step = span === '1h' ? '1m' : '1h';
    api<StatsResult>('GET', `${props.path}?from=${from}&to=${to}&step=${step}`).then(
      (r) => live && setState({ data: r.body }),
      (e: unknown) => {
        if (!live) return;
        const err = asApiError(e);
        // no statistics on this Verge: no such route (an older version) or a control process
        // that keeps none (404 for the route itself, not for a site)
        if (err.status === 404 && /^no API route|keeps no statistics/.test(err.message))
          setState({ missing: true });
        else setState({ error: err });
      },
    );
    return () => {
      live = false;
    };
  }, [props.path, span]);

  const d = state.data;
  return (
    <div class="stats">
      <fieldset class="segmented">
        <legend>Time range</legend>
        {(Object.keys(SPANS) as Span[]).map((s) => (
          <label key={s}>
            <input
              type="radio"
              name={`span-${props.path}`}
              value={s}
              checked={span === s}
              onChange={() => setSpan(s)}
            />
            {SPAN_LABEL[s]}
          </label>
        ))}
      </fieldset>
      {state.missing && (
        <p class="empty" data-testid="stats-empty">
          No traffic statistics on this Verge yet: this version keeps none (the statistics API answered 404).
          Requests still show under the site's recent requests.
        </p>
      )}
      {state.error && <p class="error">{state.error.message}</p>}
      {!d && !state.missing && !state.error && <p role="status">Loading traffic…</p>}
      {d && (
        <>
          <dl class="totals">
            <div>
              <dt>Requests</dt>
              <dd data-testid="stats-requests">{d.totals.requests}</dd>
            </div>
            <div>
              <dt>Bandwidth</dt>
              <dd>{fmtBytes(d.totals.bytes)}</dd>
            </div>
            <div>
              <dt>Hit ratio</dt>
              <dd>{fmtPct(d.totals.hitRatio)}</dd>
            </div>
            <div>
              <dt>Origin errors</dt>
              <dd>{d.totals.originErrors}</dd>
            </div>
            {d.now && (
              <div>
                <dt>Now</dt>
                <dd>
                  {d.now.requestsPerSecond.toFixed(1)} req/s, {fmtBytes(d.now.bitsPerSecond / 8)}/s
                </dd>
              </div>
            )}
          </dl>
          {d.totals.requests === 0 ? (
            <p class="empty">No requests in this range.</p>
          ) : (
            <Charts d={d} compact={props.compact ?? false} />
          )}
          {props.top && range && d.totals.requests > 0 && <TopLists path={props.top} {...range} />}
        </>
      )}
    </div>
  );
}

interface TopResult {
  kind: 'urls' | 'referrers';
  approximate: boolean;
  items: Array<{ key: string; count: number }>;
}

const TOP_LIMIT = 10;

/**
 * Top URLs and top referrers of a site (a Space-Saving sketch on each edge, docs/stats.md): hour
 * granularity, counts approximate. Each list reads the same range as the charts.
 */
function TopLists(props: { path: string; from: number; to: number }) {
  return (
    <div class="top-lists">
      <TopList path={props.path} kind="urls" title="Top URLs" from={props.from} to={props.to} />
      <TopList path={props.path} kind="referrers" title="Top referrers" from={props.from} to={props.to} />
      <p class="hint">
        Counted per hour on each edge in a bounded list (the most frequent {TOP_LIMIT} shown): counts are
        approximate, never lower than the truth.
      </p>
    </div>
  );
}

function TopList(props: {
  path: string;
  kind: 'urls' | 'referrers';
  title: string;
  from: number;
  to: number;
}) {
  const [state, setState] = useState<{ data?: TopResult; error?: ApiError }>({});
  useEffect(() => {
    let live = true;
    api<TopResult>(
      'GET',
      `${props.path}?kind=${props.kind}&from=${props.from}&to=${props.to}&limit=${TOP_LIMIT}`,
    ).then(
      (r) => live && setState({ data: r.body }),
      (e: unknown) => live && setState({ error: asApiError(e) }),
    );
    return () => {
      live = false;
    };
  }, [props.path, props.kind, props.from, props.to]);
  const id = `top-${props.kind}`;
  return (
    <section aria-labelledby={id} data-testid={id}>
      <h3 id={id}>{props.title}</h3>
      {state.error && <p class="error">{state.error.message}</p>}
      {!state.data && !state.error && <p class="loading">Loading {props.title.toLowerCase()}…</p>}
      {state.data &&
        (state.data.items.length === 0 ? (
          <p class="empty">{props.kind === 'urls' ? 'No URLs' : 'No referrers'} in this range.</p>
        ) : (
          <div class="table-wrap">
            <table>
              <thead>
                <tr>
                  <th scope="col">{props.kind === 'urls' ? 'URL' : 'Referrer'}</th>
                  <th scope="col">Requests</th>
                </tr>
              </thead>
              <tbody>
                {state.data.items.map((x) => (
                  <tr key={x.key}>
                    <th scope="row" class="key">
                      <code>{x.key}</code>
                    </th>
                    <td>{x.count}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
        ))}
    </section>
  );
}

function Charts({ d, compact }: { d: StatsResult; compact: boolean }) {
  const t = d.series.map((p) => Date.parse(p.t) / 1000);
  const classes = Object.keys(d.totals.status).filter((k) => (d.totals.status[k] ?? 0) > 0);
  const errors = Object.entries(d.totals.errors).sort((a, b) => b[1] - a[1]);
  return (
    <div class="charts">
      <Chart
        title="Requests by status class"
        t={t}
        series={classes.map((c) => ({ label: c, values: d.series.map((p) => p.status[c] ?? 0) }))}
      />
      {!compact && (
        <>
          <Chart
            title="Bandwidth (bytes)"
            t={t}
            series={[{ label: 'bytes', values: d.series.map((p) => p.bytes) }]}
          />
          <Chart
            title="Hit ratio (%)"
            t={t}
            series={[
              {
                label: 'hit ratio',
                values: d.series.map((p) =>
                  p.hitRatio === null ? null : Math.round(p.hitRatio * 1000) / 10,
                ),
              },
            ]}
          />
          <Chart
            title="Origin response time (ms)"
            t={t}
            series={(['p50', 'p95', 'p99'] as const).map((q) => ({
              label: q,
              values: d.series.map((p) => p.origin[q]),
            }))}
          />
        </>
      )}
      <h3>Errors by code</h3>
      {errors.length === 0 ? (
        <p class="ok">No errors in this range.</p>
      ) : (
        <table>
          <thead>
            <tr>
              <th scope="col">Code</th>
              <th scope="col">Requests</th>
            </tr>
          </thead>
          <tbody>
            {errors.map(([code, n]) => (
              <tr key={code}>
                <th scope="row">
                  <code>{code}</code>
                </th>
                <td>{n}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </div>
  );
}

const COLORS = ['#1f6feb', '#2da44e', '#bf8700', '#cf222e', '#8250df', '#57606a'];

function Chart(props: {
  title: string;
  t: number[];
  series: Array<{ label: string; values: (number | null)[] }>;
}) {
  const box = useRef<HTMLDivElement>(null);
  useEffect(() => {
    const el = box.current;
    if (!el) return;
    const width = () => Math.max(260, el.clientWidth);
    const plot = new uPlot(
      {
        width: width(),
        height: 180,
        series: [
          {},
          ...props.series.map((s, i) => ({ label: s.label, stroke: COLORS[i % COLORS.length]!, width: 2 })),
        ],
        axes: [{}, { size: 60 }],
        legend: { live: false },
      },
      [props.t, ...props.series.map((s) => s.values)] as uPlot.AlignedData,
      el,
    );
    const ro = new ResizeObserver(() => plot.setSize({ width: width(), height: 180 }));
    ro.observe(el);
    return () => {
      ro.disconnect();
      plot.destroy();
    };
  }, [props.t, props.series]);
  const total = (values: (number | null)[]) => values.reduce<number>((a, v) => a + (v ?? 0), 0);
  return (
    <figure class="chart">
      <figcaption>{props.title}</figcaption>
      <div ref={box} aria-hidden="true" />
      <details>
        <summary>The numbers of “{props.title}”</summary>
        <table>
          <thead>
            <tr>
              <th scope="col">Time</th>
              {props.series.map((s) => (
                <th scope="col" key={s.label}>
                  {s.label}
                </th>
              ))}
            </tr>
          </thead>
          <tbody>
            {props.t.map((ts, i) => (
              <tr key={ts}>
                <th scope="row">{new Date(ts * 1000).toLocaleString()}</th>
                {props.series.map((s) => (
                  <td key={s.label}>{s.values[i] ?? '–'}</td>
                ))}
              </tr>
            ))}
            {props.title.startsWith('Requests') && (
              <tr>
                <th scope="row">Total</th>
                {props.series.map((s) => (
                  <td key={s.label}>{total(s.values)}</td>
                ))}
              </tr>
            )}
          </tbody>
        </table>
      </details>
    </figure>
  );
}
