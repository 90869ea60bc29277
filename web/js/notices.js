// Notices (the toasts at the edge of the page) and the plain words for a server error.

import { t } from './i18n.js';
import { $, h, iconEl } from './dom.js';

/**
 * Shows a notice. kind: info | ok | warn | error. `code` goes to data-code for tests.
 * @param {string} text
 * @param {{kind?: 'info'|'ok'|'warn'|'error', code?: string, timeout?: number}} [opts]
 */
export function notify(text, { kind = 'info', code, timeout = 5000 } = {}) {
  const box = $('#toasts');
  const item = h(
    'div',
    { class: `toast toast-${kind}`, testid: 'toast', dataset: { code: code || '', kind }, role: kind === 'error' ? 'alert' : 'status' },
    h('span', { class: 'toast-text' }, text),
    h('button', { class: 'icon-btn toast-close', type: 'button', 'aria-label': t('notice.dismiss'), onclick: () => item.remove() }, iconEl('close')),
  );
  box.append(item);
  while (box.childElementCount > 5) box.firstElementChild?.remove();
  if (timeout) setTimeout(() => item.remove(), timeout);
}

/**
 * Plain words for a server `error` message (or a local {code, message}).
 * @param {{code: string, message?: string}} err
 */
export function errorText(err) {
  const key = `err.${err.code}`;
  const txt = t(key);
  return txt !== key ? txt : t('err.other', { message: err.message || err.code });
}
