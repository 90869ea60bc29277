// Every string the UI shows lives here, in English and Japanese.
//
// Markup uses data-i18n="key" (text content) and data-i18n-attr="attr:key;attr2:key2"
// (attributes such as aria-label or placeholder); code calls t(key, vars). The language
// follows navigator.language until the user picks one in the header, which is then kept
// in localStorage.

const STORAGE_KEY = 'tsunagi.lang';

export const LANGUAGES = [
  { code: 'en', label: 'English' },
  { code: 'ja', label: '日本語' },
];

const en = {
  'app.tagline': 'Video calls you can look inside',
  'landing.title': 'Start or join a call',
  'landing.joinTitle': 'Join room “{room}”',
  'landing.name': 'Your name',
  'landing.namePlaceholder': 'e.g. Alice',
  'landing.room': 'Room',
  'landing.roomHint': 'Letters, digits, - and _ (up to 64). Everyone who opens the same room is in the same call.',
  'landing.suggest': 'Suggest another room name',
  'landing.advanced': 'Advanced',
  'landing.token': 'Access token (only if the server asks for one)',
  'landing.relayOnly': 'Start in relay-only mode (all media through TURN)',
  'landing.join': 'Join',
  'landing.joining': 'Joining…',
  'landing.explainTitle': 'What you will see',
  'landing.explain1': 'Each participant opens one WebRTC connection to every other participant (a mesh). The server only passes messages between you; your video goes straight between the browsers when it can.',
  'landing.explain2': 'Open the connection panel on a video tile (the ⓘ button) to watch the offer, the answer and the ICE candidates being exchanged, and which network path was chosen.',
  'landing.explain3': 'Switch on “Relay only” to send your media through the TURN server instead, and compare.',
  'landing.nameRequired': 'Please enter your name.',
  'landing.roomInvalid': 'Room names use 1–64 letters, digits, - or _.',

  'header.language': 'Language',
  'header.room': 'Room',
  'header.copyLink': 'Copy room link',
  'header.linkCopied': 'Room link copied to the clipboard',
  'header.signaling': 'Signaling server',
  'sig.idle': 'Not connected',
  'sig.connecting': 'Connecting…',
  'sig.open': 'Connected',
  'sig.reconnecting': 'Reconnecting…',
  'sig.closed': 'Disconnected',
  'sig.rtt': '{ms} ms',

  'ctl.toolbar': 'Call controls',
  'ctl.mic': 'Mic',
  'ctl.mute': 'Mute microphone',
  'ctl.unmute': 'Unmute microphone',
  'ctl.cam': 'Camera',
  'ctl.camOff': 'Turn camera off',
  'ctl.camOn': 'Turn camera on',
  'ctl.screen': 'Screen',
  'ctl.share': 'Share your screen',
  'ctl.stopShare': 'Stop sharing your screen',
  'ctl.devices': 'Devices',
  'ctl.devicesLong': 'Choose camera and microphone',
  'ctl.relayOnly': 'Relay only',
  'ctl.relayOnlyLong': 'Relay only: send all media through the TURN server',
  'ctl.chat': 'Chat',
  'ctl.chatLong': 'Show or hide the chat',
  'ctl.leave': 'Leave',
  'ctl.leaveLong': 'Leave the call',

  'dev.title': 'Camera and microphone',
  'dev.camera': 'Camera',
  'dev.mic': 'Microphone',
  'dev.none': 'No device found',
  'dev.unnamed': '{kind} {n}',
  'dev.close': 'Close',
  'dev.hint': 'Switching a device replaces the track on every connection (replaceTrack): no renegotiation is needed.',

  'tile.you': '{name} (you)',
  'tile.micOff': 'Microphone off',
  'tile.camOff': 'Camera off',
  'tile.screen': 'Sharing screen',
  'tile.showPanel': 'Show connection details for {name}',
  'tile.hidePanel': 'Hide connection details for {name}',
  'tile.connecting': 'Connecting…',
  'tile.videoOf': 'Video of {name}',

  'path.direct': 'P2P direct',
  'path.nat': 'P2P via NAT ({type})',
  'path.relay': 'Relayed through TURN ({proto})',
  'path.none': 'Not connected yet',
  'path.explain.direct': 'Media goes straight between the two browsers, using addresses of the devices themselves (host candidates).',
  'path.explain.nat': 'Media goes straight between the two browsers, through an address mapping of a NAT that STUN discovered.',
  'path.explain.relay': 'Media goes through the TURN server, which forwards every packet. This works through any NAT or firewall, at the cost of an extra hop.',
  'path.explain.none': 'The browsers are still exchanging candidates and testing pairs of addresses.',
  'path.why.direct': 'Why: the two devices reach each other at their own addresses (same network, or no NAT between them).',
  'path.why.nat': "Why: both sides' public addresses (learned from STUN or from the peer's checks) answered the connectivity checks within {s} s, so the NATs let the direct packets through.",
  'path.why.relay': 'Why: no direct pair of addresses answered within {s} s (typical with a symmetric NAT on one side and a symmetric or port-restricted NAT on the other), so ICE used the TURN relay.',
  'path.why.relayNoTime': 'Why: no direct pair of addresses answered the connectivity checks, so ICE used the TURN relay.',
  'path.why.relayOnly': 'Why: “Relay only” is on, so ICE used only addresses on the TURN server.',

  'panel.title': 'Connection with {name}',
  'panel.close': 'Close connection details',
  'panel.you': 'You',
  'panel.role': 'Negotiation role',
  'panel.polite': 'polite (on an offer collision it rolls back its own offer)',
  'panel.impolite': 'impolite (on an offer collision it ignores the incoming offer)',
  'panel.pair': 'Selected candidate pair',
  'panel.pairState': 'state {state}',
  'panel.nominated': 'nominated',
  'panel.rtt': 'Round trip',
  'panel.sendRate': 'Sending',
  'panel.recvRate': 'Receiving',
  'panel.loss': 'Packet loss (in)',
  'panel.audioCodec': 'Audio codec',
  'panel.videoCodec': 'Video codec',
  'panel.framesDecoded': 'Frames decoded',
  'panel.resolution': 'Resolution',
  'panel.states': 'States',
  'panel.ice': 'ICE',
  'panel.connection': 'Connection',
  'panel.signaling': 'Signaling',
  'panel.gathering': 'Gathering',
  'panel.localCandidates': 'Your candidates',
  'panel.remoteCandidates': 'Their candidates',
  'panel.noCandidates': 'none yet',
  'panel.selected': 'selected',
  'panel.timeline': 'Timeline',
  'panel.timelineHint': 'Messages exchanged with this peer through the signaling server, and state changes of the connection.',
  'panel.stats': 'Live statistics (getStats, every second)',
  'panel.candidates': 'ICE candidates',
  'panel.legend': 'host: an address of the device · srflx: the address a NAT shows outside, learned from STUN · prflx: learned from an incoming check · relay: an address on the TURN server',

  'tl.sent': 'sent',
  'tl.received': 'received',
  'tl.offer': 'offer',
  'tl.answer': 'answer',
  'tl.candidate': 'candidate',
  'tl.endOfCandidates': 'end of candidates',
  'tl.signalingState': 'signaling state',
  'tl.iceGatheringState': 'ICE gathering',
  'tl.iceConnectionState': 'ICE connection',
  'tl.connectionState': 'connection',
  'tl.selected': 'path chosen',
  'tl.ignoredOffer': 'offer collision: ignored the incoming offer (impolite side)',
  'tl.rollback': 'offer collision: rolled back our own offer (polite side)',
  'tl.iceRestart': 'ICE restart',
  'tl.relayPolicy': 'ICE transport policy: {policy}',
  'tl.newConnection.local': 'new RTCPeerConnection with this policy (a new offer follows)',
  'tl.newConnection.remote': 'the peer opened a new connection (new SDP session): following with a new one',
  'tl.staleDescription': 'ignored: meant for the connection replaced before',
  'tl.stale': 'ignored: belongs to an earlier session',
  'tl.watchdog': 'not connected after a while ({state}): starting over with a new connection',
  'tl.error': 'error',
  'tl.media': '{n} media sections: {kinds}',

  'chat.title': 'Chat',
  'chat.placeholder': 'Write a message',
  'chat.label': 'Message',
  'chat.send': 'Send',
  'chat.empty': 'No messages yet. Say hello!',
  'chat.close': 'Close the chat',
  'chat.unread': '{n} unread',

  'notice.joined': '{name} joined',
  'notice.left': '{name} left',
  'notice.timeout': '{name} lost the connection',
  'notice.kicked': '{name} was removed by the server',
  'notice.reconnecting': 'Lost the connection to the server; reconnecting. Your call goes on meanwhile.',
  'notice.resumed': 'Reconnected to the server; the call went on.',
  'notice.sessionLost': 'The session could not be resumed; joining again as a new participant.',
  'notice.moved': 'The room moved to another server node; joining again.',
  'notice.relayOn': 'Relay only: media now goes through the TURN server.',
  'notice.relayOff': 'Relay only is off: direct paths are allowed again.',
  'notice.noTurn': 'The server offered no TURN server, so relay-only cannot connect.',
  'notice.noMedia': 'Camera or microphone unavailable ({reason}). You can still watch and chat.',
  'notice.screenFailed': 'Screen sharing did not start ({reason}).',
  'notice.deviceFailed': 'Could not switch the device ({reason}).',
  'notice.left.self': 'You left the call.',
  'notice.dismiss': 'Dismiss',

  'err.bad-message': 'The server could not understand a message from this page.',
  'err.unknown-type': 'The server does not know a message this page sent. Is the page up to date?',
  'err.too-large': 'A message was too large for the server and was dropped.',
  'err.rate-limited': 'Too many messages too fast: the server dropped some. Slow down a little.',
  'err.not-joined': 'You are not in a room yet.',
  'err.already-joined': 'This connection has already joined a room.',
  'err.invalid-room': 'That room name is not allowed. Use 1–64 letters, digits, - or _.',
  'err.invalid-name': 'That name is not allowed. Use 1–64 characters, without control characters.',
  'err.invalid-token': 'Access denied: the access token is missing, invalid, expired, or for another room.',
  'err.forbidden': 'You are not allowed to do that in this room.',
  'err.room-full': 'This room is full. Try another room.',
  'err.too-many-rooms': 'The server has reached its limit of rooms. Try again later.',
  'err.unknown-peer': 'That participant is no longer in the room.',
  'err.resume-failed': 'The previous session could not be resumed.',
  'err.server-busy': 'The server is overloaded and is closing the connection.',
  'err.unavailable': 'The server cannot reach the room right now (its cluster is recovering). Try again in a few seconds.',
  'err.other': 'The server reported a problem: {message}',
  'err.connect': 'Could not reach the signaling server. Is tsunagi running?',
  'err.closed': 'The signaling server closed the connection.',

  'kind.audio': 'audio',
  'kind.video': 'video',
  'unit.kbps': '{v} kbit/s',
  'unit.mbps': '{v} Mbit/s',
  'unit.ms': '{v} ms',
  'unit.none': '—',

  'header.mode': 'Room mode',
  'mode.mesh': 'Mesh',
  'mode.sfu': 'SFU',
  'mode.why.mesh': 'Mesh: {n} people. Every browser sends its media straight to each of the others.',
  'mode.why.sfu': 'SFU: {n} people. The server forwards the media, so each of you uploads once instead of once per person.',
  'mode.why.switched.sfu': 'SFU since the room grew to {n} people: the server forwards the media, so each of you uploads once instead of once per person.',
  'mode.why.switched.mesh': 'Mesh again since the room is down to {n} people: few enough for every browser to send straight to every other one.',
  'mode.switched.sfu': 'The room grew to {n} people and switched to SFU mode: the server now forwards the media, so each of you uploads once.',
  'mode.switched.mesh': 'The room is down to {n} people and switched back to a mesh: media goes straight between the browsers again.',
  'mode.switching.sfu': 'Switching: the direct connections stay up until the video comes through the SFU.',
  'mode.switching.mesh': 'Switching: the SFU connection stays up until the video comes over the direct connections.',
  'panel.modeTitle': 'Room mode: {mode}',
  'panel.sfuName': 'the SFU (server)',
  'panel.sfuExplain': 'In SFU mode you have one connection, to the server. You send your camera once, in three sizes (simulcast: l, m, h), and the server forwards to each person the size that fits their tile and their bandwidth.',
  'panel.sfuEstimate': "Server's bandwidth estimate (towards you)",
  'panel.sfuRtt': 'Round trip (seen by the server)',
  'panel.layerPeer': 'From',
  'panel.layer': 'Layer received',
  'panel.decoded': 'Decoded',
  'panel.subState': 'Server (this subscription)',
  'sub.waiting-for-offer': 'waiting for an offer',
  'sub.offered': 'offered',
  'sub.negotiated': 'negotiated',
  'sub.stopping': 'stopping',
  'sub.paused.not-in-view': 'paused: not in view',
  'sub.paused.bandwidth': 'paused: bandwidth',
  'sub.paused.waiting-for-keyframe': 'waiting for a keyframe',
  'sub.paused.consent-lost': 'paused: no ICE consent',
  'sub.paused.not-connected': 'not connected',
  'sub.paused.publisher-left': 'publisher left',
  'sub.starved': 'STARVED {s} s',
  'sub.packets': '{n} packets',
  'sub.last': 'last {ms} ms ago',
  'sub.keyframes': '{n} keyframe requests',
  'layer.h': 'high (h)',
  'layer.m': 'medium (m)',
  'layer.l': 'low (l)',
  'layer.paused': 'paused (tile not visible)',
  'layer.single': 'single (no simulcast)',
  'layer.other': '{layer}',
  'path.viaSfu': 'via SFU · {path}',
  'tile.whip': 'WHIP',
  'tile.hand': 'Hand raised',
  'ctl.hand': 'Hand',
  'ctl.handUp': 'Raise your hand',
  'ctl.handDown': 'Lower your hand',
  'notice.hand': '{name} raised a hand',
  'tl.newConnection.sfu': 'new RTCPeerConnection to the SFU',
  'tl.sfuTrack': 'track forwarded by the SFU',
  'tl.dataChannel': 'data channel “tsunagi”',

  'watch.title': 'Watching “{room}”',
  'watch.heading': 'Watching room “{room}”',
  'watch.explain': 'This page receives the room through WHEP (WebRTC-HTTP Egress Protocol): one HTTP POST with an SDP offer, the SFU answers, and the media flows to you. You send nothing.',
  'watch.connecting': 'Connecting…',
  'watch.waiting': 'Nobody is publishing in this room yet. Trying again every few seconds…',
  'watch.playing': 'Playing',
  'watch.failed': 'Could not start ({reason}). Trying again…',
  'watch.unauthorized': 'This room needs an access token: add ?token=… to the address.',
  'watch.forbidden': 'The access token does not allow watching this room.',
  'watch.ended': 'The stream stopped; reconnecting…',
  'watch.unmute': 'Unmute',
  'watch.noRoom': 'No room in the address: open /watch/ROOM.',
  'watch.openCall': 'Join the call instead',
  'watch.stats': '{size} · {fps} fps · {rate} · {pair}',
};

