// One participant's side of a case session: Socket.IO signalling (docs/protocol.md) and one RTCPeerConnection.
// The server always offers; this client only answers.  A failed connection or a dropped socket rejoins the
// session with a new peer connection (aiortc has no ICE restart); the server replaces the old participant.
import { reactive } from 'vue'
import type { Socket } from 'socket.io-client'
import { ask, type Ack } from './realtime'
import { errorText } from './errors'

export type Label = 'audio' | 'camera' | 'screen'

export interface WireTrack {
  stream_id: string
  kind: 'audio' | 'video'
  label: Label
  mid: string
  participant_id?: string
}

export interface Participant {
  participant_id: string
  user_id: number | null
  display_name: string
  role: string
  /** May admit, mute and remove (the host, a clerk of the case's department, an admin). */
  moderator?: boolean
  /** Muted by a moderator. */
  muted?: boolean
  tracks: WireTrack[]
}

/** Someone in the waiting room (an invitee of a consultation or inspection), seen by moderators. */
export interface Waiter {
  waiter_id: string
  user_id: number | null
  display_name: string
  role: string
}

/** The fields of a join ack for a participant, and of ``session.admitted``. */
export interface Entered {
  participant_id: string
  session: { id?: number; case_id?: number; kind?: string; recording: boolean }
  participants: Participant[]
  waiting?: Waiter[]
  speaker?: string | null
  ice_servers: RTCIceServer[]
  offer: Offer
}

/** A join ack while one is kept in the waiting room. */
export interface Waiting {
  waiting: true
  waiter_id: string
  participant_id: null
  session: { id?: number; case_id?: number; kind?: string; recording?: boolean }
}

export type EndReason = '' | 'ended' | 'refused' | 'removed'

/**
 * Catalogue key of the end-of-call sentence: the server's `session.ended` reason (`ended_by_host`, `empty`, and any
 * later one, docs/protocol.md) when the catalogue words it, else the client's own reason, else a plain "ended".
 */
export function endKey(reason: EndReason | string, detail: string, has: (key: string) => boolean): string {
  for (const r of [detail, reason]) if (r && has(`callEnd.${r}`)) return `callEnd.${r}`
  return 'callEnd.ended'
}

/** Catalogue key of the notice when someone else leaves (`participant.left` reason); null when there is nothing to say. */
export function leftKey(reason: string | undefined, has: (key: string) => boolean): string | null {
  if (reason === 'replaced') return null // the same person rejoined: 'participant.joined' follows at once
  return reason && has(`callLeft.${reason}`) ? `callLeft.${reason}` : 'callLeft.left'
}

export interface Offer {
  /** The join this offer is for; an offer for another (replaced) participant id is ignored. */
  participant_id?: string
  sdp: string
  revision: number
  publish: Record<string, Label>
  subscribe: Record<string, WireTrack & { participant_id: string }>
}

export interface Tile {
  key: string
  participantId: string
  displayName: string
  label: 'camera' | 'screen'
  stream: MediaStream
}

export interface ChatLine {
  id: number
  /** Set on live ``chat.message`` events; a line restored from the transcript (REST) has ``user_id`` instead. */
  participant_id?: string
  user_id?: number | null
  display_name: string
  text: string
  at: string
}

/** The chat with ``more`` merged in: each message once (by id), in the order the server stored them. */
export function mergeChat(lines: ChatLine[], more: ChatLine[]): ChatLine[] {
  const byId = new Map<number, ChatLine>()
  for (const m of [...lines, ...more]) byId.set(m.id, { ...byId.get(m.id), ...m })
  return [...byId.values()].sort((a, b) => a.id - b.id)
}

/** Whether a server message naming a participant (``media.offer``, ``media.state``) is for my current join. */
export function isForMe(payload: { participant_id?: string }, me: string): boolean {
  return payload.participant_id === undefined || payload.participant_id === me
}

