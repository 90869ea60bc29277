// The remote peers of the call: their entries and tiles, their mesh connections, and
// which path (mesh or SFU) each tile shows.

import { $ } from './dom.js';
import { Peer } from './peer.js';
import { handMessage, onData } from './datachannel.js';
import { buildRemoteTile, layoutGrid, playVideo, showPath, updateTile } from './tiles.js';
import { closePanel, reopenPanel, togglePanel } from './tilepanel.js';
import { observeTile, scheduleView, unobserveTile } from './view.js';
import {
  call,
  addEntry,
  deleteEntry,
  localTracks,
  meshWanted,
  pickSource,
  rtcConfig,
  setPeerConnection,
  setPeerSource,
  setPeerStream,
  setPeerVideo,
} from './state.js';

/** @typedef {import('./state.js').PeerView} PeerView */
/** @typedef {import('./state.js').Path} Path */

/**
 * A tile for a remote participant (or a WHIP publisher: `external`), with a mesh
 * connection when the room is a mesh.
 * @param {{id: string, name?: string, media?: {audio?: boolean, video?: boolean, screen?: boolean}}} p
 * @param {{initiator: boolean, external?: boolean}} o
 */
export function addPeer(p, { initiator, external = false }) {
  const name = p.name || p.id;
  const source = call.mode;
  const media = p.media ? { audio: p.media.audio !== false, video: p.media.video !== false, screen: !!p.media.screen } : { audio: true, video: true, screen: false };
  const tile = buildRemoteTile({ id: p.id, name, external, source }, () => togglePanel(p.id));
  const entry = addEntry({ id: p.id, name, media, external, tile, source });
  $('#grid').append(tile.el);
  observeTile(entry);
  if (!external && meshWanted()) createMeshPeer(entry, initiator);
  applySource(entry);
  updateTile(entry);
  layoutGrid();
  return entry;
}

/**
 * The mesh RTCPeerConnection to one peer (see peer.js for who offers).
 * @param {PeerView} entry
 * @param {boolean} initiator
 */
export function createMeshPeer(entry, initiator) {
  const peer = new Peer({
    id: entry.id,
    selfId: /** @type {string} */ (call.id),
    initiator,
    config: rtcConfig(),
    send: (m) => !!call.sig && call.sig.send(m),
    localTracks,
  });
  setPeerConnection(entry, peer);
  peer.on('track', ({ stream }) => {
    if (entry.peer !== peer) return;
    setPeerStream(entry, 'mesh', stream);
    setVideoStream(entry, 'mesh', stream);
  });
  peer.on('state', () => {
    if (entry.peer === peer) updateTile(entry);
  });
  peer.on('data', onData);
  peer.on('data-open', () => {
    if (call.handUp && entry.peer === peer) peer.sendData(handMessage());
  });
  return peer;
}

/** Closes the mesh connection of one peer; its tile stays (it shows the SFU's video). */
export function closeMesh(/** @type {PeerView} */ e) {
  if (!e.peer) return;
  e.peer.close();
  setPeerConnection(e, null);
  setPeerStream(e, 'mesh', null);
  setPeerVideo(e, 'mesh', null);
  setVideoStream(e, 'mesh', null);
  applySource(e);
  if (call.openPanel === e.id) reopenPanel(e.id);
  updateTile(e);
}

/** A peer left (or we did): its connection closes, its tile goes. */
export function removePeer(/** @type {string} */ id) {
  const e = call.peers.get(id);
  if (!e) return;
  deleteEntry(id);
  if (call.openPanel === id) closePanel();
  if (e.peer) e.peer.close();
  unobserveTile(e);
  for (const v of Object.values(e.tile.videos)) v.srcObject = null;
  e.tile.el.remove();
  layoutGrid();
  scheduleView();
}

/**
 * Puts `stream` into the tile's video element of one path (mesh or sfu).
 * @param {PeerView} e
 * @param {Path} path
 * @param {MediaStream|null} stream
 */
export function setVideoStream(e, path, stream) {
  const v = e.tile.videos[path];
  if (v.srcObject !== stream) v.srcObject = stream;
  if (stream) playVideo(v);
  applySource(e);
}

/**
 * Shows in a peer's tile the path that carries its video (pickSource); when that
 * changes, an open panel follows the connection.
 */
export function applySource(/** @type {PeerView} */ e) {
  const src = pickSource(e);
  const changed = e.source !== src;
  setPeerSource(e, src);
  showPath(e, src);
  if (changed) {
    if (call.openPanel === e.id) reopenPanel(e.id);
    updateTile(e);
  }
}