/** @type {{[K in keyof typeof en]: string}} */
const ja = {
  'app.tagline': '中身が見えるビデオ通話',
  'landing.title': '通話を始める・参加する',
  'landing.joinTitle': 'ルーム「{room}」に参加',
  'landing.name': 'あなたの名前',
  'landing.namePlaceholder': '例: さくら',
  'landing.room': 'ルーム',
  'landing.roomHint': '英数字と - _ で 64 文字まで。同じルームを開いた人どうしが同じ通話に入ります。',
  'landing.suggest': '別のルーム名を提案',
  'landing.advanced': '詳細設定',
  'landing.token': 'アクセストークン(サーバーが求める場合のみ)',
  'landing.relayOnly': 'リレーのみで開始(すべてのメディアを TURN 経由に)',
  'landing.join': '参加',
  'landing.joining': '参加しています…',
  'landing.explainTitle': 'この画面でわかること',
  'landing.explain1': '参加者どうしは一人ひとりと WebRTC 接続を一本ずつ結びます(メッシュ)。サーバーはメッセージを中継するだけで、映像はできるかぎりブラウザ間を直接流れます。',
  'landing.explain2': '映像タイルの接続パネル(ⓘ ボタン)を開くと、オファー・アンサー・ICE 候補のやりとりと、選ばれた経路がその場で見られます。',
  'landing.explain3': '「リレーのみ」をオンにすると、メディアを TURN サーバー経由で送ります。違いを比べてみましょう。',
  'landing.nameRequired': '名前を入力してください。',
  'landing.roomInvalid': 'ルーム名は英数字と - _ で 1〜64 文字です。',

  'header.language': '言語',
  'header.room': 'ルーム',
  'header.copyLink': 'ルームのリンクをコピー',
  'header.linkCopied': 'ルームのリンクをコピーしました',
  'header.signaling': 'シグナリングサーバー',
  'sig.idle': '未接続',
  'sig.connecting': '接続中…',
  'sig.open': '接続済み',
  'sig.reconnecting': '再接続中…',
  'sig.closed': '切断',
  'sig.rtt': '{ms} ミリ秒',

  'ctl.toolbar': '通話の操作',
  'ctl.mic': 'マイク',
  'ctl.mute': 'マイクをミュート',
  'ctl.unmute': 'マイクのミュートを解除',
  'ctl.cam': 'カメラ',
  'ctl.camOff': 'カメラをオフ',
  'ctl.camOn': 'カメラをオン',
  'ctl.screen': '画面',
  'ctl.share': '画面を共有',
  'ctl.stopShare': '画面共有を停止',
  'ctl.devices': 'デバイス',
  'ctl.devicesLong': 'カメラとマイクを選ぶ',
  'ctl.relayOnly': 'リレーのみ',
  'ctl.relayOnlyLong': 'リレーのみ: すべてのメディアを TURN サーバー経由で送る',
  'ctl.chat': 'チャット',
  'ctl.chatLong': 'チャットの表示・非表示',
  'ctl.leave': '退出',
  'ctl.leaveLong': '通話から退出',

  'dev.title': 'カメラとマイク',
  'dev.camera': 'カメラ',
  'dev.mic': 'マイク',
  'dev.none': 'デバイスが見つかりません',
  'dev.unnamed': '{kind} {n}',
  'dev.close': '閉じる',
  'dev.hint': 'デバイスを切り替えると、すべての接続のトラックを置き換えます(replaceTrack)。再ネゴシエーションは不要です。',

  'tile.you': '{name}(あなた)',
  'tile.micOff': 'マイクオフ',
  'tile.camOff': 'カメラオフ',
  'tile.screen': '画面共有中',
  'tile.showPanel': '{name} との接続の詳細を表示',
  'tile.hidePanel': '{name} との接続の詳細を隠す',
  'tile.connecting': '接続中…',
  'tile.videoOf': '{name} の映像',

  'path.direct': 'P2P 直接',
  'path.nat': 'NAT 越しの P2P({type})',
  'path.relay': 'TURN でリレー({proto})',
  'path.none': 'まだ接続していません',
  'path.explain.direct': 'メディアは二つのブラウザ間を、端末そのもののアドレス(host 候補)で直接流れています。',
  'path.explain.nat': 'メディアはブラウザ間を直接流れています。STUN で見つけた NAT のアドレス変換を通っています。',
  'path.explain.relay': 'メディアは TURN サーバーを経由し、サーバーがすべてのパケットを転送しています。どんな NAT やファイアウォールでも通りますが、経路が一段長くなります。',
  'path.explain.none': 'ブラウザどうしが候補を交換し、アドレスの組み合わせを試しているところです。',
  'path.why.direct': '理由: 二つの端末が自分自身のアドレスで互いに届きます(同じネットワーク内か、間に NAT がありません)。',
  'path.why.nat': '理由: 双方の公開アドレス(STUN または相手からのチェックで分かったもの)が {s} 秒で接続チェックに応答し、NAT が直接のパケットを通しました。',
  'path.why.relay': '理由: {s} 秒のあいだに直接つながるアドレスの組が応答しなかったため(片側が対称型 NAT、もう片側も対称型かポート制限型 NAT のときによく起こります)、ICE は TURN リレーを使いました。',
  'path.why.relayNoTime': '理由: 直接つながるアドレスの組が接続チェックに応答しなかったため、ICE は TURN リレーを使いました。',
  'path.why.relayOnly': '理由: 「リレーのみ」がオンなので、ICE は TURN サーバー上のアドレスだけを使いました。',

  'panel.title': '{name} との接続',
  'panel.close': '接続の詳細を閉じる',
  'panel.you': 'あなた',
  'panel.role': 'ネゴシエーションの役割',
  'panel.polite': 'polite(オファーが衝突したら自分のオファーを取り消す)',
  'panel.impolite': 'impolite(オファーが衝突したら相手のオファーを無視する)',
  'panel.pair': '選ばれた候補ペア',
  'panel.pairState': '状態 {state}',
  'panel.nominated': '指名済み (nominated)',
  'panel.rtt': '往復時間',
  'panel.sendRate': '送信',
  'panel.recvRate': '受信',
  'panel.loss': 'パケットロス(受信)',
  'panel.audioCodec': '音声コーデック',
  'panel.videoCodec': '映像コーデック',
  'panel.framesDecoded': 'デコードしたフレーム',
  'panel.resolution': '解像度',
  'panel.states': '状態',
  'panel.ice': 'ICE',
  'panel.connection': '接続',
  'panel.signaling': 'シグナリング',
  'panel.gathering': '候補収集',
  'panel.localCandidates': 'あなたの候補',
  'panel.remoteCandidates': '相手の候補',
  'panel.noCandidates': 'まだありません',
  'panel.selected': '選択中',
  'panel.timeline': 'タイムライン',
  'panel.timelineHint': 'シグナリングサーバー経由でこの相手とやりとりしたメッセージと、接続の状態の変化です。',
  'panel.stats': 'リアルタイム統計(getStats、1 秒ごと)',
  'panel.candidates': 'ICE 候補',
  'panel.legend': 'host: 端末のアドレス · srflx: STUN で知った NAT の外側のアドレス · prflx: 届いた疎通確認から知ったアドレス · relay: TURN サーバー上のアドレス',

  'tl.sent': '送信',
  'tl.received': '受信',
  'tl.offer': 'オファー',
  'tl.answer': 'アンサー',
  'tl.candidate': '候補',
  'tl.endOfCandidates': '候補の終わり',
  'tl.signalingState': 'シグナリング状態',
  'tl.iceGatheringState': 'ICE 候補収集',
  'tl.iceConnectionState': 'ICE 接続',
  'tl.connectionState': '接続',
  'tl.selected': '経路決定',
  'tl.ignoredOffer': 'オファー衝突: 相手のオファーを無視(impolite 側)',
  'tl.rollback': 'オファー衝突: 自分のオファーを取り消し(polite 側)',
  'tl.iceRestart': 'ICE 再起動',
  'tl.relayPolicy': 'ICE 転送ポリシー: {policy}',
  'tl.newConnection.local': 'このポリシーで RTCPeerConnection を作り直し(新しいオファーが続きます)',
  'tl.newConnection.remote': '相手が接続を作り直した(新しい SDP セッション)ため、こちらも作り直し',
  'tl.staleDescription': '無視: 作り直す前の接続あて',
  'tl.stale': '無視: 前のセッションのもの',
  'tl.watchdog': 'しばらく接続できないため({state})、新しい接続でやり直し',
  'tl.error': 'エラー',
  'tl.media': 'メディアセクション {n} 個: {kinds}',

  'chat.title': 'チャット',
  'chat.placeholder': 'メッセージを入力',
  'chat.label': 'メッセージ',
  'chat.send': '送信',
  'chat.empty': 'まだメッセージはありません。あいさつしてみましょう!',
  'chat.close': 'チャットを閉じる',
  'chat.unread': '未読 {n} 件',

  'notice.joined': '{name} さんが参加しました',
  'notice.left': '{name} さんが退出しました',
  'notice.timeout': '{name} さんの接続が切れました',
  'notice.kicked': '{name} さんはサーバーにより退出させられました',
  'notice.reconnecting': 'サーバーとの接続が切れました。再接続しています。その間も通話は続きます。',
  'notice.resumed': 'サーバーに再接続しました。通話はそのまま続いています。',
  'notice.sessionLost': 'セッションを再開できなかったため、新しい参加者として入り直します。',
  'notice.moved': '部屋が別のサーバーノードに移りました。参加し直しています。',
  'notice.relayOn': 'リレーのみ: メディアは TURN サーバー経由になりました。',
  'notice.relayOff': 'リレーのみを解除しました。直接の経路も使えます。',
  'notice.noTurn': 'サーバーが TURN サーバーを提示していないため、リレーのみでは接続できません。',
  'notice.noMedia': 'カメラまたはマイクが使えません({reason})。視聴とチャットはできます。',
  'notice.screenFailed': '画面共有を開始できませんでした({reason})。',
  'notice.deviceFailed': 'デバイスを切り替えられませんでした({reason})。',
  'notice.left.self': '通話から退出しました。',
  'notice.dismiss': '閉じる',

  'err.bad-message': 'このページからのメッセージをサーバーが理解できませんでした。',
  'err.unknown-type': 'このページが送ったメッセージの種類をサーバーが知りません。ページは最新ですか?',
  'err.too-large': 'メッセージが大きすぎたため、サーバーが破棄しました。',
  'err.rate-limited': 'メッセージが多すぎるため、サーバーが一部を破棄しました。少しペースを落としてください。',
  'err.not-joined': 'まだルームに参加していません。',
  'err.already-joined': 'この接続はすでにルームに参加しています。',
  'err.invalid-room': 'そのルーム名は使えません。英数字と - _ で 1〜64 文字にしてください。',
  'err.invalid-name': 'その名前は使えません。制御文字を含まない 1〜64 文字にしてください。',
  'err.invalid-token': 'アクセスが拒否されました。アクセストークンがない、無効、期限切れ、または別のルーム用です。',
  'err.forbidden': 'このルームではその操作は許可されていません。',
  'err.room-full': 'このルームは満員です。別のルームを試してください。',
  'err.too-many-rooms': 'サーバーのルーム数が上限に達しています。しばらくしてから試してください。',
  'err.unknown-peer': 'その参加者はもうルームにいません。',
  'err.resume-failed': '前のセッションを再開できませんでした。',
  'err.server-busy': 'サーバーが過負荷のため、接続を閉じます。',
  'err.unavailable': 'サーバーが今この部屋に届きません（クラスターが復旧中です）。数秒後にもう一度お試しください。',
  'err.other': 'サーバーが問題を報告しました: {message}',
  'err.connect': 'シグナリングサーバーに接続できません。tsunagi は起動していますか?',
  'err.closed': 'シグナリングサーバーが接続を閉じました。',

  'kind.audio': '音声',
  'kind.video': '映像',
  'unit.kbps': '{v} kbit/s',
  'unit.mbps': '{v} Mbit/s',
  'unit.ms': '{v} ミリ秒',
  'unit.none': '—',

  'header.mode': 'ルームのモード',
  'mode.mesh': 'メッシュ',
  'mode.sfu': 'SFU',
  'mode.why.mesh': 'メッシュ: {n} 人。各ブラウザが自分のメディアを他の全員へ直接送ります。',
  'mode.why.sfu': 'SFU: {n} 人。サーバーがメディアを転送するので、各自のアップロードは人数分ではなく 1 本で済みます。',
  'mode.why.switched.sfu': 'ルームが {n} 人になったので SFU モードです。サーバーがメディアを転送するので、各自のアップロードは人数分ではなく 1 本で済みます。',
  'mode.why.switched.mesh': 'ルームが {n} 人に減ったのでメッシュに戻りました。この人数なら各ブラウザが全員へ直接送れます。',
  'mode.switched.sfu': 'ルームが {n} 人になり SFU モードに切り替わりました。サーバーがメディアを転送するので、各自のアップロードは 1 本で済みます。',
  'mode.switched.mesh': 'ルームが {n} 人に減りメッシュに戻りました。メディアは再びブラウザ間を直接流れます。',
  'mode.switching.sfu': '切り替え中: 映像が SFU 経由で届くまで、直接の接続を残しています。',
  'mode.switching.mesh': '切り替え中: 映像が直接の接続で届くまで、SFU への接続を残しています。',
  'panel.modeTitle': 'ルームのモード: {mode}',
  'panel.sfuName': 'SFU(サーバー)',
  'panel.sfuExplain': 'SFU モードでは接続はサーバーへの 1 本だけです。カメラ映像を 3 つの大きさ(サイマルキャスト: l, m, h)で 1 回送り、サーバーが各参加者のタイルの大きさと帯域に合うものを転送します。',
  'panel.sfuEstimate': 'サーバーの帯域推定(あなた向け)',
  'panel.sfuRtt': '往復時間(サーバー側の計測)',
  'panel.layerPeer': '送信者',
  'panel.layer': '受信レイヤー',
  'panel.decoded': 'デコード',
  'panel.subState': 'サーバー(この購読)',
  'sub.waiting-for-offer': 'オファー待ち',
  'sub.offered': 'オファー済み',
  'sub.negotiated': 'ネゴシエーション済み',
  'sub.stopping': '停止中',
  'sub.paused.not-in-view': '一時停止: 表示されていない',
  'sub.paused.bandwidth': '一時停止: 帯域不足',
  'sub.paused.waiting-for-keyframe': 'キーフレーム待ち',
  'sub.paused.consent-lost': '一時停止: ICE 同意なし',
  'sub.paused.not-connected': '未接続',
  'sub.paused.publisher-left': '送信者が退出',
  'sub.starved': '途絶 {s} 秒',
  'sub.packets': '{n} パケット',
  'sub.last': '最終 {ms} ms 前',
  'sub.keyframes': 'キーフレーム要求 {n} 回',
  'layer.h': '高 (h)',
  'layer.m': '中 (m)',
  'layer.l': '低 (l)',
  'layer.paused': '停止中(タイルが見えていない)',
  'layer.single': '単一(サイマルキャストなし)',
  'layer.other': '{layer}',
  'path.viaSfu': 'SFU 経由 · {path}',
  'tile.whip': 'WHIP',
  'tile.hand': '挙手中',
  'ctl.hand': '挙手',
  'ctl.handUp': '手を挙げる',
  'ctl.handDown': '手を下ろす',
  'notice.hand': '{name} さんが手を挙げました',
  'tl.newConnection.sfu': 'SFU への新しい RTCPeerConnection',
  'tl.sfuTrack': 'SFU が転送するトラック',
  'tl.dataChannel': 'データチャネル「tsunagi」',

  'watch.title': '「{room}」を視聴中',
  'watch.heading': 'ルーム「{room}」を視聴中',
  'watch.explain': 'このページは WHEP(WebRTC-HTTP Egress Protocol)でルームを受信します。SDP オファーを HTTP POST で 1 回送り、SFU が答えると、メディアが届きます。こちらからは何も送りません。',
  'watch.connecting': '接続中…',
  'watch.waiting': 'このルームではまだ誰も配信していません。数秒ごとに再試行しています…',
  'watch.playing': '再生中',
  'watch.failed': '開始できませんでした({reason})。再試行しています…',
  'watch.unauthorized': 'このルームにはアクセストークンが必要です。アドレスに ?token=… を付けてください。',
  'watch.forbidden': 'このアクセストークンではこのルームを視聴できません。',
  'watch.ended': '配信が止まりました。再接続しています…',
  'watch.unmute': 'ミュート解除',
  'watch.noRoom': 'アドレスにルームがありません。/watch/ルーム名 を開いてください。',
  'watch.openCall': '通話に参加する',
  'watch.stats': '{size} · {fps} fps · {rate} · {pair}',
};