/** The video track of a screen capture, marked as detailed content (text, documents): docs/protocol.md. */
export function screenTrack(display: MediaStream): MediaStreamTrack {
  const track = display.getVideoTracks()[0]
  // Without the hint the browser treats a screen as motion video and may start it at 320x180 to save bitrate.
  if ('contentHint' in track) track.contentHint = 'detail'
  return track
}

export type Quality = 'good' | 'fair' | 'poor' | 'unknown'

/** Media refusals the call screen explains in words (``call.mediaErrors.<code>``; docs/protocol.md). */
export const MEDIA_ERRORS = ['no_allowed_candidate', 'codec_unsupported', 'sdp_invalid', 'sdp_too_large', 'too_many_candidates'] as const
export type MediaErrorCode = (typeof MEDIA_ERRORS)[number]

/** Refusals a rejoin cannot cure: the client stops instead of rejoining in a loop. */
export const FATAL_MEDIA_ERRORS: readonly string[] = ['no_allowed_candidate']

export function mediaErrorCode(code: unknown): MediaErrorCode | '' {
  return typeof code === 'string' && (MEDIA_ERRORS as readonly string[]).includes(code) ? (code as MediaErrorCode) : ''
}

/**
 * ``iceTransportPolicy`` for new peer connections: ``'relay'`` when the browser's localStorage has
 * ``cloudwindow.iceTransportPolicy = relay`` (forces TURN, for diagnosing a site's network; docs/operations.md),
 * else ``'all'``.
 */
export function transportPolicy(storage: Pick<Storage, 'getItem'> | undefined = globalThis.localStorage): RTCIceTransportPolicy {
  try {
    return storage?.getItem('cloudwindow.iceTransportPolicy') === 'relay' ? 'relay' : 'all'
  } catch {
    return 'all'
  }
}

/** Which transceivers carry what: pure function of the server's offer (unit-tested). */
export function plan(offer: Pick<Offer, 'publish' | 'subscribe'>): {
  publish: Map<string, Label>
  video: Map<string, { participantId: string; label: 'camera' | 'screen' }>
  audio: Map<string, string>
} {
  const publish = new Map(Object.entries(offer.publish))
  const video = new Map<string, { participantId: string; label: 'camera' | 'screen' }>()
  const audio = new Map<string, string>()
  for (const [mid, t] of Object.entries(offer.subscribe)) {
    if (t.kind === 'video' && (t.label === 'camera' || t.label === 'screen')) video.set(mid, { participantId: t.participant_id, label: t.label })
    else if (t.kind === 'audio') audio.set(mid, t.participant_id)
  }
  return { publish, video, audio }
}

/** good / fair / poor from round-trip time (s) and the fraction of packets lost. */
export function quality(rtt: number | null, lossFraction: number | null): Quality {
  if (rtt === null && lossFraction === null) return 'unknown'
  const r = rtt ?? 0
  const l = lossFraction ?? 0
  if (r > 0.4 || l > 0.08) return 'poor'
  if (r > 0.15 || l > 0.02) return 'fair'
  return 'good'
}

/** Whether a join ack put us in the waiting room. */
export function isWaiting(ack: Entered | Waiting): ack is Waiting {
  return (ack as Waiting).waiting === true
}

/** My own moderator flag, from the participant list of a join ack. */
export function moderatorOf(participants: Participant[], me: string): boolean {
  return Boolean(participants.find((p) => p.participant_id === me)?.moderator)
}

/** Who is muted by a moderator, by participant id. */
export function mutedOf(participants: Participant[]): Record<string, boolean> {
  return Object.fromEntries(participants.map((p) => [p.participant_id, Boolean(p.muted)]))
}

/** The waiting list with ``w`` added (or replaced, keeping its place). */
export function withWaiter(list: Waiter[], w: Waiter): Waiter[] {
  return list.some((x) => x.waiter_id === w.waiter_id) ? list.map((x) => (x.waiter_id === w.waiter_id ? w : x)) : [...list, w]
}

