// HS256 access tokens as docs/signaling.md describes them ({room, sub, exp, canPublish}).

import { createHmac } from 'node:crypto';

const b64url = (x) => Buffer.from(typeof x === 'string' ? x : JSON.stringify(x)).toString('base64url');

export function mintToken(secret, { room, sub, ttl = 3600, ...rest }) {
  const header = b64url({ alg: 'HS256', typ: 'JWT' });
  const payload = b64url({ room, sub, exp: Math.floor(Date.now() / 1000) + ttl, ...rest });
  const sig = createHmac('sha256', secret).update(`${header}.${payload}`).digest('base64url');
  return `${header}.${payload}.${sig}`;
}
