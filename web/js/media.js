// The local camera, microphone and screen: capture, mute, device switch, screen share.
// Outgoing tracks are swapped on the peer connections with replaceTrack by the caller,
// so none of this needs a renegotiation.

const PREF_KEY = { audio: 'tsunagi.mic', video: 'tsunagi.camera' };

// Modest capture: a mesh sends one encoding per remote peer from the same machine.
const VIDEO_CONSTRAINTS = { width: { ideal: 640 }, height: { ideal: 360 }, frameRate: { ideal: 24, max: 30 } };

/** @param {'audio'|'video'} kind */
function pref(kind) {
  try {
    return localStorage.getItem(PREF_KEY[kind]) || undefined;
  } catch {
    return undefined;
  }
}

/**
 * @param {'audio'|'video'} kind
 * @param {string} id
 */
function savePref(kind, id) {
  try {
    localStorage.setItem(PREF_KEY[kind], id);
  } catch {
    // Not persisted; the switch still applies now.
  }
}

export class LocalMedia {
  constructor() {
    /** @type {MediaStreamTrack|null} the microphone */
    this.audio = null;
    /** @type {MediaStreamTrack|null} the camera */
    this.camera = null;
    /** @type {MediaStreamTrack|null} the screen, while sharing */
    this.screen = null;
    this.stream = new MediaStream(); // what the peer connections associate tracks with
    this.audioEnabled = true;
    this.videoEnabled = true;
    /** @type {string|null} why capture failed (in part or whole) */
    this.error = null;
  }

  /** Captures microphone and camera; falls back to one of them, then to none. */
  async start() {
    const audioPref = pref('audio');
    const videoPref = pref('video');
    const audio = audioPref ? { deviceId: { ideal: audioPref } } : true;
    const video = videoPref ? { ...VIDEO_CONSTRAINTS, deviceId: { ideal: videoPref } } : VIDEO_CONSTRAINTS;
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      this.error = 'getUserMedia unavailable (the page needs https or localhost)';
      return;
    }
    const attempts = [{ audio, video }, { audio }, { video }];
    for (const c of attempts) {
      try {
        const s = await navigator.mediaDevices.getUserMedia(c);
        this.audio = s.getAudioTracks()[0] ?? null;
        this.camera = s.getVideoTracks()[0] ?? null;
        break;
      } catch (e) {
        this.error = (e instanceof Error && e.name) || String(e);
      }
    }
    if (this.audio || this.camera) {
      if (!(this.audio && this.camera)) {
        // Partial success: keep the reason for the notice, but we do have media.
      } else {
        this.error = null;
      }
    }
    this.rebuildStream();
  }

  rebuildStream() {
    for (const tr of this.stream.getTracks()) this.stream.removeTrack(tr);
    if (this.audio) this.stream.addTrack(this.audio);
    const v = this.outgoingVideo();
    if (v) this.stream.addTrack(v);
  }

  /** The video track that peers receive: the screen while sharing, else the camera. */
  outgoingVideo() {
    return this.screen || this.camera;
  }

  /** @param {boolean} on */
  setAudioEnabled(on) {
    this.audioEnabled = on;
    if (this.audio) this.audio.enabled = on;
  }

  /** @param {boolean} on */
  setVideoEnabled(on) {
    this.videoEnabled = on;
    if (this.camera) this.camera.enabled = on;
  }

  async devices() {
    if (!navigator.mediaDevices || !navigator.mediaDevices.enumerateDevices) return [];
    const list = await navigator.mediaDevices.enumerateDevices();
    return list.filter((d) => d.kind === 'audioinput' || d.kind === 'videoinput');
  }

  /** @param {'audio'|'video'} kind */
  currentDeviceId(kind) {
    const tr = kind === 'audio' ? this.audio : this.camera;
    return tr ? tr.getSettings().deviceId : undefined;
  }

  /**
   * Opens another device of `kind`; returns the new track.
   * @param {'audio'|'video'} kind
   * @param {string} deviceId
   */
  async switchDevice(kind, deviceId) {
    const constraints =
      kind === 'audio'
        ? { audio: { deviceId: { exact: deviceId } } }
        : { video: { ...VIDEO_CONSTRAINTS, deviceId: { exact: deviceId } } };
    const s = await navigator.mediaDevices.getUserMedia(constraints);
    const track = kind === 'audio' ? s.getAudioTracks()[0] : s.getVideoTracks()[0];
    const old = kind === 'audio' ? this.audio : this.camera;
    if (kind === 'audio') {
      this.audio = track;
      track.enabled = this.audioEnabled;
    } else {
      this.camera = track;
      track.enabled = this.videoEnabled;
    }
    if (old) old.stop();
    savePref(kind, deviceId);
    this.rebuildStream();
    return track;
  }

  /**
   * Starts a screen share; `onEnded` runs when the browser's own "stop" is used.
   * @param {() => void} onEnded
   */
  async startScreen(onEnded) {
    const s = await navigator.mediaDevices.getDisplayMedia({ video: { frameRate: { ideal: 15 } }, audio: false });
    const track = s.getVideoTracks()[0];
    track.onended = () => onEnded && onEnded();
    if ('contentHint' in track) track.contentHint = 'detail';
    this.screen = track;
    this.rebuildStream();
    return track;
  }

  stopScreen() {
    if (this.screen) {
      this.screen.onended = null;
      this.screen.stop();
    }
    this.screen = null;
    this.rebuildStream();
  }

  stop() {
    for (const tr of [this.audio, this.camera, this.screen]) if (tr) tr.stop();
    this.audio = this.camera = this.screen = null;
    this.rebuildStream();
  }
}