export function withoutWaiter(list: Waiter[], waiterId: string): Waiter[] {
  return list.filter((x) => x.waiter_id !== waiterId)
}

/** The microphone level (0–1) in an ``RTCRtpSender.getStats()`` report: its audio ``media-source``'s audioLevel. */
export function levelFromStats(stats: Iterable<Record<string, unknown>>): number | null {
  for (const s of stats) {
    if (s.type === 'media-source' && (s.kind === 'audio' || s.kind === undefined) && typeof s.audioLevel === 'number') return clampLevel(s.audioLevel)
  }
  return null
}

/** Root mean square of time-domain samples (-1…1), as a level 0–1. */
export function rms(samples: ArrayLike<number>): number {
  if (!samples.length) return 0
  let sum = 0
  for (let i = 0; i < samples.length; i++) sum += samples[i] * samples[i]
  return clampLevel(Math.sqrt(sum / samples.length))
}

function clampLevel(x: number): number {
  if (!Number.isFinite(x) || x < 0) return 0
  return x > 1 ? 1 : x
}

/**
 * What to report as my level this tick: the measured level while the microphone is on, a single 0 when it has
 * just been turned off, nothing while it stays off (or nothing measured).
 */
export function levelToSend(micOn: boolean, measured: number | null, lastSent: number | null): number | null {
  if (!micOn) return lastSent === 0 ? null : 0
  return measured
}

function waitIce(pc: RTCPeerConnection, ms: number): Promise<void> {
  if (pc.iceGatheringState === 'complete') return Promise.resolve()
  return new Promise((resolve) => {
    const done = () => {
      if (pc.iceGatheringState === 'complete') {
        pc.removeEventListener('icegatheringstatechange', done)
        resolve()
      }
    }
    pc.addEventListener('icegatheringstatechange', done)
    setTimeout(resolve, ms)
  })
}

export class CallClient {
  state = reactive({
    joined: false,
    participantId: '',
    recording: false,
    reconnecting: false,
    ended: false,
    quality: 'unknown' as Quality,
    participants: [] as Participant[],
    /** In the waiting room (an invitee not admitted yet). */
    waiting: false,
    /** May admit, refuse, mute and remove. */
    moderator: false,
    /** The waiting room, for moderators. */
    waiters: [] as Waiter[],
    /** The active speaker's participant id. */
    speaker: null as string | null,
    /** Muted by a moderator, by participant id. */
    muted: {} as Record<string, boolean>,
    /** Why the session ended for me: 'ended' (host or timeout), 'refused' (not admitted), 'removed'. */
    endReason: '' as EndReason,
    /** The server's reason with `session.ended` (`ended_by_host`, `empty`, ...), '' otherwise. */
    endDetail: '',
    /** The last other participant who left, with the `participant.left` reason, for a one-line notice. */
    left: null as { name: string; reason: string } | null,
    tiles: [] as Tile[],
    chat: [] as ChatLine[],
    sharing: false,
    micOn: true,
    cameraOn: true,
    error: '',
    /** Why the server refused this browser's media (a ``MEDIA_ERRORS`` code), shown in words; '' when none. */
    mediaError: '' as MediaErrorCode | '',
  })

  pc: RTCPeerConnection | null = null
  private streams = new Map<string, MediaStream>()
  private chain: Promise<void> = Promise.resolve()
  private screen: MediaStreamTrack | null = null
  private screenMid: string | null = null
  private iceServers: RTCIceServer[] = []
  private statsTimer: ReturnType<typeof setInterval> | null = null
  private rejoining = false
  /** A refusal a rejoin cannot cure (``FATAL_MEDIA_ERRORS``): no more rejoins. */
  private fatal = false
  /** End-of-candidates has been sent for the current peer connection. */
  private gatheringSent: RTCPeerConnection | null = null
  private handlers: [string, (...args: never[]) => void][] = []
  private levelTimer: ReturnType<typeof setInterval> | null = null
  private levelBusy = false
  private lastLevel: number | null = null
  private audioCtx: AudioContext | null = null
  private analyser: { track: MediaStreamTrack; node: AnalyserNode; buf: Float32Array<ArrayBuffer> } | null = null

