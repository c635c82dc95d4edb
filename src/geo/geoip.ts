/**
 * Country and continent of an IP address, from a database in MaxMind's format (GeoLite2 or
 * GeoIP2 Country/City, or any .mmdb whose records have `country.iso_code` / `continent.code`).
 *
 * Used by Verge's DNS to steer clients to edges of their region, and meant for the edge's
 * country allow/deny rules too: the file is read once (open() is the only I/O), after which
 * lookup() is synchronous, allocation-light and safe on a request's hot path. The reader is
 * mmdb-lib (MaxMind DB format 2.0, no dependencies, Node >= 10); each distinct data record is
 * decoded once and kept.
 */
import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { type CountryResponse, Reader } from 'mmdb-lib';

/** Where an address is, as far as the database knows. */
export interface GeoLocation {
  /** ISO 3166-1 alpha-2, upper case (the country, else the registered country) */
  country?: string;
  /** MaxMind continent code: AF, AN, AS, EU, NA, OC, SA */
  continent?: string;
  /**
   * The length of the database network that holds the address (for IPv4 addresses, counted in
   * IPv4 bits): every address sharing that prefix gets the same answer. EDNS Client Subnet
   * answers carry it as their scope (RFC 7871 section 7.2.1).
   */
  prefixLength: number;
}

/** A database that cannot be used: missing, unreadable, or not in MaxMind's format. */
export class GeoIpError extends Error {
  readonly path: string;
  constructor(path: string, message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = 'GeoIpError';
    this.path = path;
  }
}

interface RawRecord {
  country?: { iso_code?: unknown };
  registered_country?: { iso_code?: unknown };
  continent?: { code?: unknown };
}

/** Decoded records by data-section offset (mmdb-lib's cache hook): small, bounded. */
class BoundedCache {
  readonly #m = new Map<string | number, unknown>();
  get(k: string | number): unknown {
    return this.#m.get(k);
  }
  set(k: string | number, v: unknown): void {
    if (this.#m.size >= 50_000) this.#m.clear();
    this.#m.set(k, v);
  }
}

export class GeoIp {
  readonly #reader: Reader<CountryResponse>;
  /** decoded record -> its country/continent (records are shared by many networks) */
  readonly #places = new WeakMap<object, { country?: string; continent?: string }>();
  /** where the database came from, for messages */
  readonly source: string;
  /** the database's own description: type (e.g. GeoLite2-Country) and build time */
  readonly databaseType: string;
  readonly buildEpoch: Date;

  private constructor(reader: Reader<CountryResponse>, source: string) {
    this.#reader = reader;
    this.source = source;
    this.databaseType = reader.metadata.databaseType;
    this.buildEpoch = reader.metadata.buildEpoch;
  }

  /** Reads a .mmdb file. Throws GeoIpError naming the file and what is wrong with it. */
  static open(path: string): GeoIp {
    let buf: Buffer;
    try {
      buf = readFileSync(path);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      throw new GeoIpError(
        path,
        `cannot read the GeoIP database ${path} (${code ?? (e as Error).message}): check dns.geoip`,
        { cause: e },
      );
    }
    return GeoIp.fromBuffer(buf, path);
  }

  /** A database already in memory (tests; a database fetched by other means). */
  static fromBuffer(buf: Buffer, source = 'buffer'): GeoIp {
    let reader: Reader<CountryResponse>;
    try {
      reader = new Reader<CountryResponse>(buf, { cache: new BoundedCache() });
    } catch (e) {
      throw new GeoIpError(
        source,
        `${source} is not a MaxMind DB file (${(e as Error).message}): dns.geoip needs a .mmdb database such as GeoLite2-Country.mmdb`,
        { cause: e },
      );
    }
    return new GeoIp(reader, source);
  }

  /**
   * Where `ip` is ("192.0.2.1", "2001:db8::1", "::ffff:192.0.2.1"). An address the database does
   * not know, or text that is no address, gives no country and no continent.
   */
  lookup(ip: string): GeoLocation {
    let addr = ip;
    // a dual-stack socket reports IPv4 clients as IPv4-mapped IPv6 addresses
    if (addr.startsWith('::ffff:') && addr.includes('.')) addr = addr.slice(7);
    if (isIP(addr) === 0) return { prefixLength: 0 };
    let rec: RawRecord | null;
    let prefixLength: number;
    try {
      // the typed shape is what MaxMind's own databases hold; others may lack any field
      [rec, prefixLength] = this.#reader.getWithPrefixLength(addr) as [RawRecord | null, number];
    } catch {
      // an IPv6 address in an IPv4-only database, or a corrupt record: unknown
      return { prefixLength: 0 };
    }
    if (!rec || typeof rec !== 'object') return { prefixLength };
    let place = this.#places.get(rec);
    if (!place) {
      place = placeOf(rec);
      this.#places.set(rec, place);
    }
    return { ...place, prefixLength };
  }
}

function placeOf(rec: RawRecord): { country?: string; continent?: string } {
  const country = rec.country?.iso_code ?? rec.registered_country?.iso_code;
  const continent = rec.continent?.code;
  return {
    ...(typeof country === 'string' ? { country: country.toUpperCase() } : {}),
    ...(typeof continent === 'string' ? { continent: continent.toUpperCase() } : {}),
  };
}
