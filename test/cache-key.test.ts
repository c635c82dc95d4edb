// Cache keys (src/cache/key.ts): scheme per origin protocol, site name, query rules, Vary.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  keyForUrl,
  negotiateEncoding,
  normaliseQuery,
  primaryKey,
  selectVariant,
  splitKey,
  storageKey,
  variantKey,
  varyFields,
} from '../src/cache/key.js';

const site = (protocol: 'http' | 'https' | 'follow') => ({ name: 'www.example.com', origin: { protocol } });

test('the scheme is part of the key only when the origin protocol is follow', () => {
  assert.equal(primaryKey(site('follow'), 'https', '/a'), 'https://www.example.com/a');
  assert.equal(primaryKey(site('follow'), 'http', '/a'), 'http://www.example.com/a');
  assert.equal(primaryKey(site('http'), 'https', '/a'), primaryKey(site('http'), 'http', '/a'));
  assert.equal(primaryKey(site('https'), 'http', '/a'), '//www.example.com/a');
});

test("the host is the site's primary name (aliases share entries); absolute-form targets use their path", () => {
  assert.equal(primaryKey(site('http'), 'http', 'http://alias.example.net/a?b=1'), '//www.example.com/a?b=1');
  assert.equal(primaryKey(site('http'), 'http', '/a#frag'), '//www.example.com/a');
  assert.equal(
    keyForUrl(site('follow'), 'https://www.example.com/x?b=2&a=1'),
    'https://www.example.com/x?a=1&b=2',
  );
});

test('percent-encoding is normalised (RFC 3986 section 6.2.2)', () => {
  assert.equal(primaryKey(site('http'), 'http', '/%7euser/a%2fb'), '//www.example.com/~user/a%2Fb');
  assert.equal(primaryKey(site('http'), 'http', '/a?q=%41%2c'), '//www.example.com/a?q=A%2C');
});

test('query: keep all (sorted by name, stable), ignore all, keep a list', () => {
  assert.equal(normaliseQuery('b=2&a=1&a=0&c', { mode: 'all' }), 'a=1&a=0&b=2&c');
  assert.equal(normaliseQuery('b=2&&a=1&', { mode: 'all' }), 'a=1&b=2');
  assert.equal(primaryKey(site('http'), 'http', '/p?utm=x&id=3', { mode: 'ignore' }), '//www.example.com/p');
  assert.equal(primaryKey(site('http'), 'http', '/p?', { mode: 'all' }), '//www.example.com/p');
  assert.equal(
    primaryKey(site('http'), 'http', '/p?utm=x&v=2&id=3&fbclid=y', { mode: 'list', keep: ['v', 'id'] }),
    '//www.example.com/p?id=3&v=2',
  );
  assert.equal(
    primaryKey(site('http'), 'http', '/p?utm=x', { mode: 'list', keep: ['v'] }),
    '//www.example.com/p',
  );
});

test('Accept-Encoding negotiates to br, gzip or identity', () => {
  assert.equal(negotiateEncoding('gzip, deflate, br'), 'br');
  assert.equal(negotiateEncoding('gzip, deflate'), 'gzip');
  assert.equal(negotiateEncoding('x-gzip'), 'gzip');
  assert.equal(negotiateEncoding('br;q=0.5, gzip;q=0.8'), 'gzip');
  assert.equal(negotiateEncoding('br;q=0, gzip'), 'gzip');
  assert.equal(negotiateEncoding('deflate'), 'identity');
  assert.equal(negotiateEncoding(undefined), 'identity');
  assert.equal(negotiateEncoding(''), 'identity');
  assert.equal(negotiateEncoding('*'), 'br');
  assert.equal(negotiateEncoding('*;q=0, gzip'), 'gzip');
  assert.equal(negotiateEncoding('identity;q=0, *;q=0'), 'identity');
  assert.equal(negotiateEncoding('GZIP;Q=1'), 'gzip');
});

test('Vary secondary key: normalised values, sorted fields; Vary: * never matches', () => {
  assert.equal(variantKey(undefined, {}), '');
  assert.equal(variantKey('*', {}), undefined);
  assert.equal(variantKey('Accept-Encoding, *', {}), undefined);
  assert.deepEqual(varyFields('Accept-Language, accept-encoding, ACCEPT-ENCODING'), [
    'accept-encoding',
    'accept-language',
  ]);
  const a = variantKey('Accept-Encoding', { 'accept-encoding': 'gzip, deflate, br, zstd' });
  const b = variantKey('accept-encoding', { 'accept-encoding': 'br' });
  assert.equal(a, b);
  assert.equal(a, 'accept-encoding=br');
  assert.equal(
    variantKey('accept-language, accept-encoding', {
      'accept-language': ' en-US ,  fr ',
      'accept-encoding': 'gzip',
    }),
    'accept-encoding=gzip\naccept-language=en-US,fr',
  );
  assert.notEqual(
    variantKey('x-flag', {}),
    variantKey('x-flag', { 'x-flag': '' }),
    'absent differs from empty',
  );
  assert.equal(variantKey('cookie', { cookie: ['a=1', 'b=2'] }), 'cookie=a=1,b=2');
});

test('selectVariant picks the matching and most recent variant', () => {
  const req = { 'accept-encoding': 'gzip' };
  const ae = { vary: 'Accept-Encoding' };
  const cands = [
    { key: 'k1', headers: ae, variant: 'accept-encoding=br', storedAt: 3 },
    { key: 'k2', headers: ae, variant: 'accept-encoding=gzip', storedAt: 1 },
    { key: 'k3', headers: ae, variant: 'accept-encoding=gzip', storedAt: 2 },
    { key: 'k4', headers: { vary: '*' }, variant: '', storedAt: 9 },
  ];
  assert.equal(selectVariant(cands, req)?.key, 'k3');
  assert.equal(selectVariant(cands, { 'accept-encoding': 'deflate' }), undefined);
  assert.equal(selectVariant([{ key: 'p', headers: {}, variant: '', storedAt: 1 }], req)?.key, 'p');
});

test('storage keys and splitting', () => {
  const k = storageKey('https://www.example.com/a?b=1', 'accept-encoding=br');
  assert.deepEqual(splitKey(k), {
    scheme: 'https',
    host: 'www.example.com',
    target: '/a?b=1',
    variant: 'accept-encoding=br',
  });
  assert.deepEqual(splitKey('//h.test/'), { scheme: undefined, host: 'h.test', target: '/', variant: '' });
  assert.equal(storageKey('//h/a', ''), '//h/a');
});