  constructor(
    private sock: Socket,
    public sessionId: number,
    private local: MediaStream,
  ) {
    this.on('media.offer', (offer: Offer) => {
      // An offer for a participant this client has already replaced (a rejoin in flight) is not for this connection.
      if (isForMe(offer, this.state.participantId)) void this.enqueue(offer)
    })
    this.on('participant.joined', (d: { participant: Participant }) => {
      this.state.participants = [...this.state.participants.filter((p) => p.participant_id !== d.participant.participant_id), d.participant]
      this.state.muted = { ...this.state.muted, [d.participant.participant_id]: Boolean(d.participant.muted) }
    })
    this.on('participant.left', (d: { participant_id: string; reason?: string }) => {
      const gone = this.state.participants.find((p) => p.participant_id === d.participant_id)
      if (gone && d.reason !== 'replaced') this.state.left = { name: gone.display_name, reason: d.reason ?? 'left' }
      this.state.participants = this.state.participants.filter((p) => p.participant_id !== d.participant_id)
      this.state.tiles = this.state.tiles.filter((t) => t.participantId !== d.participant_id)
      const { [d.participant_id]: _gone, ...rest } = this.state.muted
      this.state.muted = rest
      if (this.state.speaker === d.participant_id) this.state.speaker = null
    })
    this.on('participant.muted', (d: { participant_id: string; muted: boolean }) => {
      this.state.muted = { ...this.state.muted, [d.participant_id]: d.muted }
      this.state.participants = this.state.participants.map((p) => (p.participant_id === d.participant_id ? { ...p, muted: d.muted } : p))
    })
    this.on('waiting.joined', (d: { waiter: Waiter }) => (this.state.waiters = withWaiter(this.state.waiters, d.waiter)))
    this.on('waiting.left', (d: { waiter_id: string }) => (this.state.waiters = withoutWaiter(this.state.waiters, d.waiter_id)))
    this.on('speaker.active', (d: { participant_id: string | null }) => (this.state.speaker = d.participant_id ?? null))
    this.on('session.admitted', (ack: Entered) => {
      if (this.state.ended) return
      this.enter(ack).catch((e: Error) => (this.state.error = errorText(e)))
    })
    this.on('session.refused', () => this.end('refused'))
    this.on('session.removed', () => this.end('removed'))
    this.on('chat.message', (m: ChatLine) => (this.state.chat = mergeChat(this.state.chat, [m])))
    this.on('recording.state', (d: { recording: boolean }) => (this.state.recording = d.recording))
    this.on('session.ended', (d: { reason?: string } | undefined) => this.end('ended', d?.reason ?? ''))
    this.on('media.state', (d: { state: string; reason?: string; participant_id?: string }) => {
      if (d.state !== 'failed' || !isForMe(d, this.state.participantId)) return
      const code = mediaErrorCode(d.reason)
      if (code && FATAL_MEDIA_ERRORS.includes(code)) this.mediaFailed(code)
      else void this.rejoin()
    })
    this.on('connect', () => {
      if (this.state.joined || this.state.reconnecting || this.state.waiting) void this.rejoin()
    })
    this.on('disconnect', () => {
      if (!this.state.ended) this.state.reconnecting = true
    })
    // The browser knows at once when its network goes away and comes back; the socket's heartbeat would take
    // tens of seconds.  Going offline drops the socket; coming back reconnects it, and 'connect' rejoins.
    window.addEventListener('offline', this.offline)
    window.addEventListener('online', this.online)
  }

