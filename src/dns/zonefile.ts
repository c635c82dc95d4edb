/**
 * The zone as a master file (RFC 1035 section 5): what `verge dns zone` prints, and what the
 * benchmark (bench/dns.sh) loads into NSD so both servers answer the same records. A master file
 * cannot steer, so each site's name lists every usable edge (live ones, or all when none is
 * live), as a plain authoritative server would serve it.
 */

import { addressText, type Record_, TYPE } from './wire.js';
import { type EdgeNode, selectEdges, type Zone } from './zone.js';

/** One record as text: "name ttl IN TYPE data" (names absolute, with the trailing dot). */
export function recordText(r: Record_): string {
  const d = r.data;
  const fq = (n: string) => `${n}.`;
  let type: string;
  let data: string;
  switch (d.type) {
    case TYPE.A:
    case TYPE.AAAA:
      type = d.type === TYPE.A ? 'A' : 'AAAA';
      data = addressText(d.address);
      break;
    case TYPE.NS:
    case TYPE.CNAME:
      type = d.type === TYPE.NS ? 'NS' : 'CNAME';
      data = fq(d.target);
      break;
    case TYPE.SOA:
      type = 'SOA';
      data = `${fq(d.mname)} ${fq(d.rname)} ${d.serial} ${d.refresh} ${d.retry} ${d.expire} ${d.minimum}`;
      break;
    case TYPE.TXT:
    case TYPE.HINFO:
      type = d.type === TYPE.TXT ? 'TXT' : 'HINFO';
      data = d.strings.map((s) => JSON.stringify(s.toString('latin1'))).join(' ');
      break;
  }
  return `${fq(r.name)} ${r.ttl} IN ${type} ${data}`;
}

/** Every record of the zone, static (SOA, NS, glue) first, then each name's in name order. */
export function zoneRecords(zone: Zone, nodes: readonly EdgeNode[]): Record_[] {
  const out: Record_[] = [...zone.staticRecords()];
  const seen = new Set(out.map((r) => `${r.name}|${r.data.type}`));
  const all = (_site: string | undefined, _rules: unknown, family: 4 | 6) =>
    selectEdges(
      nodes,
      undefined,
      undefined,
      () => undefined,
      family,
      1000,
      () => 0.5,
    );
  for (const { name, kind } of zone.names()) {
    if (kind === 'apex' || kind === 'ent') continue;
    for (const t of kind === 'alias' ? [TYPE.CNAME] : [TYPE.A, TYPE.AAAA, TYPE.TXT]) {
      const a = zone.answer(name, t, 1, { prefixLength: 0 }, all);
      for (const r of a.answer) {
        const k = `${r.name}|${r.data.type}`;
        if (r.name !== name || (seen.has(k) && kind === 'host')) continue;
        seen.add(k);
        out.push(r);
      }
    }
  }
  return out;
}

/** The master file text. */
export function zoneFile(zone: Zone, nodes: readonly EdgeNode[]): string {
  return `$ORIGIN ${zone.name}.\n${zoneRecords(zone, nodes).map(recordText).join('\n')}\n`;
}
