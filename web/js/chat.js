// The chat beside the call: the list of messages, the form that sends one, opening and
// closing the panel, and the count of unread messages.

import { t, formatTime } from './i18n.js';
import { $, h } from './dom.js';
import { updateControls } from './controls.js';
import { call, addChatMessage, setChatOpen as storeChatOpen, setUnread } from './state.js';

/** @typedef {import('./state.js').ChatMessage} ChatMessage */

/** Shows a chat message (ours or another's) and keeps it in the call's chat log. */
export function addChat(/** @type {ChatMessage} */ m) {
  addChatMessage(m);
  const list = $('#chat-list');
  $('#chat-empty').hidden = true;
  const item = h(
    'li',
    { class: `chat-msg${m.self ? ' self' : ''}`, testid: 'chat-message', dataset: { from: m.from || '' } },
    h('div', { class: 'chat-meta' }, h('span', { class: 'chat-name' }, m.self ? t('tile.you', { name: m.name }) : m.name), h('time', { datetime: new Date(m.ts).toISOString() }, formatTime(m.ts))),
    h('div', { class: 'chat-text' }, m.text),
  );
  list.append(item);
  list.scrollTop = list.scrollHeight;
  if (!call.chatOpen && !m.self) {
    setUnread(call.unread + 1);
    const b = $('#chat-unread');
    b.hidden = false;
    b.textContent = String(call.unread);
    b.setAttribute('aria-label', t('chat.unread', { n: call.unread }));
  }
}

/** Sends the text of the chat form. */
export function onChatSubmit(/** @type {Event} */ ev) {
  ev.preventDefault();
  const input = /** @type {HTMLInputElement} */ ($('#chat-input'));
  const text = input.value.trim();
  if (!text || !call.sig) return;
  call.sig.send({ type: 'chat', text: text.slice(0, 2000) });
  addChat({ from: /** @type {string} */ (call.id), name: /** @type {string} */ (call.name), text, ts: Date.now(), self: true });
  input.value = '';
}

/** Opens or closes the chat panel; opening it marks everything read. */
export function setChatOpen(/** @type {boolean} */ open) {
  storeChatOpen(open);
  $('#chat').hidden = !open;
  document.body.classList.toggle('chat-open', open);
  if (open) {
    setUnread(0);
    $('#chat-unread').hidden = true;
  }
  updateControls();
}

/** Empties the chat list (we left the call). */
export function clearChatList() {
  $('#chat-list').replaceChildren();
  $('#chat-empty').hidden = false;
}

/** Our own messages say "you" in the current language. */
export function translateOwnNames() {
  for (const li of document.querySelectorAll('#chat-list .chat-msg.self .chat-name')) {
    li.textContent = t('tile.you', { name: call.name });
  }
}