  private offline = (): void => {
    if (this.state.ended) return
    this.state.reconnecting = true
    this.sock.disconnect()
    this.closePc() // what a real drop does to the media; the rejoin builds a new connection
  }

  private online = (): void => {
    if (!this.state.ended && !this.sock.connected) this.sock.connect()
  }

  private on(event: string, fn: (...args: never[]) => void): void {
    this.sock.on(event, fn as (...args: unknown[]) => void)
    this.handlers.push([event, fn])
  }

  get displayNames(): Map<string, string> {
    return new Map(this.state.participants.map((p) => [p.participant_id, p.display_name]))
  }

  async join(): Promise<void> {
    this.closePc()
    const ack = await ask<Ack & (Entered | Waiting)>(this.sock, 'session.join', { session_id: this.sessionId })
    if (isWaiting(ack)) {
      // In the waiting room until a moderator admits ('session.admitted') or refuses ('session.refused') me.
      this.state.waiting = true
      this.state.joined = false
      this.state.reconnecting = false
      this.state.recording = Boolean(ack.session?.recording)
      return
    }
    await this.enter(ack)
  }

  /** After a join ack or ``session.admitted``: become a participant and answer the server's offer. */
  private async enter(ack: Entered): Promise<void> {
    this.closePc()
    this.state.waiting = false
    this.state.participantId = ack.participant_id
    this.state.participants = ack.participants
    this.state.moderator = moderatorOf(ack.participants, ack.participant_id)
    this.state.waiters = Array.isArray(ack.waiting) ? ack.waiting : []
    this.state.speaker = ack.speaker ?? null
    this.state.muted = mutedOf(ack.participants)
    this.state.recording = Boolean(ack.session.recording)
    this.iceServers = ack.ice_servers
    this.pc = this.newPc()
    this.chain = Promise.resolve()
    this.state.joined = true
    await this.enqueue(ack.offer)
    if (this.screen) {
      // Still sharing after a rejoin: publish the screen again on the new connection.
      const pub = await ask<Ack & { mid: string }>(this.sock, 'media.publish', { label: 'screen' })
      this.screenMid = pub.mid
    }
    this.startStats()
    this.startLevels()
  }

  /** The server gave up my media for a reason a rejoin cannot cure: say why, stop, and do not rejoin. */
  private mediaFailed(code: MediaErrorCode): void {
    this.fatal = FATAL_MEDIA_ERRORS.includes(code)
    this.state.mediaError = code
    if (!this.fatal) return
    this.state.reconnecting = false
    this.stopLevels()
    this.closePc()
  }

  /** Refused at the door or removed by a moderator: the session is over for me. */
  private end(reason: EndReason, detail = ''): void {
    this.state.ended = true
    this.state.endReason = reason
    this.state.endDetail = detail
    this.state.waiting = false
    this.state.joined = false
    this.state.reconnecting = false
    // Nothing of the call stays on screen once it is over: no recording mark, quality, people or videos.
    this.state.recording = false
    this.state.quality = 'unknown'
    this.state.participants = []
    this.state.tiles = []
    this.state.waiters = []
    this.state.speaker = null
    this.state.muted = {}
    this.state.sharing = false
    this.state.left = null
    if (this.statsTimer) clearInterval(this.statsTimer)
    this.statsTimer = null
    this.stopLevels()
    this.closePc()
    this.screen?.stop()
    for (const t of this.local.getTracks()) t.stop()
  }

  // -- moderation (docs/protocol.md, "Waiting room and moderation") ---------

  async admit(waiterId: string): Promise<string> {
    const ack = await ask<Ack & { participant_id: string }>(this.sock, 'session.admit', { waiter_id: waiterId })
    this.state.waiters = withoutWaiter(this.state.waiters, waiterId)
    return ack.participant_id
  }

  async refuse(waiterId: string): Promise<void> {
    await ask(this.sock, 'session.refuse', { waiter_id: waiterId })
    this.state.waiters = withoutWaiter(this.state.waiters, waiterId)
  }