/** @type {Record<string, Record<string, string>>} */
const DICTS = { en, ja };
/** @type {Set<(lang: string) => void>} */
const listeners = new Set();
let current = detect();

function detect() {
  let saved = null;
  try {
    saved = localStorage.getItem(STORAGE_KEY);
  } catch {
    // Storage can be unavailable (privacy modes); fall back to the browser's language.
  }
  if (saved && DICTS[saved]) return saved;
  const langs = navigator.languages && navigator.languages.length ? navigator.languages : [navigator.language || 'en'];
  for (const l of langs) {
    const base = String(l).toLowerCase().split('-')[0];
    if (DICTS[base]) return base;
  }
  return 'en';
}

export function getLang() {
  return current;
}

/**
 * Switches the language, remembers it, and re-renders every translated node.
 * @param {string} lang
 */
export function setLang(lang) {
  if (!DICTS[lang]) return;
  current = lang;
  try {
    localStorage.setItem(STORAGE_KEY, lang);
  } catch {
    // Not persisted; the switch still applies to this page.
  }
  document.documentElement.lang = lang;
  applyI18n(document);
  for (const fn of listeners) fn(lang);
}

/**
 * Calls `fn` after every language switch; returns what stops that.
 * @param {(lang: string) => void} fn
 */
export function onLangChange(fn) {
  listeners.add(fn);
  return () => listeners.delete(fn);
}

