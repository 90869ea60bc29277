// The browser tests' view into the watch page: `window.tsunagi`, read-only, built on
// watch.js's read-only `watching`. The page never loads this module; the tests inject it
// (tests/e2e/lib/testhook.mjs).

import { getLang } from '../i18n.js';
import { watching } from '../watch.js';

const hook = {
  get room() {
    return watching.room;
  },
  /** connecting | waiting | playing | failed | ended | unauthorized | forbidden */
  get status() {
    return watching.status;
  },
  get resource() {
    return watching.resource;
  },
  get attempts() {
    return watching.attempts;
  },
  get lang() {
    return getLang();
  },
  errors() {
    return watching.errors.map((e) => ({ ...e }));
  },
  /** The latest stats summary: {framesDecoded, frameWidth, frameHeight, fps, kbps, pair, connectionState}. */
  stats() {
    return watching.summary ? JSON.parse(JSON.stringify(watching.summary)) : null;
  },
  /** The raw getStats() report of the WHEP connection (the argument is ignored). */
  async rawStats() {
    if (!watching.pc) return null;
    const r = await watching.pc.getStats();
    return [...r.values()].map((s) => ({ ...s }));
  },
};

Object.defineProperty(window, 'tsunagi', { value: Object.freeze(hook), writable: false, configurable: false });