  async mute(participantId: string, muted: boolean): Promise<void> {
    await ask(this.sock, 'participant.mute', { participant_id: participantId, muted })
  }

  async remove(participantId: string): Promise<void> {
    await ask(this.sock, 'participant.remove', { participant_id: participantId })
  }

  // -- active speaker: my microphone level, about every 250 ms ---------------

  private startLevels(): void {
    if (this.levelTimer) return
    this.levelTimer = setInterval(() => void this.reportLevel(), 250)
  }

  private stopLevels(): void {
    if (this.levelTimer) clearInterval(this.levelTimer)
    this.levelTimer = null
    this.lastLevel = null
    this.analyser = null
    void this.audioCtx?.close().catch(() => undefined)
    this.audioCtx = null
  }

  private async reportLevel(): Promise<void> {
    const track = this.local.getAudioTracks()[0]
    const pc = this.pc
    if (this.levelBusy || !track || !pc || !this.state.joined || this.state.ended || !this.sock.connected) return
    this.levelBusy = true
    try {
      const micOn = this.state.micOn && track.enabled && track.readyState === 'live'
      const measured = micOn ? await this.measure(pc, track) : null
      const level = levelToSend(micOn, measured, this.lastLevel)
      if (level === null) return
      this.lastLevel = level
      await ask(this.sock, 'audio.level', { level }, 2000)
    } catch {
      /* a lost report is replaced by the next one */
    } finally {
      this.levelBusy = false
    }
  }

  private async measure(pc: RTCPeerConnection, track: MediaStreamTrack): Promise<number | null> {
    const sender = pc.getSenders().find((s) => s.track === track)
    if (sender) {
      const report = await sender.getStats()
      const level = levelFromStats(report.values() as Iterable<Record<string, unknown>>)
      if (level !== null) return level
    }
    return this.analyse(track)
  }

  /** Fallback when the browser gives no media-source audioLevel: a Web Audio analyser on the local track. */
  private analyse(track: MediaStreamTrack): number | null {
    if (typeof AudioContext === 'undefined') return null
    if (!this.analyser || this.analyser.track !== track) {
      this.audioCtx ??= new AudioContext()
      const node = this.audioCtx.createAnalyser()
      node.fftSize = 1024
      this.audioCtx.createMediaStreamSource(new MediaStream([track])).connect(node)
      this.analyser = { track, node, buf: new Float32Array(node.fftSize) }
    }
    this.analyser.node.getFloatTimeDomainData(this.analyser.buf)
    return rms(this.analyser.buf)
  }

  private newPc(): RTCPeerConnection {
    const pc = new RTCPeerConnection({ iceServers: this.iceServers, bundlePolicy: 'max-bundle', iceTransportPolicy: transportPolicy() })
    pc.addEventListener('connectionstatechange', () => {
      if (pc !== this.pc) return
      if (pc.connectionState === 'connected') {
        this.state.reconnecting = false
        if (!this.fatal) this.state.mediaError = ''
      }
      if (pc.connectionState === 'failed') void this.rejoin()
    })
    return pc
  }

  private enqueue(offer: Offer): Promise<void> {
    this.chain = this.chain.then(() => this.answer(offer)).catch((e: Error) => {
      const raw = (e as { code?: string }).code
      const code = mediaErrorCode(raw)
      if (code) this.mediaFailed(code)
      else if (raw !== 'stale_answer') this.state.error = errorText(e)
    })
    return this.chain
  }