/**
 * Looks up `key` in the current language (English as fallback) and fills {vars}.
 * @param {string} key
 * @param {Record<string, unknown>|null} [vars]
 */
export function t(key, vars) {
  const s = DICTS[current][key] ?? DICTS.en[key] ?? key;
  if (!vars) return s;
  return s.replace(/\{(\w+)\}/g, (m, /** @type {string} */ name) => (vars[name] !== undefined ? String(vars[name]) : m));
}

/** @param {string} key */
export function has(key) {
  return key in en;
}

/**
 * Fills every data-i18n / data-i18n-attr node under root.
 * @param {ParentNode} root
 */
export function applyI18n(root) {
  for (const el of root.querySelectorAll('[data-i18n]')) {
    if (!(el instanceof HTMLElement || el instanceof SVGElement)) continue;
    const vars = el.dataset.i18nVars ? JSON.parse(el.dataset.i18nVars) : undefined;
    el.textContent = t(el.dataset.i18n || '', vars);
  }
  for (const el of root.querySelectorAll('[data-i18n-attr]')) {
    if (!(el instanceof HTMLElement || el instanceof SVGElement)) continue;
    const vars = el.dataset.i18nVars ? JSON.parse(el.dataset.i18nVars) : undefined;
    for (const pair of (el.dataset.i18nAttr || '').split(';')) {
      const [attr, key] = pair.split(':');
      if (attr && key) el.setAttribute(attr.trim(), t(key.trim(), vars));
    }
  }
}

/**
 * Formats a timestamp as a wall-clock time in the current language.
 * @param {number} ms
 */
export function formatTime(ms, withMillis = false) {
  const d = new Date(ms);
  const base = d.toLocaleTimeString(current === 'ja' ? 'ja-JP' : 'en-GB', {
    hour: '2-digit',
    minute: '2-digit',
    second: '2-digit',
    hour12: false,
  });
  return withMillis ? `${base}.${String(d.getMilliseconds()).padStart(3, '0')}` : base;
}

document.documentElement.lang = current;
