// A small element builder, the page's element lookup, and the icon set (inline SVG, so
// nothing is fetched).

import { t } from './i18n.js';

/**
 * The element of the page that `sel` names: one the page always has (index.html).
 * @param {string} sel
 */
export function $(sel) {
  return /** @type {HTMLElement} */ (document.querySelector(sel));
}

/**
 * h('button', {class: 'x', testid: 'y', i18n: 'key', onclick}, ...children)
 * - `testid` becomes data-testid;
 * - `i18n` (with optional `i18nVars`) fills the text and keeps it translated on a
 *   language switch; `i18nAttr` ("aria-label:key;title:key") does the same for attributes;
 * - `on*` functions become listeners; `dataset` is copied; `html` sets trusted markup
 *   (only used for our own icons).
 * @template {keyof HTMLElementTagNameMap} K
 * @param {K} tag
 * @param {Record<string, any>|null} [attrs]
 * @param {...(Node|string|number|null|undefined|false|(Node|string|number|null|undefined|false)[])} children
 * @returns {HTMLElementTagNameMap[K]}
 */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  if (attrs) {
    for (const [k, v] of Object.entries(attrs)) {
      if (v === undefined || v === null || v === false) continue;
      if (k === 'class') el.className = v;
      else if (k === 'testid') el.dataset.testid = v;
      else if (k === 'dataset') Object.assign(el.dataset, v);
      else if (k === 'i18n') el.dataset.i18n = v;
      else if (k === 'i18nAttr') el.dataset.i18nAttr = v;
      else if (k === 'i18nVars') el.dataset.i18nVars = JSON.stringify(v);
      else if (k === 'html') el.innerHTML = v;
      else if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
      else if (v === true) el.setAttribute(k, '');
      else el.setAttribute(k, String(v));
    }
    const vars = attrs.i18nVars;
    if (attrs.i18n) el.textContent = t(attrs.i18n, vars);
    if (attrs.i18nAttr) {
      for (const pair of attrs.i18nAttr.split(';')) {
        const [a, key] = pair.split(':');
        el.setAttribute(a.trim(), t(key.trim(), vars));
      }
    }
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

const svg = (/** @type {string} */ body, extra = '') =>
  `<svg viewBox="0 0 24 24" width="20" height="20" aria-hidden="true" focusable="false" fill="none" stroke="currentColor" stroke-width="2" stroke-linecap="round" stroke-linejoin="round" ${extra}>${body}</svg>`;

export const icons = {
  mic: svg('<rect x="9" y="3" width="6" height="11" rx="3"/><path d="M5 11a7 7 0 0 0 14 0M12 18v3"/>'),
  micOff: svg('<path d="M9 9v2a3 3 0 0 0 5.1 2.1M15 10V6a3 3 0 0 0-5.7-1.3"/><path d="M5 11a7 7 0 0 0 11.5 5.4M19 11a7 7 0 0 1-.5 2.5M12 18v3M3 3l18 18"/>'),
  cam: svg('<rect x="3" y="6" width="13" height="12" rx="2"/><path d="M16 10.5 21 7v10l-5-3.5"/>'),
  camOff: svg('<path d="M10.7 6H14a2 2 0 0 1 2 2v3.3l5-3.3v10M16 16v0a2 2 0 0 1-2 2H5a2 2 0 0 1-2-2V8a2 2 0 0 1 2-2M3 3l18 18"/>'),
  screen: svg('<rect x="3" y="4" width="18" height="12" rx="2"/><path d="M8 20h8M12 16v4M9 10l3-3 3 3M12 7v6"/>'),
  devices: svg('<circle cx="12" cy="12" r="3"/><path d="M19.4 15a1.7 1.7 0 0 0 .3 1.8l.1.1a2 2 0 1 1-2.8 2.8l-.1-.1a1.7 1.7 0 0 0-1.8-.3 1.7 1.7 0 0 0-1 1.5V21a2 2 0 1 1-4 0v-.1a1.7 1.7 0 0 0-1.1-1.5 1.7 1.7 0 0 0-1.8.3l-.1.1a2 2 0 1 1-2.8-2.8l.1-.1a1.7 1.7 0 0 0 .3-1.8 1.7 1.7 0 0 0-1.5-1H3a2 2 0 1 1 0-4h.1a1.7 1.7 0 0 0 1.5-1.1 1.7 1.7 0 0 0-.3-1.8l-.1-.1a2 2 0 1 1 2.8-2.8l.1.1a1.7 1.7 0 0 0 1.8.3H9a1.7 1.7 0 0 0 1-1.5V3a2 2 0 1 1 4 0v.1a1.7 1.7 0 0 0 1 1.5 1.7 1.7 0 0 0 1.8-.3l.1-.1a2 2 0 1 1 2.8 2.8l-.1.1a1.7 1.7 0 0 0-.3 1.8V9a1.7 1.7 0 0 0 1.5 1H21a2 2 0 1 1 0 4h-.1a1.7 1.7 0 0 0-1.5 1z"/>'),
  relay: svg('<circle cx="5" cy="12" r="2"/><circle cx="19" cy="12" r="2"/><rect x="9.5" y="8.5" width="5" height="7" rx="1"/><path d="M7 12h2.5M14.5 12H17"/>'),
  chat: svg('<path d="M21 12a8 8 0 0 1-11.8 7L4 20l1.2-4.4A8 8 0 1 1 21 12z"/>'),
  leave: svg('<path d="M3.7 14.3a12 12 0 0 1 16.6 0l-1.8 2.4-3.3-1.5v-2.4a9 9 0 0 0-6.4 0v2.4l-3.3 1.5z" fill="currentColor" stroke="none"/>'),
  info: svg('<circle cx="12" cy="12" r="9"/><path d="M12 11v5M12 8h.01"/>'),
  close: svg('<path d="M6 6l12 12M18 6 6 18"/>'),
  copy: svg('<rect x="9" y="9" width="11" height="11" rx="2"/><path d="M5 15V5a2 2 0 0 1 2-2h8"/>'),
  dice: svg('<rect x="4" y="4" width="16" height="16" rx="3"/><circle cx="9" cy="9" r="1" fill="currentColor"/><circle cx="15" cy="15" r="1" fill="currentColor"/><circle cx="15" cy="9" r="1" fill="currentColor"/><circle cx="9" cy="15" r="1" fill="currentColor"/>'),
  send: svg('<path d="M4 12 20 4l-6 16-2.5-6.5z"/>'),
  globe: svg('<circle cx="12" cy="12" r="9"/><path d="M3 12h18M12 3a14 14 0 0 1 0 18M12 3a14 14 0 0 0 0 18"/>'),
  hand: svg('<path d="M8 13V5.5a1.5 1.5 0 0 1 3 0V12M11 11V4a1.5 1.5 0 0 1 3 0v7M14 11V5.5a1.5 1.5 0 0 1 3 0V14a7 7 0 0 1-7 7h-.5a6 6 0 0 1-4.8-2.4L3 15.5a1.5 1.5 0 0 1 2.4-1.8L8 16"/>'),
  logo: svg('<circle cx="8.5" cy="12" r="5.5"/><circle cx="15.5" cy="12" r="5.5"/>', 'class="logo-mark"'),
};

/**
 * @param {keyof typeof icons} name
 * @param {string} [cls]
 */
export function iconEl(name, cls = 'icon') {
  return h('span', { class: cls, html: icons[name] });
}