  private async answer(offer: Offer): Promise<void> {
    const pc = this.pc
    if (!pc || pc.signalingState === 'closed') return
    await pc.setRemoteDescription({ type: 'offer', sdp: offer.sdp })
    const p = plan(offer)
    const mine: Record<Label, MediaStreamTrack | null> = {
      audio: this.local.getAudioTracks()[0] ?? null,
      camera: this.local.getVideoTracks()[0] ?? null,
      screen: this.screen,
    }
    for (const t of pc.getTransceivers()) {
      const label = t.mid ? p.publish.get(t.mid) : undefined
      if (!label) continue
      const track = mine[label]
      if (track && t.sender.track !== track) await t.sender.replaceTrack(track)
      t.direction = track ? 'sendonly' : 'inactive'
    }
    const answer = await pc.createAnswer()
    await pc.setLocalDescription(answer)
    await waitIce(pc, 3000)
    this.updateTiles(pc, p)
    const sent = pc.localDescription?.sdp ?? ''
    await ask(this.sock, 'media.answer', { sdp: sent, revision: offer.revision })
    if (this.gatheringSent !== pc) {
      this.gatheringSent = pc
      void this.endOfCandidates(pc, sent).catch((e: Error) => {
        const code = mediaErrorCode((e as { code?: string }).code)
        if (code && pc === this.pc) this.mediaFailed(code)
      })
    }
  }

  /**
   * After the first answer of a connection: once gathering is complete, trickle the candidates the answer did not
   * carry, then end-of-candidates (``media.candidate`` with ``candidate: ""``).  The server needs the end to know
   * that no allowed candidate will come (``no_allowed_candidate``) instead of waiting (docs/protocol.md).
   */
  private async endOfCandidates(pc: RTCPeerConnection, sent: string): Promise<void> {
    await waitIce(pc, 30_000)
    if (pc !== this.pc || pc.iceGatheringState !== 'complete') return
    const inAnswer = new Set(sent.split(/\r?\n/).filter((l) => l.startsWith('a=candidate:')).map((l) => l.slice(2)))
    const late = (pc.localDescription?.sdp ?? '').split(/\r?\n/).filter((l) => l.startsWith('a=candidate:') && !inAnswer.has(l.slice(2)))
    for (const line of late) await ask(this.sock, 'media.candidate', { candidate: line.slice(2), sdpMid: '0', sdpMLineIndex: 0 })
    if (pc === this.pc) await ask(this.sock, 'media.candidate', { candidate: '', sdpMid: '0', sdpMLineIndex: 0 })
  }

  private updateTiles(pc: RTCPeerConnection, p: ReturnType<typeof plan>): void {
    const byMid = new Map(pc.getTransceivers().map((t) => [t.mid ?? '', t]))
    const audioOf = new Map<string, MediaStreamTrack>()
    for (const [mid, pid] of p.audio) {
      const t = byMid.get(mid)
      if (t) audioOf.set(pid, t.receiver.track)
    }
    const names = this.displayNames
    const tiles: Tile[] = []
    for (const [mid, v] of p.video) {
      const t = byMid.get(mid)
      if (!t) continue
      const key = `${v.participantId}:${v.label}`
      let stream = this.streams.get(key)
      if (!stream) {
        stream = new MediaStream()
        this.streams.set(key, stream)
      }
      const wanted = [t.receiver.track, ...(v.label === 'camera' && audioOf.get(v.participantId) ? [audioOf.get(v.participantId)!] : [])]
      for (const old of stream.getTracks()) if (!wanted.includes(old)) stream.removeTrack(old)
      for (const track of wanted) if (!stream.getTracks().includes(track)) stream.addTrack(track)
      tiles.push({ key, participantId: v.participantId, displayName: names.get(v.participantId) ?? '', label: v.label, stream })
    }
    this.state.tiles = tiles
  }

  async rejoin(): Promise<void> {
    if (this.rejoining || this.state.ended || this.fatal) return
    this.rejoining = true
    this.state.reconnecting = true
    try {
      for (let attempt = 0; attempt < 30 && !this.state.ended; attempt++) {
        if (this.sock.connected) {
          try {
            await this.join()
            return
          } catch (e) {
            this.state.error = errorText(e)
          }
        }
        await new Promise((r) => setTimeout(r, Math.min(500 * 2 ** attempt, 5000)))
      }
    } finally {
      this.rejoining = false
    }
  }

  async shareScreen(): Promise<void> {
    const display = await navigator.mediaDevices.getDisplayMedia({ video: true, audio: false })
    this.screen = screenTrack(display)
    this.screen.addEventListener('ended', () => void this.stopScreen())
    const ack = await ask<Ack & { mid: string }>(this.sock, 'media.publish', { label: 'screen' })
    this.screenMid = ack.mid
    this.state.sharing = true
  }

  async stopScreen(): Promise<void> {
    const mid = this.screenMid
    this.screen?.stop()
    this.screen = null
    this.screenMid = null
    this.state.sharing = false
    if (mid && this.state.joined && !this.state.ended) await ask(this.sock, 'media.unpublish', { mid })
  }

  setMic(on: boolean): void {
    for (const t of this.local.getAudioTracks()) t.enabled = on
    this.state.micOn = on
  }

  setCamera(on: boolean): void {
    for (const t of this.local.getVideoTracks()) t.enabled = on
    this.state.cameraOn = on
  }

  async switchDevice(kind: 'audio' | 'video', deviceId: string): Promise<void> {
    const fresh = await navigator.mediaDevices.getUserMedia(kind === 'audio' ? { audio: { deviceId } } : { video: { deviceId } })
    const track = kind === 'audio' ? fresh.getAudioTracks()[0] : fresh.getVideoTracks()[0]
    const old = kind === 'audio' ? this.local.getAudioTracks()[0] : this.local.getVideoTracks()[0]
    if (old) {
      this.local.removeTrack(old)
      old.stop()
    }
    this.local.addTrack(track)
    for (const t of this.pc?.getTransceivers() ?? []) if (t.sender.track === old) await t.sender.replaceTrack(track)
  }

  /** Lines read back from the transcript (``GET /cases/{id}/chat``) after a (re)join, merged with those pushed live. */
  restoreChat(lines: ChatLine[]): void {
    this.state.chat = mergeChat(this.state.chat, lines)
  }

  async sendChat(text: string): Promise<void> {
    await ask(this.sock, 'chat.send', { text })
  }

  private startStats(): void {
    if (this.statsTimer) clearInterval(this.statsTimer)
    this.statsTimer = setInterval(async () => {
      const pc = this.pc
      if (!pc) return
      let rtt: number | null = null
      let lost = 0
      let received = 0
      const report = await pc.getStats()
      report.forEach((s) => {
        if (s.type === 'candidate-pair' && s.nominated && typeof s.currentRoundTripTime === 'number') rtt = s.currentRoundTripTime
        if (s.type === 'inbound-rtp') {
          lost += s.packetsLost ?? 0
          received += s.packetsReceived ?? 0
        }
      })
      if (this.state.ended || pc !== this.pc) return // a report that finished after the call ended
      this.state.quality = quality(rtt, received + lost > 0 ? lost / (received + lost) : null)
    }, 2000)
  }

  private closePc(): void {
    if (this.pc) {
      this.pc.close()
      this.pc = null
    }
  }

  async leave(): Promise<void> {
    if (this.statsTimer) clearInterval(this.statsTimer)
    this.stopLevels()
    for (const [event, fn] of this.handlers) this.sock.off(event, fn as (...args: unknown[]) => void)
    window.removeEventListener('offline', this.offline)
    window.removeEventListener('online', this.online)
    this.screen?.stop()
    if ((this.state.joined || this.state.waiting) && this.sock.connected && !this.state.ended) {
      try {
        await ask(this.sock, 'session.leave', {})
      } catch {
        /* leaving anyway */
      }
    }
    this.closePc()
    for (const t of this.local.getTracks()) t.stop()
    this.state.joined = false
    this.state.waiting = false
  }
}
